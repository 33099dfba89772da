"""Subscribing on the local stack over HTTP: a trial, then (for an organization that already had
its trial) a Business subscription paid by BCA virtual account, pending until the payer transfers
(``/_local/midtrans/settle``): the fake's signed notification reaches ``/webhooks/midtrans``, the
invoice is paid and the subscription active, and each step's event is on the bus."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e


def new_org() -> str:
    return f"org_sub_{uuid.uuid4().hex[:8]}"


def events_of(stack: LocalStack, org: str) -> list[str]:
    items = stack.request("GET", "/_local/events").json()["items"]
    return [e["detail-type"] for e in items if e["detail"]["organization_id"] == org]


def test_a_new_organization_gets_a_trial_of_the_cheapest_paid_plan(local_stack: LocalStack) -> None:
    org = new_org()
    owner = local_stack.headers(org, "owner")
    free = local_stack.request("GET", "/billing/subscription", headers=owner).json()
    assert (free["plan"], free["status"], free["id"]) == ("free", "active", None)

    created = local_stack.request("POST", "/billing/subscriptions", headers=owner, json={})

    assert created.status_code == 201, created.text
    assert (created.json()["plan"], created.json()["status"]) == ("pro", "trialing")
    assert local_stack.request("GET", "/billing/subscription", headers=owner).json() == created.json()
    assert local_stack.request("GET", "/billing/invoices", headers=owner).json()["total"] == 0
    assert events_of(local_stack, org) == ["billing.subscription.created"]


def test_a_virtual_account_subscription_activates_when_the_transfer_settles(local_stack: LocalStack) -> None:
    org = new_org()
    owner = local_stack.headers(org, "owner")
    # This organization had its trial before (history the API cannot fake): it pays at once.
    table = local_stack.aws_client("dynamodb")
    [table_name] = table.list_tables()["TableNames"]
    table.put_item(TableName=table_name, Item={"PK": {"S": f"ORG#{org}"}, "SK": {"S": "TRIALLED"}})
    bca = local_stack.request(
        "POST", "/billing/payment-methods", headers=owner, json={"type": "bank_transfer", "bank": "bca"}
    ).json()

    created = local_stack.request(
        "POST",
        "/billing/subscriptions",
        headers=owner,
        json={"plan": "business", "payment_method_id": bca["id"]},
    )

    assert created.status_code == 201, created.text
    assert created.json()["status"] == "incomplete"
    [invoice] = local_stack.request("GET", "/billing/invoices", headers=owner).json()["items"]
    assert (invoice["status"], invoice["subtotal"], invoice["tax"], invoice["total"]) == (
        "open",
        990_000,
        108_900,
        1_098_900,
    )
    assert invoice["number"].startswith("INV-")
    assert invoice["tax_name"] == "PPN"

    settled = local_stack.request(
        "POST", "/_local/midtrans/settle", json={"order_id": invoice["gateway_invoice_id"]}
    )

    assert settled.status_code == 200, settled.text
    assert settled.json()["notification"]["status"] == 200
    paid = local_stack.request("GET", f"/billing/invoices/{invoice['id']}", headers=owner).json()
    assert (paid["status"], paid["amount_paid"], paid["amount_due"]) == ("paid", 1_098_900, 0)
    assert local_stack.request("GET", "/billing/subscription", headers=owner).json()["status"] == "active"
    assert events_of(local_stack, org) == [
        "billing.payment_method.added",
        "billing.subscription.created",
        "billing.invoice.created",
        "billing.invoice.paid",
        "billing.subscription.updated",
    ]
    # A second settlement of the same order changes nothing.
    again = local_stack.request(
        "POST", "/_local/midtrans/settle", json={"order_id": invoice["gateway_invoice_id"]}
    )
    assert again.json()["notification"]["status"] == 200
    assert events_of(local_stack, org)[-1] == "billing.subscription.updated"
    assert len(events_of(local_stack, org)) == 5
