"""Webhook signing secrets at rest: the table holds KMS ciphertext bound to its endpoint, deliveries
are still signed with the secret the tenant was shown, and endpoints stored in clear before
encryption keep working until their next rotation encrypts them. moto's KMS does the encryption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tagih.clock import epoch_seconds
from tagih.domain.webhook_signing import HEADER, verify
from tagih.store.webhook_secrets import reset_secret_sealer
from tagih.store.webhooks import default_webhook_items, endpoint_key
from tests.conftest import TABLE_NAME
from tests.fakes.lambda_runtime import call_api
from tests.fakes.webhooks import running_receiver
from tests.integration.test_webhooks import ORG, Queues, create, deliver, publish, pump, queues

__all__ = ["queues"]  # the fixture, shared with the webhook tests


def stored(webhook_id: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    return dict(table.get_item(Key=endpoint_key(ORG, webhook_id), ConsistentRead=True)["Item"])


def overwrite(webhook_id: str, **attributes: str) -> None:
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    table.put_item(Item={**stored(webhook_id), **attributes})


def signed_with(request_headers: dict[str, str], body: bytes, secret: str) -> bool:
    return verify(request_headers[HEADER], body, secret, now=epoch_seconds(datetime.now(UTC)))


def test_the_table_holds_ciphertext_and_deliveries_are_signed_with_the_secret_shown(queues: Queues) -> None:
    with running_receiver() as receiver:
        created = create(receiver.url).body
        item = stored(created["id"])
        assert item["secret"].startswith("kms:")
        assert created["secret"] not in json.dumps(item, default=str)

        publish()
        deliver(queues, receiver, 1)
        [request] = receiver.requests()
        assert signed_with(request.headers, request.body, created["secret"])


def test_a_ciphertext_copied_onto_another_endpoint_does_not_decrypt(queues: Queues) -> None:
    first = create("https://93.184.216.34/a").body["id"]
    second = create("https://93.184.216.34/b").body["id"]
    overwrite(second, secret=stored(first)["secret"])
    with pytest.raises(ClientError) as refused:
        default_webhook_items().get(ORG, second)
    assert refused.value.response["Error"]["Code"] == "InvalidCiphertextException"
    assert default_webhook_items().get(ORG, first).secret.startswith("whsec_")


def test_an_endpoint_stored_in_clear_still_delivers_and_its_rotation_encrypts_both_secrets(
    queues: Queues,
) -> None:
    legacy = "whsec_" + "a" * 32  # the form items had before encryption
    with running_receiver() as receiver:
        webhook_id = create(receiver.url).body["id"]
        overwrite(webhook_id, secret=legacy)

        publish()
        deliver(queues, receiver, 1)
        assert signed_with(receiver.requests()[0].headers, receiver.requests()[0].body, legacy)

        rotated = call_api("POST", f"/billing/webhooks/{webhook_id}/rotate-secret")
        assert rotated.status == 200, rotated.raw
        item = stored(webhook_id)
        assert item["secret"].startswith("kms:")
        assert item["previous_secret"].startswith("kms:")
        assert legacy not in json.dumps(item, default=str)

        publish()
        deliver(queues, receiver, 2)
        latest = receiver.requests()[1]
        # During the overlap the delivery carries a signature for each secret.
        assert signed_with(latest.headers, latest.body, rotated.body["secret"])
        assert signed_with(latest.headers, latest.body, legacy)


@pytest.fixture
def kms_decrypts() -> Iterator[list[str]]:
    """The ``kms:Decrypt`` calls a cold process makes from now on (the sealer's next client is
    created from the default session, with this hook)."""
    calls: list[str] = []
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    session = boto3.DEFAULT_SESSION
    assert session is not None

    def count(**_: Any) -> None:
        calls.append("Decrypt")

    reset_secret_sealer()
    session.events.register("before-call.kms.Decrypt", count, unique_id="count-decrypts")
    yield calls
    session.events.unregister("before-call.kms.Decrypt", unique_id="count-decrypts")


def test_listing_and_fanning_out_open_no_secret_and_signing_does(
    queues: Queues, kms_decrypts: list[str]
) -> None:
    ids = [create(f"https://93.184.216.34/{n}").body["id"] for n in range(3)]
    reset_secret_sealer()  # a cold process: nothing opened yet

    listed = call_api("GET", "/billing/webhooks")
    publish()
    fanned_out = pump(queues.events)

    assert (listed.status, len(listed.body["items"])) == (200, 3)
    assert fanned_out == 1
    assert kms_decrypts == []
    # What signs a delivery opens the endpoint's secret.
    assert default_webhook_items().get(ORG, ids[0]).secret.startswith("whsec_")
    assert kms_decrypts == ["Decrypt"]
