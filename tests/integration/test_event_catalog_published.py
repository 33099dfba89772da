"""What the services publish validates against the events catalog (docs/events/*.schema.json).

Real handlers on moto, events captured from the bus: a trial and a plan change, a cancellation
(into the grace period) and a reactivation, then a card and a charged subscription through the
Midtrans fake (payment method added, invoice created and paid). Each event's ``data`` must match
its type's schema, which forbids fields the catalog does not document."""

from __future__ import annotations

import json
from typing import Any

import boto3
import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock

from local.midtrans_fake import MidtransFake
from tagih.events.catalog import catalog
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.gateway_env import event_queue, received_events
from tests.fakes.lambda_runtime import Answer, call_api

SCHEMAS = {entry.type: entry.schema() for entry in catalog()}


def ok(answer: Answer) -> dict[str, Any]:
    assert answer.status < 300, answer.raw
    return answer.body


def test_published_events_match_the_catalog(midtrans: MidtransFake) -> None:
    queue = event_queue(BUS_NAME)
    trial = ok(call_api("POST", "/billing/subscriptions", body={}, org="org_trial"))
    ok(
        call_api(
            "POST", f"/billing/subscriptions/{trial['id']}/change", body={"plan": "business"}, org="org_trial"
        )
    )
    ok(call_api("POST", f"/billing/subscriptions/{trial['id']}/cancel", org="org_trial"))
    ok(call_api("POST", f"/billing/subscriptions/{trial['id']}/reactivate", org="org_trial"))

    boto3.resource("dynamodb").Table(TABLE_NAME).put_item(
        Item={"PK": "ORG#org_paying", "SK": "TRIALLED", "entity": "trial_marker"}
    )
    card = ok(
        call_api(
            "POST",
            "/billing/payment-methods",
            body={"type": "credit_card", "token": "481111-1114-one-time-7d1b"},
            org="org_paying",
        )
    )
    ok(
        call_api(
            "POST",
            "/billing/subscriptions",
            body={"plan": "pro", "payment_method_id": card["id"]},
            org="org_paying",
        )
    )

    events = [event["detail"] for event in received_events(queue)]
    seen = set()
    for event in events:
        assert isinstance(event, dict)
        envelope = {**event, "sequence": 1}  # what a delivery adds to the bus's envelope
        jsonschema.validate(envelope, SCHEMAS[str(event["type"])])
        seen.add(event["type"])
    assert {
        "billing.subscription.created",
        "billing.subscription.updated",
        "billing.payment_method.added",
        "billing.invoice.created",
        "billing.invoice.paid",
    } <= seen, sorted(seen)
    assert json.dumps(events)  # plain JSON, as the bus carries it
