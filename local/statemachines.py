"""Create the template's state machines in moto, whose interpreter runs them.

moto's Step Functions interpreter (``execute_state_machine``) runs Wait, Pass, Choice, Parallel, Map
and Task states; a Lambda task (``arn:aws:lambda:…:function:X`` or
``arn:aws:states:::lambda:invoke``) calls Lambda Invoke on ``http://localhost:$MOTO_PORT``, where the
local stack answers with our handlers. Retry and Catch see a handler's ``errorType`` as the error
name, as on AWS.

One interpreter bug is corrected here: a ``Timestamp``/``TimestampPath`` wait compares the UTC
timestamp with the *local* wall clock (``datetime.now()``), so on a machine whose zone is not UTC a
wait ends hours early or late. The interpreter runs in this process, so its method is replaced by one
that compares with UTC.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3

from local.model import ACCOUNT_ID, REGION, StackModel

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger("local.statemachines")

ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/tagih-local-statemachine"
_timestamp_patched = False


def create_state_machines(model: StackModel, endpoint_url: str) -> None:
    """Create (or update) every state machine of the model in moto, with execution switched on."""
    _enable_execution(endpoint_url)
    patch_timestamp_wait()
    client: SFNClient = boto3.client(
        "stepfunctions",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 — moto's fake credentials
    )
    existing = {m["name"]: m["stateMachineArn"] for m in client.list_state_machines()["stateMachines"]}
    for machine in model.state_machines.values():
        definition = json.dumps(machine.definition)
        if machine.name in existing:
            client.update_state_machine(
                stateMachineArn=existing[machine.name], definition=definition, roleArn=ROLE_ARN
            )
            arn = existing[machine.name]
        else:
            arn = client.create_state_machine(
                name=machine.name, definition=definition, roleArn=ROLE_ARN, type=machine.type
            )["stateMachineArn"]
        if arn != machine.arn:
            # Definitions and targets carry the model's ARN; a different one would never be found.
            raise RuntimeError(
                f"state machine {machine.logical_id}: moto made {arn}, the template says {machine.arn}"
            )
        log.info("state machine %s ready", machine.name)


def _enable_execution(endpoint_url: str) -> None:
    """Switch moto's interpreter on (idempotent; the server may already have it on)."""
    body = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/config",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def patch_timestamp_wait() -> None:
    """Make moto's Timestamp/TimestampPath waits compare with UTC (see the module docstring)."""
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import timestamp

    global _timestamp_patched  # noqa: PLW0603 — one interpreter per process, patched once
    if _timestamp_patched:
        return

    def get_wait_seconds(self: Any, env: Any) -> int:
        self.string.eval(env=env)
        timestamp_str: str = env.stack.pop()
        moment = self._from_timestamp_string(timestamp=timestamp_str)  # naive, in UTC
        if moment is None:
            raise FailureEventException(self._create_failure_event(env, timestamp_str))
        return int((moment - datetime.now(UTC).replace(tzinfo=None)).total_seconds())

    timestamp.Timestamp._get_wait_seconds = get_wait_seconds  # type: ignore[method-assign]
    _timestamp_patched = True
