"""Reading a YAML document field by field, with the file and line of every value.

:mod:`syncer.spec` builds frozen dataclasses from subscriptions.yaml; this module is what lets it
say *where* a value is wrong. The document is parsed once (``yaml.compose`` with the safe loader:
the same parse ``yaml.safe_load`` does, but keeping each node's line), then :class:`Reader` hands
out typed values while it collects every problem as a :class:`~syncer.errors.SpecError` instead of
stopping at the first one. It also does ``${VAR}`` / ``${VAR:-default}`` interpolation in string
values and parses durations.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import yaml

from syncer.errors import SpecError, SpecErrors, SpecLocation

T = TypeVar("T")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_FLOAT = "tag:yaml.org,2002:float"

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# The patterns below are used with fullmatch: "$" also matches before a trailing newline.
_WHOLE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_ISO_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def describe(node: yaml.Node | None) -> str:
    """How a value looks to the user, for the 'found ...' half of a message."""
    if node is None:
        return "nothing"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = str(node.value)
    shown = value if len(value) <= 60 else value[:57] + "..."
    if node.tag == _NULL:
        return "null"
    if node.tag == _STR:
        return f"'{shown}'" if value else "an empty string"
    if node.tag == _BOOL:
        return f"{shown} (a boolean)"
    if node.tag in (_INT, _FLOAT):
        return f"{shown} (a number)"
    return shown


def format_duration(value: timedelta) -> str:
    """A duration the way the spec writes it: 4230m, 36h, 7d."""
    minutes, seconds = divmod(int(value.total_seconds()), 60)
    if seconds:
        return f"{int(value.total_seconds())}s"
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def parse_duration(text: str) -> timedelta | None:
    """``90m``, ``36h``, ``2d``, ``1h30m``, ``1w`` or ISO-8601 ``PT2H`` / ``P1DT2H``; None if not a duration."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if match and any(match.groups()):
        w, d, h, m, s = (int(g) if g else 0 for g in match.groups())
        return timedelta(weeks=w, days=d, hours=h, minutes=m, seconds=s)
    match = _ISO_DURATION.fullmatch(text.upper())
    if match and any(match.groups()):
        w, d, h, m = (int(g) if g else 0 for g in match.groups()[:4])
        return timedelta(weeks=w, days=d, hours=h, minutes=m, seconds=float(match.group(5) or 0))
    return None


@dataclass
class Map:
    """A YAML mapping whose keys were checked: values by key, and where the mapping is."""

    node: yaml.MappingNode
    path: str
    values: dict[str, yaml.Node]

    def __contains__(self, key: str) -> bool:
        """Whether *key* is given a value (``key:`` and ``key: null`` count as not given)."""
        return self.get(key) is not None

    def get(self, key: str) -> yaml.Node | None:
        node = self.values.get(key)
        return None if node is None or node.tag == _NULL else node  # "key:" and "key: null" = not given

    def sub(self, key: str) -> str:
        """The field path of *key* inside this mapping."""
        return f"{self.path}.{key}" if self.path else key

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1


