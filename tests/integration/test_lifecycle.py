"""The lifecycle actions timers and test clocks call (``services.lifecycle``, ``services.dunning``,
``services.test_clocks``), on moto, charging through the real Midtrans adapter at the local
Midtrans fake: trial end (paid, declined), dunning retries (recovered, exhausted), renewal, grace
end, incomplete expiry, stale and early firings that change and charge nothing, and what falls due
in time order.

States are built through the real services (``subscriptions.subscribe`` with
``wiring.default_billing()``); trials last an hour (``Billing(trial_length=...)``). A saved card
is made to decline by giving it a token containing ``decline``, which the fake refuses."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from local.midtrans_fake import MidtransFake
from tagih import wiring
from tagih.clock import to_rfc3339
from tagih.domain.errors import GatewayUnavailable
from tagih.domain.invoices import Invoice
from tagih.domain.subscriptions import Subscription, SubscriptionStore
from tagih.services import dunning, lifecycle, subscriptions, test_clocks
from tagih.services.context import Billing
from tests.fakes.billing_setup import (
    CARD_TOKEN,
    DECLINING,
    add_method,
    event_types,
    first_attempt_in_flight,
    invoice_charges,
    mark_trialled,
    set_card_token,
)
from tests.fakes.gateway_env import received_events
from tests.fakes.lambda_runtime import Answer, call_api, call_route

ORG = "org_lifecycle"
PRO_WITH_PPN = 331_890  # 299,000 + 11 % PPN
TRIAL = timedelta(hours=1)
T0 = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


@pytest.fixture
def billing(midtrans: MidtransFake) -> Billing:
    return dataclasses.replace(wiring.default_billing(), trial_length=TRIAL)


def call(method: str, path: str, body: Any = None) -> Answer:
    return call_api(method, path, body=body, org=ORG)


def stored(billing: Billing) -> Subscription:
    sub = billing.subscriptions.current(ORG)
    assert sub is not None
    return sub


def trialing(billing: Billing, method: dict[str, Any] | None = None) -> tuple[Subscription, str]:
    card = add_method(ORG, method or {"type": "credit_card", "token": CARD_TOKEN})
    subscribed = subscriptions.subscribe(
        billing, organization_id=ORG, plan_slug="pro", cycle="monthly", payment_method_id=card, now=T0
    )
    assert subscribed.subscription.status == "trialing"
    return subscribed.subscription, card


def test_trial_end_with_a_good_card_activates_and_pays_once(
    billing: Billing, midtrans: MidtransFake, events: str
) -> None:
    trial, _ = trialing(billing)
    assert trial.id is not None
    assert trial.trial_ends_at == T0 + TRIAL

    early = lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL / 2)
    assert (early.status, early.reason) == ("skipped", "early")
    assert invoice_charges(midtrans) == []

    ended = lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)
    again = lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)
    unversioned = lifecycle.end_trial_action(billing, ORG, trial.id, None, T0 + TRIAL + DAY)

    assert (ended.status, ended.reason) == ("done", "paid")
    assert again.status == unversioned.status == "skipped"
    assert len(invoice_charges(midtrans)) == 1
    active = stored(billing)
    assert active.status == "active"
    assert active.current_period_start == T0 + TRIAL
    invoice = ended.invoice
    assert invoice is not None
    assert invoice.status == "paid"
    assert invoice.billing_reason == "subscription_create"
    assert invoice.number is not None
    assert invoice.number.startswith("INV-")
    assert invoice.amount == invoice.amount_paid == PRO_WITH_PPN
    assert billing.invoices.get(ORG, invoice.id) == invoice
    assert event_types(events)[-3:] == [
        "billing.invoice.created",
        "billing.invoice.paid",
        "billing.subscription.updated",
    ]


def test_trial_end_with_a_declined_card_is_past_due_with_an_open_invoice(
    billing: Billing, midtrans: MidtransFake, events: str
) -> None:
    trial, card = trialing(billing)
    set_card_token(ORG, card, DECLINING)
    assert trial.id is not None

    failed = lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)

    assert (failed.status, failed.reason) == ("done", "payment_failed")
    assert failed.next_retry_at == T0 + TRIAL + DAY
    assert stored(billing).status == "past_due"
    invoice = billing.invoices.get(ORG, failed.invoice.id if failed.invoice else "")
    assert invoice.status == "open"
    assert invoice.number is not None
    assert (invoice.retry_count, invoice.next_retry_at) == (1, T0 + TRIAL + DAY)
    assert invoice.amount_due == PRO_WITH_PPN
    assert "billing.invoice.payment_failed" in event_types(events)
    assert len(invoice_charges(midtrans)) == 1


def test_a_retry_that_succeeds_recovers_the_subscription(billing: Billing, midtrans: MidtransFake) -> None:
    trial, card = trialing(billing)
    good = set_card_token(ORG, card, DECLINING)
    assert trial.id is not None
    first = lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)
    assert first.invoice is not None
    assert first.next_retry_at is not None
    invoice_id, failed_at = first.invoice.id, T0 + TRIAL

    too_early = dunning.retry_payment_action(billing, ORG, invoice_id, 1, first.next_retry_at - DAY / 2)
    retry1 = dunning.retry_payment_action(billing, ORG, invoice_id, 1, first.next_retry_at)
    duplicate = dunning.retry_payment_action(billing, ORG, invoice_id, 1, first.next_retry_at)
    assert (too_early.reason, duplicate.reason) == ("early", "stale")
    assert (retry1.reason, retry1.next_retry_at) == ("payment_failed", failed_at + 3 * DAY)
    assert retry1.invoice is not None
    assert retry1.invoice.status == "overdue"
    assert stored(billing).status == "past_due"

    set_card_token(ORG, card, good)
    retry2 = dunning.retry_payment_action(billing, ORG, invoice_id, 2, failed_at + 3 * DAY)
    replayed = dunning.retry_payment_action(billing, ORG, invoice_id, 2, failed_at + 3 * DAY)

    assert (retry2.status, retry2.reason, replayed.status) == ("done", "paid", "skipped")
    assert stored(billing).status == "active"
    paid = billing.invoices.get(ORG, invoice_id)
    assert (paid.status, paid.retry_count, paid.amount_paid) == ("paid", 2, PRO_WITH_PPN)
    assert len(invoice_charges(midtrans)) == 3  # the trial end and two retries, each once


def test_when_every_retry_fails_the_invoice_is_uncollectible_and_the_org_on_free(
    billing: Billing, midtrans: MidtransFake, events: str
) -> None:
    trial, card = trialing(billing)
    set_card_token(ORG, card, DECLINING)

    ran = test_clocks.advance(billing, ORG, T0, T0 + 30 * DAY)

    failed_at = T0 + TRIAL
    assert [(at, name, result.reason) for at, name, result in ran] == [
        (failed_at, "end_trial", "payment_failed"),
        (failed_at + DAY, "retry_payment", "payment_failed"),
        (failed_at + 3 * DAY, "retry_payment", "payment_failed"),
        (failed_at + 5 * DAY, "retry_payment", "payment_failed"),
        (failed_at + 7 * DAY, "retry_payment", "retries_exhausted"),
    ]
    assert len(invoice_charges(midtrans)) == 5
    assert stored(billing).status == "cancelled"
    invoice = ran[-1][2].invoice
    assert invoice is not None
    assert (invoice.status, invoice.retry_count, invoice.next_retry_at) == ("uncollectible", 5, None)
    current = call("GET", "/billing/subscription")
    assert current.status == 200, current.raw
    assert (current.body["plan"], current.body["status"]) == ("free", "active")
    assert event_types(events)[-1] == "billing.subscription.cancelled"
    assert test_clocks.due_actions(billing, ORG, T0 + 365 * DAY) == []
    assert trial.id is not None


def test_renewal_moves_the_period_and_invoices_pro_with_ppn(billing: Billing, midtrans: MidtransFake) -> None:
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    started = subscriptions.subscribe(
        billing, organization_id=ORG, plan_slug="pro", cycle="monthly", payment_method_id=card, now=T0
    ).subscription
    assert started.status == "active"
    assert started.id is not None
    end = started.current_period_end
    assert end is not None
    charged = len(invoice_charges(midtrans))

    early = lifecycle.renew_action(billing, ORG, started.id, started.version, end - timedelta(seconds=1))
    stale = lifecycle.renew_action(billing, ORG, started.id, started.version - 1, end)
    other = lifecycle.renew_action(billing, ORG, "sub_someone_else", None, end)
    assert [r.reason for r in (early, stale, other)] == ["early", "stale", "stale"]
    assert len(invoice_charges(midtrans)) == charged
    assert stored(billing) == started

    renewed = lifecycle.renew_action(billing, ORG, started.id, started.version, end)
    duplicate = lifecycle.renew_action(billing, ORG, started.id, started.version, end)

    assert (renewed.reason, duplicate.status) == ("paid", "skipped")
    assert len(invoice_charges(midtrans)) == charged + 1
    now_sub = stored(billing)
    assert now_sub.status == "active"
    assert now_sub.current_period_start == end
    assert now_sub.current_period_end is not None
    assert now_sub.current_period_end > end
    invoice = renewed.invoice
    assert invoice is not None
    assert (invoice.billing_reason, invoice.status, invoice.amount) == (
        "subscription_cycle",
        "paid",
        PRO_WITH_PPN,
    )
    assert (invoice.period_start, invoice.period_end) == (end, now_sub.current_period_end)


def test_a_paid_renewal_is_published_once_with_the_subscription_in_its_new_period(
    billing: Billing, midtrans: MidtransFake, events: str
) -> None:
    """Issue 16 item 7: docs/events.md lists renewal under ``billing.subscription.updated``; a paid
    renewal published only its invoice's events."""
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    started = subscriptions.subscribe(
        billing, organization_id=ORG, plan_slug="pro", cycle="monthly", payment_method_id=card, now=T0
    ).subscription
    assert started.id is not None
    assert started.current_period_end is not None
    received_events(events)  # what subscribing published is not the renewal's

    renewed = lifecycle.renew_action(billing, ORG, started.id, started.version, started.current_period_end)
    again = lifecycle.renew_action(billing, ORG, started.id, None, started.current_period_end)
    resumed = lifecycle.renew_action(billing, ORG, started.id, started.version, started.current_period_end)

    assert (renewed.reason, again.status, resumed.status) == ("paid", "skipped", "skipped")
    published = received_events(events)
    assert [e["detail-type"] for e in published] == [
        "billing.invoice.created",
        "billing.invoice.paid",
        "billing.subscription.updated",
    ]
    data = cast(dict[str, Any], published[-1]["detail"])["data"]
    assert (data["id"], data["status"]) == (started.id, "active")
    assert data["current_period_start"] == to_rfc3339(started.current_period_end)
    new_end = stored(billing).current_period_end
    assert new_end is not None
    assert data["current_period_end"] == to_rfc3339(new_end)


