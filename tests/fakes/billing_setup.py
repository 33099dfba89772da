"""Setting up an organization's billing through the API, as the billing integration tests do.

Cards are tokenized by the local Midtrans fake, which declines a saved token containing
``decline``: ``set_card_token`` swaps a method's saved token to make its next charges fail (or
succeed again), the way a real card starts declining."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import boto3

from local.midtrans_fake import MidtransFake
from tagih.domain.gateway_names import charge_reference
from tagih.domain.invoices import Invoice
from tagih.domain.payments import Payment
from tests.conftest import TABLE_NAME
from tests.fakes.gateway_env import received_events
from tests.fakes.lambda_runtime import call_api

CARD_TOKEN = "481111-1114-one-time-7d1b"
DECLINING = "481111-decline-saved-1114"


def add_method(org: str, body: dict[str, Any]) -> str:
    answer = call_api("POST", "/billing/payment-methods", body=body, org=org)
    assert answer.status == 201, answer.raw
    return str(answer.body["id"])


def set_card_token(org: str, method_id: str, token: str) -> str:
    """Replace the method's saved gateway token; returns the one it had."""
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    key = {"PK": f"ORG#{org}", "SK": f"PM#{method_id}"}
    saved = str(table.get_item(Key=key)["Item"]["gateway_payment_method_id"])
    table.update_item(
        Key=key,
        UpdateExpression="SET gateway_payment_method_id = :token",
        ExpressionAttributeValues={":token": token},
    )
    return saved


def pay_by_transfer(org: str) -> str:
    """A BCA virtual account becomes what the organization's subscription pays with: its id."""
    bca = add_method(org, {"type": "bank_transfer", "bank": "bca"})
    boto3.resource("dynamodb").Table(TABLE_NAME).update_item(
        Key={"PK": f"ORG#{org}", "SK": "SUBSCRIPTION"},
        UpdateExpression="SET payment_method_id = :bca",
        ExpressionAttributeValues={":bca": bca},
    )
    return bca


def first_attempt_in_flight(invoice: Invoice, card: str, at: datetime) -> Payment:
    """The record a charge of the invoice's first attempt leaves while the gateway has not answered
    (a Lambda that died there leaves it so), for what the invoice has due."""
    return Payment(
        organization_id=invoice.organization_id,
        reference=charge_reference(invoice.id, 1),
        purpose="invoice",
        subject_id=invoice.id,
        attempt=1,
        gateway="midtrans",
        payment_method_id=card,
        amount=invoice.amount_due,
        currency=invoice.currency,
        status="processing",
        created_at=at,
        updated_at=at,
    )


def mark_trialled(org: str) -> None:
    """The organization had its trial already: its next subscription is charged at once."""
    boto3.resource("dynamodb").Table(TABLE_NAME).put_item(
        Item={"PK": f"ORG#{org}", "SK": "TRIALLED", "entity": "trial_marker"}
    )


def invoice_charges(midtrans: MidtransFake) -> list[dict[str, Any]]:
    """Charges of invoices (adding a card also makes a verification charge, left out)."""
    return [c for c in midtrans.charges if str(c["order_id"]).startswith("inv_")]


def event_types(queue: str) -> list[str]:
    """The detail types of the events ``queue`` received (``gateway_env.event_queue``), in order."""
    return [str(e["detail-type"]) for e in received_events(queue)]
