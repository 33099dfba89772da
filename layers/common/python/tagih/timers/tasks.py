"""What the state machines' Lambda tasks do (``statemachines/*.asl.json`` → the timers function).

Every task re-reads and re-checks the stored state through ``services.lifecycle``, so a duplicate,
early or late firing changes nothing. A task answers a ``TimerStep``: ``wait_until`` set means
"wait until then and call again" (the moment moved later since the timer was armed, or the next
dunning retry), so one execution follows its subscription or invoice to the end.

An organization that owns a test clock (never on prod) is left to its clock: advancing it runs the
same actions at the clock's time, and a real timer must not act on wall time meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from tagih import clock
from tagih.clock import to_rfc3339
from tagih.config import get_settings
from tagih.domain.failed_timers import FailedTimer, FailedTimerStore
from tagih.services import dunning, janitor, lifecycle
from tagih.services.context import Billing
from tagih.services.settlement import BillingPaymentListener
from tagih.store.failed_timers import default_failed_timer_items
from tagih.store.gateway_events import default_gateway_event_items
from tagih.store.payments import default_payment_items
from tagih.store.subscriptions import DueRenewal, default_subscription_items
from tagih.store.test_clocks import frozen_time_of
from tagih.timers.step_functions import StepFunctionsTimers
from tagih.wiring import default_billing

MAX_SWEEP_PAGE = 500  # due renewals per Map page: well inside Step Functions' 256 KiB state


class _Task(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubscriptionTask(_Task):
    action: Literal["trial_will_end", "end_trial", "end_grace", "expire_incomplete"]
    organization_id: str = Field(min_length=1)
    subscription_id: str = Field(min_length=1)


class RetryPaymentTask(_Task):
    action: Literal["retry_payment"]
    organization_id: str = Field(min_length=1)
    invoice_id: str = Field(min_length=1)
    attempt: int = Field(ge=1)


class RenewTask(_Task):
    action: Literal["renew"]
    organization_id: str = Field(min_length=1)
    subscription_id: str = Field(min_length=1)
    version: int = Field(ge=1)


class FindDueRenewalsTask(_Task):
    action: Literal["find_due_renewals"]
    at: AwareDatetime
    cursor: str = ""


class RecordFailedTimerTask(_Task):
    """A state machine's Catch: ``task`` failed after every retry (``services.janitor``)."""

    action: Literal["record_failed_timer"]
    machine: str = Field(min_length=1, max_length=40)
    task: dict[str, Any]
    error: str | None = None
    cause: str | None = None


class ReconcileTask(_Task):
    """The janitor's schedule: run again what the timers kept."""

    action: Literal["reconcile"]


TimerTask = Annotated[
    SubscriptionTask
    | RetryPaymentTask
    | RenewTask
    | FindDueRenewalsTask
    | RecordFailedTimerTask
    | ReconcileTask,
    Field(discriminator="action"),
]
TIMER_TASK: TypeAdapter[TimerTask] = TypeAdapter(TimerTask)


class TimerStep(BaseModel):
    """A timer task's answer. ``wait_until`` (RFC 3339): wait and call again with ``attempt``."""

    action: str
    status: lifecycle.ActionStatus
    reason: str
    wait_until: str | None = None
    attempt: int | None = None


class JanitorRun(BaseModel):
    redriven: int  # kept timer tasks that went through
    still_failing: int  # kept timer tasks that failed again (or were just kept)
    settled: int = 0  # open payments the gateway had taken: recorded and applied
    failed: int = 0  # open payments failed, expired or never received: released
    unresolved: int = 0  # open payments the gateway could not settle either way yet


class DueRenewals(BaseModel):
    items: list[RenewTask | SubscriptionTask]  # renewals, and trials whose end is due
    cursor: str  # "" when the sweep is done


@dataclass(frozen=True)
class TimerPorts:
    billing: Billing
    has_test_clock: Callable[[str], bool]
    find_due_renewals: Callable[[datetime, str], tuple[list[DueRenewal], str]]
    now: Callable[[], datetime]
    failed_timers: FailedTimerStore
    continue_kept_task: Callable[[FailedTimer, str, int | None], None]
    reconcile_open_payments: Callable[[datetime], janitor.OpenPayments]


def _step(task: SubscriptionTask | RetryPaymentTask | RenewTask, result: lifecycle.ActionResult) -> TimerStep:
    if result.status == "skipped" and result.reason == "early" and result.due_at is not None:
        attempt = task.attempt if isinstance(task, RetryPaymentTask) else None
        return TimerStep(
            action=task.action,
            status="skipped",
            reason="early",
            wait_until=to_rfc3339(result.due_at),
            attempt=attempt,
        )
    if isinstance(task, RetryPaymentTask) and result.status == "done" and result.next_retry_at is not None:
        return TimerStep(
            action=task.action,
            status="done",
            reason=result.reason,
            wait_until=to_rfc3339(result.next_retry_at),
            attempt=task.attempt + 1,
        )
    return TimerStep(action=task.action, status=result.status, reason=result.reason)


