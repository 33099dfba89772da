"""Usage metering against the plan's quotas: what is counted, figures, thresholds, overage.

Models, pure decisions and the store's Protocol; ``services.usage`` ingests and reads with them.

- Counted metrics (``api_calls`` and any custom metric) add each report's quantity to a running
  total per calendar month (UTC, ``YYYY-MM``); gauges (``GAUGE_METRICS``: members, applications,
  storage_bytes, webhooks) are set to the reported value, the latest timestamp winning.
- An event ``id`` is accepted once in 35 days; a timestamp older than that or more than five minutes
  ahead is refused for that event alone, with a reason, so one bad clock never loses a batch.
- ``billing.usage.threshold`` is published when a metric of the current period reaches 80 % and
  100 % of its quota, once per organization, metric, period and threshold: a conditional marker
  write decides, so batches that race past a threshold together publish one event.
- Quotas are the plan's limits plus add-on increments (``effective_quotas``). Add-ons are not
  attachable yet, so callers pass none today; the computation already takes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from tagih.domain.catalog import GAUGE_METRICS, Features, Limits, OveragePrice
from tagih.domain.money import round_half_up
from tagih.domain.text import RequestBody
from tagih.events.models import BillingEvent

# The plan's metrics in the order API.md lists them.
PLAN_METRICS: tuple[str, ...] = ("api_calls", "members", "applications", "storage_bytes", "webhooks")
THRESHOLDS: tuple[int, ...] = (80, 100)
DEDUP_WINDOW = timedelta(days=35)
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_EVENTS = 1000
MAX_QUANTITY = 10**15
METRIC_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
_METRIC = re.compile(METRIC_PATTERN)

RejectionReason = Literal["timestamp_too_old", "timestamp_in_future", "action_not_allowed"]


def normalize_metric(name: str) -> str:
    """``api-calls`` and ``api_calls`` name the same metric (API.md); stored with underscores."""
    return name.strip().lower().replace("-", "_")


def _metric_name(value: object) -> object:
    return normalize_metric(value) if isinstance(value, str) else value


# What a client may send: the stored name, in any case, `-` for `_`, spaces around (normalize_metric).
# Stated for the schema by hand: pydantic drops a pattern that follows a BeforeValidator.
METRIC_INPUT_PATTERN = r"^\s*[A-Za-z][A-Za-z0-9_-]{0,62}\s*$"
MetricName = Annotated[
    str,
    BeforeValidator(_metric_name),
    Field(pattern=METRIC_PATTERN, examples=["api_calls"]),
    WithJsonSchema({"type": "string", "pattern": METRIC_INPUT_PATTERN, "examples": ["api_calls"]}),
]


def _rfc3339_text(value: object) -> object:
    """Only RFC 3339 text is a timestamp (API.md): pydantic would also read a number as Unix seconds,
    so ``0`` was counted as usage of 1970 (refused as too old) instead of being a 422."""
    if value is not None and not isinstance(value, str):
        raise ValueError("Must be an RFC 3339 timestamp string, e.g. 2026-02-01T00:00:00Z.")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


def is_gauge(metric: str) -> bool:
    return metric in GAUGE_METRICS


def is_metric_name(name: str) -> bool:
    return _METRIC.match(name) is not None


# -- what a product reports ---------------------------------------------------------------------------
class UsageEvent(RequestBody):
    """One usage report. ``id`` is the product's own, unique per organization for 35 days."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", examples=["req_81f3a2"])
    metric: MetricName
    quantity: int = Field(ge=0, le=MAX_QUANTITY, strict=True)
    timestamp: Timestamp | None = Field(default=None, description="When it happened; default: now.")
    action: Literal["increment", "set"] | None = Field(
        default=None,
        description="`increment` for counted metrics, `set` for gauges (members, applications, "
        "storage_bytes, webhooks); the metric's own when omitted.",
    )


class RejectedEvent(BaseModel):
    id: str
    reason: RejectionReason
    message: str


class UsageReceipt(BaseModel):
    """What ``POST /billing/usage/events`` answers (202). ``rejected`` is an addition to API.md."""

    accepted: int = Field(description="Events counted now.")
    duplicates: int = Field(description="Events whose id was already received (nothing changed).")
    rejected: list[RejectedEvent] = Field(
        default_factory=list, description="Events refused one by one, with the reason."
    )


@dataclass(frozen=True, slots=True)
class Measurement:
    """An accepted event, placed in its period (``YYYY-MM``) and day of month (``DD``), UTC."""

    id: str
    metric: str
    quantity: int
    at: datetime
    period: str
    day: str

    @property
    def gauge(self) -> bool:
        return self.metric in GAUGE_METRICS


