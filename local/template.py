"""Read template.yaml into a ``StackModel``: parameters, conditions and intrinsics resolved.

The template is the single source of truth for the local stack, so anything this module does not
understand (a resource type, an intrinsic function, an event source) stops startup with an error
naming it, rather than being guessed at or skipped.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from local.cfn_yaml import load_template
from local.model import (
    ACCOUNT_ID,
    REGION,
    Authorizer,
    EventSourceMapping,
    FunctionSpec,
    Queue,
    Route,
    Rule,
    StackModel,
    StateMachine,
    Target,
    TargetKind,
)

STACK_NAME = "tagih-local"
STACK_ID = (
    f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/00000000-0000-0000-0000-000000000000"
)
API_ID = "local"

# Types the local stack knows; the ones with nothing to create locally are listed too so that an
# unknown type is an error and not silently ignored.
SUPPORTED_TYPES = frozenset(
    {
        "AWS::DynamoDB::Table",
        "AWS::Events::EventBus",
        "AWS::Events::Archive",
        "AWS::Events::Rule",
        "AWS::S3::Bucket",
        "AWS::S3::BucketPolicy",
        "AWS::SecretsManager::Secret",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
        "AWS::Logs::LogGroup",
        "AWS::KMS::Key",
        "AWS::KMS::Alias",
        "AWS::CloudWatch::Alarm",
        "AWS::Serverless::LayerVersion",
        "AWS::Serverless::Function",
        "AWS::Serverless::HttpApi",
        "AWS::Serverless::StateMachine",
        "AWS::Lambda::Permission",
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
        "AWS::CloudFormation::CustomResource",
    }
)
SUPPORTED_FUNCTION_EVENTS = frozenset({"HttpApi", "SQS", "EventBridgeRule", "Schedule", "ScheduleV2"})
_NO_VALUE = object()  # AWS::NoValue: the property is removed
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class TemplateError(Exception):
    """The template uses something the local stack does not understand (named in the message)."""


def _is_custom(resource_type: str) -> bool:
    return resource_type.startswith("Custom::") or resource_type == "AWS::CloudFormation::CustomResource"


class _Resolver:
    """Resolves intrinsics against one template and one set of parameter values."""

    def __init__(self, template: Mapping[str, Any], root: Path, overrides: Mapping[str, str]) -> None:
        self.template = template
        self.root = root
        self.resources: dict[str, dict[str, Any]] = dict(template.get("Resources") or {})
        self.parameters = self._parameters(overrides)
        self._conditions: dict[str, bool] = {}
        self._condition_stack: list[str] = []
        self._names: dict[str, str] = {}
        self._naming: set[str] = set()

    # -- parameters and conditions ----------------------------------------------------------------
    def _parameters(self, overrides: Mapping[str, str]) -> dict[str, str]:
        declared: Mapping[str, Any] = self.template.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"parameter overrides for undeclared parameters: {sorted(unknown)}")
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if name in overrides:
                value = str(overrides[name])
            elif "Default" in spec:
                value = str(spec["Default"])
            else:
                raise TemplateError(f"parameter {name} has no default and no override")
            allowed = spec.get("AllowedValues")
            if allowed is not None and value not in [str(v) for v in allowed]:
                raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
            values[name] = value
        return values

    def condition(self, name: str) -> bool:
        if name in self._conditions:
            return self._conditions[name]
        conditions: Mapping[str, Any] = self.template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"unknown condition {name!r}")
        if name in self._condition_stack:
            raise TemplateError(f"condition {name!r} refers to itself")
        self._condition_stack.append(name)
        try:
            value = self.resolve(conditions[name])
        finally:
            self._condition_stack.pop()
        if not isinstance(value, bool):
            raise TemplateError(f"condition {name!r} is not a boolean: {value!r}")
        self._conditions[name] = value
        return value

    def included(self, logical_id: str) -> bool:
        condition = self.resources[logical_id].get("Condition")
        return condition is None or self.condition(str(condition))

    # -- physical names and attributes -------------------------------------------------------------
    def type_of(self, logical_id: str) -> str:
        if logical_id not in self.resources:
            raise TemplateError(f"reference to unknown resource or parameter {logical_id!r}")
        return str(self.resources[logical_id].get("Type", ""))

    def name_of(self, logical_id: str) -> str:
        """The physical name: the template's own name property, else a deterministic one."""
        if logical_id in self._names:
            return self._names[logical_id]
        if logical_id in self._naming:
            raise TemplateError(f"{logical_id}'s name refers to itself")
        self._naming.add(logical_id)
        try:
            resource_type = self.type_of(logical_id)
            props = self.resources[logical_id].get("Properties") or {}
            name_property = {
                "AWS::DynamoDB::Table": "TableName",
                "AWS::Events::EventBus": "Name",
                "AWS::Events::Archive": "ArchiveName",
                "AWS::Events::Rule": "Name",
                "AWS::S3::Bucket": "BucketName",
                "AWS::SecretsManager::Secret": "Name",
                "AWS::SQS::Queue": "QueueName",
                "AWS::Logs::LogGroup": "LogGroupName",
                "AWS::KMS::Alias": "AliasName",
                "AWS::Serverless::LayerVersion": "LayerName",
                "AWS::Serverless::Function": "FunctionName",
                "AWS::Serverless::StateMachine": "Name",
                "AWS::IAM::Role": "RoleName",
                "AWS::IAM::Policy": "PolicyName",
            }.get(resource_type)
            explicit = (
                self.resolve(props[name_property]) if name_property and name_property in props else None
            )
            if explicit is not None and explicit is not _NO_VALUE:
                name = str(explicit)
            elif resource_type == "AWS::Serverless::Function":
                name = logical_id  # the model's contract: the logical id when the template sets none
            elif resource_type == "AWS::S3::Bucket":
                name = f"{STACK_NAME}-{logical_id}".lower()
            elif resource_type == "AWS::Logs::LogGroup":
                name = f"/{STACK_NAME}/{logical_id}"
            else:
                name = f"{STACK_NAME}-{logical_id}"
            if resource_type == "AWS::SQS::Queue" and props.get("FifoQueue") and not name.endswith(".fifo"):
                name += ".fifo"
        finally:
            self._naming.discard(logical_id)
        self._names[logical_id] = name
        return name

    def arn_of(self, logical_id: str) -> str:
        resource_type = self.type_of(logical_id)
        name = self.name_of(logical_id)
        prefix = f"arn:aws:{{}}:{REGION}:{ACCOUNT_ID}"
        match resource_type:
            case "AWS::DynamoDB::Table":
                return f"{prefix.format('dynamodb')}:table/{name}"
            case "AWS::Events::EventBus":
                return f"{prefix.format('events')}:event-bus/{name}"
            case "AWS::Events::Archive":
                return f"{prefix.format('events')}:archive/{name}"
            case "AWS::Events::Rule":
                bus = self.rule_bus_name(logical_id)
                return f"{prefix.format('events')}:rule/{name if bus == 'default' else f'{bus}/{name}'}"
            case "AWS::S3::Bucket":
                return f"arn:aws:s3:::{name}"
            case "AWS::SecretsManager::Secret":
                return f"{prefix.format('secretsmanager')}:secret:{name}"
            case "AWS::SQS::Queue":
                return f"{prefix.format('sqs')}:{name}"
            case "AWS::Logs::LogGroup":
                return f"{prefix.format('logs')}:log-group:{name}:*"
            case "AWS::KMS::Key":
                # moto picks the real key id at startup; code names a key by its alias instead.
                return f"{prefix.format('kms')}:key/{name}"
            case "AWS::Serverless::LayerVersion":
                return f"{prefix.format('lambda')}:layer:{name}:1"
            case "AWS::Serverless::Function":
                return f"{prefix.format('lambda')}:function:{name}"
            case "AWS::Serverless::StateMachine":
                return f"{prefix.format('states')}:stateMachine:{name}"
            case "AWS::IAM::Role":
                return f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"
        raise TemplateError(f"{logical_id} ({resource_type}) has no Arn attribute locally")

    def queue_url(self, logical_id: str) -> str:
        # moto finds a queue by the last path segment, whatever the host; this is the AWS form.
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{self.name_of(logical_id)}"

    def rule_bus_name(self, logical_id: str) -> str:
        props = self.resources[logical_id].get("Properties") or {}
        bus = self.resolve(props.get("EventBusName", "default"))
        return bus_name_from(str(bus))

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": STACK_NAME,
            "AWS::StackId": STACK_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name.startswith("AWS::"):
            raise TemplateError(f"unsupported pseudo parameter {name}")
        if name in self.parameters:
            return self.parameters[name]
        resource_type = self.type_of(name)
        if resource_type in (
            "AWS::SecretsManager::Secret",
            "AWS::Serverless::LayerVersion",
            "AWS::Serverless::StateMachine",
            "AWS::Events::Archive",
        ):
            return self.arn_of(name) if resource_type != "AWS::Events::Archive" else self.name_of(name)
        if resource_type == "AWS::SQS::Queue":
            return self.queue_url(name)
        if resource_type == "AWS::Serverless::HttpApi":
            return API_ID
        if _is_custom(resource_type) or resource_type in (
            "AWS::S3::BucketPolicy",
            "AWS::SQS::QueuePolicy",
            "AWS::Lambda::Permission",
        ):
            return f"{STACK_NAME}-{name}"
        return self.name_of(name)

    def get_att(self, logical_id: str, attribute: str) -> Any:
        resource_type = self.type_of(logical_id)
        if attribute == "Arn":
            return self.arn_of(logical_id)
        name = self.name_of(logical_id) if not _is_custom(resource_type) else logical_id
        attributes: dict[str, dict[str, Any]] = {
            "AWS::SQS::Queue": {"QueueName": name, "QueueUrl": self.queue_url(logical_id)},
            "AWS::Events::EventBus": {"Name": name},
            "AWS::Serverless::StateMachine": {"Name": name},
            "AWS::Serverless::Function": {},
            "AWS::DynamoDB::Table": {"StreamArn": f"{self.arn_of(logical_id)}/stream/local"},
            "AWS::S3::Bucket": {
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{REGION}.amazonaws.com",
            },
            "AWS::IAM::Role": {"RoleId": f"AROA{logical_id.upper()[:16]}"},
            "AWS::Serverless::HttpApi": {
                "ApiEndpoint": f"https://{API_ID}.execute-api.{REGION}.amazonaws.com"
            },
        }
        known = attributes.get(resource_type, {})
        if attribute in known:
            return known[attribute]
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} ({resource_type}) is not supported locally")

    # -- intrinsics --------------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            key, argument = next(iter(value.items()))
            if key == "Ref":
                return self.ref(str(argument))
            if key == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if key.startswith("Fn::"):
                return self._function(key, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def _function(self, key: str, argument: Any) -> Any:
        match key:
            case "Fn::GetAtt":
                if isinstance(argument, str):
                    argument = argument.split(".", 1)
                logical_id, attribute = self.resolve(argument)
                return self.get_att(str(logical_id), str(attribute))
            case "Fn::Sub":
                return self._sub(argument)
            case "Fn::If":
                condition, when_true, when_false = argument
                return self.resolve(when_true if self.condition(str(condition)) else when_false)
            case "Fn::Equals":
                left, right = (self.resolve(item) for item in argument)
                return str(left) == str(right) if not isinstance(left, bool) else left == right
            case "Fn::Not":
                (inner,) = argument
                return not self._boolean(inner)
            case "Fn::And":
                return all(self._boolean(item) for item in argument)
            case "Fn::Or":
                return any(self._boolean(item) for item in argument)
            case "Fn::Join":
                delimiter, items = argument
                return str(delimiter).join(str(item) for item in self.resolve(items))
            case "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            case "Fn::Split":
                delimiter, text = argument
                return str(self.resolve(text)).split(str(delimiter))
        raise TemplateError(f"intrinsic function {key} is not supported by the local stack")

    def _boolean(self, value: Any) -> bool:
        resolved = self.resolve(value)
        if not isinstance(resolved, bool):
            raise TemplateError(f"expected a condition, got {resolved!r}")
        return resolved

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument
            variables = {name: self.resolve(item) for name, item in (variables or {}).items()}
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"  # ${!Literal} stays literal
            if expression in variables:
                return str(variables[expression])
            if "." in expression and not expression.startswith("AWS::"):
                logical_id, attribute = expression.split(".", 1)
                return str(self.get_att(logical_id, attribute))
            value = self.ref(expression)
            if value is _NO_VALUE:
                raise TemplateError(f"Fn::Sub cannot use {expression}")
            return str(value)

        return _SUB_VARIABLE.sub(replace, str(text))


def bus_name_from(value: str) -> str:
    """An EventBusName may be given as a name or an ARN."""
    return value.rsplit(":event-bus/", 1)[-1] if ":event-bus/" in value else value


def _merge_globals(globals_: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's rule: the function's own values win; maps (Environment.Variables) merge key by key."""
    merged = copy.deepcopy(dict(globals_))
    for key, value in props.items():
        if key == "Environment" and isinstance(value, dict) and "Environment" in merged:
            variables = {**merged["Environment"].get("Variables", {}), **value.get("Variables", {})}
            merged["Environment"] = {**merged["Environment"], **value, "Variables": variables}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_substitutions(value: Any, substitutions: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _SUB_VARIABLE.sub(lambda match: str(substitutions.get(match.group(1), match.group(0))), value)
    if isinstance(value, list):
        return [_apply_substitutions(item, substitutions) for item in value]
    if isinstance(value, dict):
        return {key: _apply_substitutions(item, substitutions) for key, item in value.items()}
    return value


def _str_attributes(props: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name in names:
        if name not in props:
            continue
        value = props[name]
        if isinstance(value, dict):
            attributes[name] = json.dumps(value)
        elif isinstance(value, bool):
            attributes[name] = "true" if value else "false"
        else:
            attributes[name] = str(value)
    return attributes


_QUEUE_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "MaximumMessageSize",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
)
_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "ProvisionedThroughput",
    "StreamSpecification",
)


def build_model(template_path: str | Path, parameter_overrides: Mapping[str, str]) -> StackModel:
    path = Path(template_path).resolve()
    template = load_template(path)
    root = path.parent
    resolver = _Resolver(template, root, parameter_overrides)

    unknown_globals = set(template.get("Globals") or {}) - {"Function"}
    if unknown_globals:
        raise TemplateError(f"Globals sections not supported locally: {sorted(unknown_globals)}")
    function_globals: Mapping[str, Any] = (template.get("Globals") or {}).get("Function") or {}

    model = StackModel(parameters=dict(resolver.parameters))
    resources = {lid: res for lid, res in resolver.resources.items() if resolver.included(lid)}
    for logical_id, resource in resources.items():
        resource_type = str(resource.get("Type", ""))
        if resource_type not in SUPPORTED_TYPES and not _is_custom(resource_type):
            raise TemplateError(f"resource {logical_id} has type {resource_type}, not supported locally")

    # Every property is resolved up front, so an unsupported intrinsic anywhere fails startup.
    props_of: dict[str, dict[str, Any]] = {}
    layer_dirs: dict[str, Path] = {}
    for logical_id, resource in resources.items():
        raw = resource.get("Properties") or {}
        if resource["Type"] == "AWS::Serverless::Function":
            raw = _merge_globals(function_globals, raw)
        props_of[logical_id] = cast(dict[str, Any], resolver.resolve(raw))
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            content = props_of[logical_id].get("ContentUri")
            if not isinstance(content, str):
                raise TemplateError(f"layer {logical_id}: ContentUri must be a local folder")
            layer_dirs[resolver.arn_of(logical_id)] = root / content / "python"

    def function_by_arn(arn: str, where: str) -> str:
        name = arn.rsplit(":function:", maxsplit=1)[-1].split(":", maxsplit=1)[0]
        for lid, res in resources.items():
            if res["Type"] == "AWS::Serverless::Function" and name in (resolver.name_of(lid), lid):
                return lid
        raise TemplateError(f"{where}: no function {arn!r} in the template")

    def target_for(arn: str, where: str) -> tuple[TargetKind, str]:
        if ":function:" in arn:  # a function ARN may carry a qualifier (alias or version)
            return "lambda", function_by_arn(arn, where)
        kinds: dict[str, TargetKind] = {
            "AWS::SQS::Queue": "sqs",
            "AWS::Serverless::StateMachine": "stepfunctions",
            "AWS::Events::EventBus": "bus",
        }
        for lid, res in resources.items():
            kind = kinds.get(res["Type"])
            if kind is not None and resolver.arn_of(lid) == arn:
                return kind, lid
        raise TemplateError(f"{where}: target {arn!r} is not a resource of the template")

    # -- functions -------------------------------------------------------------------------------
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = props_of[logical_id]
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"function {logical_id}: CodeUri must be a local folder")
        if "InlineCode" in props or "ImageUri" in props:
            raise TemplateError(f"function {logical_id}: only CodeUri functions are supported locally")
        dirs: list[Path] = []
        for layer in props.get("Layers") or []:
            if layer not in layer_dirs:
                raise TemplateError(f"function {logical_id}: layer {layer!r} is not a layer of the template")
            dirs.append(layer_dirs[layer])
        variables = (props.get("Environment") or {}).get("Variables") or {}
        model.functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            name=resolver.name_of(logical_id),
            arn=resolver.arn_of(logical_id),
            code_dir=root / code_uri,
            handler=str(props.get("Handler") or "app.lambda_handler"),
            environment={str(k): _env_value(v) for k, v in variables.items()},
            layer_dirs=tuple(dirs),
            timeout_seconds=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
        )

    # -- queues, tables, buses, buckets, secrets ---------------------------------------------------
    for logical_id, resource in resources.items():
        props = props_of[logical_id]
        match resource["Type"]:
            case "AWS::SQS::Queue":
                model.queues[logical_id] = Queue(
                    logical_id=logical_id,
                    name=resolver.name_of(logical_id),
                    url=resolver.queue_url(logical_id),
                    arn=resolver.arn_of(logical_id),
                    attributes=_str_attributes(props, _QUEUE_ATTRIBUTES),
                )
            case "AWS::DynamoDB::Table":
                kwargs = {key: props[key] for key in _TABLE_KEYS if key in props}
                kwargs["TableName"] = resolver.name_of(logical_id)
                model.tables[logical_id] = kwargs
                ttl = props.get("TimeToLiveSpecification") or {}
                if ttl.get("Enabled") in (True, "true", "True") and ttl.get("AttributeName"):
                    model.ttl_attributes[logical_id] = str(ttl["AttributeName"])
            case "AWS::Events::EventBus":
                model.buses[logical_id] = resolver.name_of(logical_id)
            case "AWS::S3::Bucket":
                model.buckets[logical_id] = resolver.name_of(logical_id)
            case "AWS::SecretsManager::Secret":
                model.secrets[logical_id] = resolver.name_of(logical_id)
            case "AWS::KMS::Key":
                model.kms_keys.setdefault(logical_id, [])
            case resource_type if _is_custom(resource_type):
                if "ServiceToken" not in props:
                    raise TemplateError(f"custom resource {logical_id} has no ServiceToken")
                function_by_arn(str(props["ServiceToken"]), f"custom resource {logical_id}")
                model.custom_resources[logical_id] = {"Type": resource_type, **props}

    key_by_ref = {resolver.ref(lid): lid for lid in model.kms_keys}
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::KMS::Alias":
            target = props_of[logical_id].get("TargetKeyId")
            if target not in key_by_ref:
                raise TemplateError(f"alias {logical_id}: TargetKeyId must Ref a key of the template")
            model.kms_keys[key_by_ref[target]].append(resolver.name_of(logical_id))

    queue_by_arn = {queue.arn: lid for lid, queue in model.queues.items()}

    # -- rules from AWS::Events::Rule ---------------------------------------------------------------
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        props = props_of[logical_id]
        targets = []
        for target in props.get("Targets") or []:
            kind, ref = target_for(str(target["Arn"]), f"rule {logical_id}")
            if "InputTransformer" in target:
                raise TemplateError(f"rule {logical_id}: InputTransformer is not supported locally")
            targets.append(
                Target(
                    kind=kind,
                    ref=ref,
                    arn=str(target["Arn"]),
                    input_path=target.get("InputPath"),
                    input=_input_text(target.get("Input")),
                )
            )
        model.rules[logical_id] = Rule(
            logical_id=logical_id,
            name=resolver.name_of(logical_id),
            bus_name=resolver.rule_bus_name(logical_id),
            event_pattern=props.get("EventPattern"),
            schedule=props.get("ScheduleExpression"),
            targets=tuple(targets),
            enabled=str(props.get("State", "ENABLED")).upper() == "ENABLED",
        )

    # -- function and state machine events, HTTP routes --------------------------------------------
    authorizers, default_authorizer = _authorizers(resources, props_of, function_by_arn)
    for logical_id, resource in resources.items():
        if resource["Type"] not in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            continue
        props = props_of[logical_id]
        is_function = resource["Type"] == "AWS::Serverless::Function"
        target_kind: TargetKind = "lambda" if is_function else "stepfunctions"
        for event_name, event in (props.get("Events") or {}).items():
            event_type = str(event.get("Type"))
            event_props: dict[str, Any] = event.get("Properties") or {}
            where = f"{logical_id}.Events.{event_name}"
            if event_type not in SUPPORTED_FUNCTION_EVENTS or (
                not is_function and event_type not in ("EventBridgeRule", "Schedule", "ScheduleV2")
            ):
                raise TemplateError(f"{where}: event type {event_type} is not supported locally")
            target = Target(
                kind=target_kind,
                ref=logical_id,
                arn=resolver.arn_of(logical_id),
                input_path=event_props.get("InputPath"),
                input=_input_text(event_props.get("Input")),
            )
            rule_id = f"{logical_id}{event_name}"
            if event_type == "HttpApi":
                if "ApiId" in event_props and event_props["ApiId"] != API_ID:
                    raise TemplateError(f"{where}: ApiId must reference the template's HttpApi")
                auth_name = (event_props.get("Auth") or {}).get("Authorizer", default_authorizer)
                if auth_name in (None, "NONE"):
                    authorizer = None
                elif auth_name in authorizers:
                    authorizer = authorizers[auth_name]
                else:
                    raise TemplateError(f"{where}: unknown authorizer {auth_name!r}")
                method = str(event_props.get("Method", "ANY")).upper()
                route_path = str(event_props.get("Path", "$default"))
                if route_path == "$default":
                    raise TemplateError(f"{where}: the $default route is not supported locally")
                model.routes.append(
                    Route(
                        method="ANY" if method in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD") else method,
                        path=route_path,
                        function=logical_id,
                        authorizer=authorizer,
                    )
                )
            elif event_type == "SQS":
                queue_arn = str(event_props["Queue"])
                if queue_arn not in queue_by_arn:
                    raise TemplateError(f"{where}: queue {queue_arn!r} is not a queue of the template")
                model.event_source_mappings.append(
                    EventSourceMapping(
                        function=logical_id,
                        queue=queue_by_arn[queue_arn],
                        batch_size=int(event_props.get("BatchSize", 10)),
                        report_batch_item_failures="ReportBatchItemFailures"
                        in (event_props.get("FunctionResponseTypes") or []),
                        maximum_batching_window_seconds=int(
                            event_props.get("MaximumBatchingWindowInSeconds", 0)
                        ),
                    )
                )
            elif event_type == "EventBridgeRule":
                model.rules[rule_id] = Rule(
                    logical_id=rule_id,
                    name=str(event_props.get("RuleName") or f"{STACK_NAME}-{rule_id}"),
                    bus_name=bus_name_from(str(event_props.get("EventBusName", "default"))),
                    event_pattern=event_props.get("Pattern"),
                    schedule=None,
                    targets=(target,),
                    enabled=str(event_props.get("State", "ENABLED")).upper() == "ENABLED",
                )
            else:  # Schedule, ScheduleV2 (a plain expression on the default bus)
                expression = event_props.get("Schedule") or event_props.get("ScheduleExpression")
                if not expression:
                    raise TemplateError(f"{where}: no schedule expression")
                if event_type == "ScheduleV2" and (
                    event_props.get("FlexibleTimeWindow") not in (None, {"Mode": "OFF"})
                    or "ScheduleExpressionTimezone" in event_props
                ):
                    raise TemplateError(f"{where}: only simple ScheduleV2 events are supported locally")
                enabled = event_props.get("Enabled", True) not in (False, "false") and (
                    str(event_props.get("State", "ENABLED")).upper() == "ENABLED"
                )
                model.rules[rule_id] = Rule(
                    logical_id=rule_id,
                    name=str(
                        event_props.get("Name")
                        or event_props.get("ScheduleName")
                        or f"{STACK_NAME}-{rule_id}"
                    ),
                    bus_name="default",
                    event_pattern=None,
                    schedule=str(expression),
                    targets=(target,),
                    enabled=enabled,
                )

    # -- state machines ---------------------------------------------------------------------------
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::StateMachine":
            continue
        props = props_of[logical_id]
        if "DefinitionUri" in props:
            uri = props["DefinitionUri"]
            if not isinstance(uri, str):
                raise TemplateError(f"state machine {logical_id}: DefinitionUri must be a local file")
            definition = json.loads((root / uri).read_text(encoding="utf-8"))
        elif "Definition" in props:
            definition = props["Definition"]
        else:
            raise TemplateError(f"state machine {logical_id} has no definition")
        substitutions = {k: str(v) for k, v in (props.get("DefinitionSubstitutions") or {}).items()}
        machine_type = str(props.get("Type", "STANDARD")).upper()
        if machine_type not in ("STANDARD", "EXPRESS"):
            raise TemplateError(f"state machine {logical_id}: type {machine_type}")
        model.state_machines[logical_id] = StateMachine(
            logical_id=logical_id,
            name=resolver.name_of(logical_id),
            arn=resolver.arn_of(logical_id),
            definition=_apply_substitutions(definition, substitutions),
            type="EXPRESS" if machine_type == "EXPRESS" else "STANDARD",
        )

    for name, output in (template.get("Outputs") or {}).items():
        if "Condition" in output and not resolver.condition(str(output["Condition"])):
            continue
        model.outputs[name] = resolver.resolve(output.get("Value"))
    return model


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _input_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _authorizers(
    resources: Mapping[str, Mapping[str, Any]],
    props_of: Mapping[str, Mapping[str, Any]],
    function_by_arn: Any,
) -> tuple[dict[str, Authorizer], str | None]:
    apis = [lid for lid, res in resources.items() if res["Type"] == "AWS::Serverless::HttpApi"]
    if len(apis) > 1:
        raise TemplateError(f"more than one HttpApi ({apis}); the local stack serves one")
    if not apis:
        return {}, None
    auth = props_of[apis[0]].get("Auth") or {}
    authorizers: dict[str, Authorizer] = {}
    for name, spec in (auth.get("Authorizers") or {}).items():
        if "FunctionArn" not in spec:
            raise TemplateError(f"authorizer {name}: only Lambda authorizers are supported locally")
        identity = spec.get("Identity") or {}
        unsupported = set(identity) - {"Headers", "ReauthorizeEvery"}
        if unsupported:
            raise TemplateError(f"authorizer {name}: identity sources {sorted(unsupported)} not supported")
        authorizers[name] = Authorizer(
            name=name,
            function=function_by_arn(str(spec["FunctionArn"]), f"authorizer {name}"),
            identity_headers=tuple(str(h) for h in identity.get("Headers") or []),
            simple_responses=bool(spec.get("EnableSimpleResponses", False)),
            payload_version=str(spec.get("AuthorizerPayloadFormatVersion", "2.0")),
        )
    default = auth.get("DefaultAuthorizer")
    if default is not None and default not in authorizers:
        raise TemplateError(f"DefaultAuthorizer {default!r} is not declared")
    return authorizers, default
