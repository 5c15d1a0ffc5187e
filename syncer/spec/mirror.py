"""The mirror section of a subscription: the table it writes and the Graph properties it copies as columns.

Apart from :mod:`syncer.spec.subscriptions` because it is the spec's side of :mod:`syncer.mirror`:
SQL identifiers for tables and columns, column types (declared, known from
:mod:`syncer.resources`, or guessed from the property name) and the rule that no two subscriptions
write to the same table (a group's ``<table>_members`` included).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING

import yaml

from syncer import owners as owners_of
from syncer.resources import ResourceType
from syncer.spec.model import COLUMN_TYPES, Column, History, Mirror, Subscription
from syncer.spec.reader import Map

if TYPE_CHECKING:
    from syncer.spec.loader import SpecLoader

MAX_GROUP_TABLE = 63 - len("_members")
GRAPH_TIMED = frozenset({"message", "event", "contact", "todoTask", "driveItem", "list", "chatMessage", "callRecord", "alert"})
"""Resource types whose items carry Graph's own time of their last change (``lastModifiedDateTime``)."""
_FIELD_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch: "$" would let "mail\n" through


def column_name(field: str) -> str:
    """The default SQL column of a Graph property: ``from.emailAddress.address`` -> ``from_email_address_address``."""
    return "_".join(re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", part).lower() for part in field.split("."))


def default_table(name: str) -> str:
    """The default mirror table of a subscription: its name as a SQL identifier."""
    table = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return table if table[:1].isalpha() else f"t_{table}"


class MirrorLoader:
    """Reads each subscription's ``mirror`` with the shared readers of a :class:`SpecLoader`."""

    def __init__(self, loader: SpecLoader) -> None:
        self.loader = loader
        self.r = loader.r

    def claim_tables(
        self,
        sub: Subscription,
        path: str,
        nodes: dict[str, yaml.Node],
        item: yaml.Node,
        tables: dict[str, str],
    ) -> None:
        """Record the tables *sub* writes to, refusing one another subscription already writes to."""
        mirror_node = nodes.get("mirror")
        table_node = (
            next((v for k, v in mirror_node.value if k.value == "table"), None)
            if isinstance(mirror_node, yaml.MappingNode)
            else None
        )
        where = table_node or nodes.get("name") or item
        claimed = {sub.mirror.table: path}
        if sub.mirror.history is not None:  # syncer.history keeps the versions beside the mirror
            claimed.update({f"{t}_history": f"the history view of {path}" for t in list(claimed)})
            claimed[f"{sub.mirror.table}_versions"] = f"the versions table of {path}"
        if sub.resource_type.key == "group":  # syncer.mirror keeps group membership in <table>_members
            claimed[f"{sub.mirror.table}_members"] = f"the members table of {path}"
            if sub.mirror.history is not None:
                claimed[f"{sub.mirror.table}_members_history"] = f"the members history table of {path}"
            if len(sub.mirror.table) > MAX_GROUP_TABLE:
                self.r.error(
                    where,
                    f"{path}.mirror.table",
                    f"a group table name of at most {MAX_GROUP_TABLE} characters (<table>_members must fit in 63)",
                    f"'{sub.mirror.table}'",
                )
        for table, owner in claimed.items():
            if len(table) > 63:  # only a history table can get there (<table>_versions, <table>_members_history)
                self.r.error(
                    where, f"{path}.mirror.table", f"a table name short enough for {table[len(sub.mirror.table):]} (63 characters)",
                    f"'{sub.mirror.table}'",
                )
            if table in tables:
                self.r.error(
                    where,
                    f"{path}.mirror.table",
                    "a table used by one subscription",
                    f"'{table}' (also {tables[table]})",
                )
            tables.setdefault(table, owner)

    def mirror(
        self, s: Map, rt: ResourceType | None, name: str | None, *, default_delete: str, resource: str | None = None
    ) -> Mirror | None:
        """The ``mirror`` of subscription *s* (its table and columns), or None after recording what is wrong."""
        r, path = self.r, s.sub("mirror")
        mm = r.mapping(s.get("mirror"), path, ("table", "columns", "delete"))
        if s.get("mirror") is not None and mm is None:
            return None
        table_node = mm.get("table") if mm else None
        table_text = (
            r.string(table_node, f"{path}.table", expected="a table name")
            if table_node
            else (default_table(name) if name else None)
        )
        table = (
            self.loader.sql_name(table_node or s.get("name"), f"{path}.table", table_text, column=False)
            if table_text
            else None
        )
        columns = (
            r.list_of(mm.get("columns"), f"{path}.columns", lambda n, p: self.column(n, p, rt))
            if mm
            else None
        ) or []
        seen: dict[str, str] = {}
        for index, column in enumerate(columns):
            if column.name in seen:
                r.error(
                    mm.get("columns") if mm else s,
                    f"{path}.columns[{index}]",
                    "each column name once",
                    f"'{column.name}' again (also {seen[column.name]})",
                )
            seen.setdefault(column.name, column.field)
        delete = (
            r.choice(mm.get("delete"), f"{path}.delete", ("soft", "hard"))
            if mm and mm.get("delete")
            else default_delete
        )
        if table is None or delete is None:
            return None
        # The owning ids every table of the type gets (a declared column of the same name wins).
        indexed: list[str] = []
        for field, owner, owner_type in rt.owner_columns if rt is not None else ():
            if owner not in seen:
                columns.append(Column(field, owner, owner_type))
            indexed.append(owner)
        # Owners the scope tells (a mailbox's user_id), unless a declared or item-field column has the name.
        owners = [
            c for c in (owners_of.columns_for(rt, resource) if rt is not None and resource else ())
            if c not in seen and c not in indexed
        ]
        history = self.history(s, rt)
        return Mirror(table, tuple(columns), delete, (*indexed, *owners), tuple(owners), history)

    def history(self, s: Map, rt: ResourceType | None) -> History | None:
        """``history: true`` or ``history: {keep: 400d}`` of subscription *s* (None: no history)."""
        r, node, path = self.r, s.get("history"), s.sub("history")
        if node is None:
            return None
        time_field = "lastModifiedDateTime" if rt is not None and rt.key.split(".")[0] in GRAPH_TIMED else None
        if isinstance(node, yaml.MappingNode):
            h = r.mapping(node, path, ("keep",))
            keep = r.duration(h.get("keep"), h.sub("keep"), low=timedelta(days=1)) if h and h.get("keep") else None
            return History(keep if isinstance(keep, timedelta) else None, time_field)
        on = r.boolean(node, path)
        return History(None, time_field) if on else None

    def column(self, node: yaml.Node, path: str, rt: ResourceType | None) -> Column | None:
        r = self.r
        expected = "a property name or {field, column, type}"
        name_node: yaml.Node | None = None
        field_node: yaml.Node
        column_type: str | None = None
        if isinstance(node, yaml.ScalarNode):
            field, field_node = r.string(node, path, expected=expected), node
        else:
            c = r.mapping(node, path, ("field", "column", "type"), what=expected)
            if c is None:
                return None
            field_node = c.get("field") or node
            field = r.string(
                c.get("field"), c.sub("field"), expected="a Graph property, dotted for nested ones"
            )
            if "field" not in c:
                r.error(c, c.sub("field"), "the Graph property to copy (field)", "nothing")
            name_node = c.get("column")
            column_type = r.choice(c.get("type"), c.sub("type"), COLUMN_TYPES) if c.get("type") else None
            if c.get("type") and column_type is None:
                return None
        if field is None:
            return None
        path_field = path if isinstance(node, yaml.ScalarNode) else f"{path}.field"
        segments = field.split(".")
        if not _FIELD_SEGMENT.fullmatch(segments[0]) or not all(
            _FIELD_SEGMENT.fullmatch(p) or p.isdigit() for p in segments[1:]
        ):
            r.error(
                field_node,
                path_field,
                "a Graph property name, dotted for nested ones (from.emailAddress.address)",
                f"'{field}'",
            )
            return None
        if field == "id":
            r.error(
                field_node,
                path_field,
                "a property other than id",
                "'id'",
                "every mirror table has an id column already",
            )
            return None
        if name_node is not None:
            text = r.string(name_node, f"{path}.column", expected="a column name")
            name = self.loader.sql_name(name_node, f"{path}.column", text, column=True) if text else None
        else:
            name = self.loader.sql_name(field_node, path_field, column_name(field), column=True)
            if name is None:
                return None
        if name is None:
            return None
        if column_type is None:
            known = rt.field_type(field) if rt is not None and len(segments) == 1 else None
            column_type = known or ("datetime" if segments[-1].endswith("DateTime") else "text")
        return Column(field, name, column_type)
