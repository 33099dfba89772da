"""Tenant webhooks on the local stack, over HTTP, with a receiver on 127.0.0.1 as a developer runs it:
a plan change reaches the receiver signed with the endpoint's secret (stored KMS-encrypted); a
receiver that answers 500 twice gets three attempts, all in the delivery log, and processes the
event once (the local stack backs off in seconds: template parameters set by ``local.stack``).
Outcomes are polled with a deadline."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tagih.domain.webhook_signing import HEADER, verify
from tests.e2e.conftest import LocalStack, eventually
from tests.fakes.webhooks import running_receiver

pytestmark = pytest.mark.e2e


def new_org() -> str:
    return f"org_hook_{uuid.uuid4().hex[:8]}"


def test_a_plan_change_is_delivered_signed_with_the_endpoint_secret(local_stack: LocalStack) -> None:
    org = new_org()
    owner = local_stack.headers(org, "owner")
    with running_receiver() as receiver:
        created = local_stack.request(
            "POST",
            "/billing/webhooks",
            headers=owner,
            json={"url": receiver.url, "events": ["billing.subscription.updated"]},
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        # At rest the secret is the stack's KMS key's ciphertext (moto's KMS here), never the secret.
        stored = local_stack.aws_client("dynamodb").get_item(
            TableName="tagih-local-BillingTable",
            Key={"PK": {"S": f"ORG#{org}"}, "SK": {"S": f"HOOK#{created.json()['id']}"}},
        )["Item"]
        assert stored["secret"]["S"].startswith("kms:")
        assert secret not in json.dumps(stored)
        trial = local_stack.request("POST", "/billing/subscriptions", headers=owner, json={}).json()

        changed = local_stack.request(
            "POST", f"/billing/subscriptions/{trial['id']}/change", headers=owner, json={"plan": "business"}
        )

        assert changed.status_code == 200, changed.text
        [request] = eventually(receiver.requests, "a delivery of billing.subscription.updated")
        assert verify(request.headers[HEADER], request.body, secret, now=int(time.time()))
        body = json.loads(request.body)
        assert (body["type"], body["organization_id"], body["sequence"]) == (
            "billing.subscription.updated",
            org,
            1,
        )
        assert (body["data"]["plan"], body["data"]["id"]) == ("business", trial["id"])
        published = local_stack.request("GET", "/_local/events?type=billing.subscription.updated").json()[
            "items"
        ]
        assert body["id"] in {e["detail"]["id"] for e in published}
        hook = created.json()["id"]
        log = eventually(
            lambda: [
                d
                for d in local_stack.request(
                    "GET", f"/billing/webhooks/{hook}/deliveries", headers=owner
                ).json()["items"]
                if d["status"] == "succeeded"
            ],
            "the delivery logged as succeeded",
        )
        assert log[0]["event_id"] == body["id"]


def test_a_receiver_failing_twice_gets_three_logged_attempts_and_processes_the_event_once(
    local_stack: LocalStack,
) -> None:
    org = new_org()
    owner = local_stack.headers(org, "owner")
    processed: list[str] = []
    with running_receiver(statuses=[500, 500, 200]) as receiver:
        hook = local_stack.request(
            "POST", "/billing/webhooks", headers=owner, json={"url": receiver.url, "events": ["*"]}
        ).json()

        queued = local_stack.request("POST", f"/billing/webhooks/{hook['id']}/test", headers=owner)

        assert queued.status_code == 202, queued.text

        def succeeded() -> list[dict[str, Any]]:
            items = local_stack.request(
                "GET", f"/billing/webhooks/{hook['id']}/deliveries", headers=owner
            ).json()
            return [d for d in items["items"] if d["status"] == "succeeded"]

        [delivery] = eventually(succeeded, "the third attempt to succeed")
        for request in receiver.requests():
            if request.answered == 200 and verify(
                request.headers[HEADER], request.body, hook["secret"], now=int(time.time())
            ):
                processed.append(json.loads(request.body)["id"])
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
        assert all(a["at"] and a["latency_ms"] >= 0 for a in delivery["attempts"])
        assert delivery["attempts"][0]["response_excerpt"] == "receiver says no"
        assert [r.answered for r in receiver.requests()] == [500, 500, 200]
        assert processed == [queued.json()["event_id"]]
