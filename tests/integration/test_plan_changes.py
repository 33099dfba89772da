"""Plan changes through the real subscriptions handler on moto, charging through the real Midtrans
adapter at the local Midtrans fake: a prorated upgrade charged at once (checked to the rupiah), a
downgrade scheduled for the period end, a preview that writes nothing, stale versions and racing
changes (one charge only), a declined upgrade that keeps the plan, a trial switch, PATCH, and roles.

The clock is frozen (``tagih.clock.now``), so each expected proration is computed here from the
subscription's actual period, with integer half-up rounding, independently of the domain's code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tagih import clock
from tagih.clock import parse_rfc3339
from tests.conftest import TABLE_NAME
from tests.fakes.aws_calls import after_succeeded_charge_is_recorded
from tests.fakes.billing_setup import (
    CARD_TOKEN,
    DECLINING,
    add_method,
    event_types,
    mark_trialled,
    pay_by_transfer,
    set_card_token,
)
from tests.fakes.gateway_env import received_events
from tests.fakes.lambda_runtime import Answer, PinnedClock, call_api
from tests.fakes.midtrans_server import NotificationInbox

ORG = "org_changes"
SUBS = "/billing/subscriptions"
PRO, BUSINESS = 299_000, 990_000
PPN_BPS = 1_100
STARTED = datetime(2026, 3, 5, 8, 30, 0, tzinfo=UTC)
# Mid-period, at an odd second so the proration really rounds.
CHANGED = STARTED + timedelta(days=10, hours=3, minutes=7, seconds=11)


@pytest.fixture
def frozen() -> Iterator[PinnedClock]:
    pinned = PinnedClock(STARTED)
    clock.use_wall_clock(pinned)
    yield pinned
    clock.use_wall_clock(None)


def call(method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    kwargs.setdefault("org", ORG)
    return call_api(method, path, body=body, **kwargs)


def scan() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    return sorted(found, key=lambda item: (str(item["PK"]), str(item["SK"])))


def items(prefix: str) -> list[dict[str, Any]]:
    return [i for i in scan() if i["PK"] == f"ORG#{ORG}" and str(i["SK"]).startswith(prefix)]


def invoices() -> list[dict[str, Any]]:
    return sorted(items("INVOICE#"), key=lambda i: str(i["created_at"]))


def subscribed_to_pro(frozen: PinnedClock) -> dict[str, Any]:
    """An active Pro subscription whose first invoice was paid by card at ``STARTED``."""
    mark_trialled(ORG)
    frozen.at = STARTED
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    answer = call("POST", SUBS, {"plan": "pro", "payment_method_id": card})
    assert answer.status == 201, answer.raw
    assert answer.body["status"] == "active"
    return answer.body


def half_up(numerator: int, denominator: int) -> int:
    """Non-negative ``numerator / denominator`` rounded half up, in integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def expected_upgrade(subscription: dict[str, Any], at: datetime) -> dict[str, int]:
    start = parse_rfc3339(subscription["current_period_start"])
    end = parse_rfc3339(subscription["current_period_end"])
    period, remaining = int((end - start).total_seconds()), int((end - at).total_seconds())
    credit = -half_up(PRO * remaining, period)
    debit = half_up(BUSINESS * remaining, period)
    subtotal = credit + debit
    tax = half_up(subtotal * PPN_BPS, 10_000)
    return {"credit": credit, "debit": debit, "subtotal": subtotal, "tax": tax, "total": subtotal + tax}


def change_charges(midtrans: MidtransFake, first_invoice_id: str) -> list[dict[str, Any]]:
    """Every invoice charge the fake received after the subscription's first one (adding a card
    makes a verification charge of its own, ``verify-…``)."""
    return [
        c
        for c in midtrans.charges
        if c["order_id"].startswith("inv_") and not c["order_id"].startswith(first_invoice_id)
    ]