@dataclass(frozen=True, slots=True)
class GaugeReading:
    """The latest value of a gauge reported for one day."""

    metric: str
    period: str
    day: str
    value: int
    at: datetime


@dataclass
class Screened:
    accepted: list[Measurement] = field(default_factory=list)
    rejected: list[RejectedEvent] = field(default_factory=list)
    repeated: int = 0  # ids sent twice in the same batch


def period_of(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def previous_periods(period: str, count: int) -> list[str]:
    """``count`` periods ending with ``period``, newest first."""
    year, month = (int(part) for part in period.split("-"))
    periods = []
    for _ in range(count):
        periods.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return periods


def screen(events: Sequence[UsageEvent], now: datetime) -> Screened:
    """Split a batch into what can be written and what is refused, before anything is written."""
    now = now.astimezone(UTC)
    oldest, latest = now - DEDUP_WINDOW, now + MAX_CLOCK_SKEW
    result = Screened()
    seen: set[str] = set()
    for event in events:
        if event.id in seen:
            result.repeated += 1
            continue
        seen.add(event.id)
        at = now if event.timestamp is None else event.timestamp.astimezone(UTC)
        gauge = event.metric in GAUGE_METRICS
        if at < oldest:
            result.rejected.append(
                RejectedEvent(
                    id=event.id,
                    reason="timestamp_too_old",
                    message="The timestamp is more than 35 days old; such usage is no longer counted.",
                )
            )
        elif at > latest:
            result.rejected.append(
                RejectedEvent(
                    id=event.id,
                    reason="timestamp_in_future",
                    message="The timestamp is more than 5 minutes ahead of Tagih's clock.",
                )
            )
        elif event.action is not None and (event.action == "set") != gauge:
            result.rejected.append(
                RejectedEvent(
                    id=event.id,
                    reason="action_not_allowed",
                    message=f"{event.metric} is set (a gauge)."
                    if gauge
                    else f"{event.metric} is counted: it is incremented.",
                )
            )
        else:
            result.accepted.append(
                Measurement(
                    id=event.id,
                    metric=event.metric,
                    quantity=event.quantity,
                    at=at,
                    period=f"{at.year:04d}-{at.month:02d}",
                    day=f"{at.day:02d}",
                )
            )
    return result


def latest_gauge_readings(measurements: Iterable[Measurement]) -> list[GaugeReading]:
    """One reading per gauge and day: the latest (the last sent, on equal timestamps), oldest first."""
    latest: dict[tuple[str, str, str], Measurement] = {}
    for m in measurements:
        if not m.gauge:
            continue
        key = (m.metric, m.period, m.day)
        held = latest.get(key)
        if held is None or m.at >= held.at:
            latest[key] = m
    readings = [GaugeReading(m.metric, m.period, m.day, m.quantity, m.at) for m in latest.values()]
    return sorted(readings, key=lambda r: r.at)


# -- quotas -------------------------------------------------------------------------------------------
def effective_quotas(
    limits: Limits, addon_increments: Sequence[Mapping[str, int]] = ()
) -> dict[str, int | None]:
    """The plan's limits plus what each attached add-on adds (``Addon.limits_increase`` x quantity,
    one mapping per add-on). Unlimited (``None``) stays unlimited."""
    quotas: dict[str, int | None] = dict(limits.model_dump())
    for increments in addon_increments:
        for metric, extra in increments.items():
            base = quotas.get(metric)
            if metric in quotas and base is not None:
                quotas[metric] = base + extra
    return quotas


def percent(used: int, quota: int | None) -> float | None:
    """Share of the quota used, to one decimal (85.0); ``None`` when unlimited. A zero quota is
    100.0 as soon as anything is used. Computed in integers; the float is only the answer's form."""
    if quota is None:
        return None
    if quota == 0:
        return 100.0 if used > 0 else 0.0
    return round_half_up(used * 1000, quota) / 10


def thresholds_reached(used: int, quota: int | None) -> list[int]:
    if quota is None or used <= 0:
        return []
    return [pct for pct in THRESHOLDS if used * 100 >= pct * quota]


@dataclass(frozen=True)
class Terms:
    """What the organization's subscription (or Free) grants now."""

    plan: str
    status: str
    features: Features
    quotas: dict[str, int | None]


class TermsSource(Protocol):
    def terms(self, organization_id: str, now: datetime) -> Terms:
        """The subscription in force (Free when there is none), quotas including add-ons."""
        ...

    def overage(self, plan: str) -> Mapping[str, OveragePrice]:
        """The catalog plan's overage prices (empty when the plan prices none)."""
        ...


# -- what is stored, as the store reads it back ---------------------------------------------------------
@dataclass
class PeriodSummary:
    """One period's counted totals, the gauges' current values and the thresholds already marked."""

    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, int] = field(default_factory=dict)
    thresholds: set[tuple[str, int]] = field(default_factory=set)

    def used(self, metric: str) -> int:
        return (self.gauges if metric in GAUGE_METRICS else self.counters).get(metric, 0)

    def metrics(self) -> list[str]:
        """The plan's metrics, then custom metrics with use in the period, alphabetically."""
        return [*PLAN_METRICS, *sorted(set(self.counters) - set(PLAN_METRICS))]


