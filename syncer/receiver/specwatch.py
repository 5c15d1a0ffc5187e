"""The receiver follows the applied spec: new decryption keys and app ids without a restart.

``syncer serve`` takes the certificates' private keys and the tenants' app ids (the audiences of
validation tokens) from subscriptions.yaml when it starts. When ``syncer db upgrade`` or ``syncer
reconcile`` later applies an edited file (a rotated certificate, a new tenant) they record its
fingerprint (:mod:`syncer.applied`), and reconcile then subscribes with the new certificate: Graph
encrypts with it from the next notification on. A receiver still holding the old keys would refuse
those notifications (and answer 202, so Graph would not retry them): data lost.

So each receiver process reads the applied fingerprint every few seconds (one indexed row); when it
differs from its own, it reads the spec file again and, if that file is the one applied, swaps in
its keys and token validator. A file that is not the applied one (edited again, or another host's
copy) is not guessed from: the receiver keeps what it has and says so once per fingerprint.
Database URL, listen address and URL paths are read once at start: changing them needs a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from syncer import applied
from syncer.errors import SyncerError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncer.receiver.receive import Receiver

log = logging.getLogger("syncer.receiver.specwatch")

DEFAULT_INTERVAL = 5.0
"""Seconds between two reads of the applied fingerprint (``SYNCER_RECEIVER_SPEC_CHECK``): reconcile
takes longer than this to create a subscription, so the keys are in place before Graph uses them."""

Rebuild = Callable[[Any], None]
"""Given the reloaded spec, install its keys and app ids in the receiver."""


class SpecWatch:
    """Compares the applied fingerprint with this receiver's, and reloads the spec when they differ."""

    def __init__(
        self, engine: Engine, path: Path, fingerprint: str, rebuild: Rebuild, *, interval: float = DEFAULT_INTERVAL
    ) -> None:
        self.engine = engine
        self.path = path
        self.fingerprint = fingerprint
        self.rebuild = rebuild
        self.interval = interval
        self.reloads = 0
        self._warned: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One comparison (and reload when due); True when the keys were reloaded."""
        from syncer.spec import load_spec

        with self.engine.connect() as connection:
            current = applied.current(connection)
        if current is None or current.fingerprint == self.fingerprint:
            return False
        spec = load_spec(self.path).resolve_emulator()
        if spec.fingerprint != current.fingerprint:
            if self._warned != current.fingerprint:
                self._warned = current.fingerprint
                log.warning(
                    "the database follows another spec (%s) than %s now holds: keeping this receiver's keys and "
                    "app ids; serve the file that was applied", current.describe(), self.path,
                )
            return False
        self.rebuild(spec)
        self.fingerprint = spec.fingerprint
        self.reloads += 1
        log.info("spec %s applied (%s): decryption keys and app ids reloaded", self.path, current.describe())
        return True

    def start(self) -> SpecWatch:
        self._thread = threading.Thread(target=self._loop, name="syncer-spec-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except (SyncerError, sa.exc.SQLAlchemyError, OSError) as error:
                # A database outage is the receiver's business (503s, /readyz); a spec that no longer
                # loads keeps the old keys. Either way, try again next time.
                log.warning("cannot check the applied spec: %s", error)


def install(receiver: Receiver, spec_path: Path, spec_fingerprint: str, build: Callable[[Any], tuple[Any, Any]],
            *, interval: float) -> SpecWatch:
    """Start a :class:`SpecWatch` for *receiver*; *build* maps a spec to its (token validator, key ring)."""

    def rebuild(spec: Any) -> None:
        # Built in full before either is swapped in: a key that fails to load leaves both as they were.
        tokens, keys = build(spec)
        receiver.tokens, receiver.keys = tokens, keys

    watch = SpecWatch(receiver.engine, spec_path, spec_fingerprint, rebuild, interval=interval).start()
    receiver.closers.append(watch.stop)
    return watch
