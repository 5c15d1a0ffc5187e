"""Pure parts of syncer.graph that need no server: mailbox detection, semaphores, page parsing,
subscription JSON, clouds, URL handling of the client, transport error mapping."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from syncer.errors import ConnectError, ForeignOriginError, GraphError
from syncer.graph import limits
from syncer.graph.auth import CLOUDS, ClientSecretCredential, cloud, graph_root, graph_scope
from syncer.graph.client import GraphClient
from syncer.graph.delta import parse_page
from syncer.graph.retry import RetryPolicy
from syncer.graph.subscriptions import LiveSubscription
from syncer.graph.times import format_datetime, parse_datetime


@pytest.mark.parametrize(
    ("url", "mailbox"),
    [
        ("https://graph.microsoft.com/v1.0/users/ABC/messages", "abc"),
        ("/users/ada@contoso.com/mailFolders/inbox/messages/delta?$select=id", "ada@contoso.com"),
        ("/users('ABC')/events", "abc"),
        ("/users/abc", None),
        ("/users/delta?$select=id", None),
        ("/users/delta", None),
        ("/groups/g1/members", None),
        ("/subscriptions", None),
    ],
)
def test_mailbox_of(url: str, mailbox: str | None) -> None:
    assert limits.mailbox_of(url) == mailbox


def test_tenant_semaphores_are_shared_per_tenant() -> None:
    a = limits.tenant_semaphore("T-units", 4)
    assert limits.tenant_semaphore("t-units", 4) is a
    assert limits.tenant_semaphore("t-other", 4) is not a


def test_idle_mailbox_semaphores_are_dropped() -> None:
    before = limits.mailboxes_tracked()
    with limits.slot("t-drop", "box-1", per_tenant=4, per_mailbox=2):
        with limits.slot("t-drop", "box-1", per_tenant=4, per_mailbox=2):
            assert limits.mailboxes_tracked() == before + 1
        with limits.slot("t-drop", "box-2", per_tenant=4, per_mailbox=2):
            assert limits.mailboxes_tracked() == before + 2
    assert limits.mailboxes_tracked() == before


def test_an_envelope_holds_a_mailbox_slot_per_item_beside_single_calls() -> None:
    """A $batch of 3 items of one mailbox waits while 2 single calls hold 2 of its 4 slots, and 2 envelopes of
    3 each never deadlock (each would hold part of what the other waits for)."""
    entered = threading.Event()
    release = threading.Event()

    def single() -> None:
        with limits.slot("t-env", "box", per_tenant=10, per_mailbox=4):
            entered.set()
            release.wait(5)

    singles = [threading.Thread(target=single) for _ in range(2)]
    for t in singles:
        t.start()
    assert entered.wait(5)
    time.sleep(0.05)  # both singles inside
    envelope_in = threading.Event()

    def envelope() -> None:
        with limits.slots("t-env", {"box": 3}, per_tenant=10, per_mailbox=4):
            envelope_in.set()

    e = threading.Thread(target=envelope)
    e.start()
    assert not envelope_in.wait(0.3)  # 2 + 3 > 4: it waits
    release.set()
    assert envelope_in.wait(5)
    e.join(5)
    for t in singles:
        t.join(5)

    inside, peak, lock = 0, 0, threading.Lock()

    def three() -> None:
        nonlocal inside, peak
        with limits.slots("t-env", {"box": 3, "other": 2}, per_tenant=10, per_mailbox=4):
            with lock:
                inside += 3
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 3

    threads = [threading.Thread(target=three) for _ in range(6)] + [threading.Thread(target=single) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)  # no deadlock
    assert peak == 3  # never two envelopes of 3 in one mailbox of 4


def test_slot_caps_concurrency_across_threads() -> None:
    inside = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, peak
        with limits.slot("t-slot", "box", per_tenant=10, per_mailbox=3):
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


def test_parse_page_delta_and_next() -> None:
    page = parse_page(
        b'{"@odata.nextLink": "https://g/v1.0/users/delta?$skiptoken=x", "value": [{"id": "1"}]}'
    )
    assert page.items == [{"id": "1"}] and page.next_link and page.delta_link is None and not page.last
    last = parse_page(b'{"@odata.deltaLink": "https://g/v1.0/users/delta?$deltatoken=y", "value": []}')
    assert last.items == [] and last.last and last.delta_link.endswith("deltatoken=y")  # type: ignore[union-attr]


def test_parse_page_rejects_non_collections() -> None:
    with pytest.raises(GraphError):
        parse_page(b"[1]")
    with pytest.raises(GraphError):
        parse_page(b'{"value": 3}')
    assert parse_page(b'{"id": "x"}').items == []


SUB = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
    "id": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
    "resource": "users",
    "changeType": "updated,deleted",
    "notificationUrl": "https://hook.example/n",
    "expirationDateTime": "2026-03-20T11:00:00.1234567Z",
    "clientState": None,
    "applicationId": "app",
    "creatorId": "sp",
    "latestSupportedTlsVersion": "v1_2",
    "includeResourceData": None,
    "encryptionCertificate": "",
}


def test_live_subscription_from_json() -> None:
    sub = LiveSubscription.from_json(SUB)
    assert sub.change_types == ("updated", "deleted")
    assert sub.expiration == datetime(2026, 3, 20, 11, 0, 0, 123456, tzinfo=UTC)
    assert sub.client_state is None and sub.include_resource_data is False
    assert sub.raw["@odata.context"].endswith("$entity")


def test_live_subscription_missing_field_names_it() -> None:
    with pytest.raises(GraphError, match="notificationUrl"):
        LiveSubscription.from_json({k: v for k, v in SUB.items() if k != "notificationUrl"})


def test_datetimes_round_trip() -> None:
    value = datetime(2026, 3, 20, 13, 0, tzinfo=timezone(timedelta(hours=2)))
    text = format_datetime(value)
    assert text == "2026-03-20T11:00:00.0000000Z"
    assert parse_datetime(text) == value
    assert parse_datetime("2026-03-20T11:00:00+00:00") == value
    assert parse_datetime("2026-03-20T11:00:00.5Z").microsecond == 500000
    with pytest.raises(ValueError):
        format_datetime(datetime(2026, 1, 1))


def test_clouds() -> None:
    assert set(CLOUDS) == {"global", "usgov", "usgov-dod", "china"}
    assert cloud("usgov-dod").graph_url == "https://dod-graph.microsoft.us"
    assert cloud("usgov-dod").authority_host == "https://login.microsoftonline.us"
    assert cloud("china").scope == "https://microsoftgraph.chinacloudapi.cn/.default"
    emu = cloud(
        "custom",
        graph_url="https://127.0.0.1:8443/",
        authority_host="https://127.0.0.1:8443",
        ca_bundle="/x.pem",
    )
    assert emu.graph_url == "https://127.0.0.1:8443" and emu.ca_bundle == "/x.pem"
    with pytest.raises(ValueError, match="custom"):
        cloud("mars")
    with pytest.raises(ValueError):
        cloud("custom")
    assert graph_root("https://graph.microsoft.com/v1.0/") == "https://graph.microsoft.com"
    assert graph_scope("https://graph.microsoft.us/beta") == "https://graph.microsoft.us/.default"


def test_credentials_pick_instance_discovery_by_host() -> None:
    ms = ClientSecretCredential("https://login.microsoftonline.com", "t", "c", "s")
    local = ClientSecretCredential("https://127.0.0.1:9", "t", "c", "s")
    assert ms.instance_discovery and not local.instance_discovery
    assert "s" not in repr(local).replace("ClientSecretCredential", "").replace("https", "")
    with pytest.raises(ValueError):
        ClientSecretCredential("http://login.microsoftonline.com", "t", "c", "s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StaticCredential:
    tenant_id = "t-static"

    def token(self, scopes: tuple[str, ...], *, refused: str | None = None) -> str:
        return "static-token"


def test_client_urls_and_origin_check() -> None:
    client = GraphClient("https://graph.microsoft.com", StaticCredential())
    assert client.base_url == "https://graph.microsoft.com/v1.0"
    assert client.url_for("/users") == "https://graph.microsoft.com/v1.0/users"
    assert client.url_for("users/x") == "https://graph.microsoft.com/v1.0/users/x"
    assert client.url_for("https://GRAPH.microsoft.com/v1.0/users?$skiptoken=1").endswith("skiptoken=1")
    with pytest.raises(ForeignOriginError, match="refusing"):
        client.url_for("https://evil.example/v1.0/users")
    assert GraphClient("https://graph.microsoft.com/beta/", StaticCredential()).base_url.endswith("/beta")
    assert client.scopes == ("https://graph.microsoft.com/.default",)


def test_connection_refused_is_a_connect_error_retried_even_for_post() -> None:
    # Nothing listens on the port: the request is never sent, so even a POST may be repeated.
    client = GraphClient(
        f"https://127.0.0.1:{_free_port()}",
        StaticCredential(),
        retry=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.01),
    )
    slept: list[float] = []
    client._sleep = slept.append
    with pytest.raises(GraphError) as info:
        client.request("POST", "/subscriptions", json={})
    assert len(slept) == 2
    error = info.value
    assert type(error).__name__ == "RetryBudgetExhausted"
    assert isinstance(error.last_error, ConnectError)  # type: ignore[attr-defined]
    assert error.last_error.client_request_id  # type: ignore[attr-defined]


def test_unreachable_identity_platform_is_a_retried_transport_error() -> None:
    port = _free_port()
    credential = ClientSecretCredential(
        f"https://127.0.0.1:{port}", "tenant", "client", "secret-value", timeout=2
    )
    client = GraphClient(
        f"https://127.0.0.1:{port}",
        credential,
        retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.01),
    )
    client._sleep = lambda seconds: None
    with pytest.raises(GraphError) as info:
        client.get_json("/users")
    assert type(info.value).__name__ == "RetryBudgetExhausted"
    assert "identity platform" in str(info.value) and "secret-value" not in str(info.value)
