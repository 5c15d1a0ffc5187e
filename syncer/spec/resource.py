"""A subscription's ``resource``, and what Graph accepts with it: its change types and Teams' payment model.

Apart from :mod:`syncer.spec.subscriptions` (the declaration as a whole, its lifetimes, the checks across
declarations) because it is the spec's side of the catalogue :mod:`syncer.resources`: whether Graph sends
change notifications for a path, whether this tenant's kind of sign-in (app-only, delegated, a personal
account) may subscribe to it and in which cloud, a did-you-mean for a path it does not know, the change
types its resource type accepts and the ``model`` (A or B) Teams bills it under.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

import yaml

from syncer import resources
from syncer.resolve import RESOLVED_PATTERNS
from syncer.resources import ResourceType
from syncer.spec.model import CLOUDS, PERSONAL_ACCOUNT_TYPES, GraphConnection, Tenant
from syncer.spec.reader import Map

if TYPE_CHECKING:
    from syncer.spec.loader import SpecLoader


class ResourceLoader:
    """Reads a subscription's ``resource``, ``change_types`` and ``model`` with the shared readers of a :class:`SpecLoader`."""

    def __init__(self, loader: SpecLoader) -> None:
        self.loader = loader
        self.r = loader.r

    def resource(
        self, s: Map, graph: GraphConnection | None, tenant: Tenant | None = None
    ) -> tuple[str, ResourceType, dict[str, str]] | None:
        r, path, node = self.r, s.sub("resource"), s.get("resource")
        expected = "a Graph resource path like users or users/{user}/messages"
        if node is None:
            r.error(s, path, expected, "nothing")
            return None
        text = r.string(node, path, expected=expected)
        if text is None:
            return None
        if re.match(r"^[A-Za-z]+://", text):
            relative = re.sub(r"^[A-Za-z]+://[^/]+/(v1\.0/|beta/)?", "", text)
            r.error(
                node, path, "a path relative to the Graph root, not a URL", f"'{text}'", f"write '{relative}'"
            )
            return None
        bare, _query = resources.split_resource(text)
        others = [b for b in re.findall(r"\{[^}]*\}", bare) if b not in _FAN_OUT_PLACEHOLDERS]
        if others:
            r.error(
                node,
                path,
                "no placeholder but {user}, {team}, {channel} (expanded by for_each) or {list} (a user's To Do lists)",
                f"{others[0]} in '{text}'",
            )
            return None
        matched = resources.match_resource(text)
        if matched is None:
            r.error(
                node,
                path,
                "a resource Graph sends change notifications for (see docs/spec.md)",
                f"'{text}'",
                _suggest(bare),
            )
            return None
        rt, params = matched
        if "{list}" in bare and rt.key != "todoTask":
            r.error(node, path, "{list} only in users/{user}/todo/lists/{list}/tasks (each of a user's To Do lists)",
                    f"'{text}'")
            return None
        delegated = tenant is not None and tenant.delegated
        me = params.get("user", "").lower() == "me"
        if me and not delegated:
            r.error(
                node,
                path,
                "users/{id} or users/{user}: app-only auth has no signed-in user",
                f"'{text}'",
                "me/... needs a tenant with auth: delegated",
            )
        elif delegated and rt.app_only:
            r.error(node, path, "a resource a signed-in user may subscribe to", f"'{text}' ({rt.name}: application permissions only)")
        elif delegated and rt.per_mailbox and "user" in params and not me:
            # https://learn.microsoft.com/graph/permissions-overview: delegated permissions reach what the
            # signed-in user can; syncer does not mirror shared or delegated mailboxes (yet).
            r.error(
                node,
                path,
                f"me/... for {rt.name} with auth: delegated (the signed-in user's own mailbox)",
                f"'{text}'",
            )
        elif (
            tenant is not None
            and tenant.delegated
            and not tenant.personal
            and rt.delegated_paths is not None
            and resources.matching_pattern(rt, text) not in rt.delegated_paths
        ):
            # https://learn.microsoft.com/graph/teams-changenotifications-chatmessage and its siblings: per path,
            # whether a delegated permission exists; syncer's reads of the path must serve a user too.
            r.error(
                node,
                path,
                "a Teams path a signed-in user may declare: "
                + ", ".join(p for t in resources.CATALOGUE for p in t.delegated_paths or ()),
                f"'{text}' ({rt.key}: application permissions only"
                + (", its delta serves apps only)" if rt.delta_paths else ")"),
            )
        elif tenant is not None and tenant.personal and rt.name not in PERSONAL_ACCOUNT_TYPES:
            r.error(
                node,
                path,
                "a resource a personal Microsoft account may subscribe to: "
                + ", ".join(sorted(PERSONAL_ACCOUNT_TYPES)),
                f"'{text}' ({rt.name}: Graph grants no personal-account permission for it)",
            )
        elif rt.delegated_only and not delegated:
            r.error(
                node,
                path,
                "a tenant with auth: delegated (a signed-in user)",
                f"'{text}' ({rt.name}: Graph grants no application permission to subscribe to it)",
            )
        elif (problem := resources.presence_ids_problem(rt.name, text)) is not None:
            r.error(node, path, problem[0], problem[1])
        elif _query and (rt.key == "list" or resources.matching_pattern(rt, text) in RESOLVED_PATTERNS):
            # List subscriptions take no $filter (https://github.com/microsoftgraph/microsoft-graph-docs/issues/18955),
            # and a resolved path is subscribed as its canonical form: a query would be dropped unseen.
            r.error(
                node,
                path,
                f"no query string on a {rt.name} resource (Graph filters neither list nor library notifications)",
                f"'?{_query}' in '{text}'",
            )
        elif rt.global_only and graph is not None and graph.cloud in CLOUDS and graph.cloud != "global":
            r.error(
                node,
                path,
                f"a resource available in the {graph.cloud} cloud",
                f"'{text}' ({rt.name}: global cloud only)",
            )
        else:
            return text, rt, params
        return None

    def model(self, s: Map, rt: ResourceType, resource: str) -> str | None:
        """``model``: Teams' payment model (https://learn.microsoft.com/en-us/graph/teams-licenses), A or B.

        Also read from a ``?model=`` written in the resource itself; both must agree. Graph only takes it on
        the paths that list it, and only ``B`` on the per-user and per-app paths.
        """
        r, path, node = self.r, s.sub("model"), s.get("model")
        _bare, query = resources.split_resource(resource)
        in_query = next(
            (v for k, _, v in (part.partition("=") for part in query.split("&")) if k.strip() == "model"), None
        )
        declared = r.string(node, path, expected="A or B") if node is not None else None
        where, field_path = (node, path) if node is not None else (s.get("resource"), s.sub("resource"))
        if declared is not None and in_query is not None and declared != in_query:
            r.error(node, path, f"the model of the resource (model={in_query})", f"'{declared}'")
            return None
        value = declared if declared is not None else in_query
        if value is None:
            return None
        if not rt.models:
            r.error(
                where,
                field_path,
                f"no model for {rt.key} (Graph takes model= on getAllMessages, getAllMembers and per-user paths)",
                f"model {value}",
            )
            return None
        if value not in rt.models:
            allowed = " or ".join(sorted(rt.models))
            r.error(where, field_path, f"model {allowed} for {rt.key}", f"'{value}'")
            return None
        return value if in_query is None else None  # already in the resource as written

    def change_types(self, s: Map, rt: ResourceType) -> tuple[str, ...]:
        r, path, node = self.r, s.sub("change_types"), s.get("change_types")
        allowed = tuple(ct for ct in resources.CHANGE_TYPES if ct in rt.change_types)
        if node is None:
            return allowed
        items: list[tuple[str, yaml.Node, str]] = []
        if isinstance(node, yaml.ScalarNode):
            joined = r.string(node, path, expected="a list of change types") or ""
            items = [
                (part.strip(), node, path) for part in joined.split(",") if part.strip()
            ]  # Graph's "created,updated"
        else:
            for item_path, child in r.sequence(node, path, what="a list of change types"):
                text = r.string(child, item_path, expected="created, updated or deleted")
                if text is not None:
                    items.append((text.strip(), child, item_path))
        found: list[str] = []
        for value, where, item_path in items:
            if value not in resources.CHANGE_TYPES:
                close = difflib.get_close_matches(value, resources.CHANGE_TYPES, n=1)
                r.error(
                    where,
                    item_path,
                    "created, updated or deleted",
                    f"'{value}'",
                    f"did you mean '{close[0]}'?" if close else "",
                )
            elif value not in rt.change_types:
                hint = (
                    "Graph sends creation and soft deletion as updated"
                    if rt.name in ("user", "group")
                    else ""
                )
                r.error(
                    where,
                    item_path,
                    f"a change type Graph accepts for {rt.name}: {', '.join(allowed)}",
                    f"'{value}'",
                    hint,
                )
            elif value not in found:
                found.append(value)
        if isinstance(node, yaml.SequenceNode) and not node.value:
            r.error(node, path, "at least one change type", "an empty list")
        return tuple(ct for ct in resources.CHANGE_TYPES if ct in found)


