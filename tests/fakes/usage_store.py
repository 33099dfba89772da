"""In-memory stand-ins for the ports of ``domain.usage``: the usage store, plan terms, the publisher."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import date, datetime

from tagih.domain.catalog import GAUGE_METRICS, Features, Limits, OveragePrice
from tagih.domain.usage import (
    DEDUP_WINDOW,
    DayFigure,
    GaugeMonth,
    GaugeReading,
    History,
    Measurement,
    PeriodSummary,
    Terms,
    effective_quotas,
)
from tagih.events.models import BillingEvent

PRO_LIMITS = Limits(members=20, applications=5, storage_bytes=10_737_418_240, api_calls=100_000, webhooks=10)


class InMemoryUsageStore:
    """The ``UsageStore`` contract on dictionaries (one lock: each call is atomic, like a request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.claims: dict[tuple[str, str], datetime] = {}  # (org, id) → expiry
        self.counters: dict[tuple[str, str, str, str], int] = {}  # (org, period, metric, day)
        self.gauge_days: dict[tuple[str, str, str, str], tuple[datetime, int]] = {}
        self.gauge_months: dict[tuple[str, str, str], tuple[datetime, int, int | None]] = {}
        self.gauges: dict[tuple[str, str], tuple[datetime, int]] = {}
        self.thresholds: dict[tuple[str, str, str, int], BillingEvent] = {}
        self.record_calls = 0

    def set_gauges(self, organization_id: str, readings: Sequence[GaugeReading]) -> None:
        with self._lock:
            for r in readings:
                current = self.gauges.get((organization_id, r.metric))
                previous: int | None = None
                if current is None or current[0] <= r.at:
                    previous = 0 if current is None else current[1]
                    self.gauges[(organization_id, r.metric)] = (r.at, r.value)
                month = self.gauge_months.get((organization_id, r.period, r.metric))
                if month is None or month[0] <= r.at:
                    kept = month[2] if month is not None and month[2] is not None else previous
                    self.gauge_months[(organization_id, r.period, r.metric)] = (r.at, r.value, kept)
                day = self.gauge_days.get((organization_id, r.period, r.metric, r.day))
                if day is None or day[0] <= r.at:
                    self.gauge_days[(organization_id, r.period, r.metric, r.day)] = (r.at, r.value)

    def record(self, organization_id: str, measurements: Sequence[Measurement], now: datetime) -> set[str]:
        with self._lock:
            self.record_calls += 1
            duplicates = set()
            for m in measurements:
                expiry = self.claims.get((organization_id, m.id))
                if expiry is not None and expiry >= now:
                    duplicates.add(m.id)
                    continue
                self.claims[(organization_id, m.id)] = now + DEDUP_WINDOW
                if m.metric not in GAUGE_METRICS:
                    key = (organization_id, m.period, m.metric, m.day)
                    self.counters[key] = self.counters.get(key, 0) + m.quantity
            return duplicates

    def period_summary(self, organization_id: str, period: str) -> PeriodSummary:
        with self._lock:
            summary = PeriodSummary()
            for (org, p, metric, _), used in self.counters.items():
                if (org, p) == (organization_id, period):
                    summary.counters[metric] = summary.counters.get(metric, 0) + used
            summary.gauges = {m: v for (org, m), (_, v) in self.gauges.items() if org == organization_id}
            summary.thresholds = {
                (m, pct) for (org, p, m, pct) in self.thresholds if (org, p) == (organization_id, period)
            }
            return summary

    def history(self, organization_id: str, first_period: str) -> History:
        with self._lock:
            history = History()
            for (org, period, metric, _), used in self.counters.items():
                if org == organization_id and period >= first_period:
                    totals = history.counters.setdefault(period, {})
                    totals[metric] = totals.get(metric, 0) + used
            for (org, period, metric), (_, used, previous) in self.gauge_months.items():
                if org == organization_id and period >= first_period:
                    history.gauge_months.setdefault(period, {})[metric] = GaugeMonth(used, previous)
            history.gauges = {m: v for (org, m), (_, v) in self.gauges.items() if org == organization_id}
            return history

    def daily(self, organization_id: str, period: str, metric: str) -> list[DayFigure]:
        with self._lock:
            year, month = (int(part) for part in period.split("-"))
            source = (
                {k: v[1] for k, v in self.gauge_days.items()} if metric in GAUGE_METRICS else self.counters
            )
            days = {
                int(day): used
                for (org, p, m, day), used in source.items()
                if (org, p, m) == (organization_id, period, metric)
            }
            return [DayFigure(date(year, month, day), used) for day, used in sorted(days.items())]

    def mark_threshold(self, organization_id: str, period: str, event: BillingEvent) -> bool:
        with self._lock:
            key = (organization_id, period, str(event.data["metric"]), int(event.data["threshold"]))
            if key in self.thresholds:
                return False
            self.thresholds[key] = event
            return True


class FixedTerms:
    """Plan terms that do not change: Pro by default."""

    def __init__(
        self,
        plan: str = "pro",
        status: str = "active",
        limits: Limits = PRO_LIMITS,
        overage: Mapping[str, OveragePrice] | None = None,
        addon_increments: Sequence[Mapping[str, int]] = (),
    ) -> None:
        self.plan = plan
        self.status = status
        self.limits = limits
        self.prices = dict(overage or {})
        self.addon_increments = addon_increments

    def terms(self, organization_id: str, now: datetime) -> Terms:
        return Terms(
            plan=self.plan,
            status=self.status,
            features=Features(),
            quotas=effective_quotas(self.limits, self.addon_increments),
        )

    def overage(self, plan: str) -> Mapping[str, OveragePrice]:
        return self.prices


class RecordingPublisher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[BillingEvent] = []

    def publish(self, events: Sequence[BillingEvent]) -> None:
        with self._lock:
            self.events.extend(events)