def test_an_upgrade_mid_period_invoices_the_proration_with_tax_and_charges_it_once(
    midtrans: MidtransFake, frozen: PinnedClock, events: str
) -> None:
    pro = subscribed_to_pro(frozen)
    [first] = invoices()
    frozen.at = CHANGED

    answer = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert answer.status == 200, answer.raw
    business, invoice = answer.body["subscription"], answer.body["prorated_invoice"]
    assert (business["plan"], business["plan_name"], business["status"]) == ("business", "Business", "active")
    assert business["limits"] == {
        "members": 100,
        "applications": 25,
        "storage_bytes": 100 * 1024**3,
        "api_calls": 1_000_000,
        "webhooks": 50,
    }
    assert (business["features"]["sso"], business["features"]["scim"]) == (True, True)
    assert business["version"] == pro["version"] + 1
    # The period is not moved by an upgrade.
    assert business["current_period_end"] == pro["current_period_end"]

    expected = expected_upgrade(pro, CHANGED)
    credit, debit = invoice["lines"]
    assert (credit["amount"], credit["proration"], credit["description"]) == (
        expected["credit"],
        True,
        "Unused time on Pro (monthly)",
    )
    assert (debit["amount"], debit["proration"], debit["description"]) == (
        expected["debit"],
        True,
        "Remaining time on Business (monthly)",
    )
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (
        expected["subtotal"],
        expected["tax"],
        expected["total"],
    )
    assert (invoice["tax_name"], invoice["tax_rate"]) == ("PPN", "11")
    assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == (
        "paid",
        expected["total"],
        0,
    )
    assert invoice["billing_reason"] == "subscription_update"
    assert invoice["number"].endswith("-0002")
    assert parse_rfc3339(invoice["period_start"]) == CHANGED
    assert invoice["period_end"] == pro["current_period_end"]

    [charge] = change_charges(midtrans, first["id"])
    assert charge["order_id"] == f"{invoice['id']}-a1"
    assert (charge["gross_amount"], charge["initiated_by"]) == (expected["total"], "merchant")
    stored = {i["id"]: i for i in invoices()}
    assert stored[invoice["id"]]["status"] == "paid"
    assert call("GET", "/billing/subscription").body["plan"] == "business"
    assert event_types(events)[-3:] == [
        "billing.subscription.updated",
        "billing.invoice.created",
        "billing.invoice.paid",
    ]

    # The same request again finds the plan already changed: nothing more is charged.
    again = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})
    assert again.status == 200, again.raw
    assert again.body["prorated_invoice"] is None
    assert len(change_charges(midtrans, first["id"])) == 1


def test_a_downgrade_is_scheduled_for_the_period_end_with_no_invoice(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    frozen.at = CHANGED
    upgraded = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"}).body["subscription"]
    charges_before = len(midtrans.charges)
    invoices_before = invoices()

    answer = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "pro"})

    assert answer.status == 200, answer.raw
    after = answer.body["subscription"]
    assert answer.body["prorated_invoice"] is None
    assert (after["plan"], after["limits"]) == ("business", upgraded["limits"])  # unchanged until then
    scheduled = after["scheduled_change"]
    assert (scheduled["plan"], scheduled["billing_cycle"]) == ("pro", "monthly")
    assert parse_rfc3339(scheduled["effective_at"]) == parse_rfc3339(pro["current_period_end"])
    assert invoices() == invoices_before
    assert len(midtrans.charges) == charges_before


def test_the_preview_writes_nothing_and_shows_what_the_change_then_invoices(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    frozen.at = CHANGED
    table_before, charges_before = scan(), len(midtrans.charges)

    preview = call("POST", f"{SUBS}/{pro['id']}/change/preview", {"plan": "business"}, role="member")

    assert preview.status == 200, preview.raw
    assert scan() == table_before
    assert len(midtrans.charges) == charges_before
    shown = preview.body
    assert (shown["kind"], shown["immediate"], shown["scheduled_change"]) == ("upgrade", True, None)
    assert shown["subscription"]["plan"] == "business"
    assert shown["prorated_invoice"]["status"] == "draft"
    assert shown["prorated_invoice"]["number"] is None

    changed = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert changed.status == 200, changed.raw
    invoiced = changed.body["prorated_invoice"]
    for field in ("lines", "subtotal", "tax_name", "tax_rate", "tax", "total", "currency"):
        assert shown[field] == invoiced[field], field
    assert shown["amount_due"] == invoiced["amount_paid"] == expected_upgrade(pro, CHANGED)["total"]
    assert shown["subscription"]["limits"] == changed.body["subscription"]["limits"]


def test_the_preview_of_a_downgrade_shows_the_scheduled_change_and_nothing_to_pay(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    frozen.at = CHANGED
    call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})
    table_before = scan()

    preview = call("POST", f"{SUBS}/{pro['id']}/change/preview", {"plan": "pro"})

    assert preview.status == 200, preview.raw
    assert scan() == table_before
    shown = preview.body
    assert (shown["kind"], shown["immediate"], shown["lines"], shown["total"]) == ("downgrade", False, [], 0)
    assert shown["prorated_invoice"] is None
    assert shown["scheduled_change"]["plan"] == "pro"


