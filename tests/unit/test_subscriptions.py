"""The subscription lifecycle as pure transitions: periods, prices, proration to the rupiah, and
every refusal and no-op a request or a timer can meet (DESIGN.md "Subscription lifecycle")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tagih.api.errors import status_and_code
from tagih.domain import errors
from tagih.domain import subscriptions as s
from tagih.domain.addons import addon_increments, attach_addon, change_addon_quantity, remove_addon
from tagih.domain.catalog import Features, Limits, Plan, default_catalog
from tagih.domain.errors import BillingError, InvalidField, OrganizationSuspended, VersionConflict
from tagih.domain.plan_changes import apply_change, preview_change
from tagih.domain.subscriptions import BillingCycle, StartDecision, Subscription, add_cycle
from tagih.domain.transitions import (
    activate_after_first_payment,
    activate_enterprise,
    cancel,
    end_grace,
    end_trial,
    expire_incomplete,
    payment_recovered,
    reactivate,
    renew,
    renewal_payment_failed,
    retries_exhausted,
    start_subscription,
    suspend,
    trial_converted,
    trial_payment_failed,
    unsuspend,
)

PLANS = {plan.slug: plan for plan in default_catalog().plans}
FREE, PRO, BUSINESS, ENTERPRISE = PLANS["free"], PLANS["pro"], PLANS["business"], PLANS["enterprise"]
ORG = "org_acme"
JAN_15 = datetime(2026, 1, 15, tzinfo=UTC)
FEB_15 = datetime(2026, 2, 15, tzinfo=UTC)
JAN_30_NOON = datetime(2026, 1, 30, 12, tzinfo=UTC)


def utc(year: int, month: int, day: int, *time: int) -> datetime:
    """``utc(2026, 1, 30, 12)``: a UTC moment, hours, minutes and seconds optional."""
    hour, minute, second = (*time, 0, 0, 0)[:3]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def half_up(numerator: int, denominator: int) -> int:
    """The expected rounding, written out independently of money.round_half_up (positive values)."""
    return (2 * numerator + denominator) // (2 * denominator)


def subscribe(
    plan: Plan = PRO, cycle: BillingCycle = "monthly", now: datetime = JAN_15, *, trial: bool = False
) -> Subscription:
    decision = start_subscription(
        ORG,
        plan,
        cycle,
        now,
        trial_available=trial,
        payment_method_id="pm_card",
        gateway="midtrans",
        currency="IDR",
    )
    return decision.subscription


def active(plan: Plan = PRO, cycle: BillingCycle = "monthly", now: datetime = JAN_15) -> Subscription:
    sub = activate_after_first_payment(subscribe(plan, cycle, now), now)
    assert sub is not None
    return sub


def http(error: BillingError) -> tuple[int, str]:
    return status_and_code(error)


# -- periods and prices ----------------------------------------------------------------------------------
def test_monthly_periods_keep_the_month_end_anchor() -> None:
    jan_31 = utc(2026, 1, 31, 9, 30)
    feb = add_cycle(jan_31, "monthly", 31)
    mar = add_cycle(feb, "monthly", 31)
    apr = add_cycle(mar, "monthly", 31)
    assert (feb, mar, apr) == (utc(2026, 2, 28, 9, 30), utc(2026, 3, 31, 9, 30), utc(2026, 4, 30, 9, 30))


def test_a_leap_february_ends_on_the_29th() -> None:
    feb = add_cycle(utc(2028, 1, 31), "monthly", 31)
    assert feb == utc(2028, 2, 29)
    assert add_cycle(feb, "monthly", 31) == utc(2028, 3, 31)


def test_annual_periods_from_february_29_come_back_to_it_in_leap_years() -> None:
    ends = [utc(2028, 2, 29)]
    for _ in range(4):
        ends.append(add_cycle(ends[-1], "annual", 29))
    assert ends[1:] == [utc(2029, 2, 28), utc(2030, 2, 28), utc(2031, 2, 28), utc(2032, 2, 29)]


def test_periods_cross_the_year_and_are_utc() -> None:
    assert add_cycle(utc(2026, 12, 15, 23, 59, 59), "monthly", 15) == utc(2027, 1, 15, 23, 59, 59)
    jakarta = utc(2026, 1, 15, 7).astimezone(ZoneInfo("Asia/Jakarta"))  # 14:00 WIB
    assert add_cycle(jakarta, "monthly", 15) == utc(2026, 2, 15, 7)
    assert add_cycle(jakarta, "monthly", 15).tzinfo == UTC


def test_add_cycle_refuses_naive_times_and_impossible_anchors() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_cycle(datetime(2026, 1, 15), "monthly", 15)
    with pytest.raises(ValueError, match="between 1 and 31"):
        add_cycle(JAN_15, "monthly", 32)


def test_plan_prices_come_from_the_catalog_and_custom_plans_have_none() -> None:
    assert s.plan_price(PRO, "monthly") == 299_000
    assert s.plan_price(PRO, "annual") == 2_990_000
    assert s.plan_price(BUSINESS, "annual") == 9_900_000
    with pytest.raises(errors.ContactSales) as refused:
        s.plan_price(ENTERPRISE, "monthly")
    assert http(refused.value) == (409, "contact_sales")


# -- Free ------------------------------------------------------------------------------------------
def test_an_organization_without_a_subscription_is_on_free() -> None:
    free = s.current_or_free(ORG, None, lambda: FREE, JAN_15)
    assert (free.id, free.plan, free.plan_name, free.status, free.version) == (
        None,
        "free",
        "Free",
        "active",
        0,
    )
    assert free.current_period_start is None
    assert free.current_period_end is None
    assert free.limits.members == 3
    assert free.features.basic
    assert not free.features.mfa
    assert s.next_renewal_at(free) is None
    assert renew(free, FEB_15) is None


def _free_plan_must_not_be_read() -> Plan:
    raise AssertionError("a live subscription is shown without reading the Free plan")


def test_a_cancelled_subscription_leaves_free_and_a_live_one_is_shown_as_is() -> None:
    sub = active()
    assert s.current_or_free(ORG, sub, _free_plan_must_not_be_read, JAN_15) is sub
    past_due = renewal_payment_failed(sub, JAN_15)
    assert past_due is not None
    cancelled = retries_exhausted(past_due, JAN_15)
    assert cancelled is not None
    assert cancelled.status == "cancelled"
    assert s.current_or_free(ORG, cancelled, lambda: FREE, JAN_15).plan == "free"


def test_free_has_nothing_to_change_or_cancel() -> None:
    free = s.free_subscription(ORG, FREE, JAN_15)
    with pytest.raises(errors.SubscriptionNotActive):
        cancel(free, JAN_15)
    with pytest.raises(errors.SubscriptionNotActive):
        preview_change(free, PRO, None, JAN_15)


def test_public_data_is_the_api_shape_without_internal_fields() -> None:
    data = active().public_data()
    assert set(data) == {
        "id", "organization_id", "plan", "plan_name", "status", "billing_cycle", "cancel_at_period_end",
        "trial_ends_at", "current_period_start", "current_period_end", "grace_period_ends_at",
        "cancelled_at", "scheduled_change", "payment_method_id", "payment_gateway", "gateway_customer_id",
        "gateway_subscription_id", "limits", "features", "addons", "version", "created_at", "updated_at",
    }  # fmt: skip
    assert data["addons"] == []


# -- subscribing -------------------------------------------------------------------------------------
def test_without_a_trial_the_first_period_is_invoiced_and_the_subscription_waits_for_payment() -> None:
    decision = start_subscription(
        ORG,
        PRO,
        "monthly",
        JAN_15,
        trial_available=False,
        payment_method_id="pm_va",
        gateway="midtrans",
        currency="IDR",
        gateway_customer_id=None,
    )
    sub = decision.subscription
    assert sub.id is not None
    assert sub.id.startswith("sub_")
    assert (sub.status, sub.version, sub.price, sub.currency) == ("incomplete", 1, 299_000, "IDR")
    assert (sub.current_period_start, sub.current_period_end) == (JAN_15, FEB_15)
    assert sub.incomplete_expires_at == JAN_15 + timedelta(hours=23)
    assert decision.billing_reason == "subscription_create"
    assert decision.first_invoice_lines is not None
    [line] = decision.first_invoice_lines
    assert (line.description, line.amount, line.unit_amount, line.quantity) == (
        "Pro (monthly)",
        299_000,
        299_000,
        1,
    )
    assert (line.period_start, line.period_end, line.proration) == (JAN_15, FEB_15, False)

    paid = activate_after_first_payment(sub, JAN_15 + timedelta(minutes=5))
    assert paid is not None
    assert (paid.status, paid.version, paid.incomplete_expires_at) == ("active", 2, None)
    assert paid.updated_at == JAN_15 + timedelta(minutes=5)
    assert activate_after_first_payment(paid, JAN_15 + timedelta(minutes=6)) is None  # duplicate notification


def test_annual_subscription_bills_the_annual_price_for_a_year() -> None:
    decision = start_subscription(
        ORG,
        BUSINESS,
        "annual",
        JAN_15,
        trial_available=False,
        payment_method_id="pm_card",
        gateway="midtrans",
        currency="IDR",
    )
    assert decision.first_invoice_lines is not None
    [line] = decision.first_invoice_lines
    assert (line.description, line.amount, line.period_end) == (
        "Business (annual)",
        9_900_000,
        utc(2027, 1, 15),
    )


def test_an_unpaid_first_invoice_cancels_the_subscription_after_23_hours_once() -> None:
    sub = subscribe()
    assert expire_incomplete(sub, JAN_15 + timedelta(hours=22, minutes=59)) is None  # early
    expired = expire_incomplete(sub, JAN_15 + timedelta(hours=23))
    assert expired is not None
    assert (expired.status, expired.cancelled_at, expired.version) == (
        "cancelled",
        JAN_15 + timedelta(hours=23),
        2,
    )
    assert expire_incomplete(expired, JAN_15 + timedelta(hours=24)) is None  # duplicate
    paid = activate_after_first_payment(sub, JAN_15 + timedelta(hours=1))
    assert paid is not None
    assert expire_incomplete(paid, JAN_15 + timedelta(hours=23)) is None
    # A payment landing after the deadline but before the timer still activates: the money arrived.
    late = activate_after_first_payment(sub, JAN_15 + timedelta(hours=23, seconds=1))
    assert late is not None
    assert late.status == "active"
    assert activate_after_first_payment(expired, JAN_15 + timedelta(hours=25)) is None


def test_a_trial_starts_free_for_the_plans_trial_days() -> None:
    decision = start_subscription(
        ORG,
        PRO,
        "monthly",
        JAN_15,
        trial_available=True,
        payment_method_id=None,
        gateway=None,
        currency="IDR",
    )
    sub = decision.subscription
    assert decision.first_invoice_lines is None
    assert (sub.status, sub.trial_ends_at) == ("trialing", utc(2026, 1, 29))
    assert (sub.current_period_start, sub.current_period_end) == (JAN_15, utc(2026, 1, 29))
    assert sub.limits == PRO.limits
    assert sub.features == PRO.features


def test_the_trial_length_may_come_from_configuration() -> None:
    decision = start_subscription(
        ORG,
        PRO,
        "monthly",
        JAN_15,
        trial_available=True,
        payment_method_id=None,
        gateway=None,
        currency="IDR",
        trial_length=timedelta(seconds=30),
    )
    assert decision.subscription.trial_ends_at == JAN_15 + timedelta(seconds=30)


def test_no_trial_when_the_organization_already_had_one() -> None:
    assert subscribe(PRO, trial=False).status == "incomplete"


@pytest.mark.parametrize(
    ("plan", "error", "status_code", "code"),
    [
        (ENTERPRISE, errors.ContactSales, 409, "contact_sales"),
        (FREE, errors.PlanNotSubscribable, 422, "plan_not_subscribable"),
        (
            PRO.model_copy(update={"is_active": False}),
            errors.PlanNotSubscribable,
            422,
            "plan_not_subscribable",
        ),
        (PRO.model_copy(update={"currency": "USD"}), errors.CurrencyMismatch, 422, "currency_mismatch"),
    ],
)
def test_plans_that_cannot_be_subscribed(
    plan: Plan, error: type[BillingError], status_code: int, code: str
) -> None:
    with pytest.raises(error) as refused:
        subscribe(plan, trial=True)
    assert http(refused.value) == (status_code, code)


def test_a_payment_method_is_required_without_a_trial() -> None:
    with pytest.raises(errors.PaymentMethodRequired) as refused:
        start_subscription(
            ORG,
            BUSINESS,
            "monthly",
            JAN_15,
            trial_available=False,
            payment_method_id=None,
            gateway=None,
            currency="IDR",
        )
    assert http(refused.value) == (422, "payment_method_required")


def _start_over(existing: Subscription, now: datetime = FEB_15) -> Subscription:
    return start_subscription(
        ORG,
        BUSINESS,
        "monthly",
        now,
        trial_available=False,
        payment_method_id="pm_card",
        gateway="midtrans",
        currency="IDR",
        existing=existing,
    ).subscription


def test_a_live_subscription_refuses_another() -> None:
    for existing in (active(), subscribe(trial=True), cancel(active(), JAN_30_NOON)):
        with pytest.raises(errors.AlreadySubscribed) as refused:
            _start_over(existing)
        assert http(refused.value) == (409, "already_subscribed")
    with pytest.raises(OrganizationSuspended) as suspended:
        _start_over(suspend(active(), "fraud review", JAN_30_NOON))
    assert http(suspended.value) == (403, "organization_suspended")


def test_a_cancelled_or_expired_subscription_gives_way_to_a_new_one() -> None:
    ended = end_grace(cancel(active(), JAN_30_NOON), FEB_15)
    assert ended is not None
    again = _start_over(ended)
    assert again.id != ended.id
    assert (again.version, again.plan) == (1, "business")
    # An incomplete one past its deadline is gone even if its expiry timer has not run yet.
    assert _start_over(subscribe(), JAN_15 + timedelta(hours=23)).status == "incomplete"
    with pytest.raises(errors.AlreadySubscribed):
        _start_over(subscribe(), JAN_15 + timedelta(hours=22))


# -- trials ------------------------------------------------------------------------------------------
TRIAL_END = utc(2026, 1, 29)


def test_the_trial_end_bills_the_first_period_from_the_trial_end() -> None:
    sub = subscribe(trial=True)
    assert end_trial(sub, TRIAL_END - timedelta(seconds=1)) is None  # early
    renewal = end_trial(sub, TRIAL_END + timedelta(hours=2))  # a late timer bills the same period
    assert renewal is not None
    ended = renewal.subscription
    assert (ended.status, ended.version) == ("trialing", 2)
    assert (ended.current_period_start, ended.current_period_end) == (TRIAL_END, utc(2026, 2, 28))
    assert ended.billing_anchor_day == 29
    assert renewal.billing_reason == "subscription_create"
    [line] = renewal.lines
    assert (line.description, line.amount, line.period_start, line.period_end) == (
        "Pro (monthly)",
        299_000,
        TRIAL_END,
        utc(2026, 2, 28),
    )
    assert end_trial(ended, TRIAL_END + timedelta(hours=3)) is None  # duplicate

    converted = trial_converted(ended, TRIAL_END + timedelta(hours=2))
    assert converted is not None
    assert (converted.status, converted.version) == ("active", 3)
    assert trial_converted(converted, TRIAL_END) is None
    # The anchor survives the short month: Feb 28 → Mar 29.
    next_period = renew(converted, utc(2026, 2, 28))
    assert next_period is not None
    assert next_period.subscription.current_period_end == utc(2026, 3, 29)


def test_a_failed_first_charge_after_the_trial_is_past_due() -> None:
    sub = subscribe(trial=True)
    assert trial_payment_failed(sub, TRIAL_END) is None  # the trial has not ended yet
    assert trial_converted(sub, TRIAL_END) is None
    renewal = end_trial(sub, TRIAL_END)
    assert renewal is not None
    failed = trial_payment_failed(renewal.subscription, TRIAL_END)
    assert failed is not None
    assert failed.status == "past_due"
    assert trial_payment_failed(failed, TRIAL_END) is None
    recovered = payment_recovered(failed, TRIAL_END + timedelta(days=1))
    assert recovered is not None
    assert recovered.status == "active"


def test_while_the_first_charge_after_the_trial_is_pending_nothing_changes_and_cancel_is_immediate() -> None:
    renewal = end_trial(subscribe(trial=True), TRIAL_END)
    assert renewal is not None
    pending = renewal.subscription
    with pytest.raises(errors.SubscriptionNotActive):
        preview_change(pending, BUSINESS, None, TRIAL_END)
    cancelled = cancel(pending, TRIAL_END + timedelta(hours=1))
    assert (cancelled.status, cancelled.grace_period_ends_at) == ("cancelled", None)


# -- changes -----------------------------------------------------------------------------------------
def test_upgrade_mid_period_credits_and_debits_to_the_rupiah() -> None:
    sub = active()
    decision = preview_change(sub, BUSINESS, None, JAN_30_NOON)
    remaining = int((FEB_15 - JAN_30_NOON).total_seconds())
    period = int((FEB_15 - JAN_15).total_seconds())
    assert (remaining, period) == (1_339_200, 2_678_400)  # 15.5 of 31 days
    credit, debit = -half_up(299_000 * remaining, period), half_up(990_000 * remaining, period)
    assert (credit, debit) == (-149_500, 495_000)

    assert (decision.kind, decision.immediate, decision.effective_at) == ("upgrade", True, JAN_30_NOON)
    assert decision.billing_reason == "subscription_update"
    unused, remaining_line = decision.lines
    assert (unused.description, unused.amount, unused.unit_amount) == (
        "Unused time on Pro (monthly)",
        credit,
        credit,
    )
    assert (remaining_line.description, remaining_line.amount) == (
        "Remaining time on Business (monthly)",
        debit,
    )
    for line in decision.lines:
        assert (line.period_start, line.period_end, line.proration) == (JAN_30_NOON, FEB_15, True)
    assert decision.subtotal == 345_500

    upgraded = apply_change(sub, decision, BUSINESS, JAN_30_NOON)
    assert (upgraded.plan, upgraded.plan_name, upgraded.price, upgraded.version) == (
        "business",
        "Business",
        990_000,
        sub.version + 1,
    )
    assert upgraded.limits == BUSINESS.limits
    assert upgraded.features.sso
    assert (upgraded.current_period_start, upgraded.current_period_end) == (JAN_15, FEB_15)
    assert upgraded.scheduled_change is None
    assert sub.plan == "pro"  # the input is untouched


def test_upgrade_rounds_each_line_half_up_on_its_own() -> None:
    at = utc(2026, 2, 3, 7, 20, 45)
    remaining, period = int((FEB_15 - at).total_seconds()), int((FEB_15 - JAN_15).total_seconds())
    assert remaining == 1_010_355
    decision = preview_change(active(), BUSINESS, "monthly", at)
    credit, debit = (line.amount for line in decision.lines)
    # 299000 * 1010355 / 2678400 = 112 789.78 → 112 790; 990000 * 1010355 / 2678400 = 373 451.11 → 373 451
    assert (credit, debit) == (-half_up(299_000 * remaining, period), half_up(990_000 * remaining, period))
    assert (credit, debit, decision.subtotal) == (-112_790, 373_451, 260_661)


def test_downgrade_is_scheduled_for_the_period_end_and_applied_by_the_renewal() -> None:
    sub = active(BUSINESS)
    decision = preview_change(sub, PRO, None, JAN_30_NOON)
    assert (decision.kind, decision.immediate, decision.effective_at, decision.lines) == (
        "downgrade",
        False,
        FEB_15,
        [],
    )
    scheduled = apply_change(sub, decision, PRO, JAN_30_NOON)
    assert scheduled.plan == "business"
    assert scheduled.price == 990_000
    assert scheduled.scheduled_change is not None
    assert scheduled.scheduled_change.model_dump() == {
        "plan": "pro",
        "billing_cycle": "monthly",
        "effective_at": FEB_15,
    }
    assert scheduled.public_data()["scheduled_change"]["plan"] == "pro"

    assert renew(scheduled, FEB_15 - timedelta(seconds=1)) is None
    renewal = renew(scheduled, FEB_15)
    assert renewal is not None
    renewed = renewal.subscription
    assert (renewed.plan, renewed.plan_name, renewed.price, renewed.scheduled_change) == (
        "pro",
        "Pro",
        299_000,
        None,
    )
    assert renewed.limits == PRO.limits
    assert not renewed.features.sso
    assert (renewed.current_period_start, renewed.current_period_end) == (FEB_15, utc(2026, 3, 15))
    assert renewal.billing_reason == "subscription_cycle"
    [line] = renewal.lines
    assert (line.description, line.amount, line.period_start, line.period_end) == (
        "Pro (monthly)",
        299_000,
        FEB_15,
        utc(2026, 3, 15),
    )


def test_the_renewal_charges_the_terms_the_customer_was_shown() -> None:
    # The downgrade is scheduled while Pro is on offer at Rp 199.000; the renewal needs no catalog
    # and charges the price captured then, whatever the catalog says by the period end.
    promo = PRO.model_copy(update={"base_price_monthly": 199_000})
    sub = active(BUSINESS)
    scheduled = apply_change(sub, preview_change(sub, promo, None, JAN_30_NOON), promo, JAN_30_NOON)
    renewal = renew(scheduled, FEB_15)
    assert renewal is not None
    assert (renewal.lines[0].amount, renewal.subscription.price) == (199_000, 199_000)


def test_monthly_to_annual_starts_a_year_now_and_credits_the_unused_month() -> None:
    sub = active()
    decision = preview_change(sub, PRO, "annual", JAN_30_NOON)
    assert (decision.kind, decision.immediate, decision.billing_reason) == (
        "cycle_change",
        True,
        "subscription_update",
    )
    credit, annual = decision.lines
    year_end = utc(2027, 1, 30, 12)
    assert (credit.description, credit.amount, credit.proration) == (
        "Unused time on Pro (monthly)",
        -149_500,
        True,
    )
    assert (credit.period_start, credit.period_end) == (JAN_30_NOON, FEB_15)
    assert (annual.description, annual.amount, annual.proration) == ("Pro (annual)", 2_990_000, False)
    assert (annual.period_start, annual.period_end) == (JAN_30_NOON, year_end)
    assert decision.subtotal == 2_990_000 - 149_500 == 2_840_500

    switched = apply_change(sub, decision, PRO, JAN_30_NOON)
    assert (switched.billing_cycle, switched.price, switched.billing_anchor_day) == ("annual", 2_990_000, 30)
    assert (switched.current_period_start, switched.current_period_end) == (JAN_30_NOON, year_end)
    assert renew(switched, year_end - timedelta(seconds=1)) is None


def test_monthly_to_annual_on_a_better_plan_is_one_change() -> None:
    decision = preview_change(active(), BUSINESS, "annual", JAN_30_NOON)
    assert [line.amount for line in decision.lines] == [-149_500, 9_900_000]
    assert decision.lines[1].description == "Business (annual)"


def test_annual_to_monthly_waits_for_the_paid_year_to_end() -> None:
    sub = active(PRO, "annual")
    year_end = utc(2027, 1, 15)
    assert sub.current_period_end == year_end
    decision = preview_change(sub, PRO, "monthly", utc(2026, 6, 1))
    assert (decision.kind, decision.immediate, decision.effective_at, decision.lines) == (
        "cycle_change",
        False,
        year_end,
        [],
    )
    scheduled = apply_change(sub, decision, PRO, utc(2026, 6, 1))
    assert scheduled.billing_cycle == "annual"
    renewal = renew(scheduled, year_end + timedelta(minutes=30))
    assert renewal is not None
    renewed = renewal.subscription
    assert (renewed.billing_cycle, renewed.price) == ("monthly", 299_000)
    assert (renewed.current_period_start, renewed.current_period_end) == (year_end, utc(2027, 2, 15))
    assert renewal.lines[0].description == "Pro (monthly)"


def test_the_same_plan_is_no_change_and_withdraws_a_scheduled_one() -> None:
    sub = active(BUSINESS)
    same = preview_change(sub, BUSINESS, "monthly", JAN_30_NOON)
    assert (same.kind, same.lines, same.subtotal) == ("same", [], 0)
    assert apply_change(sub, same, BUSINESS, JAN_30_NOON) is sub  # nothing to write

    scheduled = apply_change(sub, preview_change(sub, PRO, None, JAN_30_NOON), PRO, JAN_30_NOON)
    back = preview_change(scheduled, BUSINESS, None, JAN_30_NOON + timedelta(hours=1))
    kept = apply_change(scheduled, back, BUSINESS, JAN_30_NOON + timedelta(hours=1))
    assert kept.scheduled_change is None
    assert kept.scheduled_terms is None
    assert kept.version == scheduled.version + 1
    assert renew(kept, FEB_15) is not None
    assert kept.plan == "business"


def test_an_upgrade_drops_a_scheduled_downgrade() -> None:
    sub = active(BUSINESS)
    scheduled = apply_change(sub, preview_change(sub, PRO, None, JAN_15), PRO, JAN_15)
    to_annual = preview_change(scheduled, BUSINESS, "annual", JAN_30_NOON)
    switched = apply_change(scheduled, to_annual, BUSINESS, JAN_30_NOON)
    assert switched.scheduled_change is None
    assert switched.billing_cycle == "annual"


def test_a_change_during_the_trial_switches_plan_at_once_without_proration() -> None:
    sub = subscribe(trial=True)
    decision = preview_change(sub, BUSINESS, None, utc(2026, 1, 20))
    assert (decision.kind, decision.immediate, decision.lines) == ("upgrade", True, [])
    switched = apply_change(sub, decision, BUSINESS, utc(2026, 1, 20))
    assert (switched.status, switched.plan, switched.price) == ("trialing", "business", 990_000)
    assert (switched.trial_ends_at, switched.current_period_end) == (TRIAL_END, TRIAL_END)

    to_annual = preview_change(switched, BUSINESS, "annual", utc(2026, 1, 21))
    assert (to_annual.kind, to_annual.immediate, to_annual.lines) == ("cycle_change", True, [])
    annual = apply_change(switched, to_annual, BUSINESS, utc(2026, 1, 21))
    assert (annual.billing_cycle, annual.price, annual.current_period_end) == ("annual", 9_900_000, TRIAL_END)
    renewal = end_trial(annual, TRIAL_END)
    assert renewal is not None
    assert (renewal.lines[0].description, renewal.lines[0].amount) == ("Business (annual)", 9_900_000)
    assert renewal.subscription.current_period_end == utc(2027, 1, 29)

    down = preview_change(annual, PRO, None, utc(2026, 1, 22))
    assert (down.kind, down.immediate) == ("downgrade", True)


def test_an_upgrade_after_the_period_ended_but_before_the_renewal_has_nothing_to_prorate() -> None:
    sub = active()
    decision = preview_change(sub, BUSINESS, None, FEB_15 + timedelta(minutes=10))
    assert (decision.kind, decision.immediate, decision.lines) == ("upgrade", True, [])
    upgraded = apply_change(sub, decision, BUSINESS, FEB_15 + timedelta(minutes=10))
    renewal = renew(upgraded, FEB_15 + timedelta(minutes=20))
    assert renewal is not None
    assert renewal.lines[0].amount == 990_000


def test_a_decision_for_another_version_is_refused() -> None:
    sub = active()
    decision = preview_change(sub, BUSINESS, None, JAN_30_NOON)
    moved = renewal_payment_failed(sub, JAN_30_NOON)
    assert moved is not None
    with pytest.raises(VersionConflict) as refused:
        apply_change(moved, decision, BUSINESS, JAN_30_NOON)
    assert http(refused.value) == (409, "version_conflict")


@pytest.mark.parametrize(
    ("target", "error", "code"),
    [
        (ENTERPRISE, errors.ContactSales, "contact_sales"),
        (FREE, errors.PlanNotSubscribable, "plan_not_subscribable"),
        (
            BUSINESS.model_copy(update={"is_active": False}),
            errors.PlanNotSubscribable,
            "plan_not_subscribable",
        ),
    ],
)
def test_plans_that_cannot_be_changed_to(target: Plan, error: type[BillingError], code: str) -> None:
    with pytest.raises(error) as refused:
        preview_change(active(), target, None, JAN_30_NOON)
    assert http(refused.value)[1] == code


def test_only_active_and_trialing_subscriptions_change_plan() -> None:
    sub = active()
    past_due = renewal_payment_failed(sub, JAN_30_NOON)
    assert past_due is not None
    for stuck in (past_due, cancel(sub, JAN_30_NOON), subscribe()):
        with pytest.raises(errors.SubscriptionNotActive) as refused:
            preview_change(stuck, BUSINESS, None, JAN_30_NOON)
        assert http(refused.value) == (409, "subscription_not_active")
    with pytest.raises(OrganizationSuspended):
        preview_change(suspend(sub, "audit", JAN_30_NOON), BUSINESS, None, JAN_30_NOON)


# -- cancelling and reactivating ---------------------------------------------------------------------
def test_cancel_keeps_the_paid_period_as_grace_when_it_is_longer_than_seven_days() -> None:
    sub = active()
    at = utc(2026, 1, 20)
    cancelled = cancel(sub, at)
    assert (cancelled.status, cancelled.cancel_at_period_end, cancelled.cancelled_at) == (
        "grace_period",
        True,
        at,
    )
    assert cancelled.grace_period_ends_at == FEB_15  # max(Feb 15, Jan 27)
    assert (cancelled.previous_status, cancelled.version) == ("active", sub.version + 1)
    assert s.next_renewal_at(cancelled) is None
    assert renew(cancelled, FEB_15) is None  # a cancelling subscription does not renew


def test_cancel_near_the_period_end_gives_seven_days_of_grace() -> None:
    at = utc(2026, 2, 12, 8)
    cancelled = cancel(active(), at)
    assert cancelled.grace_period_ends_at == utc(2026, 2, 19, 8)  # max(Feb 15, Feb 19 08:00)
    assert cancel(active(), at, grace=timedelta(seconds=5)).grace_period_ends_at == FEB_15


def test_cancel_twice_is_refused() -> None:
    cancelled = cancel(active(), JAN_30_NOON)
    with pytest.raises(errors.AlreadyCancelled) as refused:
        cancel(cancelled, JAN_30_NOON)
    assert http(refused.value) == (409, "already_cancelled")
    ended = end_grace(cancelled, FEB_15)
    assert ended is not None
    with pytest.raises(errors.AlreadyCancelled):
        cancel(ended, FEB_15)


def test_cancel_with_nothing_paid_for_the_period_ends_at_once() -> None:
    past_due = renewal_payment_failed(active(), JAN_30_NOON)
    assert past_due is not None
    for unpaid in (past_due, subscribe()):
        cancelled = cancel(unpaid, JAN_30_NOON)
        assert (cancelled.status, cancelled.cancelled_at, cancelled.grace_period_ends_at) == (
            "cancelled",
            JAN_30_NOON,
            None,
        )
        assert cancelled.incomplete_expires_at is None


def test_a_cancelled_trial_is_never_charged() -> None:
    trial = subscribe(trial=True)
    cancelled = cancel(trial, utc(2026, 1, 25))
    assert cancelled.grace_period_ends_at == utc(2026, 2, 1)  # max(Jan 29, Jan 25 + 7 d)
    assert cancelled.previous_status == "trialing"
    assert end_trial(cancelled, TRIAL_END) is None
    ended = end_grace(cancelled, utc(2026, 2, 1))
    assert ended is not None
    assert ended.status == "cancelled"
    assert end_trial(ended, utc(2026, 2, 2)) is None
    early = cancel(trial, utc(2026, 1, 16))
    assert early.grace_period_ends_at == TRIAL_END  # max(Jan 29, Jan 23)


def test_reactivate_in_grace_returns_to_the_previous_status() -> None:
    cancelled = cancel(active(), JAN_30_NOON)
    back = reactivate(cancelled, FEB_15 - timedelta(seconds=1))
    assert (back.status, back.cancel_at_period_end, back.cancelled_at, back.grace_period_ends_at) == (
        "active",
        False,
        None,
        None,
    )
    assert (back.previous_status, back.version) == (None, cancelled.version + 1)
    assert s.next_renewal_at(back) == FEB_15
    trial = reactivate(cancel(subscribe(trial=True), utc(2026, 1, 20)), utc(2026, 1, 21))
    assert trial.status == "trialing"
    assert end_trial(trial, TRIAL_END) is not None


def test_reactivate_after_grace_is_over() -> None:
    cancelled = cancel(active(), JAN_30_NOON)
    with pytest.raises(errors.GracePeriodOver) as refused:
        reactivate(cancelled, FEB_15)  # the timer has not run yet
    assert http(refused.value) == (409, "grace_period_over")
    ended = end_grace(cancelled, FEB_15)
    assert ended is not None
    with pytest.raises(errors.GracePeriodOver):
        reactivate(ended, FEB_15 + timedelta(days=1))


def test_reactivate_without_cancelling_is_refused() -> None:
    with pytest.raises(errors.NotInGracePeriod) as refused:
        reactivate(active(), JAN_30_NOON)
    assert http(refused.value) == (409, "not_in_grace_period")
    past_due = renewal_payment_failed(active(), JAN_30_NOON)
    assert past_due is not None
    exhausted = retries_exhausted(past_due, FEB_15)
    assert exhausted is not None
    with pytest.raises(errors.NotInGracePeriod):
        reactivate(exhausted, FEB_15)


def test_grace_end_timer_is_a_no_op_when_early_duplicate_or_stale() -> None:
    cancelled = cancel(active(), JAN_30_NOON)
    assert end_grace(cancelled, FEB_15 - timedelta(seconds=1)) is None
    ended = end_grace(cancelled, FEB_15 + timedelta(hours=1))
    assert ended is not None
    assert (ended.status, ended.cancelled_at, ended.grace_period_ends_at) == (
        "cancelled",
        JAN_30_NOON,
        FEB_15,
    )
    assert end_grace(ended, FEB_15 + timedelta(hours=2)) is None
    reactivated = reactivate(cancelled, utc(2026, 2, 1))
    assert end_grace(reactivated, FEB_15) is None


# -- renewals and dunning ----------------------------------------------------------------------------
def test_renewal_moves_to_the_next_period_once() -> None:
    sub = active()
    assert s.next_renewal_at(sub) == FEB_15
    assert renew(sub, FEB_15 - timedelta(seconds=1)) is None
    renewal = renew(sub, FEB_15)
    assert renewal is not None
    renewed = renewal.subscription
    assert (renewed.current_period_start, renewed.current_period_end) == (FEB_15, utc(2026, 3, 15))
    assert (renewed.status, renewed.version, renewed.updated_at) == ("active", sub.version + 1, FEB_15)
    assert [(line.description, line.amount) for line in renewal.lines] == [("Pro (monthly)", 299_000)]
    assert renew(renewed, FEB_15 + timedelta(hours=1)) is None  # a duplicate sweep


def test_renewals_keep_the_month_end_anchor() -> None:
    sub = active(now=utc(2026, 1, 31))
    ends = []
    at = utc(2026, 1, 31)
    for _ in range(3):
        at = sub.current_period_end or at
        renewal = renew(sub, at)
        assert renewal is not None
        sub = renewal.subscription
        ends.append(sub.current_period_end)
    assert ends == [utc(2026, 3, 31), utc(2026, 4, 30), utc(2026, 5, 31)]


def test_a_late_caller_renews_one_period_per_call() -> None:
    sub = active()
    far = utc(2026, 4, 20)
    first = renew(sub, far)
    assert first is not None
    assert first.lines[0].period_start == FEB_15
    second = renew(first.subscription, far)
    assert second is not None
    assert second.lines[0].period_start == utc(2026, 3, 15)
    third = renew(second.subscription, far)
    assert third is not None
    assert third.lines[0].period_end == utc(2026, 5, 15)
    assert renew(third.subscription, far) is None


def test_only_active_subscriptions_renew() -> None:
    past_due = renewal_payment_failed(active(), FEB_15)
    assert past_due is not None
    for other in (past_due, subscribe(), subscribe(trial=True), suspend(active(), "audit", JAN_30_NOON)):
        assert renew(other, utc(2026, 6, 1)) is None


def test_dunning_outcomes() -> None:
    renewal = renew(active(), FEB_15)
    assert renewal is not None
    failed = renewal_payment_failed(renewal.subscription, FEB_15)
    assert failed is not None
    assert failed.status == "past_due"
    assert renewal_payment_failed(failed, FEB_15) is None  # duplicate
    assert s.next_renewal_at(failed) is None

    recovered = payment_recovered(failed, utc(2026, 2, 18))
    assert recovered is not None
    assert recovered.status == "active"
    assert payment_recovered(recovered, utc(2026, 2, 18)) is None
    assert retries_exhausted(recovered, utc(2026, 2, 22)) is None  # stale: paid meanwhile

    exhausted = retries_exhausted(failed, utc(2026, 2, 22))
    assert exhausted is not None
    assert (exhausted.status, exhausted.cancelled_at) == ("cancelled", utc(2026, 2, 22))
    assert retries_exhausted(exhausted, utc(2026, 2, 23)) is None


# -- operators ---------------------------------------------------------------------------------------
def test_suspension_refuses_writes_and_unsuspend_restores_the_status() -> None:
    sub = active()
    suspended = suspend(sub, "chargeback", JAN_30_NOON)
    assert (suspended.status, suspended.suspension_reason, suspended.status_before_suspension) == (
        "suspended",
        "chargeback",
        "active",
    )
    s.ensure_writable(sub)
    for write in (
        lambda: s.ensure_writable(suspended),
        lambda: cancel(suspended, JAN_30_NOON),
        lambda: reactivate(suspended, JAN_30_NOON),
    ):
        with pytest.raises(OrganizationSuspended):
            write()
    with pytest.raises(errors.AlreadySuspended) as twice:
        suspend(suspended, "again", JAN_30_NOON)
    assert http(twice.value) == (409, "already_suspended")

    back = unsuspend(suspended, utc(2026, 2, 1))
    assert (back.status, back.suspension_reason, back.status_before_suspension) == ("active", None, None)
    assert back.version == sub.version + 2
    with pytest.raises(errors.NotSuspended) as not_suspended:
        unsuspend(back, utc(2026, 2, 1))
    assert http(not_suspended.value) == (409, "not_suspended")


def test_suspension_during_grace_keeps_what_reactivate_returns_to() -> None:
    cancelled = cancel(active(), JAN_30_NOON)
    suspended = suspend(cancelled, "audit", utc(2026, 2, 1))
    assert end_grace(suspended, FEB_15) is None  # timers wait while suspended
    back = unsuspend(suspended, utc(2026, 2, 2))
    assert (back.status, back.previous_status) == ("grace_period", "active")
    assert reactivate(back, utc(2026, 2, 3)).status == "active"


def test_an_organization_on_free_can_be_suspended() -> None:
    suspended = suspend(s.free_subscription(ORG, FREE, JAN_15), "spam", JAN_15)
    assert (suspended.status, suspended.version, suspended.plan) == ("suspended", 1, "free")
    assert unsuspend(suspended, FEB_15).status == "active"


ENTERPRISE_LIMITS = Limits(members=None, applications=None, storage_bytes=None, api_calls=None, webhooks=500)
ENTERPRISE_FEATURES = Features(mfa=True, webhooks=True, sso=True, scim=True, sla=True, dedicated_support=True)


def enterprise(
    existing: Subscription | None, cycle: BillingCycle = "monthly", at: datetime = JAN_30_NOON
) -> StartDecision:
    return activate_enterprise(
        ORG,
        existing,
        price_monthly=25_000_000,
        currency="IDR",
        cycle=cycle,
        limits=ENTERPRISE_LIMITS,
        features=ENTERPRISE_FEATURES,
        payment_terms_days=30,
        at=at,
    )


def test_enterprise_activation_for_a_new_customer() -> None:
    decision = enterprise(None)
    sub = decision.subscription
    assert sub.id is not None
    assert sub.id.startswith("sub_")
    assert (sub.plan, sub.plan_name, sub.status, sub.price, sub.custom_terms) == (
        "enterprise",
        "Enterprise",
        "active",
        25_000_000,
        True,
    )
    assert (sub.limits, sub.features, sub.payment_terms_days) == (ENTERPRISE_LIMITS, ENTERPRISE_FEATURES, 30)
    assert (sub.current_period_start, sub.current_period_end) == (JAN_30_NOON, utc(2026, 2, 28, 12))
    assert decision.billing_reason == "subscription_create"
    assert decision.first_invoice_lines is not None
    assert [(line.description, line.amount) for line in decision.first_invoice_lines] == [
        ("Enterprise (monthly)", 25_000_000)
    ]
    renewal = renew(sub, utc(2026, 2, 28, 12))
    assert renewal is not None
    assert renewal.lines[0].amount == 25_000_000
    with pytest.raises(errors.ContactSales):
        preview_change(sub, PRO, None, utc(2026, 2, 1))
    assert preview_change(sub, ENTERPRISE, None, utc(2026, 2, 1)).kind == "same"


def test_enterprise_annual_is_twelve_months_of_the_custom_price() -> None:
    decision = enterprise(None, "annual")
    assert decision.subscription.price == 300_000_000
    assert decision.subscription.current_period_end == utc(2027, 1, 30, 12)


def test_enterprise_converts_a_paid_subscription_in_place_and_credits_its_unused_time() -> None:
    pro = active()
    decision = enterprise(pro)
    sub = decision.subscription
    assert (sub.id, sub.version, sub.created_at, sub.payment_method_id) == (
        pro.id,
        pro.version + 1,
        pro.created_at,
        "pm_card",
    )
    assert decision.billing_reason == "subscription_update"
    assert decision.first_invoice_lines is not None
    assert [(line.description, line.amount, line.proration) for line in decision.first_invoice_lines] == [
        ("Unused time on Pro (monthly)", -149_500, True),
        ("Enterprise (monthly)", 25_000_000, False),
    ]
    # A trial was never paid for: nothing to credit. A cancelled subscription gives way to a new one.
    trial_lines = enterprise(subscribe(trial=True)).first_invoice_lines
    assert trial_lines is not None
    assert len(trial_lines) == 1
    ended = end_grace(cancel(active(), JAN_15), FEB_15)
    assert ended is not None
    fresh = enterprise(ended, at=FEB_15).subscription
    assert fresh.id != ended.id
    assert fresh.version == 1


def test_enterprise_activation_refusals() -> None:
    with pytest.raises(OrganizationSuspended):
        enterprise(suspend(active(), "audit", JAN_15))
    with pytest.raises(InvalidField) as negative:
        activate_enterprise(
            ORG,
            None,
            price_monthly=-1,
            currency="IDR",
            cycle="monthly",
            limits=ENTERPRISE_LIMITS,
            features=ENTERPRISE_FEATURES,
            payment_terms_days=30,
            at=JAN_15,
        )
    assert negative.value.details[0]["field"] == "price_monthly"


# -- add-ons ---------------------------------------------------------------------------------------------
ADDONS = {addon.slug: addon for addon in default_catalog().addons}
SEATS, SUPPORT = ADDONS["extra-members"], ADDONS["priority-support"]


def with_seats(quantity: int, sub: Subscription | None = None, at: datetime = JAN_15) -> Subscription:
    decision = attach_addon(sub or active(), SEATS, quantity, at, item_id="si_seats")
    return decision.subscription


def test_the_next_period_drops_removed_add_ons_and_applies_fewer_units() -> None:
    sub = with_seats(5)
    fewer = change_addon_quantity(sub, "si_seats", 2, JAN_30_NOON).subscription
    both = attach_addon(fewer, SUPPORT, 1, JAN_30_NOON, item_id="si_support").subscription
    removing = remove_addon(both, "si_support", JAN_30_NOON).subscription

    renewal = renew(removing, FEB_15)

    assert renewal is not None
    assert [(i.slug, i.quantity, i.scheduled_quantity) for i in renewal.subscription.addons] == [
        ("extra-members", 2, None)
    ]
    assert [(line.description, line.amount) for line in renewal.lines] == [
        ("Pro (monthly)", 299_000),
        ("Extra members (2 units, monthly)", 30_000),
    ]
    assert addon_increments(removing) == [{"members": 5}]  # the paid seats count until then


def test_more_units_are_prorated_like_an_upgrade_and_the_lines_net_to_the_difference() -> None:
    sub = with_seats(2)

    more = change_addon_quantity(sub, "si_seats", 5, JAN_30_NOON)

    # 14.5 of 31 days left: 30,000 credited and 75,000 debited for that share.
    remaining, period = int((FEB_15 - JAN_30_NOON).total_seconds()), 31 * 86_400
    assert [line.amount for line in more.lines] == [
        -half_up(30_000 * remaining, period),
        half_up(75_000 * remaining, period),
    ]
    assert more.item.quantity == 5
    assert [line.proration for line in more.lines] == [True, True]


def test_a_trial_attaches_and_removes_for_free_and_the_trial_end_bills_what_is_kept() -> None:
    trial = subscribe(trial=True)
    seats = attach_addon(trial, SEATS, 3, JAN_15, item_id="si_seats")
    support = attach_addon(seats.subscription, SUPPORT, 1, JAN_15, item_id="si_support")
    removed = remove_addon(support.subscription, "si_support", JAN_15)

    ended = end_trial(removed.subscription, trial.trial_ends_at or JAN_15)

    assert (seats.lines, support.lines) == ([], [])
    assert ended is not None
    assert [(line.description, line.amount) for line in ended.lines] == [
        ("Pro (monthly)", 299_000),
        ("Extra members (3 units, monthly)", 45_000),
    ]


def test_monthly_to_annual_moves_the_add_ons_to_the_annual_price() -> None:
    sub = with_seats(2)

    decision = preview_change(sub, PRO, "annual", JAN_30_NOON)

    remaining, period = int((FEB_15 - JAN_30_NOON).total_seconds()), 31 * 86_400
    assert [(line.description, line.amount) for line in decision.lines] == [
        ("Unused time on Pro (monthly)", -half_up(299_000 * remaining, period)),
        ("Unused time on Extra members (2 units, monthly)", -half_up(30_000 * remaining, period)),
        ("Pro (annual)", 2_990_000),
        ("Extra members (2 units, annual)", 300_000),
    ]


def test_add_on_refusals() -> None:
    sub = with_seats(2)
    usd = SEATS.model_copy(update={"currency": "USD", "slug": "usd-seats"})
    retired = SEATS.model_copy(update={"is_active": False, "slug": "old-seats"})

    cases: dict[str, Callable[[], object]] = {
        "again": lambda: attach_addon(sub, SEATS, 1, JAN_30_NOON, item_id="si_2"),
        "currency": lambda: attach_addon(sub, usd, 1, JAN_30_NOON, item_id="si_3"),
        "retired": lambda: attach_addon(sub, retired, 1, JAN_30_NOON, item_id="si_4"),
        "flat": lambda: attach_addon(sub, SUPPORT, 2, JAN_30_NOON, item_id="si_5"),
        "missing": lambda: remove_addon(sub, "si_missing", JAN_30_NOON),
        "past_due": lambda: attach_addon(
            sub.model_copy(update={"status": "past_due"}), SUPPORT, 1, JAN_30_NOON, item_id="si_6"
        ),
    }
    codes = {}
    for name, attempt in cases.items():
        with pytest.raises(BillingError) as refused:
            attempt()
        codes[name] = http(refused.value)

    assert codes == {
        "again": (409, "addon_already_attached"),
        "currency": (422, "currency_mismatch"),
        "retired": (404, "addon_not_found"),
        "flat": (422, "validation_error"),
        "missing": (404, "subscription_addon_not_found"),
        "past_due": (409, "subscription_not_active"),
    }
    assert remove_addon(sub, "si_seats", JAN_30_NOON).lines == []
