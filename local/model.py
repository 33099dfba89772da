"""What the local stack understood from the template: the contract between its parts.

``local.template`` builds a ``StackModel`` from template.yaml (intrinsics resolved, SAM Globals
merged, physical names chosen); ``local.resources`` creates it in moto; ``local.http_front`` serves
its routes; ``local.dispatch`` delivers rule targets, SQS event sources and schedules. Everything
that invokes a Lambda goes through one ``Invoker`` (``local.workers``), keyed by logical id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str  # the physical FunctionName (the logical id when the template sets none)
    arn: str
    code_dir: Path  # CodeUri
    handler: str  # "app.lambda_handler"
    environment: Mapping[str, str]  # Globals merged with the function's own, intrinsics resolved
    layer_dirs: tuple[Path, ...]  # each layer's ContentUri/python, put on sys.path
    timeout_seconds: int
    memory_mb: int


@dataclass(frozen=True)
class Authorizer:
    name: str
    function: str  # logical id of the authorizer function
    identity_headers: tuple[str, ...]  # header names as in the template (case kept)
    simple_responses: bool
    payload_version: str


@dataclass(frozen=True)
class Route:
    method: str  # upper case, or "ANY"
    path: str  # "/billing/api-keys/{key_id}", may end with "{proxy+}"
    function: str  # logical id
    authorizer: Authorizer | None  # None when the route has Auth: {Authorizer: NONE}

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


TargetKind = Literal["lambda", "sqs", "stepfunctions", "bus"]


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    ref: str  # logical id of the function / queue / state machine / bus
    arn: str
    input_path: str | None = None
    input: str | None = None


@dataclass(frozen=True)
class Rule:
    logical_id: str
    name: str
    bus_name: str  # "default" or a custom bus's physical name
    event_pattern: Mapping[str, Any] | None
    schedule: str | None  # "rate(1 hour)", "cron(...)"
    targets: tuple[Target, ...]
    enabled: bool = True


@dataclass(frozen=True)
class Queue:
    logical_id: str
    name: str
    url: str
    arn: str
    attributes: Mapping[str, str]  # VisibilityTimeout, RedrivePolicy (JSON), FifoQueue, …


@dataclass(frozen=True)
class EventSourceMapping:
    function: str  # logical id
    queue: str  # logical id
    batch_size: int = 10
    report_batch_item_failures: bool = False
    maximum_batching_window_seconds: int = 0


@dataclass(frozen=True)
class StateMachine:
    logical_id: str
    name: str
    arn: str
    definition: Mapping[str, Any]  # DefinitionSubstitutions applied
    type: Literal["STANDARD", "EXPRESS"] = "STANDARD"


@dataclass
class StackModel:
    parameters: dict[str, str]
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    rules: dict[str, Rule] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    event_source_mappings: list[EventSourceMapping] = field(default_factory=list)
    state_machines: dict[str, StateMachine] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # logical id → CreateTable kwargs
    buses: dict[str, str] = field(default_factory=dict)  # logical id → bus name
    buckets: dict[str, str] = field(default_factory=dict)  # logical id → bucket name
    secrets: dict[str, str] = field(default_factory=dict)  # logical id → secret name
    kms_keys: dict[str, list[str]] = field(default_factory=dict)  # logical id → its aliases
    custom_resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # logical id → resolved props
    ttl_attributes: dict[str, str] = field(default_factory=dict)  # table logical id → TTL attribute
    outputs: dict[str, Any] = field(default_factory=dict)

    def function_by_arn(self, arn_or_name: str) -> FunctionSpec:
        """Lambda tasks and targets name a function by ARN (maybe with a qualifier) or by name."""
        name = arn_or_name.rsplit(":function:", maxsplit=1)[-1].split(":", maxsplit=1)[0]
        for spec in self.functions.values():
            if name in (spec.name, spec.logical_id):
                return spec
        raise KeyError(f"no function {arn_or_name!r} in the template")


# Invoke a function by logical id with an event; returns the handler's result or raises
# ``FunctionError`` (the handler raised, or timed out).
Invoker = Callable[[str, Any], Any]


class FunctionError(Exception):
    def __init__(self, function: str, error_type: str, message: str) -> None:
        super().__init__(f"{function}: {error_type}: {message}")
        self.function = function
        self.error_type = error_type
        self.message = message