def test_a_stale_expected_version_is_a_version_conflict_and_changes_nothing(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    frozen.at = CHANGED
    table_before, charges_before = scan(), len(midtrans.charges)

    answer = call(
        "POST", f"{SUBS}/{pro['id']}/change", {"plan": "business", "expected_version": pro["version"] - 1}
    )

    assert answer.status == 409, answer.raw
    assert answer.error_code == "version_conflict"
    assert scan() == table_before
    assert len(midtrans.charges) == charges_before
    current = call(
        "POST", f"{SUBS}/{pro['id']}/change", {"plan": "business", "expected_version": pro["version"]}
    )
    assert current.status == 200, current.raw


@pytest.mark.timeout(60)
def test_two_concurrent_upgrades_one_wins_the_other_is_409_and_one_charge_is_made(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    [first] = invoices()
    frozen.at = CHANGED
    body = {"plan": "business", "expected_version": pro["version"]}

    def change(container: int) -> Answer:  # each on a warm container of its own, as Lambda runs them
        return call("POST", f"{SUBS}/{pro['id']}/change", body, container=container)

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(change, [1, 2]))

    assert sorted(a.status for a in answers) == [200, 409], [a.raw for a in answers]
    [loser] = [a for a in answers if a.status == 409]
    assert loser.error_code == "version_conflict"
    [won] = [a for a in answers if a.status == 200]
    assert len(change_charges(midtrans, first["id"])) == 1
    paid = [i for i in invoices() if i["billing_reason"] == "subscription_update"]
    assert [(i["id"], i["status"]) for i in paid] == [(won.body["prorated_invoice"]["id"], "paid")]
    assert call("GET", "/billing/subscription").body["version"] == pro["version"] + 1


def test_a_declined_upgrade_is_402_keeps_the_plan_and_a_retry_charges_anew(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    [first] = invoices()
    saved = set_card_token(ORG, pro["payment_method_id"], DECLINING)
    frozen.at = CHANGED

    declined = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert declined.status == 402, declined.raw
    assert declined.error_code == "payment_failed"
    assert "Do not honour" in declined.body["error"]["details"][0]["reason"]
    unchanged = call("GET", "/billing/subscription").body
    assert (unchanged["plan"], unchanged["version"]) == ("pro", pro["version"])
    assert [i["id"] for i in invoices()] == [first["id"]]

    # The card works again: the same change is a new attempt with a reference of its own.
    set_card_token(ORG, pro["payment_method_id"], saved)
    retried = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert retried.status == 200, retried.raw
    attempts = change_charges(midtrans, first["id"])
    assert len(attempts) == 2
    assert attempts[1]["order_id"] == f"{retried.body['prorated_invoice']['id']}-a1"
    assert attempts[0]["order_id"] != attempts[1]["order_id"]
    assert retried.body["subscription"]["plan"] == "business"


def test_a_change_during_the_trial_switches_at_once_without_an_invoice(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    trial = call("POST", SUBS, {"plan": "pro"}).body
    assert trial["status"] == "trialing"
    frozen.at = STARTED + timedelta(days=3)

    answer = call("POST", f"{SUBS}/{trial['id']}/change", {"plan": "business"})

    assert answer.status == 200, answer.raw
    switched = answer.body["subscription"]
    assert (switched["plan"], switched["status"]) == ("business", "trialing")
    assert switched["trial_ends_at"] == trial["trial_ends_at"]
    assert answer.body["prorated_invoice"] is None
    assert invoices() == []
    assert midtrans.charges == []


def test_patch_changes_the_plan_like_post_change(midtrans: MidtransFake, frozen: PinnedClock) -> None:
    pro = subscribed_to_pro(frozen)
    frozen.at = CHANGED

    answer = call("PATCH", f"{SUBS}/{pro['id']}", {"plan": "business"})

    assert answer.status == 200, answer.raw
    assert answer.body["subscription"]["plan"] == "business"
    assert answer.body["prorated_invoice"]["total"] == expected_upgrade(pro, CHANGED)["total"]


def test_members_may_preview_but_not_change(midtrans: MidtransFake, frozen: PinnedClock) -> None:
    pro = subscribed_to_pro(frozen)

    for method, path in (("POST", f"{SUBS}/{pro['id']}/change"), ("PATCH", f"{SUBS}/{pro['id']}")):
        answer = call(method, path, {"plan": "business"}, role="member")
        assert answer.status == 403, answer.raw
        assert answer.error_code == "forbidden"
    assert (
        call("POST", f"{SUBS}/{pro['id']}/change/preview", {"plan": "business"}, role="member").status == 200
    )
    assert call("GET", "/billing/subscription").body["plan"] == "pro"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"plan": "enterprise"}, 409, "contact_sales"),
        ({"plan": "free"}, 422, "plan_not_subscribable"),
        ({"plan": "gold"}, 404, "plan_not_found"),
        ({"plan": "business", "amount": 1}, 422, "validation_error"),
        ({"plan": "business", "billing_cycle": "weekly"}, 422, "validation_error"),
    ],
)
def test_refused_changes(
    midtrans: MidtransFake, frozen: PinnedClock, body: dict[str, Any], status: int, code: str
) -> None:
    pro = subscribed_to_pro(frozen)
    table_before = scan()

    answer = call("POST", f"{SUBS}/{pro['id']}/change", body)

    assert answer.status == status, answer.raw
    assert answer.error_code == code
    assert scan() == table_before


