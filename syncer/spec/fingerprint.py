"""The fingerprint of what a spec declares, which :mod:`syncer.applied` records and compares.

It covers what decides the data: every declaration (resource, change types, mirror columns, fan-out,
intervals...) and each tenant's identity (name, tenant id, app id, how it signs in), not where a file puts
its secrets or how a host reaches its database (two hosts may render one spec with their own
paths and URLs and still follow the same spec). Line numbers are left out too: moving a
declaration changes nothing. Sets are sorted, so the fingerprint is the same in every process.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable
from datetime import timedelta
from pathlib import PurePath
from typing import Any

TENANT_FIELDS = ("name", "tenant_id", "client_id", "auth", "authority", "account")
LEFT_OUT = frozenset({"line"})


def fingerprint(subscriptions: Iterable[Any], tenants: Iterable[Any]) -> str:
    """sha256 (hex) of the declarations and the tenants' identities."""
    data = {
        "subscriptions": [_canonical(s) for s in subscriptions],
        "tenants": [{f: _canonical(getattr(t, f, None)) for f in TENANT_FIELDS} for t in tenants],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in LEFT_OUT
        }
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