def test_a_declined_renewal_is_past_due_with_its_first_retry_scheduled(
    billing: Billing, midtrans: MidtransFake
) -> None:
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    started = subscriptions.subscribe(
        billing, organization_id=ORG, plan_slug="pro", cycle="monthly", payment_method_id=card, now=T0
    ).subscription
    assert started.id is not None
    assert started.current_period_end is not None
    set_card_token(ORG, card, DECLINING)

    failed = lifecycle.renew_action(billing, ORG, started.id, None, started.current_period_end)

    assert failed.reason == "payment_failed"
    assert failed.next_retry_at == started.current_period_end + DAY
    assert stored(billing).status == "past_due"
    assert failed.invoice is not None
    assert failed.invoice.status == "open"


def test_the_customer_paying_a_dunned_invoice_ends_past_due(billing: Billing, midtrans: MidtransFake) -> None:
    mark_trialled(ORG)
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    started = subscriptions.subscribe(
        billing, organization_id=ORG, plan_slug="pro", cycle="monthly", payment_method_id=card, now=T0
    ).subscription
    assert started.id is not None
    assert started.current_period_end is not None
    saved = set_card_token(ORG, card, DECLINING)
    failed = lifecycle.renew_action(billing, ORG, started.id, None, started.current_period_end)
    assert failed.invoice is not None
    set_card_token(ORG, card, saved)  # the customer fixed the card with the bank

    paid = call_route(
        "invoices",
        "POST",
        f"/billing/invoices/{failed.invoice.id}/pay",
        "/billing/invoices/{invoice_id}/pay",
        org=ORG,
    )

    assert paid.status == 200, paid.raw
    assert paid.body["status"] == "paid"
    assert stored(billing).status == "active"
    # The dunning retry that was scheduled finds nothing to do.
    retry = dunning.retry_payment_action(billing, ORG, failed.invoice.id, 1, started.current_period_end + DAY)
    assert retry.status == "skipped"


