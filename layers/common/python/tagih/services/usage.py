"""Usage metering's services: ingesting a batch of usage (``report_usage``), warning about the
thresholds it crossed, and the usage, history and entitlement reads.

The store (``store.usage``), the plan terms and the event publisher are passed in; what is
counted, deduplicated and reached is decided by ``domain.usage``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tagih.domain.catalog import GAUGE_METRICS, Limits
from tagih.domain.usage import (
    PLAN_METRICS,
    DailyFigure,
    Entitlements,
    MetricUsageView,
    PeriodFigures,
    TermsSource,
    UsageEvent,
    UsageHistory,
    UsageReceipt,
    UsageStore,
    UsageView,
    figure,
    gauge_values,
    latest_gauge_readings,
    percent,
    period_of,
    previous_periods,
    screen,
    thresholds_reached,
)
from tagih.events.models import BillingEvent, EventPublisher, billing_event


# -- ingestion ----------------------------------------------------------------------------------------
def report_usage(
    organization_id: str,
    events: Sequence[UsageEvent],
    *,
    store: UsageStore,
    terms: TermsSource,
    publisher: EventPublisher,
    now: datetime,
) -> UsageReceipt:
    """Count a batch of one organization's usage and warn about the thresholds it crossed.

    Gauges are written first: setting a gauge is idempotent, so a crash before the ids are claimed
    loses nothing (the retry sets the same values and claims them); counts and claims are written
    together (``UsageStore.record``), so a retry never counts twice nor drops a count.
    """
    screened = screen(events, now)
    readings = latest_gauge_readings(screened.accepted)
    if readings:
        store.set_gauges(organization_id, readings)
    duplicates = store.record(organization_id, screened.accepted, now) if screened.accepted else set()
    current = period_of(now)
    if any(m.period == current and m.id not in duplicates for m in screened.accepted):
        warn_thresholds(organization_id, store=store, terms=terms, publisher=publisher, now=now)
    return UsageReceipt(
        accepted=len(screened.accepted) - len(duplicates),
        duplicates=len(duplicates) + screened.repeated,
        rejected=screened.rejected,
    )


def warn_thresholds(
    organization_id: str, *, store: UsageStore, terms: TermsSource, publisher: EventPublisher, now: datetime
) -> list[BillingEvent]:
    """Publish ``billing.usage.threshold`` for each threshold of the current period now reached and
    not yet marked. Whoever writes the marker publishes; a batch that loses the race stays quiet."""
    period = period_of(now)
    summary = store.period_summary(organization_id, period)
    quotas = terms.terms(organization_id, now).quotas
    published: list[BillingEvent] = []
    for metric, quota in quotas.items():
        used = summary.used(metric)
        for threshold in thresholds_reached(used, quota):
            if (metric, threshold) in summary.thresholds:
                continue
            event = billing_event(
                "billing.usage.threshold",
                organization_id,
                {
                    "metric": metric,
                    "period": period,
                    "threshold": threshold,
                    "used": used,
                    "quota": quota,
                    # Whole percent, as the events catalog documents it (UsageThresholdData).
                    "percent": used * 100 // quota if quota else 100,
                },
                now,
            )
            if store.mark_threshold(organization_id, period, event):
                published.append(event)
    if published:
        publisher.publish(published)
    return published


def current_usage(organization_id: str, *, store: UsageStore, terms: TermsSource, now: datetime) -> UsageView:
    period = period_of(now)
    summary = store.period_summary(organization_id, period)
    in_force = terms.terms(organization_id, now)
    return UsageView(
        plan=in_force.plan,
        period=period,
        metrics={m: figure(summary.used(m), in_force.quotas.get(m)) for m in summary.metrics()},
    )


def metric_usage(
    organization_id: str,
    metric: str,
    period: str | None,
    *,
    store: UsageStore,
    terms: TermsSource,
    now: datetime,
) -> MetricUsageView:
    period = period or period_of(now)
    days = store.daily(organization_id, period, metric)
    if metric not in GAUGE_METRICS:
        used = sum(day.used for day in days)
    elif days:
        used = days[-1].used
    else:  # no report in the period: the value carried in from before it
        used = gauge_values(store.history(organization_id, period), [period], metric)[period]
    quota = terms.terms(organization_id, now).quotas.get(metric)
    return MetricUsageView(
        metric=metric,
        period=period,
        used=used,
        quota=quota,
        percent=percent(used, quota),
        daily=[DailyFigure(date=day.day, used=day.used) for day in days],
    )


def usage_history(
    organization_id: str, months: int, *, store: UsageStore, terms: TermsSource, now: datetime
) -> UsageHistory:
    periods = previous_periods(period_of(now), months)
    history = store.history(organization_id, periods[-1])
    quotas = terms.terms(organization_id, now).quotas
    custom = sorted({m for totals in history.counters.values() for m in totals} - set(PLAN_METRICS))
    gauges = {m: gauge_values(history, periods, m) for m in PLAN_METRICS if m in GAUGE_METRICS}
    items = []
    for period in periods:
        totals = history.counters.get(period, {})
        metrics = {}
        for metric in (*PLAN_METRICS, *custom):
            used = gauges[metric][period] if metric in gauges else totals.get(metric, 0)
            metrics[metric] = figure(used, quotas.get(metric))
        items.append(PeriodFigures(period=period, metrics=metrics))
    return UsageHistory(items=items)


def entitlements(
    organization_id: str, *, store: UsageStore, terms: TermsSource, now: datetime
) -> Entitlements:
    """What the product should enforce right now (API.md)."""
    in_force = terms.terms(organization_id, now)
    summary = store.period_summary(organization_id, period_of(now))
    overage = terms.overage(in_force.plan) if in_force.status != "suspended" else {}
    metrics = summary.metrics()
    usage = {m: summary.used(m) for m in metrics}
    suspended = in_force.status == "suspended"
    read_only, allowed = [], {}
    for metric in metrics:
        quota = in_force.quotas.get(metric)
        over = quota is not None and usage[metric] > quota
        if suspended or over:
            read_only.append(metric)
        allowed[metric] = not suspended and (quota is None or usage[metric] < quota or metric in overage)
    return Entitlements(
        plan=in_force.plan,
        status=in_force.status,
        features=in_force.features,
        limits=Limits.model_validate({m: in_force.quotas.get(m) for m in Limits.model_fields}),
        usage=usage,
        read_only=read_only,
        allowed=allowed,
    )
