"""Payment methods through the real handler on moto, with the real Midtrans adapter talking HTTP to
the local Midtrans fake: display data, exactly one default, declines and hangs, deletes, events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tagih.gateways.midtrans_gateway import verification_order_id
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.gateway_env import configure_gateways, event_queue, received_events
from tests.fakes.lambda_runtime import Answer, call_route
from tests.fakes.midtrans_server import running_midtrans_fake

ORG = "org_pm"
OTHER_ORG = "org_pm_other"
METHODS = "/billing/payment-methods"
CARD_TOKEN = "481111-1114-one-time-7d1e"  # what Midtrans.js hands the browser for 4811 1111 1111 1114
MASTERCARD_TOKEN = "521111-1117-master-one-time-2b4c"


@pytest.fixture
def midtrans(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[MidtransFake]:
    with running_midtrans_fake() as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=1.0)
        yield fake


def call(method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    route = METHODS
    if path.endswith("/default"):
        route = METHODS + "/{payment_method_id}/default"
    elif path != METHODS:
        route = METHODS + "/{payment_method_id}"
    kwargs.setdefault("org", ORG)
    return call_route("payment_methods", method, path, route, body=body, **kwargs)


def add(body: dict[str, Any], **kwargs: Any) -> Answer:
    return call("POST", METHODS, body, **kwargs)


def listed(org: str = ORG) -> list[dict[str, Any]]:
    answer = call("GET", METHODS, org=org, role="member")
    assert answer.status == 200, answer.raw
    items: list[dict[str, Any]] = answer.body["items"]
    return items


def stored_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    return items


def put_subscription(status: str, plan: str = "pro") -> None:
    # Subscriptions come in a later issue; their item is written here as that issue will.
    boto3.resource("dynamodb").Table(TABLE_NAME).put_item(
        Item={"PK": f"ORG#{ORG}", "SK": "SUBSCRIPTION", "status": status, "plan": plan}
    )


def defaults(items: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in items if m["is_default"]]


# -- adding -------------------------------------------------------------------------------------------
def test_a_midtrans_card_is_saved_with_display_data_and_becomes_the_default(midtrans: MidtransFake) -> None:
    answer = add({"type": "credit_card", "token": CARD_TOKEN, "label": "Finance card"})

    assert answer.status == 201, answer.raw
    method = answer.body
    assert set(method) == {
        "id",
        "organization_id",
        "gateway",
        "gateway_payment_method_id",
        "type",
        "brand",
        "last4",
        "bank",
        "provider",
        "label",
        "is_default",
        "created_at",
    }
    assert method["id"].startswith("pm_")
    assert (method["organization_id"], method["gateway"], method["type"]) == (ORG, "midtrans", "credit_card")
    assert (method["brand"], method["last4"], method["label"]) == ("visa", "1114", "Finance card")
    assert method["is_default"] is True
    # Midtrans' saved token is the reusable reference; the one-time token went to Midtrans only.
    assert method["gateway_payment_method_id"] != CARD_TOKEN
    assert CARD_TOKEN not in json.dumps(stored_items(), default=str)
    # The card was verified at Midtrans and the authorisation cancelled.
    verification = midtrans.transaction(verification_order_id(ORG, CARD_TOKEN))
    assert verification is not None
    assert verification["transaction_status"] == "cancel"


def test_virtual_accounts_and_e_wallets_list_with_their_display_data_and_one_default(
    midtrans: MidtransFake,
) -> None:
    card = add({"type": "credit_card", "token": CARD_TOKEN}).body
    bca = add({"type": "bank_transfer", "bank": "bca"})
    gopay = add({"type": "e_wallet", "provider": "gopay"})
    assert (bca.status, gopay.status) == (201, 201)

    items = listed()

    assert [m["id"] for m in items] == [card["id"], gopay.body["id"], bca.body["id"]]  # default first
    assert defaults(items) == [card["id"]]
    by_type = {m["type"]: m for m in items}
    assert (by_type["bank_transfer"]["bank"], by_type["bank_transfer"]["gateway_payment_method_id"]) == (
        "bca",
        "va:bca",
    )
    assert (by_type["e_wallet"]["provider"], by_type["e_wallet"]["gateway"]) == ("gopay", "midtrans")
    assert by_type["e_wallet"]["last4"] is None
    # Virtual accounts and e-wallets are channels: nothing was charged to add them.
    assert [c["order_id"] for c in midtrans.charges] == [verification_order_id(ORG, CARD_TOKEN)]


def test_is_default_on_add_moves_the_default_in_the_same_write(midtrans: MidtransFake) -> None:
    first = add({"type": "bank_transfer", "bank": "bni"}).body
    second = add({"type": "credit_card", "token": MASTERCARD_TOKEN, "is_default": True}).body

    items = listed()

    assert defaults(items) == [second["id"]]
    assert second["brand"] == "mastercard"
    assert first["id"] in {m["id"] for m in items}


def test_switching_the_default_keeps_exactly_one(midtrans: MidtransFake) -> None:
    ids = [add({"type": "bank_transfer", "bank": bank}).body["id"] for bank in ("bca", "bni", "bri")]

    switched = call("POST", f"{METHODS}/{ids[2]}/default")

    assert switched.status == 200, switched.raw
    assert switched.body["is_default"] is True
    assert defaults(listed()) == [ids[2]]
    again = call("POST", f"{METHODS}/{ids[2]}/default")
    assert again.status == 200
    assert defaults(listed()) == [ids[2]]


def test_concurrent_default_switches_leave_exactly_one_default(midtrans: MidtransFake) -> None:
    ids = [add({"type": "e_wallet", "provider": p}).body["id"] for p in ("gopay", "shopeepay", "ovo")]

    def switch(i: int) -> Answer:  # each on a container of its own, as Lambda would run them
        return call("POST", f"{METHODS}/{ids[i % 3]}/default", container=1 + i)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(switch, range(6)))

    assert {a.status for a in answers} <= {200, 409}
    assert any(a.status == 200 for a in answers)
    final = defaults(listed())
    assert len(final) == 1
    pointer = next(i for i in stored_items() if i["SK"] == "DEFAULT#PM")
    assert pointer["payment_method_id"] == final[0]


def test_a_declined_card_is_402_with_the_gateways_reason_and_nothing_is_kept(midtrans: MidtransFake) -> None:
    answer = add({"type": "credit_card", "token": "481111-decline-1114"})

    assert answer.status == 402, answer.raw
    assert answer.error_code == "payment_failed"
    [detail] = answer.body["error"]["details"]
    assert detail["reason"] == "Deny by Bank [BNI] with code [05] and message [Do not honour]"
    assert detail["gateway"] == "midtrans"
    assert listed() == []


@pytest.mark.timeout(30)
def test_a_gateway_that_hangs_is_503_within_the_timeout_and_nothing_is_kept(midtrans: MidtransFake) -> None:
    answer = add({"type": "credit_card", "token": "481111-hang-1114"})

    assert answer.status == 503, answer.raw
    assert answer.error_code == "gateway_unavailable"
    assert listed() == []
    assert midtrans.charges == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "credit_card"}, "token"),
        ({"type": "bank_transfer"}, "bank"),
        ({"type": "bank_transfer", "bank": "bca", "provider": "gopay"}, "provider"),
        ({"type": "e_wallet", "provider": "dana"}, "provider"),
        ({"type": "bank_transfer", "bank": "permata"}, "bank"),
        ({"type": "credit_card", "token": CARD_TOKEN, "bank": "bca"}, "bank"),
        ({"type": "bank_transfer", "bank": "bca", "token": CARD_TOKEN}, "token"),
        ({"type": "bank_transfer", "bank": "bca", "gateway": "stripe"}, "gateway"),
        ({"type": "credit_card", "token": "pm_card_visa", "gateway": "midtrans"}, "gateway"),
        ({"type": "credit_card", "token": CARD_TOKEN, "gateway": "stripe"}, "token"),
        ({"type": "credit_card", "token": CARD_TOKEN, "gateway_payment_method_id": "x"}, "token"),
        ({"type": "credit_card", "token": CARD_TOKEN, "status": "active"}, "status"),
        ({"type": "cash"}, "type"),
        ({"type": "credit_card", "token": ""}, "token"),
        ({"type": "credit_card", "token": CARD_TOKEN, "label": "x" * 101}, "label"),
    ],
)
def test_invalid_combinations_are_422_naming_the_field(
    midtrans: MidtransFake, body: dict[str, Any], field: str
) -> None:
    answer = add(body)

    assert answer.status == 422, answer.raw
    assert answer.error_code == "validation_error"
    assert answer.fields == {field}
    assert stored_items() == []
    assert midtrans.charges == []


def test_a_stripe_card_needs_a_billing_account_first(midtrans: MidtransFake) -> None:
    answer = add({"type": "credit_card", "token": "pm_card_visa"})

    assert answer.status == 422, answer.raw
    assert answer.error_code == "billing_account_required"


def test_members_read_but_may_not_add_or_change(midtrans: MidtransFake) -> None:
    method = add({"type": "bank_transfer", "bank": "bca"}).body

    assert add({"type": "bank_transfer", "bank": "bni"}, role="member").status == 403
    assert call("POST", f"{METHODS}/{method['id']}/default", role="member").status == 403
    assert call("DELETE", f"{METHODS}/{method['id']}", role="member").status == 403
    assert len(listed()) == 1


def test_another_organizations_method_is_not_found(midtrans: MidtransFake) -> None:
    theirs = add({"type": "bank_transfer", "bank": "bca"}, org=OTHER_ORG).body

    for answer in (
        call("POST", f"{METHODS}/{theirs['id']}/default"),
        call("DELETE", f"{METHODS}/{theirs['id']}"),
    ):
        assert answer.status == 404, answer.raw
        assert answer.error_code == "payment_method_not_found"
    assert listed() == []
    assert [m["id"] for m in listed(OTHER_ORG)] == [theirs["id"]]


# -- gateway references belong to one organization (issue 16, item 1) --------------------------------
def saved_token_of(method_id: str, org: str = ORG) -> str:
    item = (
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .get_item(Key={"PK": f"ORG#{org}", "SK": f"PM#{method_id}"})
    )
    return str(item["Item"]["gateway_payment_method_id"])


def test_members_see_a_midtrans_cards_reference_never_its_saved_token(midtrans: MidtransFake) -> None:
    added = add({"type": "credit_card", "token": CARD_TOKEN}).body
    saved = saved_token_of(added["id"])

    [shown] = listed()

    assert shown["gateway_payment_method_id"].startswith("mtcard_")
    assert shown["gateway_payment_method_id"] == added["gateway_payment_method_id"]
    assert saved not in json.dumps(listed()) + json.dumps(added)


@pytest.mark.parametrize("field", ["gateway_payment_method_id", "token"])
def test_another_organizations_saved_token_is_404_and_its_card_is_not_touched(
    midtrans: MidtransFake, field: str
) -> None:
    # Org A's saved token, learned somehow (it used to be shown to A's members), offered by org B.
    theirs = add({"type": "credit_card", "token": CARD_TOKEN}, org=OTHER_ORG).body
    saved = saved_token_of(theirs["id"], OTHER_ORG)
    charges_before = len(midtrans.charges)

    answer = add({"type": "credit_card", field: saved})

    assert answer.status == 404, answer.raw
    assert answer.error_code == "payment_method_not_found"
    assert saved not in answer.raw
    assert listed() == []
    assert len(midtrans.charges) == charges_before  # not even a verification on A's card


def test_another_organizations_card_reference_is_404_and_ones_own_reattaches(midtrans: MidtransFake) -> None:
    theirs = add({"type": "credit_card", "token": CARD_TOKEN}, org=OTHER_ORG).body
    reference = theirs["gateway_payment_method_id"]

    stolen = add({"type": "credit_card", "gateway_payment_method_id": reference})
    assert (stolen.status, stolen.error_code) == (404, "payment_method_not_found")

    # The owner deletes the card and adds it back by its reference: Tagih verified it for them.
    assert call("DELETE", f"{METHODS}/{theirs['id']}", org=OTHER_ORG).status == 200
    again = add({"type": "credit_card", "gateway_payment_method_id": reference}, org=OTHER_ORG)
    assert again.status == 201, again.raw
    assert again.body["last4"] == "1114"
    assert again.body["gateway_payment_method_id"].startswith("mtcard_")  # Midtrans may save it anew


def test_a_deleted_card_stays_its_organizations(midtrans: MidtransFake) -> None:
    theirs = add({"type": "credit_card", "token": CARD_TOKEN}, org=OTHER_ORG).body
    saved = saved_token_of(theirs["id"], OTHER_ORG)
    assert call("DELETE", f"{METHODS}/{theirs['id']}", org=OTHER_ORG).status == 200

    answer = add({"type": "credit_card", "gateway_payment_method_id": saved})

    assert (answer.status, answer.error_code) == (404, "payment_method_not_found")


def test_an_unknown_card_reference_is_404(midtrans: MidtransFake) -> None:
    answer = add({"type": "credit_card", "gateway_payment_method_id": "mtcard_" + "0" * 64})

    assert (answer.status, answer.error_code) == (404, "payment_method_not_found")
    assert midtrans.charges == []


# -- deleting -----------------------------------------------------------------------------------------
def test_deleting_the_default_promotes_the_most_recently_added(midtrans: MidtransFake) -> None:
    first, second, third = (
        add({"type": "bank_transfer", "bank": b}).body["id"] for b in ("bca", "bni", "bri")
    )

    deleted = call("DELETE", f"{METHODS}/{first}")

    assert deleted.status == 200, deleted.raw
    assert deleted.body == {"id": first, "deleted": True}
    assert defaults(listed()) == [third]
    assert {m["id"] for m in listed()} == {second, third}


def test_the_only_method_behind_a_paid_subscription_cannot_be_deleted(midtrans: MidtransFake) -> None:
    method = add({"type": "bank_transfer", "bank": "bca"}).body["id"]
    put_subscription("active")

    refused = call("DELETE", f"{METHODS}/{method}")

    assert refused.status == 409, refused.raw
    assert refused.error_code == "payment_method_in_use"
    assert [m["id"] for m in listed()] == [method]
    # With a second method the first may go; the other becomes the default.
    other = add({"type": "e_wallet", "provider": "gopay"}).body["id"]
    assert call("DELETE", f"{METHODS}/{method}").status == 200
    assert defaults(listed()) == [other]


@pytest.mark.parametrize(("status", "plan"), [("cancelled", "pro"), ("active", "free")])
def test_without_a_paid_subscription_the_last_method_may_go(
    midtrans: MidtransFake, status: str, plan: str
) -> None:
    method = add({"type": "bank_transfer", "bank": "bca"}).body["id"]
    put_subscription(status, plan)

    assert call("DELETE", f"{METHODS}/{method}").status == 200
    assert listed() == []
    # The next method is the first again: the default.
    assert add({"type": "e_wallet", "provider": "ovo"}).body["is_default"] is True


# -- idempotency and events ------------------------------------------------------------------------
def test_an_idempotent_retry_adds_one_method_and_verifies_the_card_once(midtrans: MidtransFake) -> None:
    headers = {"Idempotency-Key": "add-card-1"}
    first = add({"type": "credit_card", "token": CARD_TOKEN}, headers=headers)
    second = add({"type": "credit_card", "token": CARD_TOKEN}, headers=headers)

    assert (first.status, second.status) == (201, 201)
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.body == first.body
    assert len(listed()) == 1
    assert midtrans.charge_count(verification_order_id(ORG, CARD_TOKEN)) == 1


def test_adding_publishes_payment_method_added_without_the_gateway_reference(midtrans: MidtransFake) -> None:
    queue = event_queue(BUS_NAME)

    method = add({"type": "credit_card", "token": CARD_TOKEN}).body

    [event] = received_events(queue)
    assert event["source"] == "tagih.billing"
    assert event["detail-type"] == "billing.payment_method.added"
    detail = event["detail"]
    assert isinstance(detail, dict)
    assert detail["id"].startswith("evt_")
    assert (detail["type"], detail["organization_id"]) == ("billing.payment_method.added", ORG)
    assert detail["data"] == {
        "id": method["id"],
        "gateway": "midtrans",
        "type": "credit_card",
        "brand": "visa",
        "last4": "1114",
        "bank": None,
        "provider": None,
        "label": None,
        "is_default": True,
    }
    assert method["gateway_payment_method_id"] not in json.dumps(event)
