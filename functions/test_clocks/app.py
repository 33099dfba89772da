"""Test clocks (every stage but prod): attach a frozen "now" to the organization before its first
subscription, read it, and advance it, running in time order everything that fell due on the way
through the same lifecycle actions the timers call (DESIGN.md "Time and test clocks").

On prod every route answers 404 ``route_not_found``, as if it did not exist. The kernel runs each
route of an organization owning a clock under its frozen time, so ``clock.now()`` here is it too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AwareDatetime, BaseModel, Field

from tagih import clock
from tagih.api.app import create_resolver
from tagih.config import get_settings
from tagih.domain.errors import InvalidField, RouteNotFound
from tagih.domain.text import RequestBody
from tagih.observability import TRACED_LIBRARIES
from tagih.store import test_clocks

if TYPE_CHECKING:
    from tagih.services import lifecycle

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
# Reads: any member; attaching and advancing: admin or owner (the kernel's defaults).
app = create_resolver("test_clocks")

TAGS = ["Test clocks"]
MAX_ADVANCE = timedelta(days=731)  # two years (and a leap day) per call
NOT_ON_PROD: dict[int, OpenAPIResponse] = {404: {"description": "`route_not_found` on prod."}}


class CreateTestClock(RequestBody):
    frozen_time: AwareDatetime = Field(description='The organization\'s "now" from here on (RFC 3339).')


class AdvanceTestClock(RequestBody):
    to: AwareDatetime = Field(description="Later than `frozen_time`, at most two years ahead.")


class TestClockView(BaseModel):
    __test__ = False  # not a pytest class

    frozen_time: datetime
    created_at: datetime

    @classmethod
    def of(cls, found: test_clocks.TestClock) -> TestClockView:
        return cls(frozen_time=found.frozen_time, created_at=found.created_at)


class ProcessedAction(BaseModel):
    at: datetime = Field(description="The moment the action fell due and ran.")
    action: str = Field(
        description="`trial_will_end`, `end_trial`, `renew`, `retry_payment`, `end_grace`, "
        "`expire_incomplete`."
    )
    object_id: str | None = Field(description="The invoice it charged, else the subscription.")


class AdvancedTestClock(BaseModel):
    frozen_time: datetime
    processed: list[ProcessedAction]


def _object_of(result: lifecycle.ActionResult) -> str | None:
    if result.invoice is not None:
        return result.invoice.id
    return result.subscription.id if result.subscription is not None else None


def _not_on_prod() -> None:
    if get_settings().is_prod:
        raise RouteNotFound()


@app.post(
    "/billing/test-clock",
    status_code=201,
    summary="Attach a test clock",
    description="Before the organization's first subscription; every request of the organization "
    "then runs at `frozen_time`. Not on prod.",
    tags=TAGS,
    responses={
        **NOT_ON_PROD,
        409: {"description": "`test_clock_exists`, or `test_clock_too_late` (already subscribed)."},
    },
)
def create_test_clock(body: CreateTestClock) -> TestClockView:
    _not_on_prod()
    created = test_clocks.create_test_clock(app.auth.organization_id, body.frozen_time, clock.system_now())
    logger.info("test clock attached", extra={"frozen_time": clock.to_rfc3339(created.frozen_time)})
    return TestClockView.of(created)


@app.get("/billing/test-clock", summary="The organization's test clock", tags=TAGS, responses=NOT_ON_PROD)
def get_test_clock() -> TestClockView:
    _not_on_prod()
    return TestClockView.of(test_clocks.require_test_clock(app.auth.organization_id))


@app.post(
    "/billing/test-clock/advance",
    summary="Advance the test clock",
    description="Runs, in time order and each at its own moment, everything that fell due up to `to` "
    "(trial ends, renewals, dunning retries, grace ends), then freezes the clock at `to`.",
    tags=TAGS,
    responses={
        **NOT_ON_PROD,
        409: {"description": "`version_conflict`: another advance moved the clock meanwhile."},
        422: {"description": "`validation_error`: `to` is not later, or more than two years ahead."},
    },
)
def advance_test_clock(body: AdvanceTestClock) -> AdvancedTestClock:
    # The lifecycle actions (billing, charging, every store) are this route's alone: reads never load them.
    from tagih.services.test_clocks import advance
    from tagih.wiring import default_billing

    _not_on_prod()
    org = app.auth.organization_id
    found = test_clocks.require_test_clock(org)
    to = body.to.replace(microsecond=0)
    if to <= found.frozen_time:
        raise InvalidField("to", "Must be later than the clock's frozen_time.")
    if to - found.frozen_time > MAX_ADVANCE:
        raise InvalidField("to", "At most two years ahead of the clock's frozen_time per call.")
    ran = advance(default_billing(), org, since=found.frozen_time, until=to)
    moved = test_clocks.move_test_clock(found, to)
    processed = [
        ProcessedAction(at=at.replace(microsecond=0), action=name, object_id=_object_of(result))
        for at, name, result in ran
        if result.status == "done"  # a skipped action (stale, early) changed nothing
    ]
    logger.info("test clock advanced", extra={"to": clock.to_rfc3339(to), "processed": len(processed)})
    return AdvancedTestClock(frozen_time=moved.frozen_time, processed=processed)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