_FAN_OUT_PLACEHOLDERS = ("{user}", "{team}", "{channel}", "{list}")


def _suggest(bare: str) -> str:
    """A did-you-mean for an unknown resource path: the pattern closest to it, segment counts equal."""
    segments = bare.split("/")
    if segments[0].lower() in ("sites", "groups") and segments[-1].lower() == "drives":
        # https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions: drives/{id}/root, one per library
        return "Graph subscribes one library at a time: sites/{site}/drive/root (the default one) or drives/{id}/root"
    if len(segments) > 2 and segments[0].lower() == "sites" and segments[1].endswith(":"):
        # https://learn.microsoft.com/en-us/graph/api/site-getbypath: the path ends with ":" before what follows it
        return "a site named by path ends with ':' before the rest (sites/{hostname}:/sites/ops:/lists/Issues)"
    best, best_ratio = "", 0.6
    for rt in resources.CATALOGUE:
        for pattern in rt.patterns:
            parts = pattern.split("/")
            if len(parts) != len(segments) or not _same_roots(parts, segments):
                continue
            filled = "/".join(
                seg if part.startswith("{") else part for part, seg in zip(parts, segments, strict=True)
            )
            ratio = difflib.SequenceMatcher(None, filled.lower(), bare.lower()).ratio()
            if ratio > best_ratio:
                best, best_ratio = pattern, ratio
    return f"did you mean '{best}'?" if best else ""


def _same_roots(parts: list[str], segments: list[str]) -> bool:
    """Whether each literal segment of a pattern is the given one or a typo of it.

    Scoring the whole path alone offered 'teams/{team}/members' for 'users/{user}/memberOf': the
    placeholders filled in make unrelated paths look alike. A different collection (users, teams)
    is a different resource, not a misspelling, and gets no suggestion.
    """
    for part, seg in zip(parts, segments, strict=True):
        if part.startswith("{"):
            continue
        if difflib.SequenceMatcher(None, part.lower(), seg.lower()).ratio() < 0.75:
            return False
    return True
