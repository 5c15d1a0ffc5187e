"""Rich notifications in a subscription: include_resource_data, and the certificate Graph encrypts with.

Apart from :mod:`syncer.spec.subscriptions` because it is one rule set of its own: which resources
Graph sends resource data for (:mod:`syncer.resources`), that resource data always comes with an
``encryption`` section, and that section's certificate, private key, id and the ``previous`` one
kept during a key rotation (the receiver decrypts with either).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from syncer.resources import ResourceType
from syncer.spec.model import EncryptionCert
from syncer.spec.reader import Map

if TYPE_CHECKING:
    from syncer.spec.loader import SpecLoader


class RichLoader:
    """Reads include_resource_data and ``encryption`` with the shared readers of a :class:`SpecLoader`."""

    def __init__(self, loader: SpecLoader) -> None:
        self.loader = loader
        self.r = loader.r

    def encryption_of(self, s: Map, rt: ResourceType, *, rich: bool) -> EncryptionCert | None:
        """Check *s*'s include_resource_data (*rich*) against *rt*; its encryption certificate when rich."""
        r, path = self.r, s.sub("include_resource_data")
        if rich and rt.max_lifetime_rich is None:
            r.error(
                s.get("include_resource_data"),
                path,
                f"false: Graph has no rich notifications for {rt.name}",
                "true",
            )
            return None
        if rt.rich_required and not rich:
            r.error(
                s.get("include_resource_data") or s,
                path,
                f"true: Graph only sends {rt.name} notifications with resource data",
                str(rich).lower(),
            )
        node = s.get("encryption")
        if rich and node is None:
            r.error(
                s,
                s.sub("encryption"),
                "encryption (certificate, private_key, id) with include_resource_data: true",
                "nothing",
            )
        elif node is not None and not rich:
            r.error(
                node,
                s.sub("encryption"),
                "encryption only with include_resource_data: true",
                "include_resource_data: false",
            )
        elif node is not None:
            return self.encryption(node, s.sub("encryption"), rotation=True)
        return None

    def encryption(self, node: yaml.Node, path: str, *, rotation: bool) -> EncryptionCert | None:
        r = self.r
        keys = (
            ("certificate", "private_key", "id", "previous")
            if rotation
            else ("certificate", "private_key", "id")
        )
        e = r.mapping(node, path, keys)
        if e is None:
            return None
        cert = self.loader.file_path(e.get("certificate"), e.sub("certificate"))
        if "certificate" not in e:
            r.error(e, e.sub("certificate"), "the certificate (a PEM path) Graph encrypts with", "nothing")
        elif cert is not None and self.loader.check_secrets and not cert.is_file():
            r.error(
                e.get("certificate"),
                e.sub("certificate"),
                "an existing certificate file",
                f"no file at {cert}",
            )
        key = self.loader.secret(e, "private_key")
        cert_id = r.string(e.get("id"), e.sub("id"), expected="a certificate id (at most 128 characters)")
        if "id" not in e:
            r.error(e, e.sub("id"), "a certificate id (at most 128 characters)", "nothing")
        elif cert_id is not None and len(cert_id) > 128:
            r.error(
                e.get("id"),
                e.sub("id"),
                "a certificate id of at most 128 characters",
                f"{len(cert_id)} characters",
            )
            cert_id = None
        previous_node = e.get("previous")
        previous = (
            self.encryption(previous_node, e.sub("previous"), rotation=False) if previous_node else None
        )
        if cert is None or key is None or cert_id is None:
            return None
        return EncryptionCert(cert, key, cert_id, previous)
