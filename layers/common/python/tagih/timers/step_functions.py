"""Timers on Step Functions Standard (``statemachines/*.asl.json``).

Each timer is one execution that waits until a timestamp the domain computed (``TimestampPath``),
runs a lifecycle action through the timers function, and waits again when the action says the
moment moved later (``wait_until``), so durations stay configuration and a changed subscription
needs no new timer. Execution names are deterministic, so arming the same timer twice is harmless:
Step Functions answers ``ExecutionAlreadyExists`` (or the running execution) and nothing doubles.

- ``trial-<subscription>-<version>``: the notice, then the trial's end (a reactivated trial whose
  end already passed is armed again at its new version).
- ``grace-<subscription>-<cancelled at, ms>``: the grace period's end. Named by the cancellation,
  which the reactivation still knows, so it can stop exactly that execution.
- ``incomplete-<subscription>``: expiry of an unpaid first payment.
- ``dunning-<invoice>``: every retry of one invoice, one execution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from tagih.clock import to_rfc3339
from tagih.domain.errors import ServiceUnavailable
from tagih.domain.subscriptions import TRIAL_WILL_END_NOTICE

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

    from tagih.domain.failed_timers import FailedTimer
    from tagih.domain.invoices import Invoice
    from tagih.domain.subscriptions import Subscription

logger = Logger()


@dataclass(frozen=True)
class Execution:
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class TimerMachines:
    """The state machines' ARNs (from settings)."""

    trial: str
    grace_period: str
    incomplete: str
    dunning: str


def _at(moment: datetime | None, what: str) -> str:
    if moment is None:
        raise ValueError(f"a timer needs {what}")
    return to_rfc3339(moment)


def trial_execution(subscription: Subscription, notice_at: datetime) -> Execution:
    return Execution(
        f"trial-{subscription.id}-{subscription.version}",
        {
            "organization_id": subscription.organization_id,
            "subscription_id": subscription.id,
            "notice_at": to_rfc3339(notice_at),
            "wait_until": _at(subscription.trial_ends_at, "trial_ends_at"),
        },
    )


def grace_execution_name(subscription: Subscription) -> str:
    cancelled_at = subscription.cancelled_at
    if cancelled_at is None:
        raise ValueError("a grace timer belongs to a cancellation")
    return f"grace-{subscription.id}-{int(cancelled_at.timestamp() * 1000)}"


def grace_execution(subscription: Subscription) -> Execution:
    return Execution(
        grace_execution_name(subscription),
        {
            "organization_id": subscription.organization_id,
            "subscription_id": subscription.id,
            "wait_until": _at(subscription.grace_period_ends_at, "grace_period_ends_at"),
        },
    )


def incomplete_execution(subscription: Subscription) -> Execution:
    return Execution(
        f"incomplete-{subscription.id}",
        {
            "organization_id": subscription.organization_id,
            "subscription_id": subscription.id,
            "wait_until": _at(subscription.incomplete_expires_at, "incomplete_expires_at"),
        },
    )


def dunning_execution(invoice: Invoice) -> Execution:
    return Execution(
        f"dunning-{invoice.id}",
        {
            "organization_id": invoice.organization_id,
            "invoice_id": invoice.id,
            "attempt": invoice.retry_count,
            "wait_until": _at(invoice.next_retry_at, "next_retry_at"),
        },
    )


class StepFunctionsTimers:
    def __init__(
        self,
        machines: TimerMachines,
        client: SFNClient | None = None,
        notice: timedelta = TRIAL_WILL_END_NOTICE,
    ) -> None:
        self._given_client = client
        self._machines = machines
        self._notice = notice

    @property
    def _client(self) -> SFNClient:
        # Created on first use: most requests of a billing function arm no timer.
        return self._given_client or _sfn_client()

    def start_trial_timer(self, subscription: Subscription) -> None:
        ends = subscription.trial_ends_at
        if ends is None:
            raise ValueError("a trial timer needs trial_ends_at")
        notice_at = max(ends - self._notice, subscription.updated_at)
        self._start(self._machines.trial, trial_execution(subscription, notice_at))

    def start_grace_timer(self, subscription: Subscription) -> None:
        self._start(self._machines.grace_period, grace_execution(subscription))

    def stop_grace_timer(self, subscription: Subscription) -> None:
        machine = self._machines.grace_period
        name = grace_execution_name(subscription)
        execution_arn = f"{machine.replace(':stateMachine:', ':execution:', 1)}:{name}"
        try:
            self._client.stop_execution(executionArn=execution_arn, cause="reactivated")
        except (ClientError, BotoCoreError) as error:
            # Best effort: the timer re-checks the subscription when it fires and does nothing.
            logger.warning("grace timer not stopped", extra={"execution": execution_arn, "error": str(error)})

    def start_incomplete_timer(self, subscription: Subscription) -> None:
        self._start(self._machines.incomplete, incomplete_execution(subscription))

    def start_dunning_timer(self, invoice: Invoice) -> None:
        self._start(self._machines.dunning, dunning_execution(invoice))

    def continue_kept_task(self, failed: FailedTimer, wait_until: str, attempt: int | None) -> None:
        """A kept task (``services.janitor``) ran again and has more to do at ``wait_until``: a
        fresh execution of its machine carries it on (named after the failure, so re-driving the
        same failure twice starts one). A renewal needs none: the sweep finds it when it is due."""
        task, suffix = failed.task, f"r{int(failed.failed_at.timestamp() * 1000)}"
        org = task["organization_id"]
        if failed.machine == "dunning":
            execution = Execution(
                f"dunning-{task['invoice_id']}-{suffix}",
                {
                    "organization_id": org,
                    "invoice_id": task["invoice_id"],
                    "attempt": attempt,
                    "wait_until": wait_until,
                },
            )
            self._start(self._machines.dunning, execution)
            return
        machines = {
            "trial": self._machines.trial,
            "grace_period": self._machines.grace_period,
            "incomplete": self._machines.incomplete,
        }
        if failed.machine not in machines:
            return
        subscription_id = task["subscription_id"]
        carried: dict[str, Any] = {
            "organization_id": org,
            "subscription_id": subscription_id,
            "wait_until": wait_until,
        }
        if failed.machine == "trial":
            carried["notice_at"] = wait_until  # its notice re-checks the window and sends nothing twice
        self._start(
            machines[failed.machine], Execution(f"{failed.machine}-{subscription_id}-{suffix}", carried)
        )

    def _start(self, machine_arn: str, execution: Execution) -> None:
        try:
            self._client.start_execution(
                stateMachineArn=machine_arn, name=execution.name, input=json.dumps(execution.input)
            )
        except (ClientError, BotoCoreError) as error:
            code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None
            if code == "ExecutionAlreadyExists":
                return  # armed before: the deterministic name did its job
            logger.error("timer not armed", extra={"execution": execution.name, "error": str(error)})
            raise ServiceUnavailable("Billing timers are unavailable; try again shortly.") from error
        logger.info("timer armed", extra={"execution": execution.name})


@cache
def _sfn_client() -> SFNClient:
    return boto3.client("stepfunctions")


def step_functions_timers(machines: TimerMachines) -> StepFunctionsTimers:
    return StepFunctionsTimers(machines)


def reset_timers_client() -> None:
    """Forget the cached client (tests switch moto accounts)."""
    _sfn_client.cache_clear()