def test_grace_end_cancels_to_free(billing: Billing, midtrans: MidtransFake, events: str) -> None:
    trial, _ = trialing(billing)
    assert trial.id is not None
    in_grace = subscriptions.cancel_subscription(billing, ORG, trial.id, T0 + TRIAL / 4)
    ends = in_grace.grace_period_ends_at
    assert in_grace.status == "grace_period"
    assert ends is not None

    never_charged = lifecycle.end_trial_action(billing, ORG, trial.id, None, T0 + TRIAL)
    early = lifecycle.end_grace_action(billing, ORG, trial.id, in_grace.version, ends - DAY)
    ended = lifecycle.end_grace_action(billing, ORG, trial.id, in_grace.version, ends)
    again = lifecycle.end_grace_action(billing, ORG, trial.id, in_grace.version, ends)

    assert never_charged.status == early.status == again.status == "skipped"
    assert (ended.status, ended.reason) == ("done", "cancelled")
    assert stored(billing).status == "cancelled"
    assert invoice_charges(midtrans) == []
    assert event_types(events)[-1] == "billing.subscription.cancelled"


def test_an_expired_incomplete_subscription_is_cancelled_with_its_invoice_void(
    billing: Billing, midtrans: MidtransFake
) -> None:
    mark_trialled(ORG)
    bca = add_method(ORG, {"type": "bank_transfer", "bank": "bca"})
    started = subscriptions.subscribe(
        billing, organization_id=ORG, plan_slug="pro", cycle="monthly", payment_method_id=bca, now=T0
    )
    sub, invoice = started.subscription, started.invoice
    assert sub.status == "incomplete"
    assert sub.id is not None
    assert invoice is not None
    assert sub.incomplete_expires_at is not None

    early = lifecycle.expire_incomplete_action(billing, ORG, sub.id, sub.version, T0 + timedelta(hours=1))
    expired = lifecycle.expire_incomplete_action(billing, ORG, sub.id, sub.version, sub.incomplete_expires_at)

    assert (early.reason, expired.reason) == ("early", "cancelled")
    assert stored(billing).status == "cancelled"
    assert billing.invoices.get(ORG, invoice.id).status == "void"


