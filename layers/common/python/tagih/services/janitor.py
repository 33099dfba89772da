"""The janitor: what finishes the work a request or a timer could not (``reconcile``, every 15
minutes). Like Kill Bill's, it is idempotent and re-checks state before acting.

Open payments (``reconcile_open_payments``). A charge is claimed before the gateway is asked, so a
request or timer that died, or never heard the gateway's answer, leaves its payment ``processing``;
a virtual account or e-wallet whose notification was lost leaves it ``pending``. Each one old enough
(``PROCESSING_STALE``; a pending one once its order expired) is looked up at the gateway's status
API, the truth: succeeded → recorded and applied exactly once (the wallet credited, the invoice
paid) through the same path a notification takes (``notifications.record_verified_payment``);
failed, expired, or never received (Midtrans knows no such order) → failed, which releases what
waited on it; anything else (still pending, a Stripe attempt whose PaymentIntent id was never
heard, the gateway not answering) stays open and is counted, for an alarm and a person.

A timer task that failed after its state machine's retries was kept (``record_failed_timer``, one
item per task in ``store.failed_timers``). The janitor runs each kept task again through the same
``run_task`` the timers function uses, which re-reads and re-checks the stored state, so a task
that did its work meanwhile (or half of it: a charge claimed before the crash is asked again under
its reference) changes nothing twice. A task whose answer says "wait and call again" (the next
dunning retry, a moment that moved later) gets a fresh execution of its state machine for the rest
(``rearm``). A task that still fails stays kept, with its count, and is logged for a person: the
``Timer_kept`` metric raises an alarm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from tagih.domain.errors import BillingError, GatewayUnavailable
from tagih.domain.failed_timers import FailedTimer, FailedTimerStore
from tagih.domain.payments import GatewayEventStore, Payment, PaymentListener, PaymentStore
from tagih.services.notifications import announce, record_verified_payment

if TYPE_CHECKING:
    from tagih.domain.gateway import GatewayDirectory, GatewayNotification, PaymentStatus

logger = Logger()


@dataclass(frozen=True)
class TaskAnswer:
    """What running a kept task again said: ``wait_until`` (and ``attempt``) when it has more to do later."""

    wait_until: str | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class Reconciled:
    redriven: int  # kept tasks that went through and were forgotten
    still_failing: int  # kept tasks that failed again (left kept; a person must look)


def record_failed_timer(
    store: FailedTimerStore, machine: str, task: dict[str, Any], *, error: str, cause: str, at: datetime
) -> FailedTimer:
    """A state machine gave up on ``task``: keep it for the janitor, and say so in the logs."""
    kept = store.record(FailedTimer(machine, _without_failure(task), error or "", cause or "", at))
    logger.error(
        "timer task failed after its retries; kept for the janitor",
        extra={"machine": machine, "task": kept.task, "error": kept.error, "failures": kept.failures},
    )
    return kept


def reconcile_failed_timers(
    store: FailedTimerStore,
    run_task: Callable[[dict[str, Any]], TaskAnswer],
    rearm: Callable[[FailedTimer, TaskAnswer], None],
) -> Reconciled:
    redriven = still_failing = 0
    for failed in store.kept():
        try:
            answer = run_task(failed.task)
            if answer.wait_until is not None:
                rearm(failed, answer)
        except Exception:  # one stuck task must not keep the others from being re-driven
            still_failing += 1
            logger.exception(
                "kept timer task failed again", extra={"machine": failed.machine, "task": failed.task}
            )
            continue
        store.remove(failed)
        redriven += 1
        logger.info("kept timer task re-driven", extra={"machine": failed.machine, "task": failed.task})
    return Reconciled(redriven, still_failing)


def _without_failure(task: dict[str, Any]) -> dict[str, Any]:
    """A Map item's task arrives with the Catch's ``failure`` beside its own fields."""
    return {key: value for key, value in task.items() if key != "failure"}


# -- open payments ------------------------------------------------------------------------------------
# A claim this old was left by a request or timer that died (functions time out after 60 s at most).
PROCESSING_STALE = timedelta(minutes=10)
# How long a virtual account or e-wallet order stays payable when its instructions do not say.
PENDING_LIFETIME = timedelta(hours=24)
# Orders are looked at up to this long after they were claimed; an older one left open is a bug.
OPEN_LOOKBACK = timedelta(days=8)
# Payments that became final this long ago are handed to what they pay once more (3 janitor runs).
RECENTLY_FINAL = timedelta(minutes=50)
SETTLING = timedelta(minutes=5)  # younger: the request that made it is likely still applying it


@dataclass(frozen=True)
class OpenPayments:
    settled: int  # the gateway had the money: now recorded and applied
    failed: int  # failed, expired, or never reached the gateway: released
    unresolved: int  # still open (the gateway cannot tell, or did not answer): a person may look


def reconcile_open_payments(
    payments: PaymentStore,
    *,
    find_open: Callable[[datetime, timedelta], list[tuple[str, str]]],
    find_recent: Callable[[datetime, datetime], list[tuple[str, str]]],
    gateway_events: GatewayEventStore,
    gateways: GatewayDirectory,
    listener: PaymentListener,
    now: datetime,
) -> OpenPayments:
    settled = failed = unresolved = 0
    for organization_id, reference in find_open(now - PROCESSING_STALE, OPEN_LOOKBACK):
        payment = payments.get(organization_id, reference)  # the index copy may lag: re-read
        if payment is None or payment.status not in ("processing", "pending") or not _due(payment, now):
            continue
        try:
            status = _truth(gateways, payment)
        except GatewayUnavailable:
            status = None
        if status is None:
            unresolved += 1
            logger.warning("open payment left unresolved", extra=_fields(payment))
            continue
        try:
            outcome = record_verified_payment(
                payments,
                gateway_events,
                _janitor_notification(payment, status),
                status,
                listener=listener,
                now=lambda: now,
            )
        except BillingError:
            # Recorded, but what it pays could not take it yet (an invoice still a draft): counted,
            # handed over again while it is recent, and the next payments are not held up.
            unresolved += 1
            logger.warning("open payment recorded, not applied", extra=_fields(payment))
            continue
        if outcome.kind == "settled" or (outcome.kind == "duplicate" and outcome.settled is not None):
            settled += 1
        elif outcome.kind == "failed":
            failed += 1
        else:
            unresolved += 1
            logger.warning(
                "open payment left unresolved", extra={**_fields(payment), "reason": outcome.reason}
            )
            continue
        logger.info("open payment reconciled", extra={**_fields(payment), "outcome": outcome.kind})
    unresolved += _announce_recently_final(payments, find_recent, listener, now)
    return OpenPayments(settled, failed, unresolved)


def _announce_recently_final(
    payments: PaymentStore,
    find_recent: Callable[[datetime, datetime], list[tuple[str, str]]],
    listener: PaymentListener,
    now: datetime,
) -> int:
    """Hand each payment that became final lately to what it pays once more: the request or timer
    that recorded it may have died before crediting the wallet or paying the invoice, and the
    listeners are idempotent (a credited top-up, a paid invoice, stay as they are). Returns how
    many could not be applied (a person must look)."""
    stuck = 0
    for organization_id, reference in find_recent(now - RECENTLY_FINAL, now - SETTLING):
        payment = payments.get(organization_id, reference)
        if payment is None or payment.status not in ("succeeded", "failed"):
            continue
        try:
            announce(payment, listener)
        except BillingError:
            # e.g. an invoice still a draft: its own flow (a timer, the request's retry) finishes it
            stuck += 1
            logger.warning("final payment not applied yet", extra=_fields(payment))
    return stuck


def _due(payment: Payment, now: datetime) -> bool:
    if payment.status == "processing":
        return now - payment.updated_at >= PROCESSING_STALE
    expires = payment.instructions.expires_at if payment.instructions is not None else None
    until = (
        datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if expires
        else payment.created_at + PENDING_LIFETIME
    )
    return now >= until + PROCESSING_STALE


def _truth(gateways: GatewayDirectory, payment: Payment) -> PaymentStatus | None:
    """The gateway's status of ``payment``, or None when it cannot tell."""
    status = gateways.get(payment.gateway).fetch_status(payment.reference, payment.gateway_charge_id)
    if status.state in ("succeeded", "failed"):
        return status
    if status.state == "absent":
        # Midtrans knows no such order: a claim it never received, or a pay page nobody used
        # before it expired (a pending one is only looked at once its order expired).
        reason = "never reached the gateway" if payment.status == "processing" else "expired unused"
        return replace(status, state="failed", gateway_status=reason)
    return None


def _janitor_notification(payment: Payment, status: PaymentStatus) -> GatewayNotification:
    from tagih.domain.gateway import GatewayNotification as Notification  # the charging path's dataclasses

    return Notification(
        gateway=payment.gateway,
        event_id=f"janitor:{payment.reference}:{status.state}",
        reference=payment.reference,
        claimed_state=status.state,
        event_type=f"janitor.{status.gateway_status}",
    )


def _fields(payment: Payment) -> dict[str, object]:
    return {
        "reference": payment.reference,
        "organization_id": payment.organization_id,
        "gateway": payment.gateway,
        "status": payment.status,
    }
