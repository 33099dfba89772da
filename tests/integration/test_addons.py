"""Add-ons and overage through the real handlers on moto, charging through the real Midtrans adapter
at the local Midtrans fake, on a test clock so every proration is exact to the rupiah:

- attaching mid-period invoices the rest of the period at once (prorated per second, PPN 11 %) and
  charges it; the limit it adds shows in ``GET /billing/usage``;
- the next renewal bills a line per add-on, plus api_calls overage in arrears;
- fewer units and removals take effect at the period end; a declined charge attaches nothing; a
  virtual-account payment attaches it when the transfer settles;
- refusals: unknown add-on, a flat add-on twice, both ids, another organization's subscription.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from local.midtrans_fake import MidtransFake
from tagih.clock import to_rfc3339
from tests.conftest import TABLE_NAME
from tests.fakes.billing_setup import (
    CARD_TOKEN,
    DECLINING,
    add_method,
    event_types,
    invoice_charges,
    mark_trialled,
    pay_by_transfer,
    set_card_token,
)
from tests.fakes.lambda_runtime import Answer, call_api
from tests.fakes.midtrans_server import NotificationInbox

ORG = "org_addons"
SUBS = "/billing/subscriptions"
ADVANCE = "/billing/test-clock/advance"
STARTED = datetime(2027, 3, 1, tzinfo=UTC)  # a 31-day first period: [03-01, 04-01)
RENEWED = datetime(2027, 4, 1, tzinfo=UTC)  # a 30-day second period: [04-01, 05-01)
SECOND_RENEWAL = datetime(2027, 5, 1, tzinfo=UTC)


def call(method: str, path: str, body: Any = None, *, org: str = ORG, role: str = "owner") -> Answer:
    return call_api(method, path, body=body, org=org, role=role)


def advance(to: datetime) -> list[dict[str, Any]]:
    answer = call("POST", ADVANCE, {"to": to_rfc3339(to)})
    assert answer.status == 200, answer.raw
    processed: list[dict[str, Any]] = answer.body["processed"]
    return processed


def invoices() -> list[dict[str, Any]]:
    listed = call("GET", "/billing/invoices")
    assert listed.status == 200, listed.raw
    return list(reversed(listed.body["items"]))  # oldest first


def lines(invoice: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    return [(ln["description"], ln["quantity"], ln["unit_amount"], ln["amount"]) for ln in invoice["lines"]]


def totals(invoice: dict[str, Any]) -> tuple[int, int, int, str]:
    return invoice["subtotal"], invoice["tax"], invoice["total"], invoice["status"]


def pro_on_a_test_clock(card_token: str = CARD_TOKEN) -> tuple[str, str]:
    """An active Pro subscription paid by card at ``STARTED`` (no trial): (subscription id, card id)."""
    assert call("POST", "/billing/test-clock", {"frozen_time": to_rfc3339(STARTED)}).status == 201
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": card_token})
    subscribed = call("POST", SUBS, {"plan": "pro", "payment_method_id": card})
    assert subscribed.status == 201, subscribed.raw
    assert subscribed.body["status"] == "active"
    return str(subscribed.body["id"]), card


def attach(sub: str, body: dict[str, Any]) -> Answer:
    return call("POST", f"{SUBS}/{sub}/addons", body)


def report_125_000_api_calls() -> None:
    event = {"id": "calls-1", "metric": "api_calls", "quantity": 125_000}
    reported = call("POST", "/billing/usage/events", {"events": [event]})
    assert reported.status == 202, reported.raw


def test_an_add_on_is_prorated_then_renewed_and_overage_billed_in_arrears(
    midtrans: MidtransFake, events: str
) -> None:
    sub, _ = pro_on_a_test_clock()
    advance(STARTED + timedelta(days=10))

    attached = attach(sub, {"addon": "extra-members", "quantity": 5})

    # 5 seats at 15,000 for 21 of 31 days: 75,000 x 21/31 = 50,806.45 -> 50,806; PPN 5,588.66 -> 5,589.
    assert attached.status == 201, attached.raw
    item = attached.body
    assert (item["slug"], item["addon_id"], item["quantity"], item["price_monthly"]) == (
        "extra-members",
        "addon_extra-members",
        5,
        15_000,
    )
    assert (item["subscription_id"], item["cancel_at_period_end"], item["scheduled_quantity"]) == (
        sub,
        False,
        None,
    )
    prorated = item["prorated_invoice"]
    assert lines(prorated) == [("Remaining time on Extra members (5 units, monthly)", 1, 50_806, 50_806)]
    assert totals(prorated) == (50_806, 5_589, 56_395, "paid")
    assert [c["gross_amount"] for c in invoice_charges(midtrans)][-1] == 56_395
    listed = call("GET", f"{SUBS}/{sub}/addons", role="member")
    assert [(i["id"], i["quantity"]) for i in listed.body["items"]] == [(item["id"], 5)]
    members = call("GET", "/billing/usage", role="member").body["metrics"]["members"]
    assert members["quota"] == 25  # Pro's 20 plus 5 seats
    assert "billing.invoice.paid" in event_types(events)

    # 125,000 API calls against a quota of 100,000: 25,000 over, 3 started blocks of 10,000 at 20,000.
    advance(STARTED + timedelta(days=20))
    report_125_000_api_calls()

    [renewal_step] = advance(RENEWED + timedelta(hours=1))

    assert renewal_step["action"] == "renew"
    renewal = invoices()[-1]
    assert renewal["billing_reason"] == "subscription_cycle"
    assert lines(renewal) == [
        ("Pro (monthly)", 1, 299_000, 299_000),
        ("Extra members (5 units, monthly)", 5, 15_000, 75_000),
        ("Pro overage: 25.000 API calls over the quota of 100.000, per 10.000", 3, 20_000, 60_000),
    ]
    overage = renewal["lines"][2]
    assert (overage["period_start"], overage["period_end"]) == (to_rfc3339(STARTED), to_rfc3339(RENEWED))
    assert totals(renewal) == (434_000, 47_740, 481_740, "paid")


OVERAGE_LINE = ("Pro overage: 25.000 API calls over the quota of 100.000, per 10.000", 3, 20_000, 60_000)


def cancelled_with_overage(sub: str) -> None:
    """125,000 API calls reported on 03-20, the subscription cancelled on 03-21: grace until 04-01."""
    advance(STARTED + timedelta(days=19))
    report_125_000_api_calls()
    advance(STARTED + timedelta(days=20))
    cancelled = call("POST", f"{SUBS}/{sub}/cancel")
    assert cancelled.status == 200, cancelled.raw
    assert cancelled.body["grace_period_ends_at"] == to_rfc3339(RENEWED)


def test_a_cancelled_period_closes_with_its_overage_invoiced_once(
    midtrans: MidtransFake, events: str
) -> None:
    sub, _ = pro_on_a_test_clock()
    cancelled_with_overage(sub)
    charges_before = len(invoice_charges(midtrans))

    [grace_end] = advance(RENEWED + timedelta(hours=1))
    later = advance(SECOND_RENEWAL + timedelta(hours=1))

    assert grace_end["action"] == "end_grace"
    assert later == []
    first, final = invoices()
    assert first["billing_reason"] == "subscription_create"
    assert (final["billing_reason"], final["subscription_id"]) == ("subscription_cycle", sub)
    assert lines(final) == [OVERAGE_LINE]
    assert (final["period_start"], final["period_end"]) == (to_rfc3339(STARTED), to_rfc3339(RENEWED))
    assert totals(final) == (60_000, 6_600, 66_600, "paid")  # PPN 11 % of 60,000
    assert [c["gross_amount"] for c in invoice_charges(midtrans)[charges_before:]] == [66_600]
    assert call("GET", f"{SUBS}/{sub}").body["status"] == "cancelled"
    assert event_types(events)[-3:] == [
        "billing.subscription.cancelled",
        "billing.invoice.created",
        "billing.invoice.paid",
    ]


def test_a_declined_final_invoice_stays_open_until_the_customer_pays_it(midtrans: MidtransFake) -> None:
    sub, card = pro_on_a_test_clock()
    cancelled_with_overage(sub)
    set_card_token(ORG, card, DECLINING)

    advance(RENEWED + timedelta(hours=1))
    later = advance(RENEWED + timedelta(days=20))
    charges_after_a_month = len(invoice_charges(midtrans))

    final = invoices()[-1]
    assert lines(final) == [OVERAGE_LINE]
    assert (final["status"], final["retry_count"], final["next_retry_at"]) == ("open", 1, None)
    assert later == []  # no dunning after a cancellation: the card is not tried again unasked
    assert invoice_charges(midtrans)[-1]["gross_amount"] == 66_600
    set_card_token(ORG, card, CARD_TOKEN)
    paid = call("POST", f"/billing/invoices/{final['id']}/pay", {})
    assert paid.status == 200, paid.raw
    assert (paid.body["status"], paid.body["amount_paid"]) == ("paid", 66_600)
    assert len(invoice_charges(midtrans)) == charges_after_a_month + 1
    assert call("GET", f"{SUBS}/{sub}").body["status"] == "cancelled"


def test_a_final_invoice_cut_short_by_the_gateway_is_charged_by_the_next_firing(
    midtrans: MidtransFake,
) -> None:
    sub, card = pro_on_a_test_clock()
    cancelled_with_overage(sub)
    good = set_card_token(ORG, card, "481111-hang-saved-1114")  # the bank never answers

    cut_short = call("POST", ADVANCE, {"to": to_rfc3339(RENEWED + timedelta(hours=1))})
    left = invoices()[-1]
    set_card_token(ORG, card, good)
    resumed = advance(RENEWED + timedelta(hours=2))

    assert cut_short.status == 503, cut_short.raw
    assert (left["status"], lines(left)) == ("draft", [OVERAGE_LINE])
    assert call("GET", f"{SUBS}/{sub}").body["status"] == "cancelled"
    assert [step["action"] for step in resumed] == ["end_grace"]
    final = invoices()[-1]
    assert (final["id"], final["status"]) == (left["id"], "paid")
    assert [c["gross_amount"] for c in invoice_charges(midtrans)].count(66_600) == 1


def test_a_renewal_awaiting_a_transfer_is_left_to_the_transfer(midtrans: MidtransFake) -> None:
    sub, _ = pro_on_a_test_clock()
    pay_by_transfer(ORG)  # the subscription now pays by transfer

    renewed = advance(RENEWED + timedelta(hours=1))
    later = call("POST", ADVANCE, {"to": to_rfc3339(RENEWED + timedelta(days=2))})

    assert [step["action"] for step in renewed] == ["renew"]
    renewal = invoices()[-1]
    assert (renewal["status"], renewal["gateway_invoice_id"]) == ("open", f"{renewal['id']}-a1")
    assert later.status == 200, later.raw
    assert later.body["processed"] == []  # awaiting the transfer: not a charge cut short
    assert midtrans.charge_count(f"{renewal['id']}-a1") == 1
    assert call("GET", f"{SUBS}/{sub}").body["status"] == "active"


def test_fewer_units_and_removals_take_effect_at_the_period_end(midtrans: MidtransFake) -> None:
    sub, _ = pro_on_a_test_clock()
    seats = attach(sub, {"addon_id": "addon_extra-members", "quantity": 5}).body
    advance(STARTED + timedelta(days=40))  # renewed on 04-01 with 5 seats
    assert lines(invoices()[-1])[1] == ("Extra members (5 units, monthly)", 5, 15_000, 75_000)

    fewer = call("PATCH", f"{SUBS}/{sub}/addons/{seats['id']}", {"quantity": 2})
    # 500,000 for the 21 of 30 days left in April: exactly 350,000, PPN 38,500.
    support = attach(sub, {"addon": "priority-support"})
    removed = call("DELETE", f"{SUBS}/{sub}/addons/{support.body['id']}")
    removed_again = call("DELETE", f"{SUBS}/{sub}/addons/{support.body['id']}")

    assert fewer.status == 200, fewer.raw
    assert (fewer.body["quantity"], fewer.body["scheduled_quantity"], fewer.body["prorated_invoice"]) == (
        5,
        2,
        None,
    )
    assert support.status == 201, support.raw
    assert lines(support.body["prorated_invoice"]) == [
        ("Remaining time on Priority support (monthly)", 1, 350_000, 350_000)
    ]
    assert totals(support.body["prorated_invoice"]) == (350_000, 38_500, 388_500, "paid")
    assert removed.status == 200, removed.raw
    assert removed.body["cancel_at_period_end"] is True
    assert removed_again.status == 200
    assert removed_again.body == removed.body
    still = call("GET", "/billing/usage").body["metrics"]["members"]["quota"]
    assert still == 25  # the paid seats count until the period ends

    advance(SECOND_RENEWAL + timedelta(hours=1))

    assert lines(invoices()[-1]) == [
        ("Pro (monthly)", 1, 299_000, 299_000),
        ("Extra members (2 units, monthly)", 2, 15_000, 30_000),
    ]
    assert totals(invoices()[-1]) == (329_000, 36_190, 365_190, "paid")
    kept = call("GET", f"{SUBS}/{sub}/addons").body["items"]
    assert [(i["slug"], i["quantity"], i["scheduled_quantity"]) for i in kept] == [("extra-members", 2, None)]
    assert call("GET", "/billing/usage").body["metrics"]["members"]["quota"] == 22


def test_a_declined_charge_attaches_nothing(midtrans: MidtransFake) -> None:
    sub, card = pro_on_a_test_clock()
    set_card_token(ORG, card, DECLINING)
    charges_before = len(invoice_charges(midtrans))

    declined = attach(sub, {"addon": "extra-storage", "quantity": 1})

    assert declined.status == 402, declined.raw
    assert declined.error_code == "payment_failed"
    assert call("GET", f"{SUBS}/{sub}/addons").body["items"] == []
    assert len(invoice_charges(midtrans)) == charges_before + 1
    assert [i["billing_reason"] for i in invoices()] == ["subscription_create"]


def test_an_add_on_attached_during_a_trial_is_billed_from_the_trial_end(midtrans: MidtransFake) -> None:
    assert call("POST", "/billing/test-clock", {"frozen_time": to_rfc3339(STARTED)}).status == 201
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    trial = call("POST", SUBS, {"plan": "pro", "payment_method_id": card}).body
    assert trial["status"] == "trialing"

    attached = attach(trial["id"], {"addon": "extra-members", "quantity": 3})

    assert attached.status == 201, attached.raw
    assert attached.body["prorated_invoice"] is None
    advance(STARTED + timedelta(days=14))
    [first] = invoices()
    assert lines(first) == [
        ("Pro (monthly)", 1, 299_000, 299_000),
        ("Extra members (3 units, monthly)", 3, 15_000, 45_000),
    ]
    assert totals(first) == (344_000, 37_840, 381_840, "paid")


def test_refusals_change_nothing(midtrans: MidtransFake) -> None:
    sub, _ = pro_on_a_test_clock()
    assert attach(sub, {"addon": "priority-support"}).status == 201
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    before = table.get_item(Key={"PK": f"ORG#{ORG}", "SK": "SUBSCRIPTION"}).get("Item")

    unknown = attach(sub, {"addon": "gold-plating"})
    twice = attach(sub, {"addon": "priority-support"})
    flat_many = attach(sub, {"addon": "priority-support", "quantity": 2})
    both = attach(sub, {"addon": "priority-support", "addon_id": "addon_priority-support"})
    extra_field = attach(sub, {"addon": "extra-members", "price_monthly": 1})
    too_many = attach(sub, {"addon": "extra-members", "quantity": 1001})
    elsewhere = call("POST", f"{SUBS}/{sub}/addons", {"addon": "extra-members"}, org="org_someone_else")
    as_member = call("POST", f"{SUBS}/{sub}/addons", {"addon": "extra-members"}, role="member")
    no_item = call("DELETE", f"{SUBS}/{sub}/addons/si_missing")

    assert (unknown.status, unknown.error_code) == (404, "addon_not_found")
    assert (twice.status, twice.error_code) == (409, "addon_already_attached")
    assert (flat_many.status, flat_many.error_code) == (422, "validation_error")
    assert (both.status, both.error_code) == (422, "validation_error")
    assert (extra_field.status, extra_field.error_code) == (422, "validation_error")
    assert (too_many.status, too_many.error_code) == (422, "validation_error")
    assert (elsewhere.status, elsewhere.error_code) == (404, "subscription_not_found")
    assert (as_member.status, as_member.error_code) == (403, "forbidden")
    assert (no_item.status, no_item.error_code) == (404, "subscription_addon_not_found")
    assert table.get_item(Key={"PK": f"ORG#{ORG}", "SK": "SUBSCRIPTION"}).get("Item") == before


def test_an_add_on_paid_by_virtual_account_is_attached_when_the_transfer_settles(
    midtrans: MidtransFake, events: str
) -> None:
    sub, _ = pro_on_a_test_clock()
    pay_by_transfer(ORG)  # the subscription now pays by transfer
    advance(STARTED + timedelta(days=10))

    attached = attach(sub, {"addon": "extra-members", "quantity": 5})

    assert attached.status == 201, attached.raw
    invoice = attached.body["prorated_invoice"]
    assert (invoice["status"], invoice["total"], invoice["gateway_invoice_id"]) == (
        "open",
        56_395,
        f"{invoice['id']}-a1",
    )
    assert call("GET", f"{SUBS}/{sub}/addons").body["items"] == []  # not until it is paid
    with NotificationInbox() as inbox:
        midtrans.notification_url = inbox.url
        midtrans.settle(f"{invoice['id']}-a1")
        [notification] = inbox.bodies
    for _ in range(2):  # Midtrans redelivers; the second changes nothing
        delivered = call_api("POST", "/webhooks/midtrans", body=json.loads(notification))
        assert delivered.status == 200, delivered.raw

    [item] = call("GET", f"{SUBS}/{sub}/addons").body["items"]
    assert (item["id"], item["quantity"]) == (attached.body["id"], 5)
    assert call("GET", f"/billing/invoices/{invoice['id']}").body["status"] == "paid"
    assert call("GET", "/billing/usage").body["metrics"]["members"]["quota"] == 25
    assert event_types(events)[-2:] == ["billing.invoice.paid", "billing.subscription.updated"]
