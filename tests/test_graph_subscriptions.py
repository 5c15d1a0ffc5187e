"""client.subscriptions against the emulator: typed create/get/list/update/delete/reauthorize, and the
errors Graph gives (duplicate 409, failed validation 400, gone 404), none of them retried."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from graph_fixtures import Harness, raises_typed
from webhook_receiver import Receiver

from syncer.errors import BadRequestError, ConflictError, NotFoundError
from syncer.graph import LiveSubscription

pytestmark = pytest.mark.usefixtures("no_secret_in_logs")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def in_(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def test_create_get_list_update_reauthorize_delete(harness: Harness, receiver: Receiver) -> None:
    client = harness.client()
    subs = client.subscriptions
    created = subs.create(
        "/users",
        ["updated", "deleted"],
        receiver.url("hook"),
        in_(120),
        client_state="state-for-test",
        lifecycle_notification_url=receiver.url("lifecycle"),
    )
    assert isinstance(created, LiveSubscription)
    assert created.change_types == ("updated", "deleted")
    assert created.notification_url == receiver.url("hook")
    assert created.lifecycle_notification_url == receiver.url("lifecycle")
    assert abs((created.expiration - in_(120)).total_seconds()) < 120
    assert created.application_id == harness.info["client_id"]
    assert len(receiver.validations) == 2  # both URLs were validated while create blocked

    got = subs.get(created.id)
    assert got.id == created.id and got.resource == created.resource

    listed = subs.list()
    assert [s.id for s in listed] == [created.id]
    assert listed[0].client_state is None  # List returns clientState as null (https://learn.microsoft.com/en-us/graph/api/subscription-list)

    renewed = subs.update(created.id, expiration=in_(600))
    assert renewed.expiration > created.expiration
    subs.reauthorize(created.id)
    assert subs.get(created.id).expiration == renewed.expiration  # reauthorize keeps the expiration

    subs.delete(created.id)
    assert subs.list() == []
    error = raises_typed(harness, lambda: subs.get(created.id), NotFoundError)
    assert error.status == 404
    error = raises_typed(harness, lambda: subs.update(created.id, expiration=in_(60)), NotFoundError)
    # get, renew, reauthorize, get, delete, get, renew: nothing retried
    statuses = [r["status"] for r in harness.requests_log(f"/subscriptions/{created.id}")]
    assert statuses == [200, 200, 204, 200, 204, 404, 404]


def test_duplicate_is_a_conflict_and_not_retried(harness: Harness, receiver: Receiver) -> None:
    client = harness.client()
    client.subscriptions.create("/users", ["updated"], receiver.url(), in_(60))
    error = raises_typed(
        harness,
        lambda: client.subscriptions.create("/users", ["updated"], receiver.url(), in_(60)),
        ConflictError,
    )
    assert error.status == 409 and error.request_id
    assert [r["status"] for r in harness.requests_log("/v1.0/subscriptions")] == [201, 409]


def test_failed_validation_is_a_bad_request(harness: Harness) -> None:
    client = harness.client()
    with Receiver(handshake="wrong") as bad:
        error = raises_typed(
            harness,
            lambda: client.subscriptions.create("/users", ["updated"], bad.url(), in_(60)),
            BadRequestError,
        )
    assert error.status == 400 and error.code
    assert client.subscriptions.list() == []


def test_update_needs_something_to_change(harness: Harness) -> None:
    client = harness.client()
    with pytest.raises(ValueError, match="expiration or notification_url"):
        client.subscriptions.update("x")
    with pytest.raises(ValueError):
        client.subscriptions.create("/users", ["updated"], "https://x", datetime(2030, 1, 1))
    client.get_json("/users")  # something at DEBUG for the log check
