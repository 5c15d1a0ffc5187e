"""Prometheus metrics of the receiver (and the worker's rows written), in the text exposition format, written by hand.

Why not prometheus_client: we need a handful of counters and one histogram, and the receiver runs as
several gunicorn worker processes, where prometheus_client needs its multiprocess mode (an env var
set before import, mmap files, a cleanup hook per dead worker). The same effect here is ~150 lines
with no dependency: each process keeps its numbers in memory and, when a directory is configured,
writes a snapshot of them there about once a second; a scrape (served by whichever worker) sums its
own live numbers with every other process's latest snapshot. Counters stay monotonic across worker
restarts because a dead worker's last snapshot stays in the directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Seconds; the interesting range is "well under Graph's 3-second allowance".
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HELP = {
    "syncer_receiver_requests_total": ("counter", "HTTP requests answered, by endpoint and status"),
    "syncer_notifications_received_total": ("counter", "notification items received in POST bodies"),
    "syncer_notifications_stored_total": ("counter", "notification items newly stored in the inbox"),
    "syncer_notifications_duplicate_total": ("counter", "accepted items absorbed as duplicates of waiting rows"),
    "syncer_notifications_rejected_total": ("counter", "notification items refused, by reason"),
    "syncer_notifications_undecrypted_total": ("counter", "rich items kept without content (could not be decrypted), by reason"),
    "syncer_rows_written_total": ("counter", "mirror rows written by the worker, by source: payload, fetch, delta"),
    "syncer_notified_marked_total": ("counter", "notifications that marked their scopes dirty instead of being written "
                                     "from a payload or a read by id, by reason: many, failed, unplaced"),
    "syncer_handshakes_total": ("counter", "validation handshakes answered"),
    "syncer_inbox_commits_total": ("counter", "inbox transactions committed by the receiver"),
    "syncer_inbox_committed_requests_total": ("counter", "requests whose rows those transactions carried (group commit)"),
    "syncer_inbox_commit_seconds": ("histogram", "duration of one group-commit transaction"),
    "syncer_inbox_store_seconds": ("histogram", "time a request waited for its notifications to be committed"),
    "syncer_inbox_depth": ("gauge", "inbox rows not processed yet"),
    "syncer_sign_in_required": ("gauge", "1 while a delegated account must sign in again (syncer login NAME), else 0"),
}

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: LabelKey, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in key]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """Counters and histograms of one process; thread-safe; optionally shared through *directory*."""

    def __init__(
        self, *, directory: str | Path | None = None, buckets: tuple[float, ...] = DEFAULT_BUCKETS, flush_interval: float = 1.0
    ) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._hists: dict[str, dict[str, Any]] = {}
        self.buckets = buckets
        self.directory = Path(directory) if directory else None
        self._own_file = self.directory / f"{os.getpid()}.json" if self.directory else None
        self._stop = threading.Event()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._flusher = threading.Thread(target=self._flush_loop, args=(flush_interval,), daemon=True, name="syncer-metrics")
            self._flusher.start()

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key: LabelKey = tuple(sorted(labels.items())) if labels else ()
        with self._lock:
            family = self._counters.setdefault(name, {})
            family[key] = family.get(key, 0) + amount

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            hist = self._hists.get(name)
            if hist is None:
                hist = self._hists[name] = {"counts": [0] * (len(self.buckets) + 1), "sum": 0.0, "count": 0}
            index = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
            hist["counts"][index] += 1
            hist["sum"] += value
            hist["count"] += 1

    def record_commit(self, requests: int, rows: int, seconds: float) -> None:
        """One group commit: how many requests it carried and how long it took."""
        self.inc("syncer_inbox_commits_total")
        self.inc("syncer_inbox_committed_requests_total", requests)
        self.observe("syncer_inbox_commit_seconds", seconds)

    def record_stored(self, endpoint: str, *, received: int, stored: int, duplicates: int, seconds: float) -> None:
        """A notification POST whose accepted items were committed: every counter under one lock."""
        index = next((i for i, b in enumerate(self.buckets) if seconds <= b), len(self.buckets))
        with self._lock:
            c = self._counters
            for name, key, amount in (
                ("syncer_receiver_requests_total", (("endpoint", endpoint), ("status", "202")), 1),
                ("syncer_notifications_received_total", (), received),
                ("syncer_notifications_stored_total", (), stored),
                ("syncer_notifications_duplicate_total", (), duplicates),
            ):
                if amount:
                    family = c.setdefault(name, {})
                    family[key] = family.get(key, 0) + amount
            hist = self._hists.get("syncer_inbox_store_seconds")
            if hist is None:
                hist = self._hists["syncer_inbox_store_seconds"] = {
                    "counts": [0] * (len(self.buckets) + 1), "sum": 0.0, "count": 0,
                }
            hist["counts"][index] += 1
            hist["sum"] += seconds
            hist["count"] += 1

    def value(self, name: str, **labels: str) -> float:
        """This process's counter value (tests)."""
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    # --- sharing between processes ---

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": {n: [[list(map(list, k)), v] for k, v in fam.items()] for n, fam in self._counters.items()},
                "hists": {n: {"counts": list(h["counts"]), "sum": h["sum"], "count": h["count"]} for n, h in self._hists.items()},
                "buckets": list(self.buckets),
            }

    def flush(self) -> None:
        """Write this process's snapshot for the others (atomic rename: readers never see half a file)."""
        if self._own_file is None:
            return
        tmp = self._own_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self._own_file)

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(OSError):
                self.flush()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.flush()

    def _merged(self) -> dict[str, Any]:
        snapshots = [self.snapshot()]
        if self.directory is not None:
            for path in self.directory.glob("*.json"):
                if path == self._own_file:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    snapshots.append(json.loads(path.read_text()))
        counters: dict[str, dict[LabelKey, float]] = {}
        hists: dict[str, dict[str, Any]] = {}
        for snap in snapshots:
            for name, entries in snap.get("counters", {}).items():
                family = counters.setdefault(name, {})
                for key_list, value in entries:
                    key = tuple((str(k), str(v)) for k, v in key_list)
                    family[key] = family.get(key, 0) + value
            if snap.get("buckets") != list(self.buckets):
                continue
            for name, h in snap.get("hists", {}).items():
                acc = hists.setdefault(name, {"counts": [0] * (len(self.buckets) + 1), "sum": 0.0, "count": 0})
                acc["counts"] = [a + b for a, b in zip(acc["counts"], h["counts"], strict=False)]
                acc["sum"] += h["sum"]
                acc["count"] += h["count"]
        return {"counters": counters, "hists": hists}

    def render(
        self, *, gauges: Mapping[str, float | None] | None = None,
        labelled: Mapping[str, Mapping[LabelKey, float]] | None = None,
    ) -> str:
        """The text exposition of every process's numbers plus *gauges* (None = unknown, omitted) and
        *labelled* gauges (name -> labels -> value)."""
        merged = self._merged()
        lines: list[str] = []

        def header(name: str) -> None:
            kind, text = HELP.get(name, ("untyped", name))
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        for name in sorted(merged["counters"]):
            header(name)
            for key, value in sorted(merged["counters"][name].items()):
                lines.append(f"{name}{_labels(key)} {_fmt(value)}")
        for name in sorted(merged["hists"]):
            h = merged["hists"][name]
            header(name)
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), h["counts"], strict=True):
                cumulative += count
                lines.append(f'{name}_bucket{{le="{_fmt(bound)}"}} {cumulative}')
            lines.append(f"{name}_sum {_fmt(h['sum'])}")
            lines.append(f"{name}_count {h['count']}")
        for name, value in (gauges or {}).items():
            if value is None:
                continue
            header(name)
            lines.append(f"{name} {_fmt(value)}")
        for name, values in (labelled or {}).items():
            if values:
                header(name)
                lines += [f"{name}{_labels(key)} {_fmt(value)}" for key, value in sorted(values.items())]
        return "\n".join(lines) + "\n"
