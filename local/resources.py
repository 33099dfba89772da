"""Create the template's resources in moto, then run its custom resources as CloudFormation would.

Secrets get local values (the deployed ones are filled by an operator); custom resources are sent
a CloudFormation ``Create`` request whose ResponseURL is the local HTTP front, and startup fails
loudly when one answers FAILED or never answers.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import boto3

from local.model import REGION, FunctionError, StackModel
from local.template import STACK_ID

# Local secret values by logical id: sandbox-looking keys that the local fakes accept.
LOCAL_SECRET_VALUES: dict[str, dict[str, Any]] = {
    "StripeSecret": {"secret_key": "sk_test_local", "webhook_secret": "whsec_local"},
    "MidtransSecret": {
        "server_key": "SB-Mid-server-local",
        "client_key": "SB-Mid-client-local",
        "is_production": False,
    },
}
CUSTOM_RESOURCE_DEADLINE_SECONDS = 120.0


class StartupError(Exception):
    """A resource could not be created; the local stack does not start half-made."""


def client(service: str, endpoint_url: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 — moto's fake credentials
        aws_session_token="testing",  # noqa: S106
    )


def create_resources(model: StackModel, endpoint_url: str) -> None:
    dynamodb = client("dynamodb", endpoint_url)
    for logical_id, kwargs in model.tables.items():
        dynamodb.create_table(**kwargs)
        if logical_id in model.ttl_attributes:
            dynamodb.update_time_to_live(
                TableName=kwargs["TableName"],
                TimeToLiveSpecification={"AttributeName": model.ttl_attributes[logical_id], "Enabled": True},
            )
    events = client("events", endpoint_url)
    for name in model.buses.values():
        if name != "default":
            events.create_event_bus(Name=name)
    s3 = client("s3", endpoint_url)
    for name in model.buckets.values():
        s3.create_bucket(Bucket=name)
    secrets = client("secretsmanager", endpoint_url)
    for logical_id, name in model.secrets.items():
        secrets.create_secret(Name=name, SecretString=json.dumps(LOCAL_SECRET_VALUES.get(logical_id, {})))
    kms = client("kms", endpoint_url)
    for logical_id, aliases in model.kms_keys.items():
        key_id = kms.create_key(Description=f"{logical_id} (local)")["KeyMetadata"]["KeyId"]
        for alias in aliases:
            kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    sqs = client("sqs", endpoint_url)
    # Dead-letter queues first: a RedrivePolicy must name a queue that exists.
    ordered = sorted(model.queues.values(), key=lambda queue: "RedrivePolicy" in queue.attributes)
    for queue in ordered:
        sqs.create_queue(QueueName=queue.name, Attributes=dict(queue.attributes))


class CfnResponses:
    """Answers of custom resources, PUT by their functions to /_local/cfn-response/<id>."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, threading.Event] = {}
        self._answers: dict[str, dict[str, Any]] = {}

    def expect(self) -> str:
        response_id = uuid.uuid4().hex
        with self._lock:
            self._waiting[response_id] = threading.Event()
        return response_id

    def deliver(self, response_id: str, body: dict[str, Any]) -> bool:
        with self._lock:
            event = self._waiting.get(response_id)
            if event is None:
                return False
            self._answers[response_id] = body
        event.set()
        return True

    def wait(self, response_id: str, timeout: float) -> dict[str, Any] | None:
        with self._lock:
            event = self._waiting[response_id]
        event.wait(timeout)
        with self._lock:
            self._waiting.pop(response_id, None)
            return self._answers.pop(response_id, None)


def run_custom_resources(
    model: StackModel,
    invoke: Callable[[str, Any], Any],
    responses: CfnResponses,
    response_base_url: str,
    deadline_seconds: float = CUSTOM_RESOURCE_DEADLINE_SECONDS,
) -> None:
    for logical_id, props in model.custom_resources.items():
        function = model.function_by_arn(str(props["ServiceToken"]))
        response_id = responses.expect()
        request_id = str(uuid.uuid4())
        event = {
            "RequestType": "Create",
            "ServiceToken": props["ServiceToken"],
            "ResponseURL": f"{response_base_url}/_local/cfn-response/{response_id}",
            "StackId": STACK_ID,
            "RequestId": request_id,
            "LogicalResourceId": logical_id,
            "ResourceType": props["Type"],
            "ResourceProperties": {key: value for key, value in props.items() if key != "Type"},
        }
        try:
            invoke(function.logical_id, event)
        except FunctionError as error:
            # CloudFormation would wait for the ResponseURL anyway; a handler that raised after
            # answering still counts as answered.
            answer = responses.wait(response_id, 0)
            if answer is None:
                raise StartupError(
                    f"custom resource {logical_id}: {function.logical_id} failed: {error}"
                ) from error
        else:
            answer = responses.wait(response_id, deadline_seconds)
        if answer is None:
            raise StartupError(
                f"custom resource {logical_id}: {function.logical_id} never answered on its ResponseURL"
            )
        if answer.get("Status") != "SUCCESS":
            raise StartupError(f"custom resource {logical_id} FAILED: {answer.get('Reason')}")
        if answer.get("RequestId") != request_id or answer.get("LogicalResourceId") != logical_id:
            raise StartupError(f"custom resource {logical_id}: the answer names another request")
