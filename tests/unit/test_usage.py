"""Usage metering as pure logic with in-memory ports: what is counted, refused and duplicated,
thresholds once each, quotas with add-ons, the figures, entitlements and overage lines."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tagih.domain.catalog import Limits, OveragePrice, Plan, default_catalog
from tagih.domain.overage import overage_lines
from tagih.domain.usage import UsageEvent, effective_quotas, percent, thresholds_reached
from tagih.services.usage import current_usage, entitlements, metric_usage, report_usage, usage_history
from tests.fakes.usage_store import FixedTerms, InMemoryUsageStore, RecordingPublisher

NOW = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)
ORG = "org_1"


def events(*specs: dict[str, Any]) -> list[UsageEvent]:
    return [UsageEvent.model_validate(spec) for spec in specs]


def calls(
    count: int, *, prefix: str = "e", quantity: int = 1, at: datetime | None = None
) -> list[UsageEvent]:
    stamp = {} if at is None else {"timestamp": at.isoformat()}
    return events(
        *({"id": f"{prefix}{i}", "metric": "api_calls", "quantity": quantity, **stamp} for i in range(count))
    )


class Ports:
    def __init__(self, terms: FixedTerms | None = None) -> None:
        self.store = InMemoryUsageStore()
        self.terms = terms or FixedTerms()
        self.publisher = RecordingPublisher()

    def report(self, batch: list[UsageEvent], now: datetime = NOW, org: str = ORG) -> Any:
        return report_usage(org, batch, store=self.store, terms=self.terms, publisher=self.publisher, now=now)

    def usage(self, now: datetime = NOW) -> Any:
        return current_usage(ORG, store=self.store, terms=self.terms, now=now)

    def thresholds(self) -> list[tuple[str, int]]:
        return [(e.data["metric"], e.data["threshold"]) for e in self.publisher.events]


# -- ingestion ------------------------------------------------------------------------------------------
def test_counters_add_and_gauges_take_the_latest_value() -> None:
    ports = Ports()
    receipt = ports.report(
        events(
            {"id": "a", "metric": "api_calls", "quantity": 5},
            {"id": "b", "metric": "api-calls", "quantity": 7},
            {"id": "c", "metric": "members", "quantity": 4, "timestamp": "2026-02-20T11:00:00Z"},
            {"id": "d", "metric": "members", "quantity": 3, "timestamp": "2026-02-20T10:00:00Z"},
        )
    )

    assert (receipt.accepted, receipt.duplicates, receipt.rejected) == (4, 0, [])
    metrics = ports.usage().metrics
    assert metrics["api_calls"].used == 12
    assert metrics["members"].used == 4  # 11:00 is later than 10:00, whatever the order sent


def test_the_same_ids_again_are_duplicates_and_change_no_total() -> None:
    ports = Ports()
    ports.report(calls(10, quantity=100))

    again = ports.report(calls(10, quantity=100))
    within = ports.report(
        events(
            {"id": "x", "metric": "api_calls", "quantity": 1},
            {"id": "x", "metric": "api_calls", "quantity": 1},
        )
    )

    assert (again.accepted, again.duplicates) == (0, 10)
    assert (within.accepted, within.duplicates) == (1, 1)
    assert ports.usage().metrics["api_calls"].used == 1_001


def test_an_id_is_accepted_again_after_35_days() -> None:
    ports = Ports()
    ports.report(calls(1))
    later = ports.report(calls(1), now=NOW + timedelta(days=35, seconds=1))
    assert later.accepted == 1


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (NOW - timedelta(days=35, seconds=1), "timestamp_too_old"),
        (NOW + timedelta(minutes=5, seconds=1), "timestamp_in_future"),
    ],
)
def test_timestamps_outside_the_window_are_refused_one_by_one(timestamp: datetime, reason: str) -> None:
    ports = Ports()
    receipt = ports.report(
        events(
            {"id": "bad", "metric": "api_calls", "quantity": 9, "timestamp": timestamp.isoformat()},
            {"id": "good", "metric": "api_calls", "quantity": 1},
        )
    )

    assert receipt.accepted == 1
    assert [(r.id, r.reason) for r in receipt.rejected] == [("bad", reason)]
    assert ports.usage().metrics["api_calls"].used == 1


def test_window_edges_are_accepted() -> None:
    ports = Ports()
    receipt = ports.report(
        events(
            {
                "id": "old",
                "metric": "api_calls",
                "quantity": 1,
                "timestamp": (NOW - timedelta(days=35)).isoformat(),
            },
            {
                "id": "ahead",
                "metric": "api_calls",
                "quantity": 1,
                "timestamp": (NOW + timedelta(minutes=5)).isoformat(),
            },
        )
    )
    assert (receipt.accepted, receipt.rejected) == (2, [])


def test_an_action_against_the_metrics_kind_is_refused() -> None:
    ports = Ports()
    receipt = ports.report(
        events(
            {"id": "a", "metric": "api_calls", "quantity": 1, "action": "set"},
            {"id": "m", "metric": "members", "quantity": 1, "action": "increment"},
            {"id": "ok", "metric": "members", "quantity": 2, "action": "set"},
        )
    )
    assert [(r.id, r.reason) for r in receipt.rejected] == [
        ("a", "action_not_allowed"),
        ("m", "action_not_allowed"),
    ]
    assert ports.usage().metrics["members"].used == 2


@pytest.mark.parametrize(
    "event",
    [
        {"id": "", "metric": "api_calls", "quantity": 1},
        {"id": "has space", "metric": "api_calls", "quantity": 1},
        {"id": "a", "metric": "API Calls!", "quantity": 1},
        {"id": "a", "metric": "api_calls", "quantity": -1},
        {"id": "a", "metric": "api_calls", "quantity": "5"},
        {"id": "a", "metric": "api_calls", "quantity": 1.5},
        {"id": "a", "metric": "api_calls", "quantity": 1, "timestamp": "2026-02-20T10:00:00"},
        {"id": "a", "metric": "api_calls", "quantity": 1, "organization_id": "org_2"},
    ],
)
def test_malformed_events_are_refused_by_the_schema(event: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        UsageEvent.model_validate(event)


def test_late_events_count_in_their_own_period() -> None:
    ports = Ports()
    ports.report(calls(3, at=datetime(2026, 1, 31, 23, 59, tzinfo=UTC)))
    assert ports.usage().metrics["api_calls"].used == 0
    january = metric_usage(ORG, "api_calls", "2026-01", store=ports.store, terms=ports.terms, now=NOW)
    assert (january.used, january.daily[0].date) == (3, date(2026, 1, 31))


# -- thresholds -----------------------------------------------------------------------------------------
def test_thresholds_are_published_once_each() -> None:
    ports = Ports()
    ports.report(calls(1, prefix="a", quantity=79_999))
    assert ports.thresholds() == []

    ports.report(calls(1, prefix="b", quantity=1))
    ports.report(calls(1, prefix="c", quantity=5_000))
    assert ports.thresholds() == [("api_calls", 80)]

    ports.report(calls(1, prefix="d", quantity=15_000))
    ports.report(calls(1, prefix="e", quantity=1))
    assert ports.thresholds() == [("api_calls", 80), ("api_calls", 100)]
    event = ports.publisher.events[0]
    assert event.type == "billing.usage.threshold"
    assert event.data == {
        "metric": "api_calls",
        "period": "2026-02",
        "threshold": 80,
        "used": 80_000,
        "quota": 100_000,
        "percent": 80,
    }


def test_one_batch_past_both_thresholds_publishes_both() -> None:
    ports = Ports()
    ports.report(calls(1, quantity=120_000))
    assert ports.thresholds() == [("api_calls", 80), ("api_calls", 100)]


def test_gauges_and_the_next_period_have_thresholds_of_their_own() -> None:
    ports = Ports()
    ports.report(events({"id": "m", "metric": "members", "quantity": 16}))
    ports.report(calls(1, quantity=80_000))
    march = datetime(2026, 3, 1, tzinfo=UTC)
    ports.report(calls(1, prefix="march", quantity=80_000), now=march)
    # The members gauge (16 of 20) carries into March, where it warns again: once per period.
    assert ports.thresholds() == [("members", 80), ("api_calls", 80), ("members", 80), ("api_calls", 80)]
    assert [e.data["period"] for e in ports.publisher.events] == ["2026-02", "2026-02", "2026-03", "2026-03"]


def test_duplicates_and_unlimited_metrics_publish_nothing() -> None:
    ports = Ports(
        FixedTerms(
            plan="enterprise",
            limits=Limits(members=None, applications=None, storage_bytes=None, api_calls=None, webhooks=None),
        )
    )
    ports.report(calls(1, quantity=10**9))
    assert ports.thresholds() == []
    assert ports.usage().metrics["api_calls"].percent is None


def test_percent_and_thresholds_in_integers() -> None:
    assert percent(85_000, 100_000) == 85.0
    assert percent(1, 3) == 33.3
    assert percent(2, 3) == 66.7
    assert percent(5, 0) == 100.0
    assert percent(0, 0) == 0.0
    assert thresholds_reached(79_999, 100_000) == []
    assert thresholds_reached(80_000, 100_000) == [80]
    assert thresholds_reached(100_000, 100_000) == [80, 100]
    assert thresholds_reached(0, 0) == []


# -- quotas, figures, entitlements ----------------------------------------------------------------------
def test_quotas_are_the_plans_limits_plus_add_on_increments() -> None:
    quotas = effective_quotas(
        Limits(members=20, applications=5, storage_bytes=100, api_calls=None, webhooks=10),
        [{"members": 3}, {"members": 2, "storage_bytes": 50}, {"api_calls": 1_000}],
    )
    assert quotas == {
        "members": 25,
        "applications": 5,
        "storage_bytes": 150,
        "api_calls": None,
        "webhooks": 10,
    }
    assert (
        effective_quotas(Limits(members=1, applications=1, storage_bytes=1, api_calls=1, webhooks=0))[
            "webhooks"
        ]
        == 0
    )


def test_current_usage_lists_every_plan_metric_and_custom_ones() -> None:
    ports = Ports(FixedTerms(addon_increments=[{"members": 5}]))
    ports.report(
        events(
            {"id": "a", "metric": "api_calls", "quantity": 85_000},
            {"id": "b", "metric": "members", "quantity": 3},
            {"id": "c", "metric": "exports", "quantity": 2},
        )
    )
    view = ports.usage()
    assert (view.plan, view.period) == ("pro", "2026-02")
    assert list(view.metrics) == [
        "api_calls",
        "members",
        "applications",
        "storage_bytes",
        "webhooks",
        "exports",
    ]
    assert view.metrics["api_calls"].model_dump() == {"used": 85_000, "quota": 100_000, "percent": 85.0}
    assert view.metrics["members"].model_dump() == {"used": 3, "quota": 25, "percent": 12.0}
    assert view.metrics["exports"].model_dump() == {"used": 2, "quota": None, "percent": None}


def test_a_gauge_carries_its_value_into_periods_without_a_report() -> None:
    ports = Ports()
    jan = datetime(2026, 1, 10, tzinfo=UTC)
    ports.report(events({"id": "m1", "metric": "members", "quantity": 4}), now=jan)
    ports.report(
        events({"id": "m2", "metric": "members", "quantity": 9}), now=datetime(2026, 3, 5, tzinfo=UTC)
    )
    march = datetime(2026, 3, 20, tzinfo=UTC)

    history = usage_history(ORG, 4, store=ports.store, terms=ports.terms, now=march)
    february = metric_usage(ORG, "members", "2026-02", store=ports.store, terms=ports.terms, now=march)

    assert [(i.period, i.metrics["members"].used) for i in history.items] == [
        ("2026-03", 9),
        ("2026-02", 4),
        ("2026-01", 4),
        ("2025-12", 0),
    ]
    assert (february.used, february.daily) == (4, [])


def test_metric_usage_lists_days_oldest_first() -> None:
    ports = Ports()
    for day, quantity in ((3, 10), (1, 5), (3, 1)):
        at = datetime(2026, 2, day, tzinfo=UTC)
        ports.report(calls(1, prefix=f"d{day}-{quantity}", quantity=quantity, at=at), now=at)
    view = metric_usage(ORG, "api_calls", None, store=ports.store, terms=ports.terms, now=NOW)
    assert (view.period, view.used, view.quota, view.percent) == ("2026-02", 16, 100_000, 0.0)
    assert [(d.date.day, d.used) for d in view.daily] == [(1, 5), (3, 11)]


def test_history_covers_the_months_asked_newest_first() -> None:
    ports = Ports()
    ports.report(calls(2, at=datetime(2026, 1, 25, tzinfo=UTC)), now=datetime(2026, 1, 25, tzinfo=UTC))
    ports.report(calls(3, prefix="f"))
    items = usage_history(ORG, 6, store=ports.store, terms=ports.terms, now=NOW).items
    assert [i.period for i in items] == ["2026-02", "2026-01", "2025-12", "2025-11", "2025-10", "2025-09"]
    assert [i.metrics["api_calls"].used for i in items] == [3, 2, 0, 0, 0, 0]


def test_entitlements_after_a_downgrade_mark_what_is_over_the_quota_read_only() -> None:
    ports = Ports()
    ports.report(
        events(
            {"id": "m", "metric": "members", "quantity": 30},
            {"id": "a", "metric": "applications", "quantity": 5},
        )
    )

    seen = entitlements(ORG, store=ports.store, terms=ports.terms, now=NOW)

    assert seen.read_only == ["members"]
    assert seen.usage["members"] == 30
    assert seen.limits.members == 20
    assert seen.allowed == {
        "api_calls": True,
        "members": False,
        "applications": False,  # at the quota: nothing more, but nothing over it either
        "storage_bytes": True,
        "webhooks": True,
    }


def test_overage_priced_counters_stay_allowed_past_the_quota() -> None:
    ports = Ports(FixedTerms(overage={"api_calls": OveragePrice(unit_amount=20_000, per_units=10_000)}))
    ports.report(calls(1, quantity=150_000))
    seen = entitlements(ORG, store=ports.store, terms=ports.terms, now=NOW)
    assert seen.allowed["api_calls"] is True
    assert seen.read_only == ["api_calls"]


def test_a_suspended_organization_may_write_nothing() -> None:
    ports = Ports(FixedTerms(status="suspended", overage={"api_calls": OveragePrice(unit_amount=1)}))
    seen = entitlements(ORG, store=ports.store, terms=ports.terms, now=NOW)
    assert seen.status == "suspended"
    assert set(seen.allowed.values()) == {False}
    assert seen.read_only == ["api_calls", "members", "applications", "storage_bytes", "webhooks"]


# -- overage --------------------------------------------------------------------------------------------
def catalog_plan(slug: str) -> Plan:
    return next(p for p in default_catalog().plans if p.slug == slug)


PERIOD = (datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC))


def test_pro_bills_api_calls_beyond_the_quota_by_started_block() -> None:
    [line] = overage_lines(
        catalog_plan("pro"),
        {"api_calls": 125_001, "members": 40},
        period_start=PERIOD[0],
        period_end=PERIOD[1],
    )
    assert line.model_dump() == {
        "description": "Pro overage: 25.001 API calls over the quota of 100.000, per 10.000",
        "quantity": 3,
        "unit_amount": 20_000,
        "amount": 60_000,
        "period_start": PERIOD[0],
        "period_end": PERIOD[1],
        "proration": False,
    }


def test_no_overage_within_the_quota_on_free_or_when_unlimited() -> None:
    pro = catalog_plan("pro")
    assert overage_lines(pro, {"api_calls": 100_000}, period_start=PERIOD[0], period_end=PERIOD[1]) == []
    assert (
        overage_lines(
            catalog_plan("free"), {"api_calls": 10**6}, period_start=PERIOD[0], period_end=PERIOD[1]
        )
        == []
    )
    assert (
        overage_lines(
            catalog_plan("enterprise"), {"api_calls": 10**9}, period_start=PERIOD[0], period_end=PERIOD[1]
        )
        == []
    )
    assert (
        overage_lines(
            pro,
            {"api_calls": 10**6},
            period_start=PERIOD[0],
            period_end=PERIOD[1],
            quotas={"api_calls": None},
        )
        == []
    )


def test_add_on_quotas_move_the_overage_line() -> None:
    pro = catalog_plan("pro")
    quotas = effective_quotas(pro.limits, [{"api_calls": 20_000}])
    [line] = overage_lines(
        pro, {"api_calls": 130_000}, period_start=PERIOD[0], period_end=PERIOD[1], quotas=quotas
    )
    assert (line.quantity, line.amount) == (1, 20_000)


def test_one_line_per_priced_metric_in_the_plans_currency() -> None:
    plan = catalog_plan("pro").model_copy(
        update={
            "currency": "USD",
            "overage": {
                "api_calls": OveragePrice(unit_amount=5),
                "exports": OveragePrice(unit_amount=100, per_units=10),
            },
        }
    )
    lines = overage_lines(
        plan,
        {"api_calls": 101_234, "exports": 5},
        period_start=PERIOD[0],
        period_end=PERIOD[1],
        quotas={"api_calls": 100_000, "exports": 0},
    )
    assert [(line.description, line.quantity, line.amount) for line in lines] == [
        ("Pro overage: 1,234 API calls over the quota of 100,000", 1_234, 6_170),
        ("Pro overage: 5 exports over the quota of 0, per 10", 1, 100),
    ]


def test_the_catalog_prices_overage_for_counted_metrics_only() -> None:
    raw = catalog_plan("pro").model_dump()
    with pytest.raises(ValidationError, match="counted metrics only"):
        Plan.model_validate({**raw, "overage": {"members": {"unit_amount": 15_000}}})


@given(
    used=st.integers(min_value=0, max_value=10**12),
    quota=st.integers(min_value=0, max_value=10**9),
    unit_amount=st.integers(min_value=0, max_value=10**7),
    per_units=st.integers(min_value=1, max_value=10**6),
)
def test_overage_is_whole_blocks_covering_exactly_the_excess(
    used: int, quota: int, unit_amount: int, per_units: int
) -> None:
    plan = catalog_plan("pro").model_copy(
        update={"overage": {"api_calls": OveragePrice(unit_amount=unit_amount, per_units=per_units)}}
    )
    lines = overage_lines(
        plan, {"api_calls": used}, period_start=PERIOD[0], period_end=PERIOD[1], quotas={"api_calls": quota}
    )
    if used <= quota:
        assert lines == []
        return
    [line] = lines
    assert line.amount == line.quantity * line.unit_amount
    assert (line.quantity - 1) * per_units < used - quota <= line.quantity * per_units


@pytest.mark.parametrize("timestamp", [0, 1767225600, 1.5, True])
def test_a_usage_timestamp_is_rfc3339_text_not_a_number(timestamp: object) -> None:
    """Schemathesis sent ``"timestamp": 0``: read as Unix seconds it became usage of 1970 (202,
    rejected as too old) where API.md has RFC 3339 and the schema a date-time string (422)."""
    with pytest.raises(ValidationError, match="RFC 3339"):
        UsageEvent.model_validate(
            {"id": "req_1", "metric": "api_calls", "quantity": 1, "timestamp": timestamp}
        )
    event = UsageEvent.model_validate(
        {"id": "req_1", "metric": " API-Calls ", "quantity": 1, "timestamp": "2026-02-01T00:00:00Z"}
    )
    assert (event.metric, event.timestamp.year if event.timestamp else None) == ("api_calls", 2026)