def test_due_actions_lists_what_falls_due_in_time_order(billing: Billing, midtrans: MidtransFake) -> None:
    long_trial = dataclasses.replace(billing, trial_length=timedelta(days=14))
    trial, _ = trialing(long_trial)
    ends = T0 + timedelta(days=14)

    assert test_clocks.due_actions(long_trial, ORG, T0 + DAY) == []
    due = test_clocks.due_actions(long_trial, ORG, T0 + 60 * DAY)
    assert [(d.at, d.name) for d in due] == [(ends - 3 * DAY, "trial_will_end"), (ends, "end_trial")]
    assert [d.name for d in test_clocks.due_actions(long_trial, ORG, ends, since=ends - 3 * DAY)] == [
        "end_trial"
    ]

    ran = test_clocks.advance(long_trial, ORG, T0, ends + 40 * DAY)

    assert [name for _, name, _ in ran] == ["trial_will_end", "end_trial", "renew"]
    assert [result.status for _, _, result in ran] == ["done", "done", "done"]
    assert len(invoice_charges(midtrans)) == 2
    nxt = test_clocks.due_actions(long_trial, ORG, ends + 365 * DAY)
    assert [d.name for d in nxt] == ["renew"]
    assert nxt[0].at == stored(long_trial).current_period_end
    assert trial.id is not None


