"""The janitor: what finishes the work a timer could not (``reconcile``, every 15 minutes).

A timer task that failed after its state machine's retries was kept (``record_failed_timer``, one
item per task in ``store.failed_timers``). The janitor runs each kept task again through the same
``run_task`` the timers function uses, which re-reads and re-checks the stored state, so a task
that did its work meanwhile (or half of it: a charge claimed before the crash is asked again under
its reference) changes nothing twice. A task whose answer says "wait and call again" (the next
dunning retry, a moment that moved later) gets a fresh execution of its state machine for the rest
(``rearm``). A task that still fails stays kept, with its count, and is logged for a person: the
``Janitor_failed`` metric raises an alarm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from tagih.domain.failed_timers import FailedTimer, FailedTimerStore

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
