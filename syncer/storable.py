"""The one rule for U+0000 in Graph data that syncer stores: it becomes U+FFFD.

PostgreSQL cannot hold U+0000: "The character with the code zero (sometimes called NUL) cannot be
stored" in text (https://www.postgresql.org/docs/current/datatype-character.html), jsonb refuses the
``\\u0000`` escape, and a json value holding it cannot be turned into text (``->>``,
``json_to_recordset``: https://www.postgresql.org/docs/current/datatype-json.html). Graph's JSON may
still carry it in any string (a message subject, a display name). Left alone, such an item fails its
whole insert or COPY, and it fails again on every retry: a notification answered 503 forever, a
folder that never syncs again.

The rule: every U+0000 in a string (a value or an object key, at any depth) is replaced with U+FFFD
REPLACEMENT CHARACTER, wherever Graph data enters storage (inbox rows and payloads, mirror columns
and ``_raw``, ids), on SQLite as on PostgreSQL, so both backends hold the same rows and ``syncer
verify`` compares Graph's items under the same rule. Why replace, and why U+FFFD:

* the character stays visible (a reader sees that something was there; dropping it would silently
  join ``"a\\0b"`` into ``"ab"``, a different value Graph may also hold);
* one character for one: lengths and column limits that held for the original hold for the stored
  value, which an escape such as ``\\0`` would not;
* U+FFFD is Unicode's own mark for "a character that could not be represented".

Callers on hot paths test the JSON they already serialised with :func:`has_nul` (a JSON encoder
always writes U+0000 as the escape ``\\u0000``), and apply the rule only when it is there.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

REPLACEMENT = "\ufffd"
"""What U+0000 becomes."""

JSON_NUL = b"\\u0000"
"""How a JSON encoder (orjson included) writes U+0000 inside a string."""

T = TypeVar("T")


def has_nul(json_text: bytes | bytearray) -> bool:
    """Whether serialised JSON *json_text* may hold a U+0000 (a false positive only costs a walk)."""
    # A one-byte search is memchr (~50x faster than a six-byte one, measured): most of Graph's JSON
    # has no backslash at all, and the six-byte search starts from the first one.
    first = json_text.find(b"\\")
    return first >= 0 and json_text.find(JSON_NUL, first) >= 0


def storable(value: T) -> T:
    """*value* under the rule: each U+0000 in its strings and keys, at any depth, replaced with U+FFFD.

    Returns *value* itself (not a copy) when there is nothing to replace."""
    if isinstance(value, str):
        return _replace(value) if "\x00" in value else value
    if value is None or type(value) in (int, float, bool):
        return value
    try:
        clean = not has_nul(orjson.dumps(value))
    except TypeError:  # not JSON (a datetime in a caller's tuple...): walk it
        clean = False
    return value if clean else _replace(value)


def storable_json(value: Any) -> bytes:
    """*value* serialised as JSON under the rule (one serialisation when it holds no U+0000)."""
    data = orjson.dumps(value)
    return orjson.dumps(_replace(value)) if has_nul(data) else data


def _replace(value: Any) -> Any:
    # Recursive: Graph's items nest a few levels, and the receiver caps a notification's depth.
    if type(value) is str:
        return value.replace("\x00", REPLACEMENT)
    if isinstance(value, dict):
        return {_replace(k): _replace(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_replace(v) for v in value)
    if isinstance(value, list):
        return [_replace(v) for v in value]
    return value
