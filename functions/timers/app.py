"""Timers: the Lambda tasks of the trial, grace-period, incomplete, dunning and renewal state
machines (``statemachines/``), and the janitor's ``reconcile`` (every 15 minutes), which runs again
the tasks a machine gave up on and kept (``record_failed_timer``). Each task is one lifecycle
action, re-checked against the stored state, so Step Functions may retry it freely; an error (a
version conflict with a request, a gateway fault) is raised with its class name as the error type
the state machines retry on."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih.observability import TRACED_LIBRARIES
from tagih.timers.tasks import TIMER_TASK, JanitorRun, TimerStep, default_timer_ports, run_timer_task

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = TIMER_TASK.validate_python(event)
    outcome = run_timer_task(default_timer_ports(), task)
    if isinstance(outcome, TimerStep):
        logger.info("timer task", extra=outcome.model_dump())
        metrics.add_metric(name=f"Timer_{outcome.action}_{outcome.reason}", unit=MetricUnit.Count, value=1)
    elif isinstance(outcome, JanitorRun):
        # A kept task (recorded, or failing again when re-driven) is one a person may have to look at.
        logger.info("janitor", extra=outcome.model_dump())
        metrics.add_metric(name="Timer_kept", unit=MetricUnit.Count, value=outcome.still_failing)
        metrics.add_metric(name="Timer_redriven", unit=MetricUnit.Count, value=outcome.redriven)
        metrics.add_metric(name="Payment_unresolved", unit=MetricUnit.Count, value=outcome.unresolved)
        reconciled = outcome.settled + outcome.failed
        metrics.add_metric(name="Payment_reconciled", unit=MetricUnit.Count, value=reconciled)
    else:
        logger.info("due renewals", extra={"found": len(outcome.items), "more": bool(outcome.cursor)})
    return outcome.model_dump(mode="json")
