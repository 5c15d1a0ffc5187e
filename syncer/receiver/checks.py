"""Judging each parsed notification: is it ours (subscription, clientState, tenant), may its rich content be trusted.

Split from :mod:`syncer.receiver.notifications`, which reads a POST into items (their shape only): this
module decides, item by item, what is stored as work, what is refused for good and what must wait
(Graph retries), with the validation tokens and decryption of :mod:`syncer.receiver.rich`. Pure: the
subscription lookup is handed in.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncer.errors import NotificationError
from syncer.receiver.notifications import Notification, NotificationCollection, Rejection
from syncer.receiver.rich import KeyRing, TokenValidator

# --- clientState --------------------------------------------------------------------------------


def client_state_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty expected secret never matches (it would accept anyone)."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass"))


# --- the whole check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionInfo:
    """What the receiver needs to know about one of our subscriptions (a row of ``syncer_subscriptions``)."""

    subscription_id: str
    tenant_id: str
    client_state: str = field(repr=False)
    scope_key: str
    include_resource_data: bool = False


#: Looks up several subscription ids at once; unknown ids are absent. May raise DatabaseError.
SubscriptionLookup = Callable[[Collection[str]], Mapping[str, SubscriptionInfo]]


@dataclass(frozen=True)
class Accepted:
    """A notification that passed every check, with its subscription and decrypted resource."""

    notification: Notification
    subscription: SubscriptionInfo
    decrypted: Mapping[str, Any] | None = None
    undecrypted: str | None = None
    """Why an encrypted item's content could not be decrypted (it is kept as a basic notification)."""


@dataclass(frozen=True)
class Verdict:
    """Item by item: stored as work (``accepted``), refused for good (``rejected``: the answer may still
    be 202, a forger learns nothing), or not decidable now (``deferred``: transient, the receiver
    answers 503 so that Graph retries the POST). ``problems`` are log lines about the deferrals."""

    accepted: tuple[Accepted, ...]
    rejected: tuple[Rejection, ...]
    deferred: tuple[Rejection, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass
class _TokenVerdict:
    """The POST's validation tokens, folded by tenant (``None``: a token whose tenant is unreadable)."""

    valid: set[str] = field(default_factory=set)
    refused: dict[str | None, str] = field(default_factory=dict)
    transient: dict[str | None, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def judge(self, tenant_id: str) -> tuple[str | None, bool]:
        """(reason, transient) for a rich item of *tenant_id*; ``(None, False)`` when a token covers it."""
        refused = self.refused.get(tenant_id) or self.refused.get(None)
        if refused is not None:
            return refused, False
        if tenant_id in self.valid:
            return None, False
        transient = self.transient.get(tenant_id) or self.transient.get(None)
        if transient is not None:
            return transient, True
        return "token_tenant", False


def _judge_tokens(raw_tokens: Sequence[str], tokens: TokenValidator | None) -> _TokenVerdict:
    judged = _TokenVerdict()
    for token in raw_tokens:
        if tokens is None:
            judged.refused.setdefault(None, "token_unverifiable")
            continue
        check = tokens.check(token)
        if check.outcome == "valid" and check.tenant_id is not None:
            judged.valid.add(check.tenant_id)
        elif check.outcome == "refused":
            judged.refused.setdefault(check.tenant_id, check.reason or "token_invalid")
        elif check.outcome == "transient":
            judged.transient.setdefault(check.tenant_id, check.reason or "token_unavailable")
            judged.problems.append(check.detail)
    return judged


def check_collection(
    collection: NotificationCollection,
    *,
    lookup: SubscriptionLookup,
    tokens: TokenValidator | None = None,
    keys: KeyRing | None = None,
) -> Verdict:
    """Decide, item by item, what may be stored as work, what is refused and what must wait.

    Validation tokens (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data#validation-tokens-in-the-change-notification):
    Graph puts one token per (app, tenant) of the items in a POST, and several apps may share a
    notification URL, so each token speaks only for its own (app, tenant):

    * a token for another application is ignored;
    * a token that claims one of our apps but fails a check (signature, issuer, ``appid``, expired:
      a replay) makes the *rich* items of its tenant suspicious: refused, whatever other tokens say;
      one that cannot even be read spoils the rich items of every tenant;
    * a token that cannot be judged now (not yet valid beyond the leeway: our clock is behind;
      signing keys unreachable) defers its tenant's rich items (503, Graph retries), unless a valid
      token covers that tenant;
    * an encrypted item needs a valid token for its tenant; content that does not decrypt makes it a basic
      item (``undecrypted`` says why), never a refusal.

    Items without ``encryptedContent`` need no token and are judged alone (subscription, clientState,
    tenant), whatever the tokens of the POST. May raise :class:`~syncer.errors.DatabaseError` (lookup).
    """
    rejected = list(collection.rejected)
    deferred: list[Rejection] = []
    notifications = collection.notifications
    raw_tokens = collection.validation_tokens
    judged: _TokenVerdict | None = None
    if raw_tokens and any(n.encrypted is not None for n in notifications):
        judged = _judge_tokens(raw_tokens, tokens)

    subscriptions = lookup({n.subscription_id for n in notifications}) if notifications else {}
    accepted: list[Accepted] = []
    for n in notifications:
        sub = subscriptions.get(n.subscription_id)
        reason: str | None = None
        transient = False
        decrypted: Mapping[str, Any] | None = None
        undecrypted: str | None = None
        if sub is None:
            reason = "unknown_subscription"
        elif not client_state_matches(sub.client_state, n.client_state):
            reason = "client_state_mismatch"
        elif n.tenant_id != sub.tenant_id:
            reason = "tenant_mismatch"
        elif n.encrypted is not None:
            reason, transient = ("token_missing", False) if judged is None else judged.judge(n.tenant_id)
            # Content that does not decrypt (a key rotated out, a signature mismatch) on an item whose
            # clientState and token are good is still a true "this changed": kept without content, and the
            # worker reads the resource by id. A lost change would be worse than one more GET.
            if reason is None and keys is None:
                undecrypted = "unknown_certificate"
            elif reason is None and keys is not None:
                try:
                    decrypted = keys.decrypt(n.encrypted)
                except NotificationError as exc:
                    undecrypted = exc.reason
        if reason is not None or sub is None:
            refusal = Rejection(n.index, reason or "unknown_subscription", n.subscription_id, n.tenant_id)
            (deferred if transient else rejected).append(refusal)
        else:
            accepted.append(Accepted(n, sub, decrypted, undecrypted))
    problems = tuple(dict.fromkeys(judged.problems)) if judged is not None and deferred else ()
    return Verdict(
        tuple(accepted), tuple(sorted(rejected, key=lambda r: r.index)), tuple(deferred), problems
    )


def reasons(rejections: Sequence[Rejection]) -> dict[str, int]:
    """Count rejections by reason (for metrics and logs)."""
    counts: dict[str, int] = {}
    for r in rejections:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    return counts
