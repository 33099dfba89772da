"""Issue 3 end to end on the local stack: a billing account, then a Midtrans card, a BCA virtual
account, a GoPay wallet and a Stripe card created on localstripe; the list, the one default, a
switch of the default; and afterwards no card number, CVC or one-time card token anywhere in the
stack's logs or in any stored item."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from tests.e2e.conftest import LocalStack
from tests.fakes.lambda_runtime import ROOT

pytestmark = pytest.mark.e2e

METHODS = "/billing/payment-methods"
STRIPE_CARD = "4242424242424242"
MIDTRANS_CARD = "4811111111111114"
CVC = "987"
FUNCTION_LOGS = ROOT / "local" / ".state" / "logs"


def stripe_js_card(stack: LocalStack, number: str) -> str:
    """What Stripe.js does in the payer's browser: the card goes to Stripe, a ``pm_…`` comes back."""
    response = requests.post(
        f"{stack.health['stripe_endpoint']}/v1/payment_methods",
        auth=(stack.gateway_secret("stripe")["secret_key"], ""),
        data={
            "type": "card",
            "card[number]": number,
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": CVC,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def midtrans_js_token() -> str:
    """What Midtrans.js hands the browser for a card: a one-time token (BIN, last4, random)."""
    return f"481111-1114-{uuid.uuid4()}"


def stored_items(stack: LocalStack) -> list[dict[str, Any]]:
    dynamodb = stack.aws_client("dynamodb")
    [table] = dynamodb.list_tables()["TableNames"]
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items.extend(page["Items"])
    return items


def function_logs() -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted(FUNCTION_LOGS.glob("*.log")))


def test_an_organization_adds_four_methods_and_switches_the_default(local_stack: LocalStack) -> None:
    org = f"org_pm_{uuid.uuid4().hex[:8]}"
    owner = local_stack.headers(org, "owner")
    account = local_stack.request(
        "POST",
        "/billing/accounts",
        headers=owner,
        json={"name": "PT Contoh", "email": "finance@contoh.co.id"},
    )
    assert account.status_code == 201, account.text

    one_time_token = midtrans_js_token()
    card = local_stack.request(
        "POST", METHODS, headers=owner, json={"type": "credit_card", "token": one_time_token}
    )
    bca = local_stack.request("POST", METHODS, headers=owner, json={"type": "bank_transfer", "bank": "bca"})
    gopay = local_stack.request(
        "POST", METHODS, headers=owner, json={"type": "e_wallet", "provider": "gopay"}
    )
    pm_id = stripe_js_card(local_stack, STRIPE_CARD)
    stripe = local_stack.request(
        "POST",
        METHODS,
        headers=owner,
        json={"type": "credit_card", "token": pm_id, "label": "Corporate Visa"},
    )
    for answer in (card, bca, gopay, stripe):
        assert answer.status_code == 201, answer.text

    listed = local_stack.request("GET", METHODS, headers=local_stack.headers(org, "member"))
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert (page["total"], page["page"], page["has_next"]) == (4, 1, False)
    shown = {
        m["id"]: (m["gateway"], m["type"], m["brand"], m["last4"], m["bank"], m["provider"], m["is_default"])
        for m in page["items"]
    }
    assert shown == {
        card.json()["id"]: ("midtrans", "credit_card", "visa", "1114", None, None, True),
        bca.json()["id"]: ("midtrans", "bank_transfer", None, None, "bca", None, False),
        gopay.json()["id"]: ("midtrans", "e_wallet", None, None, None, "gopay", False),
        stripe.json()["id"]: ("stripe", "credit_card", "visa", "4242", None, None, False),
    }
    assert stripe.json()["gateway_payment_method_id"] == pm_id
    # The account became a Stripe customer when its first Stripe card was added.
    account_now = local_stack.request(
        "GET", f"/billing/accounts/{account.json()['id']}", headers=owner
    ).json()
    assert account_now["gateway_customer_ids"]["stripe"].startswith("cus_")

    switched = local_stack.request("POST", f"{METHODS}/{stripe.json()['id']}/default", headers=owner)
    assert switched.status_code == 200, switched.text
    after = local_stack.request("GET", METHODS, headers=owner).json()["items"]
    assert [m["id"] for m in after if m["is_default"]] == [stripe.json()["id"]]
    assert after[0]["id"] == stripe.json()["id"]  # the default is listed first

    added = local_stack.request("GET", "/_local/events?type=billing.payment_method.added").json()["items"]
    ours = [e["detail"] for e in added if e["detail"]["organization_id"] == org]
    assert sorted(e["data"]["id"] for e in ours) == sorted(shown)

    # Nothing that could charge a card without Tagih's gateway reference is kept or logged.
    everything = json.dumps(stored_items(local_stack)) + local_stack.logs() + function_logs()
    assert "payment method added" in everything  # the scan reads the functions' real logs
    for secret in (STRIPE_CARD, MIDTRANS_CARD, one_time_token):
        assert secret not in everything
    for field in ('"cvc"', '"cvv"', "card[cvc]", "card[number]", "card_number"):
        assert field not in everything.lower()


def test_a_declined_card_is_402_with_the_reason_and_nothing_is_added(local_stack: LocalStack) -> None:
    org = f"org_pm_{uuid.uuid4().hex[:8]}"
    owner = local_stack.headers(org, "owner")
    local_stack.request(
        "POST", "/billing/accounts", headers=owner, json={"name": "PT D", "email": "d@d.co.id"}
    )

    midtrans = local_stack.request(
        "POST", METHODS, headers=owner, json={"type": "credit_card", "token": "481111-decline-1114"}
    )
    stripe = local_stack.request(
        "POST",
        METHODS,
        headers=owner,
        json={"type": "credit_card", "token": stripe_js_card(local_stack, "4000000000000002")},
    )

    for answer in (midtrans, stripe):
        assert answer.status_code == 402, answer.text
        error = answer.json()["error"]
        assert error["code"] == "payment_failed"
        assert error["details"][0]["reason"]
    assert local_stack.request("GET", METHODS, headers=owner).json()["total"] == 0


def test_a_card_belongs_to_the_organization_that_saved_it(local_stack: LocalStack) -> None:
    """Issue 16, item 1: org A's members saw its Midtrans saved token, and org B could attach it
    (201) and top up against A's card. Now A sees a reference, and B gets 404 for the token."""
    org_a, org_b = f"org_card_a_{uuid.uuid4().hex[:6]}", f"org_card_b_{uuid.uuid4().hex[:6]}"
    added = local_stack.request(
        "POST",
        METHODS,
        json={"type": "credit_card", "token": midtrans_js_token()},
        headers=local_stack.headers(org_a),
    )
    assert added.status_code == 201, added.text
    key = {"PK": {"S": f"ORG#{org_a}"}, "SK": {"S": f"PM#{added.json()['id']}"}}
    item = local_stack.aws_client("dynamodb").get_item(TableName=local_stack.table_name(), Key=key)["Item"]
    saved = item["gateway_payment_method_id"]["S"]  # learned somehow: it used to be shown to A's members
    shown = local_stack.request("GET", METHODS, headers=local_stack.headers(org_a, role="member")).json()

    assert shown["items"][0]["gateway_payment_method_id"].startswith("mtcard_")
    assert saved not in json.dumps(shown)
    for field, value in (
        ("gateway_payment_method_id", saved),
        ("token", saved),
        ("gateway_payment_method_id", shown["items"][0]["gateway_payment_method_id"]),
    ):
        taken = local_stack.request(
            "POST", METHODS, json={"type": "credit_card", field: value}, headers=local_stack.headers(org_b)
        )
        assert taken.status_code == 404, taken.text
        assert taken.json()["error"]["code"] == "payment_method_not_found"
    assert local_stack.request("GET", METHODS, headers=local_stack.headers(org_b)).json()["items"] == []


def test_a_card_without_funds_is_saved_and_then_every_charge_of_it_is_declined(
    local_stack: LocalStack,
) -> None:
    """Issue 16 item 7: the Midtrans fake had no card that saves and then declines; dunning could
    only be shown by editing the stored token."""
    org = f"org_pm_{uuid.uuid4().hex[:8]}"
    owner = local_stack.headers(org, "owner")
    token = f"481111-insufficient_funds-{uuid.uuid4().hex[:8]}-1114"

    added = local_stack.request("POST", METHODS, headers=owner, json={"type": "credit_card", "token": token})
    assert added.status_code == 201, added.text
    method = added.json()
    assert (method["type"], method["last4"]) == ("credit_card", "1114")

    for _ in range(2):  # the same saved card, charged again: declined again
        top_up = local_stack.request(
            "POST",
            "/billing/wallet/top-up",
            headers=owner,
            json={"amount": 100_000, "payment_method_id": method["id"]},
        )
        assert top_up.status_code == 402, top_up.text
        error = top_up.json()["error"]
        assert error["code"] == "payment_failed"
        assert "Insufficient funds" in json.dumps(error["details"])
    balance = local_stack.request("GET", "/billing/wallet", headers=owner).json()
    assert balance["balance"] == 0