def test_a_virtual_account_upgrade_keeps_the_plan_until_the_transfer_settles_then_applies_it(
    midtrans: MidtransFake, frozen: PinnedClock, events: str
) -> None:
    pro = subscribed_to_pro(frozen)
    [first] = invoices()
    pay_by_transfer(ORG)  # the subscription now pays by transfer
    frozen.at = CHANGED

    answer = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert answer.status == 200, answer.raw
    assert answer.body["subscription"]["plan"] == "pro"
    invoice = answer.body["prorated_invoice"]
    assert (invoice["status"], invoice["gateway_invoice_id"]) == ("open", f"{invoice['id']}-a1")
    assert invoice["payment_url"] or midtrans.transaction(f"{invoice['id']}-a1")
    # Asking again while the transfer is awaited answers the same invoice and charges nothing more.
    again = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})
    assert again.status == 200, again.raw
    assert again.body["prorated_invoice"]["id"] == invoice["id"]
    assert len(change_charges(midtrans, first["id"])) == 1

    # The payer transfers an hour later: Midtrans' notification pays the invoice and applies the
    # change as asked (the period and its proration are those of the request), exactly once.
    frozen.at = CHANGED + timedelta(hours=1)
    with NotificationInbox() as inbox:
        midtrans.notification_url = inbox.url
        midtrans.settle(f"{invoice['id']}-a1")
        [notification] = inbox.bodies
    for _ in range(2):  # Midtrans redelivers; the second changes nothing
        delivered = call_api("POST", "/webhooks/midtrans", body=json.loads(notification))
        assert delivered.status == 200, delivered.raw

    changed = call("GET", f"{SUBS}/{pro['id']}").body
    assert (changed["plan"], changed["version"]) == ("business", pro["version"] + 1)
    assert changed["current_period_end"] == pro["current_period_end"]
    assert changed["limits"]["members"] == 100
    paid = call("GET", f"/billing/invoices/{invoice['id']}").body
    assert (paid["status"], paid["amount_paid"]) == ("paid", invoice["amount"])
    kinds = [e["detail-type"] for e in received_events(events)]
    assert kinds.count("billing.invoice.paid") == 2  # the first invoice, then this one
    assert kinds[-2:] == ["billing.invoice.paid", "billing.subscription.updated"]


def test_a_request_that_failed_after_charging_is_finished_by_its_retry_without_charging_again(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    [first] = invoices()
    frozen.at = CHANGED

    def die() -> None:
        raise RuntimeError("the function died after the charge")

    with after_succeeded_charge_is_recorded(die):
        crashed = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})
    assert crashed.status == 500, crashed.raw
    assert len(change_charges(midtrans, first["id"])) == 1
    assert call("GET", "/billing/subscription").body["plan"] == "pro"

    retried = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert retried.status == 200, retried.raw
    assert retried.body["subscription"]["plan"] == "business"
    assert retried.body["prorated_invoice"]["status"] == "paid"
    [charge] = change_charges(midtrans, first["id"])
    assert charge["order_id"] == f"{retried.body['prorated_invoice']['id']}-a1"


def test_an_unrelated_write_during_the_charge_does_not_lose_the_paid_change(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    frozen.at = CHANGED

    def unrelated_write() -> None:  # a write the change did not see
        boto3.resource("dynamodb").Table(TABLE_NAME).update_item(
            Key={"PK": f"ORG#{ORG}", "SK": "SUBSCRIPTION"},
            UpdateExpression="SET version = version + :one",
            ExpressionAttributeValues={":one": 1},
        )

    with after_succeeded_charge_is_recorded(unrelated_write):
        answer = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert answer.status == 200, answer.raw
    assert (answer.body["subscription"]["plan"], answer.body["subscription"]["version"]) == (
        "business",
        pro["version"] + 2,
    )


def test_a_cancel_during_the_charge_records_the_payment_and_answers_409(
    midtrans: MidtransFake, frozen: PinnedClock
) -> None:
    pro = subscribed_to_pro(frozen)
    frozen.at = CHANGED

    def cancel_meanwhile() -> None:
        cancelled = call("POST", f"{SUBS}/{pro['id']}/cancel", container=1)
        assert cancelled.status == 200, cancelled.raw

    with after_succeeded_charge_is_recorded(cancel_meanwhile):
        answer = call("POST", f"{SUBS}/{pro['id']}/change", {"plan": "business"})

    assert answer.status == 409, answer.raw
    assert answer.error_code == "version_conflict"
    assert "refund" in answer.body["error"]["message"]
    current = call("GET", "/billing/subscription").body
    assert (current["plan"], current["status"]) == ("pro", "grace_period")
    [recorded] = [i for i in invoices() if i["billing_reason"] == "subscription_update"]
    assert recorded["status"] == "paid"
