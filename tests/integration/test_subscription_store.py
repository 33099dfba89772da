"""The subscription store on moto: one item per organization that round-trips the model exactly;
creates, replacements, saves and deletes that are all-or-nothing with their invoices and the trial
marker; a sparse renewal index the hourly sweep reads O(due) from; another organization's
subscription is not found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest

from tagih.api.errors import status_and_code
from tagih.domain.catalog import TaxRate, default_catalog
from tagih.domain.errors import AlreadySubscribed, SubscriptionNotFound, VersionConflict
from tagih.domain.invoices import Invoice, draft_invoice, mark_paid
from tagih.domain.plan_changes import apply_change, preview_change
from tagih.domain.subscriptions import StartDecision, Subscription, free_subscription
from tagih.domain.transitions import (
    activate_after_first_payment,
    cancel,
    end_grace,
    expire_incomplete,
    start_subscription,
)
from tagih.store.invoices import InvoiceItems, invoice_key
from tagih.store.subscriptions import (
    SubscriptionItems,
    renewal_bucket,
    renewal_buckets_between,
    subscription_item,
    trial_marker_key,
)
from tests.conftest import TABLE_NAME
from tests.fakes.aws_calls import count_items_read

PLANS = {plan.slug: plan for plan in default_catalog().plans}
FREE, PRO, BUSINESS = PLANS["free"], PLANS["pro"], PLANS["business"]
PPN = TaxRate(currency="IDR", name="PPN", rate_bps=1100)
NOW = datetime(2026, 2, 15, 10, 30, tzinfo=UTC)
# A sweep at the last moment of the renewal bucket 2026-03-15T10 (a month after NOW's hour).
END_OF_BUCKET = datetime(2026, 3, 15, 10, 59, 59, 999_999, tzinfo=UTC)
ORG = "org_sub"
OTHER_ORG = "org_sub_other"


@pytest.fixture
def store(aws: None) -> SubscriptionItems:
    return SubscriptionItems(boto3.resource("dynamodb").Table(TABLE_NAME))


@pytest.fixture
def invoices(aws: None) -> InvoiceItems:
    return InvoiceItems(boto3.resource("dynamodb").Table(TABLE_NAME))


def raw_item(key: dict[str, str]) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        boto3.resource("dynamodb").Table(TABLE_NAME).get_item(Key=key, ConsistentRead=True).get("Item")
    )
    return item


def subscription_raw(org: str = ORG) -> dict[str, Any] | None:
    return raw_item({"PK": f"ORG#{org}", "SK": "SUBSCRIPTION"})


def trial(org: str = ORG, now: datetime = NOW) -> Subscription:
    return start_subscription(
        org, PRO, "monthly", now, trial_available=True, payment_method_id=None, gateway=None, currency="IDR"
    ).subscription


def paid_start(org: str = ORG, now: datetime = NOW, plan: str = "pro") -> StartDecision:
    return start_subscription(
        org,
        PLANS[plan],
        "monthly",
        now,
        trial_available=False,
        payment_method_id="pm_card",
        gateway="midtrans",
        currency="IDR",
    )


def first_invoice(decision: StartDecision, now: datetime = NOW) -> Invoice:
    sub = decision.subscription
    assert decision.first_invoice_lines is not None
    assert sub.current_period_start is not None
    assert sub.current_period_end is not None
    return draft_invoice(
        organization_id=sub.organization_id,
        subscription_id=sub.id,
        billing_reason=decision.billing_reason,
        currency=sub.currency,
        lines=decision.first_invoice_lines,
        tax=PPN,
        period_start=sub.current_period_start,
        period_end=sub.current_period_end,
        due_date=now,
        now=now,
    )


def activated(sub: Subscription, at: datetime = NOW) -> Subscription:
    active = activate_after_first_payment(sub, at)
    assert active is not None
    return active


def stored_active(store: SubscriptionItems, org: str = ORG, now: datetime = NOW) -> Subscription:
    incomplete = paid_start(org, now).subscription
    store.create(incomplete)
    active = activated(incomplete, now)
    store.save(active, incomplete.version)
    return active


def assert_all_utc(value: Any) -> None:
    """Every datetime in a dumped model is in UTC itself (not merely an equal instant)."""
    if isinstance(value, datetime):
        assert value.tzinfo is UTC, value
    elif isinstance(value, dict):
        for item in value.values():
            assert_all_utc(item)
    elif isinstance(value, list):
        for item in value:
            assert_all_utc(item)


# -- round trips --------------------------------------------------------------------------------------
def test_a_trialing_subscription_round_trips(store: SubscriptionItems) -> None:
    sub = trial()
    store.create(sub, trial_started=True)

    stored = store.current(ORG)

    assert stored == sub
    assert stored is not None
    assert stored.model_dump() == sub.model_dump()
    assert_all_utc(stored.model_dump())
    assert store.current(OTHER_ORG) is None


def test_an_active_subscription_round_trips_with_its_internal_fields(store: SubscriptionItems) -> None:
    # Business with a downgrade to Pro scheduled: scheduled_change and scheduled_terms are nested
    # models with datetimes, limits and features; the rest are the internal fields a renewal needs.
    jakarta = ZoneInfo("Asia/Jakarta")
    decision = paid_start(now=NOW.astimezone(jakarta), plan="business")
    store.create(decision.subscription)
    active = activated(decision.subscription)
    at = NOW + timedelta(days=3, microseconds=123_456)
    downgrade = apply_change(active, preview_change(active, PRO, None, at), PRO, at)
    store.save(downgrade, decision.subscription.version)

    stored = store.current(ORG)

    assert stored == downgrade
    assert stored is not None
    assert stored.model_dump() == downgrade.model_dump()
    assert stored.scheduled_change is not None
    assert stored.scheduled_terms is not None
    assert (stored.scheduled_terms.plan, stored.price, stored.billing_anchor_day) == ("pro", 990_000, 15)
    assert type(stored.price) is int
    assert type(stored.version) is int
    assert stored.updated_at == at
    assert_all_utc(stored.model_dump())


def test_the_item_keeps_the_keys_and_top_level_attributes_others_read(store: SubscriptionItems) -> None:
    active = stored_active(store)

    item = subscription_raw()

    assert item is not None
    assert (item["PK"], item["SK"], item["entity"]) == (f"ORG#{ORG}", "SUBSCRIPTION", "subscription")
    assert (item["GSI1PK"], item["GSI1SK"]) == (f"SUB#{active.id}", "SUBSCRIPTION")
    assert (item["status"], item["plan"], item["currency"], item["price"]) == (
        "active", "pro", "IDR", 299_000,
    )  # fmt: skip


def test_the_free_stand_in_is_never_stored(store: SubscriptionItems) -> None:
    with pytest.raises(ValueError, match="never stored"):
        store.create(free_subscription(ORG, FREE, NOW))
    assert subscription_raw() is None


# -- create and replace -------------------------------------------------------------------------------
def test_creating_when_the_organization_has_a_subscription_is_already_subscribed(
    store: SubscriptionItems,
) -> None:
    first = trial()
    store.create(first, trial_started=True)

    with pytest.raises(AlreadySubscribed) as refused:
        store.create(paid_start().subscription)

    assert status_and_code(refused.value) == (409, "already_subscribed")
    assert store.current(ORG) == first


def test_a_cancelled_subscription_is_replaced_at_its_version(store: SubscriptionItems) -> None:
    pending = paid_start()
    store.create(pending.subscription, invoices=[first_invoice(pending)])
    expired = expire_incomplete(pending.subscription, NOW + timedelta(hours=23))
    assert expired is not None
    assert expired.status == "cancelled"
    store.save(expired, pending.subscription.version)

    again = paid_start(now=NOW + timedelta(days=1))
    with pytest.raises(VersionConflict):  # a stale copy of the cancelled one
        store.create(again.subscription, replacing=pending.subscription)
    assert store.current(ORG) == expired

    store.create(again.subscription, replacing=expired)
    assert store.current(ORG) == again.subscription

    with pytest.raises(VersionConflict):  # replaced already: a second replacement loses
        store.create(paid_start().subscription, replacing=expired)
    assert store.current(ORG) == again.subscription


def test_the_trial_marker_is_written_once(store: SubscriptionItems) -> None:
    assert not store.has_trialled(ORG)
    first = trial()
    store.create(first, trial_started=True)
    assert store.has_trialled(ORG)
    assert not store.has_trialled(OTHER_ORG)
    marker = raw_item(trial_marker_key(ORG))
    assert marker is not None
    assert marker["subscription_id"] == first.id

    # The trial was cancelled and its grace ended; a second trial for the organization loses on the
    # marker (as when another request started one after the caller checked has_trialled), and
    # writes nothing.
    in_grace = cancel(first, NOW + timedelta(days=1))
    store.save(in_grace, first.version)
    assert in_grace.grace_period_ends_at is not None
    cancelled = end_grace(in_grace, in_grace.grace_period_ends_at)
    assert cancelled is not None
    assert cancelled.status == "cancelled"
    store.save(cancelled, in_grace.version)
    with pytest.raises(VersionConflict, match="already started a trial"):
        store.create(trial(now=NOW + timedelta(days=30)), replacing=cancelled, trial_started=True)

    assert store.current(ORG) == cancelled
    assert raw_item(trial_marker_key(ORG)) == marker


def test_a_conflicting_create_writes_none_of_its_invoices(store: SubscriptionItems) -> None:
    store.create(trial(), trial_started=True)
    pending = paid_start()
    invoice = first_invoice(pending)

    with pytest.raises(AlreadySubscribed):
        store.create(pending.subscription, invoices=[invoice])

    assert raw_item(invoice_key(ORG, invoice.id)) is None


# -- save ---------------------------------------------------------------------------------------------
def test_a_save_at_a_stale_version_writes_nothing(store: SubscriptionItems) -> None:
    active = stored_active(store)
    cancelled = cancel(active, NOW + timedelta(days=1))
    store.save(cancelled, active.version)
    renewal_invoice = draft_invoice(
        organization_id=ORG,
        subscription_id=active.id,
        billing_reason="subscription_cycle",
        currency="IDR",
        lines=first_invoice(paid_start()).lines,
        tax=PPN,
        period_start=NOW,
        period_end=NOW + timedelta(days=28),
        due_date=NOW,
        now=NOW,
    )
    stale = active.model_copy(update={"plan_name": "Pro (stale)", "version": active.version + 1})

    with pytest.raises(VersionConflict, match="changed since it was read"):
        store.save(stale, active.version, invoices=[(renewal_invoice, None)])

    assert store.current(ORG) == cancelled
    assert raw_item(invoice_key(ORG, renewal_invoice.id)) is None


def test_a_save_writes_the_subscription_and_the_paid_invoice_together(
    store: SubscriptionItems, invoices: InvoiceItems
) -> None:
    pending = paid_start()
    draft = first_invoice(pending)
    store.create(pending.subscription, invoices=[draft])
    assert invoices.get(ORG, draft.id) == draft
    opened = invoices.finalize(draft, NOW)
    paid = mark_paid(opened, opened.amount_due, NOW + timedelta(minutes=1))
    active = activated(pending.subscription, NOW + timedelta(minutes=1))

    store.save(active, pending.subscription.version, invoices=[(paid, opened.version)])

    assert store.current(ORG) == active
    assert invoices.get(ORG, draft.id) == paid


def test_a_save_whose_invoice_changed_writes_nothing(
    store: SubscriptionItems, invoices: InvoiceItems
) -> None:
    pending = paid_start()
    draft = first_invoice(pending)
    store.create(pending.subscription, invoices=[draft])
    opened = invoices.finalize(draft, NOW)
    paid = mark_paid(opened, opened.amount_due, NOW)

    with pytest.raises(VersionConflict, match=f"Invoice {draft.id} changed"):
        store.save(activated(pending.subscription), pending.subscription.version, invoices=[(paid, 1)])

    assert store.current(ORG) == pending.subscription
    assert invoices.get(ORG, draft.id) == opened


# -- delete -------------------------------------------------------------------------------------------
def test_delete_removes_the_subscription_and_its_draft_invoice(store: SubscriptionItems) -> None:
    pending = paid_start()
    draft = first_invoice(pending)
    store.create(pending.subscription, invoices=[draft])

    store.delete(pending.subscription, invoices=[draft])

    assert store.current(ORG) is None
    assert subscription_raw() is None
    assert raw_item(invoice_key(ORG, draft.id)) is None


def test_delete_refuses_when_the_invoice_is_no_longer_a_draft(
    store: SubscriptionItems, invoices: InvoiceItems
) -> None:
    pending = paid_start()
    draft = first_invoice(pending)
    store.create(pending.subscription, invoices=[draft])
    opened = invoices.finalize(draft, NOW)

    with pytest.raises(VersionConflict, match="no longer a draft"):
        store.delete(pending.subscription, invoices=[draft])
    with pytest.raises(VersionConflict, match="no longer a draft"):  # even at its current version
        store.delete(pending.subscription, invoices=[opened])

    assert store.current(ORG) == pending.subscription
    assert invoices.get(ORG, draft.id) == opened


def test_delete_at_a_stale_version_removes_nothing(store: SubscriptionItems) -> None:
    pending = paid_start()
    draft = first_invoice(pending)
    store.create(pending.subscription, invoices=[draft])
    active = activated(pending.subscription)
    store.save(active, pending.subscription.version)

    with pytest.raises(VersionConflict):
        store.delete(pending.subscription, invoices=[draft])

    assert store.current(ORG) == active
    assert raw_item(invoice_key(ORG, draft.id)) is not None


# -- the sparse renewal index ---------------------------------------------------------------------------
def test_only_an_auto_renewing_subscription_or_a_trial_has_a_renewal_index_entry(
    store: SubscriptionItems,
) -> None:
    trialing = trial("org_trial")
    store.create(trialing, trial_started=True)
    active = stored_active(store, "org_active")
    cancelling = stored_active(store, "org_cancelling")
    in_grace = cancel(cancelling, NOW + timedelta(days=1))
    store.save(in_grace, cancelling.version)
    flagged = stored_active(store, "org_flagged")  # active, but not renewing at the period end
    store.save(
        flagged.model_copy(update={"cancel_at_period_end": True, "version": flagged.version + 1}),
        flagged.version,
    )
    pending = paid_start("org_cancelled").subscription
    store.create(pending)
    expired = expire_incomplete(pending, NOW + timedelta(days=1))
    assert expired is not None
    store.save(expired, pending.version)

    renewing = subscription_raw("org_active")
    assert renewing is not None
    assert active.current_period_end == datetime(2026, 3, 15, 10, 30, tzinfo=UTC)
    assert (renewing["GSI2PK"], renewing["GSI2SK"]) == (
        "RENEW#2026-03-15T10",
        "2026-03-15T10:30:00.000000Z#org_active",
    )
    # A trial is in the index at its end, so the sweep ends a trial whose own timer was lost.
    in_trial = subscription_raw("org_trial")
    assert in_trial is not None
    assert trialing.trial_ends_at is not None
    assert in_trial["GSI2SK"] == f"{trialing.trial_ends_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#org_trial"
    for org in ("org_cancelling", "org_flagged", "org_cancelled"):
        item = subscription_raw(org)
        assert item is not None
        assert "GSI2PK" not in item, org
        assert "GSI2SK" not in item, org
    due, _ = store.due_renewals(END_OF_BUCKET, lookback=timedelta(0), page_size=100)
    assert [d.subscription_id for d in due] == [active.id]


def test_the_sweep_reads_only_the_due_subscriptions(aws: None) -> None:
    bucket = "2026-03-15T10"
    subscriptions: list[Subscription] = []
    due: list[Subscription] = []
    for i in range(2_000):
        org = f"org_{i:04d}"
        if i % 100 == 0:  # 20 renewing within the bucket's hour, at various minutes
            sub = activated(paid_start(org, NOW.replace(minute=i // 100 * 2)).subscription)
            due.append(sub)
        elif i % 2:  # 990 renewing in the hours and days around it
            start = NOW + timedelta(hours=1 + i % 7) - timedelta(days=i % 3)
            sub = activated(paid_start(org, start).subscription)
        else:  # 990 not renewing: trialing, or cancelling at the period end
            sub = trial(org) if i % 4 else cancel(activated(paid_start(org).subscription), NOW)
        subscriptions.append(sub)
    billing_table = boto3.resource("dynamodb").Table(TABLE_NAME)
    with billing_table.batch_writer() as batch:
        for sub in subscriptions:
            batch.put_item(Item=subscription_item(sub))

    with count_items_read() as items_read:
        sweep = SubscriptionItems(boto3.resource("dynamodb").Table(TABLE_NAME))
        found, cursor = sweep.due_renewals(END_OF_BUCKET, lookback=timedelta(0), page_size=100)

    assert renewal_bucket(END_OF_BUCKET) == bucket
    assert cursor == ""
    # Earliest renewal first, as the index copies say (id, organization, version).
    assert [(d.subscription_id, d.organization_id, d.version) for d in found] == [
        (sub.id, sub.organization_id, sub.version) for sub in due
    ]
    assert items_read == {"Query": 20}  # O(due): the 20 index entries, nothing else

    first_five, rest = SubscriptionItems(billing_table).due_renewals(
        END_OF_BUCKET, lookback=timedelta(0), page_size=5
    )
    assert [d.subscription_id for d in first_five] == [sub.id for sub in due[:5]]
    assert rest != ""


def test_renewal_buckets_are_utc_hours() -> None:
    jakarta = ZoneInfo("Asia/Jakarta")
    assert renewal_bucket(datetime(2026, 1, 1, 6, 59, tzinfo=jakarta)) == "2025-12-31T23"
    assert renewal_buckets_between(
        datetime(2026, 2, 28, 22, 59, 59, tzinfo=UTC), datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
    ) == ["2026-02-28T22", "2026-02-28T23", "2026-03-01T00", "2026-03-01T01"]
    assert renewal_buckets_between(NOW, NOW) == ["2026-02-15T10"]
    assert renewal_buckets_between(NOW, NOW - timedelta(seconds=1)) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        renewal_bucket(datetime(2026, 1, 1))  # naive: refused


# -- lookups ------------------------------------------------------------------------------------------
def test_find_by_id_knows_only_the_id(store: SubscriptionItems) -> None:
    pending = paid_start()
    store.create(pending.subscription)
    expired = expire_incomplete(pending.subscription, NOW + timedelta(days=1))
    assert expired is not None
    store.save(expired, pending.subscription.version)
    assert store.find_by_id(pending.subscription.id or "") == expired

    replacement = trial(now=NOW + timedelta(days=2))
    store.create(replacement, replacing=expired, trial_started=True)

    assert store.find_by_id(replacement.id or "") == replacement
    assert store.find_by_id(pending.subscription.id or "") is None  # replaced: no longer anyone's
    assert store.find_by_id("sub_missing") is None


def test_another_organizations_subscription_is_not_found(store: SubscriptionItems) -> None:
    mine = stored_active(store)
    theirs = stored_active(store, OTHER_ORG)

    assert store.get(ORG, mine.id or "") == mine
    with pytest.raises(SubscriptionNotFound) as refused:
        store.get(ORG, theirs.id or "")
    assert status_and_code(refused.value) == (404, "subscription_not_found")
    with pytest.raises(SubscriptionNotFound):
        store.get("org_nobody", mine.id or "")
