"""The reconcile plan as a value: its actions (:class:`Action`, each of a :class:`Kind`) and the :class:`Plan`.

:func:`syncer.reconcile.plan.plan` decides them (pure); :mod:`syncer.reconcile.report` prints them,
:mod:`syncer.reconcile.apply` carries them out, :mod:`syncer.reconcile.records` and
:mod:`syncer.reconcile.lifecycle` record and repair with them, and tests assert on them. Nothing here
decides or does I/O: a plan is something one can print, serialise as JSON and compare.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from syncer.graph.times import format_datetime
from syncer.reconcile.desired import Desired, Expansion
from syncer.reconcile.quotas import QuotaProblem


class Kind(StrEnum):
    """What an action does. The order is the order actions are printed in."""

    CREATE = "create"
    REPLACE = "replace"
    UPDATE = "update"
    RENEW = "renew"
    ADOPT = "adopt"
    PRUNE = "prune"
    FORGET = "forget"
    KEEP = "keep"


CHANGING = frozenset(Kind) - {Kind.KEEP}
"""Kinds that write (to Graph or to our table): a plan with one of them has changes pending."""


@dataclass(frozen=True)
class Action:
    """One step of a plan. ``desired`` is None for prune and forget; ``subscription_id`` None for create."""

    kind: Kind
    tenant_id: str
    resource: str
    name: str | None = None
    subscription_id: str | None = None
    expires_at: datetime | None = None  # the live (or recorded) expiry now
    new_expires_at: datetime | None = None  # what we will ask Graph for
    changes: tuple[str, ...] = ()  # the fields that differ (update/replace) or why (prune)
    reason: str = ""
    desired: Desired | None = field(default=None, compare=False)

    @property
    def create_first(self) -> bool:
        """A replace onto another resource or change types: Graph allows both at once, so the new
        subscription is created before the old one is deleted (a failed create loses nothing)."""
        return self.kind == Kind.REPLACE and bool({"resource", "changeType"} & set(self.changes))

    @property
    def on_previous_certificate(self) -> bool:
        """Kept on the certificate being rotated out (it moves to the new one when it is renewed)."""
        return self.kind == Kind.KEEP and "encryptionCertificate" in self.changes

    @property
    def writes_graph(self) -> bool:
        """Whether applying it calls Graph (adopt only when it renews too)."""
        if self.kind in (Kind.KEEP, Kind.FORGET):
            return False
        return self.kind != Kind.ADOPT or self.new_expires_at is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no secret in it: the plan has none)."""
        return {
            "action": str(self.kind),
            "tenant_id": self.tenant_id,
            "name": self.name,
            "resource": self.resource,
            "subscription_id": self.subscription_id,
            "expires_at": _iso(self.expires_at),
            "new_expires_at": _iso(self.new_expires_at),
            "changes": list(self.changes),
            "reason": self.reason,
            "user": self.desired.user if self.desired else None,
        }


@dataclass(frozen=True)
class Plan:
    """What reconcile will do, as a value: print it, serialise it, test it, then apply it."""

    now: datetime
    actions: tuple[Action, ...]
    orphans: tuple[Action, ...] = ()  # prunes we would do with prune=True
    expansions: tuple[Expansion, ...] = ()
    problems: tuple[QuotaProblem | str, ...] = ()
    ignored: int = 0  # live subscriptions we cannot prove are ours: never touched
    prune: bool = False

    def counts(self) -> dict[str, int]:
        """Number of actions per kind, every kind present (zeros included), in print order."""
        counter = Counter(a.kind for a in self.actions)
        return {str(kind): counter.get(kind, 0) for kind in Kind}

    @property
    def has_changes(self) -> bool:
        """Whether applying would write anything (Graph or our table)."""
        return any(a.kind in CHANGING for a in self.actions)

    def of_kind(self, *kinds: Kind) -> list[Action]:
        """The actions of the given kinds, in plan order."""
        return [a for a in self.actions if a.kind in kinds]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole plan."""
        return {
            "now": _iso(self.now),
            "counts": self.counts(),
            "has_changes": self.has_changes,
            "prune": self.prune,
            "actions": [a.to_json() for a in self.actions],
            "orphans": [a.to_json() for a in self.orphans],
            "expansions": [
                {"name": e.name, "tenant_id": e.tenant_id, "source": e.source, "users": list(e.users)}
                for e in self.expansions
            ],
            "problems": [str(p) for p in self.problems],
            "ignored": self.ignored,
        }


def _iso(value: datetime | None) -> str | None:
    return format_datetime(value) if value is not None else None