def test_a_trial_end_cut_short_by_the_gateway_is_resumed_by_the_next_firing(
    billing: Billing, midtrans: MidtransFake
) -> None:
    trial, card = trialing(billing)
    assert trial.id is not None
    good = set_card_token(ORG, card, "481111-hang-saved-1114")  # the bank never answers: 503-like

    with pytest.raises(GatewayUnavailable):
        lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)
    left = stored(billing)
    assert left.trial_over_awaiting_payment
    assert [i.status for i in billing.invoices.list_for_organization(ORG)] == ["draft"]

    set_card_token(ORG, card, good)
    resumed = lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)

    assert (resumed.status, resumed.reason) == ("done", "paid")
    assert stored(billing).status == "active"
    assert [i.status for i in billing.invoices.list_for_organization(ORG)] == ["paid"]
    assert len(invoice_charges(midtrans)) == 1


class CrashOnOutcome:
    """The subscription store, failing the first write of a charge's outcome (a Lambda that dies
    after the invoice was charged and numbered)."""

    def __init__(self, inner: SubscriptionStore) -> None:
        self.inner, self.crashed = inner, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def save(
        self,
        subscription: Subscription,
        expected_version: int,
        *,
        invoices: Sequence[tuple[Invoice, int | None]] = (),
    ) -> None:
        if not self.crashed and any(expected is not None for _, expected in invoices):
            self.crashed = True
            raise RuntimeError("the Lambda died")
        self.inner.save(subscription, expected_version, invoices=invoices)


def test_a_charge_made_before_a_crash_is_recorded_by_the_next_firing_not_made_again(
    billing: Billing, midtrans: MidtransFake
) -> None:
    trial, _ = trialing(billing)
    assert trial.id is not None
    crashing = dataclasses.replace(
        billing, subscriptions=cast(SubscriptionStore, CrashOnOutcome(billing.subscriptions))
    )

    with pytest.raises(RuntimeError):
        lifecycle.end_trial_action(crashing, ORG, trial.id, trial.version, T0 + TRIAL)
    [left] = billing.invoices.list_for_organization(ORG)
    assert left.status == "open"
    assert left.number is not None

    resumed = lifecycle.end_trial_action(crashing, ORG, trial.id, trial.version, T0 + TRIAL)

    assert (resumed.status, resumed.reason) == ("done", "paid")
    assert stored(billing).status == "active"
    assert billing.invoices.get(ORG, left.id).status == "paid"
    assert len(invoice_charges(midtrans)) == 1


def test_a_charge_left_in_flight_is_resumed_for_its_amount_not_shrunk_by_a_top_up_since(
    billing: Billing, midtrans: MidtransFake
) -> None:
    trial, card = trialing(billing)
    assert trial.id is not None
    good = set_card_token(ORG, card, "481111-hang-saved-1114")
    with pytest.raises(GatewayUnavailable):
        lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)
    [draft] = billing.invoices.list_for_organization(ORG)
    # A firing whose gateway did not answer leaves its attempt claimed (processing), for the full amount.
    in_flight = first_attempt_in_flight(draft, card, T0 + TRIAL)
    assert billing.payments.claim(in_flight) == in_flight
    set_card_token(ORG, card, good)
    topped_up = call("POST", "/billing/wallet/top-up", {"amount": 100_000, "payment_method_id": card})
    assert topped_up.status == 201, topped_up.raw

    resumed = lifecycle.end_trial_action(billing, ORG, trial.id, trial.version, T0 + TRIAL)

    assert (resumed.status, resumed.reason) == ("done", "paid")
    paid = billing.invoices.get(ORG, draft.id)
    assert (paid.status, paid.credits_applied, paid.amount_paid) == ("paid", 0, PRO_WITH_PPN)
    assert [c["gross_amount"] for c in invoice_charges(midtrans)] == [PRO_WITH_PPN]
    assert call("GET", "/billing/wallet").body["balance"] == 100_000
