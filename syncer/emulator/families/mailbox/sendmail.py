"""``POST /users/{id|upn}/sendMail``: mail that arrives the way it does in a tenant
(https://learn.microsoft.com/graph/api/user-sendmail).

The sender needs Mail.Send. Each recipient in the tenant (to, cc and bcc, found by user principal name or ``mail``)
gets an unread copy in their Inbox; the sender gets a read copy in Sent Items unless ``saveToSentItems`` is false.
Every copy is a ``created`` message in its folder, so subscriptions and delta see it like any other new mail. The
copies share ``internetMessageId`` and ``conversationId``; bcc recipients are visible only on the sender's copy.
Addresses outside the tenant are accepted and go nowhere (the internet is not emulated). ``202 Accepted``, no body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response

from syncer.emulator.api import emulator_state, json_body
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.users import find_user, users_of
from syncer.emulator.families.mailbox.items import ensure_mailbox, new_item
from syncer.emulator.families.mailbox.kinds import MESSAGE
from syncer.emulator.identity import require_app
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("mailbox_send", __name__, url_prefix="/v1.0")

SEND_ROLES = frozenset({"Mail.Send"})
_RECIPIENT_FIELDS = ("toRecipients", "ccRecipients", "bccRecipients")
#: What a message to send may carry (https://learn.microsoft.com/graph/api/resources/message).
_SENDABLE = {"subject", "body", "toRecipients", "ccRecipients", "bccRecipients", "replyTo", "importance", "categories",
             "isDeliveryReceiptRequested", "isReadReceiptRequested", "internetMessageHeaders", "flag", "from"}


def _addresses(message: dict[str, Any], field: str) -> list[str]:
    value = message.get(field) or []
    if not isinstance(value, list):
        raise GraphHTTPError(400, "ErrorInvalidRecipients", f"'{field}' must be a collection of recipients.")
    out = []
    for recipient in value:
        address = ((recipient or {}).get("emailAddress") or {}).get("address") if isinstance(recipient, dict) else None
        if not isinstance(address, str) or "@" not in address:
            raise GraphHTTPError(400, "ErrorInvalidRecipients",
                                 "At least one recipient is not valid., Recipient '' is not resolved. All recipients must be resolved before a message can be submitted.")
        out.append(address)
    return out


def _recipient(ts: TenantStore, address: str) -> dict[str, Any] | None:
    """The tenant user an address reaches: by UPN, else by ``mail``."""
    user = find_user(ts, address)
    if user is not None:
        return user
    lowered = address.lower()
    for _, candidate in users_of(ts).iter_live() if not users_of(ts).blocks else ():
        if str(candidate.get("mail") or "").lower() == lowered:
            return candidate
    return None


def send_mail(state: EmulatorState, ts: TenantStore, sender: dict[str, Any], message: dict[str, Any],
              *, save_to_sent: bool) -> list[str]:
    """Deliver *message*; returns the ids of the copies made (sender's first when saved)."""
    unknown = [k for k in message if k not in _SENDABLE and not k.startswith("@odata.")]
    if unknown:
        raise GraphHTTPError(400, "RequestBodyRead", f"The property '{unknown[0]}' does not exist on type "
                             "'microsoft.graph.message'. Make sure to only use property names that are defined by the type.")
    recipients = {field: _addresses(message, field) for field in _RECIPIENT_FIELDS}
    if not any(recipients.values()):
        raise GraphHTTPError(400, "ErrorInvalidRecipients", "At least one recipient is required.")
    props = {k: v for k, v in message.items() if k in _SENDABLE and k != "from"}
    sender_id = str(sender["id"])
    ensure_mailbox(state, ts, sender_id)
    email = {"emailAddress": {"name": sender.get("displayName"),
                              "address": sender.get("mail") or sender.get("userPrincipalName")}}
    shared = {"internetMessageId": f"<{state.store.new_guid()}@emulator>",
              "conversationId": state.store.new_outlook_id()[:40],
              "from": email, "sender": email, "sentDateTime": state.store.now_iso()}
    made: list[str] = []
    if save_to_sent:
        folder = ts.well_known[(sender_id, "sentitems")]
        col = ts.collection(MESSAGE, {"user": sender_id, "mailFolder": folder})
        item = new_item(state, MESSAGE, col, props, user=sender, draft=False)
        item.update(shared, isRead=True, parentFolderId=folder)
        state.store.put(col, item["id"], item, change_type="created")
        made.append(str(item["id"]))
    delivered: set[str] = set()
    for address in (a for field in _RECIPIENT_FIELDS for a in recipients[field]):
        with state.lock:
            user = _recipient(ts, address)
        if user is None or str(user["id"]) in delivered:
            continue  # outside the tenant, or already delivered to (one copy per mailbox)
        uid = str(user["id"])
        delivered.add(uid)
        ensure_mailbox(state, ts, uid)
        folder = ts.well_known[(uid, "inbox")]
        col = ts.collection(MESSAGE, {"user": uid, "mailFolder": folder})
        item = new_item(state, MESSAGE, col, {**props, "bccRecipients": []}, user=sender, draft=False)
        item.update(shared, isRead=False, parentFolderId=folder)
        state.store.put(col, item["id"], item, change_type="created")
        made.append(str(item["id"]))
    return made


@bp.post("/users/<ukey>/sendMail")
def send_mail_view(ukey: str) -> Response:
    """POST /users/{id|upn}/sendMail {"message": {...}, "saveToSentItems": true}: 202."""
    ctx = require_app(*SEND_ROLES, family="outlook")
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    sender = find_user(ts, ukey)
    if sender is None:
        raise GraphHTTPError(404, "ErrorInvalidUser", f"The requested user '{ukey}' is invalid.")
    body = json_body()
    message = body.get("message")
    if not isinstance(message, dict):
        raise GraphHTTPError(400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty.")
    save = body.get("saveToSentItems", True)
    if not isinstance(save, bool):
        raise GraphHTTPError(400, "RequestBodyRead", f"Cannot convert the literal '{save}' to the expected type 'Edm.Boolean'.")
    send_mail(state, ts, sender, message, save_to_sent=save)
    return Response(b"", status=202)