def _due_task(due: DueRenewal) -> RenewTask | SubscriptionTask:
    if due.trialing:  # acts on what it finds, like the trial's own timer (which may have been lost)
        return SubscriptionTask(
            action="end_trial", organization_id=due.organization_id, subscription_id=due.subscription_id
        )
    return RenewTask(
        action="renew",
        organization_id=due.organization_id,
        subscription_id=due.subscription_id,
        version=due.version,
    )


def run_timer_task(ports: TimerPorts, task: TimerTask) -> TimerStep | DueRenewals | JanitorRun:
    if isinstance(task, RecordFailedTimerTask):
        janitor.record_failed_timer(
            ports.failed_timers,
            task.machine,
            task.task,
            error=task.error or "",
            cause=task.cause or "",
            at=ports.now(),
        )
        return JanitorRun(redriven=0, still_failing=1)
    if isinstance(task, ReconcileTask):
        done = janitor.reconcile_failed_timers(
            ports.failed_timers,
            lambda kept: _run_kept(ports, kept),
            lambda kept, answer: _rearm(ports, kept, answer),
        )
        money = ports.reconcile_open_payments(ports.now())
        return JanitorRun(
            redriven=done.redriven,
            still_failing=done.still_failing,
            settled=money.settled,
            failed=money.failed,
            unresolved=money.unresolved,
        )
    if isinstance(task, FindDueRenewalsTask):
        found, cursor = ports.find_due_renewals(task.at, task.cursor)
        return DueRenewals(items=[_due_task(due) for due in found], cursor=cursor)
    if ports.has_test_clock(task.organization_id):
        return TimerStep(action=task.action, status="skipped", reason="test_clock")
    billing, org, at = ports.billing, task.organization_id, ports.now()
    result: lifecycle.ActionResult
    if isinstance(task, RetryPaymentTask):
        result = dunning.retry_payment_action(billing, org, task.invoice_id, task.attempt, at)
    elif isinstance(task, RenewTask):
        result = lifecycle.renew_action(billing, org, task.subscription_id, task.version, at)
    else:
        # Trial, grace and incomplete timers act on the state they find (expected_version None):
        # a plan change during a trial must not strand the trial's end.
        match task.action:
            case "trial_will_end":
                result = lifecycle.trial_will_end_action(billing, org, task.subscription_id, None, at)
            case "end_trial":
                result = lifecycle.end_trial_action(billing, org, task.subscription_id, None, at)
            case "end_grace":
                result = lifecycle.end_grace_action(billing, org, task.subscription_id, None, at)
            case "expire_incomplete":
                result = lifecycle.expire_incomplete_action(billing, org, task.subscription_id, None, at)
    return _step(task, result)


def _run_kept(ports: TimerPorts, kept: dict[str, Any]) -> janitor.TaskAnswer:
    task = TIMER_TASK.validate_python(kept)
    if isinstance(task, RecordFailedTimerTask | ReconcileTask):
        raise ValueError(f"a kept timer task cannot be {task.action!r}")
    outcome = run_timer_task(ports, task)
    if isinstance(outcome, TimerStep):
        return janitor.TaskAnswer(wait_until=outcome.wait_until, attempt=outcome.attempt)
    return janitor.TaskAnswer()  # a sweep's page: the next hourly sweep reads it again


def _rearm(ports: TimerPorts, kept: FailedTimer, answer: janitor.TaskAnswer) -> None:
    if answer.wait_until is not None:
        ports.continue_kept_task(kept, answer.wait_until, answer.attempt)


def default_timer_ports() -> TimerPorts:
    """The ports as the deployed timers function gets them (settings read at the first task)."""
    settings = get_settings()
    subscriptions = default_subscription_items()
    lookback = timedelta(hours=settings.renewal_lookback_hours)

    def has_test_clock(organization_id: str) -> bool:
        return not settings.is_prod and frozen_time_of(organization_id) is not None

    def find_due_renewals(until: datetime, cursor: str) -> tuple[list[DueRenewal], str]:
        return subscriptions.due_renewals(until, lookback=lookback, page_size=MAX_SWEEP_PAGE, cursor=cursor)

    billing = default_billing()
    timers = billing.timers
    continue_kept = (
        timers.continue_kept_task
        if isinstance(timers, StepFunctionsTimers)
        else (lambda kept, at, attempt: None)
    )
    payments = default_payment_items()

    def reconcile_open_payments(now: datetime) -> janitor.OpenPayments:
        return janitor.reconcile_open_payments(
            billing.payments,
            find_open=payments.open_payments,
            find_recent=payments.recently_final,
            gateway_events=default_gateway_event_items(),
            gateways=billing.gateways,
            listener=BillingPaymentListener(billing),
            now=now,
        )

    return TimerPorts(
        billing,
        has_test_clock,
        find_due_renewals,
        clock.now,
        default_failed_timer_items(),
        continue_kept,
        reconcile_open_payments,
    )