class Reader:
    """Typed access to a composed YAML document that records problems instead of raising."""

    def __init__(self, file: str, *, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.errors: list[SpecError] = []
        self._constructor = yaml.constructor.SafeConstructor()

    # --- errors -------------------------------------------------------------------------------

    def error(
        self, where: yaml.Node | Map | int | None, path: str, expected: str, found: str = "", hint: str = ""
    ) -> None:
        """Record a problem at a node (or a mapping, or a line number)."""
        if isinstance(where, Map):
            line = where.line
        elif isinstance(where, yaml.Node):
            line = where.start_mark.line + 1
        else:
            line = where or 0
        self.errors.append(SpecError(SpecLocation(self.file, line, path), expected, found, hint))

    def raise_errors(self) -> None:
        """Raise every recorded problem at once, if any."""
        if self.errors:
            raise SpecErrors(self.errors)

    # --- structure ------------------------------------------------------------------------------

    def mapping(
        self, node: yaml.Node | None, path: str, allowed: tuple[str, ...], *, what: str = "a mapping"
    ) -> Map | None:
        """The mapping at *node* with only *allowed* keys (unknown ones refused with a did-you-mean)."""
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, what, describe(node))
            return None
        own = {id(k) for k, _v in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self._constructor.flatten_mapping(node)  # YAML merge keys (<<: *anchor): merged pairs come first
        values: dict[str, yaml.Node] = {}
        merged: set[str] = set()
        for key_node, value_node in node.value:
            if id(key_node) not in own:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value in allowed:
                    values[key_node.value] = value_node
                    merged.add(key_node.value)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.error(key_node, path, "string keys", describe(key_node))
                continue
            key = key_node.value
            key_path = f"{path}.{key}" if path else key
            if key in values and key not in merged:
                self.error(key_node, key_path, "each key once", "a second " + repr(key))
            elif key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(allowed)
                self.error(key_node, key_path, "a known key", f"unknown key '{key}'", hint)
            else:
                values[key] = value_node  # an explicit key overrides a merged one
                merged.discard(key)
        return Map(node, path, values)

    def sequence(
        self, node: yaml.Node | None, path: str, *, what: str = "a list"
    ) -> Iterator[tuple[str, yaml.Node]]:
        """The items of the list at *node* with their field paths; a scalar or mapping is refused."""
        if node is None:
            return
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, what, describe(node))
            return
        for index, item in enumerate(node.value):
            yield f"{path}[{index}]", item

    # --- scalars --------------------------------------------------------------------------------

    def interpolate(self, node: yaml.ScalarNode, path: str) -> str | None:
        """The string value of *node* with ``${VAR}``, ``${VAR:-default}`` and ``$$`` replaced."""
        missing: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            value = self.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    missing.append(name)
                    return ""
                return default
            return value

        text = _VAR.sub(substitute, str(node.value))
        for name in missing:
            self.error(
                node,
                path,
                f"environment variable {name} to be set",
                f"{name} unset",
                f"set it, or write ${{{name}:-default}}",
            )
        return None if missing else text

    def scalar(self, node: yaml.Node | None, path: str, expected: str) -> yaml.ScalarNode | None:
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, expected, describe(node))
            return None
        return node

    def string(self, node: yaml.Node | None, path: str, *, expected: str = "a string") -> str | None:
        """A non-empty string (interpolated); numbers are refused so that ids keep their leading zeros."""
        scalar = self.scalar(node, path, expected)
        if scalar is None:
            return None
        if scalar.tag != _STR:
            self.error(scalar, path, expected, describe(scalar), "quote it")
            return None
        text = self.interpolate(scalar, path)
        if text is not None and not text.strip():
            self.error(scalar, path, expected, "an empty string")
            return None
        return text

    def integer(self, node: yaml.Node | None, path: str, *, low: int, high: int) -> int | None:
        """An integer in [low, high]; a string that interpolates to digits is accepted."""
        expected = f"an integer from {low} to {high}"
        scalar = self.scalar(node, path, expected)
        if scalar is None:
            return None
        text = self.interpolate(scalar, path) if scalar.tag == _STR else str(scalar.value)
        if text is None:
            return None
        if scalar.tag not in (_INT, _STR) or not re.fullmatch(r"\d+", text.strip()):
            self.error(scalar, path, expected, describe(scalar))
            return None
        value = int(text)
        if not low <= value <= high:
            self.error(scalar, path, expected, str(value))
            return None
        return value

    def boolean(self, node: yaml.Node | None, path: str) -> bool | None:
        """true / false (also from an interpolated string)."""
        scalar = self.scalar(node, path, "true or false")
        if scalar is None:
            return None
        if scalar.tag == _BOOL:
            return bool(self._constructor.construct_yaml_bool(scalar))
        text = self.interpolate(scalar, path) if scalar.tag == _STR else None
        if text is not None and text.lower() in ("true", "false"):
            return text.lower() == "true"
        self.error(scalar, path, "true or false", describe(scalar))
        return None

    def choice(self, node: yaml.Node | None, path: str, choices: tuple[str, ...]) -> str | None:
        """One of *choices*, with a did-you-mean."""
        expected = "one of " + ", ".join(choices)
        text = self.string(node, path, expected=expected)
        if text is None:
            return None
        if text not in choices:
            close = difflib.get_close_matches(text, choices, n=1, cutoff=0.6)
            self.error(node, path, expected, f"'{text}'", f"did you mean '{close[0]}'?" if close else "")
            return None
        return text

    def duration(
        self, node: yaml.Node | None, path: str, *, allow_max: bool = False, low: timedelta | None = None
    ) -> timedelta | str | None:
        """A duration (see :func:`parse_duration`), or the string ``max`` when *allow_max*."""
        expected = "a duration like 90m, 36h, 2d or PT2H" + (", or max" if allow_max else "")
        scalar = self.scalar(node, path, expected)
        if scalar is None:
            return None
        if scalar.tag in (_INT, _FLOAT):
            self.error(
                scalar, path, expected, f"{scalar.value} (a number without a unit)", f"write {scalar.value}m?"
            )
            return None
        if scalar.tag != _STR:
            self.error(scalar, path, expected, describe(scalar))
            return None
        text = self.interpolate(scalar, path)
        if text is None:
            return None
        if allow_max and text.strip() == "max":
            return "max"
        value = parse_duration(text)
        if value is None:
            self.error(scalar, path, expected, f"'{text}'")
            return None
        if low is not None and value < low:
            self.error(scalar, path, f"at least {format_duration(low)}", f"'{text}'")
            return None
        return value

    def list_of(
        self,
        node: yaml.Node | None,
        path: str,
        item: Callable[[yaml.Node, str], T | None],
        *,
        what: str = "a list",
    ) -> list[T] | None:
        """A list whose items are read by *item*; a single scalar is refused (say it as a list)."""
        if node is None:
            return None
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, what, describe(node))
            return None
        values = [item(child, child_path) for child_path, child in self.sequence(node, path)]
        return [v for v in values if v is not None]

    @staticmethod
    def whole_env_reference(node: yaml.Node) -> str | None:
        """``NAME`` when the raw scalar is exactly ``${NAME}`` (a secret given as an env reference)."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            match = _WHOLE_VAR.fullmatch(str(node.value).strip())
            if match:
                return match.group(1)
        return None

    @staticmethod
    def raw(node: yaml.Node) -> Any:
        """The raw (uninterpolated) scalar text."""
        return node.value if isinstance(node, yaml.ScalarNode) else None


def compose(text: str, file: str) -> yaml.Node | None:
    """Parse *text* once, keeping line numbers; a syntax error becomes a located :class:`SpecErrors`."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise SpecErrors([SpecError(SpecLocation(file, line, ""), "valid YAML", problem)]) from exc
    except yaml.YAMLError as exc:
        raise SpecErrors([SpecError(SpecLocation(file, 0, ""), "valid YAML", str(exc))]) from exc