@dataclass(frozen=True)
class GaugeMonth:
    """A gauge's last value reported in a month, and the value in force before its first report."""

    used: int
    previous: int | None


@dataclass
class History:
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # period → metric → total
    gauge_months: dict[str, dict[str, GaugeMonth]] = field(default_factory=dict)  # period → metric
    gauges: dict[str, int] = field(default_factory=dict)  # current values


@dataclass(frozen=True)
class DayFigure:
    day: date
    used: int


class UsageStore(Protocol):
    def set_gauges(self, organization_id: str, readings: Sequence[GaugeReading]) -> None:
        """Each reading replaces the day's, the month's and the current value unless a later
        reading is already there (idempotent: repeating a reading changes nothing)."""
        ...

    def record(self, organization_id: str, measurements: Sequence[Measurement], now: datetime) -> set[str]:
        """Claim each id for 35 days and add the counted quantities of those claimed, together;
        return the ids already claimed before (duplicates: nothing of theirs is added)."""
        ...

    def period_summary(self, organization_id: str, period: str) -> PeriodSummary: ...

    def history(self, organization_id: str, first_period: str) -> History: ...

    def daily(self, organization_id: str, period: str, metric: str) -> list[DayFigure]: ...

    def mark_threshold(self, organization_id: str, period: str, event: BillingEvent) -> bool:
        """Write the marker of ``event``'s metric and threshold unless it exists; True if written."""
        ...


# -- reading ------------------------------------------------------------------------------------------
class MetricFigure(BaseModel):
    used: int
    quota: int | None = Field(description="null when unlimited")
    percent: float | None = Field(description="Of the quota, one decimal; null when unlimited.")


def figure(used: int, quota: int | None) -> MetricFigure:
    return MetricFigure(used=used, quota=quota, percent=percent(used, quota))


class UsageView(BaseModel):
    plan: str
    period: str = Field(examples=["2026-02"])
    metrics: dict[str, MetricFigure]


class DailyFigure(BaseModel):
    date: date
    used: int


class MetricUsageView(BaseModel):
    metric: str
    period: str
    used: int
    quota: int | None
    percent: float | None
    daily: list[DailyFigure] = Field(
        description="Days with use (counted metrics: that day's total) or a report (gauges: the "
        "day's last value), oldest first."
    )


class PeriodFigures(BaseModel):
    period: str
    metrics: dict[str, MetricFigure]


class UsageHistory(BaseModel):
    items: list[PeriodFigures] = Field(description="Newest first; quotas are today's.")


class Entitlements(BaseModel):
    plan: str
    status: str
    features: Features
    limits: Limits = Field(description="Quotas in force: the plan's plus add-ons'; null = unlimited.")
    usage: dict[str, int] = Field(description="Current period's counted totals and gauges' values.")
    read_only: list[str] = Field(
        description="Metrics whose use is above the quota (e.g. after a downgrade): keep what exists, "
        "create nothing more. Nothing is deleted. Every metric while the organization is suspended."
    )
    allowed: dict[str, bool] = Field(
        description="Whether the product may add use of the metric now: below the quota, unlimited, "
        "or priced as overage; false for everything while suspended."
    )


def gauge_values(history: History, periods: Sequence[str], metric: str) -> dict[str, int]:
    """A gauge's value for each period (any order): the last report in it, else the value in force
    before the next later report (its ``previous``), else the current value."""
    values: dict[str, int] = {}
    carried = history.gauges.get(metric, 0)
    for period in sorted(history.gauge_months.keys() | set(periods), reverse=True):
        month = history.gauge_months.get(period, {}).get(metric)
        if month is not None:
            values[period] = month.used
            carried = month.previous if month.previous is not None else month.used
        else:
            values[period] = carried
    return {period: values[period] for period in periods}


# -- overage ------------------------------------------------------------------------------------------
METRIC_LABELS: dict[str, str] = {"api_calls": "API calls"}


class UsageTotals(Protocol):
    def counted_between(self, organization_id: str, start: datetime, end: datetime) -> dict[str, int]:
        """Counted metrics' totals over ``[start, end)`` (``store.usage.UsageItems``)."""
        ...
