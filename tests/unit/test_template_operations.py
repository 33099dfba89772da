"""What an operator relies on in template.yaml: every function and state machine logs to a declared
log group that expires, capacity is reserved per function when asked (never by default), the
routes anyone can call have their own throttle, API-key revocation is not delayed by a cache, and
only the two webhook functions can decrypt webhook secrets. Read with the local stack's loader
(the template's own tags), and resolved by it where a parameter's value matters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from local.cfn_yaml import load_template
from local.template import build_model
from tests.fakes.lambda_runtime import ROOT

TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
PARAMETERS: dict[str, dict[str, Any]] = TEMPLATE["Parameters"]
REQUIRED = {"JwksUrl": "https://idp.example/jwks", "JwtIssuer": "https://idp.example/", "JwtAudience": "a"}


def of_type(resource_type: str) -> dict[str, dict[str, Any]]:
    return {lid: res for lid, res in RESOURCES.items() if res["Type"] == resource_type}


FUNCTIONS = of_type("AWS::Serverless::Function")
MACHINES = of_type("AWS::Serverless::StateMachine")
LOG_GROUPS = of_type("AWS::Logs::LogGroup")


def statements(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in resource["Properties"].get("Policies") or []:
        if isinstance(policy, dict) and "Statement" in policy:
            yield from policy["Statement"]


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement.get("Action", [])
    return [action] if isinstance(action, str) else list(action)


def test_every_function_and_state_machine_logs_to_a_declared_group_that_expires() -> None:
    assert (len(FUNCTIONS), len(MACHINES)) == (19, 5)
    for logical_id, function in FUNCTIONS.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert group in LOG_GROUPS, logical_id
    for logical_id, machine in MACHINES.items():
        logging = machine["Properties"]["Logging"]
        assert (logging["Level"], logging["IncludeExecutionData"]) == ("ERROR", False), logical_id
        [destination] = logging["Destinations"]
        group, attribute = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"]
        assert (group in LOG_GROUPS, attribute) == (True, "Arn"), logical_id
        delivery = [s for s in statements(machine) if "logs:CreateLogDelivery" in actions(s)]
        assert delivery, f"{logical_id} may not deliver its logs"
    for logical_id, group in LOG_GROUPS.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, logical_id
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["LogsKey", "Arn"]}, logical_id
    # One group per function and machine, and the API's access logs: nothing logs nowhere.
    assert len(LOG_GROUPS) == len(FUNCTIONS) + len(MACHINES) + 1


def test_functions_log_at_info_unless_an_operator_raises_it() -> None:
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert PARAMETERS["LogLevel"]["Default"] == "INFO"
    model = build_model(ROOT / "template.yaml", {**REQUIRED, "Stage": "dev"})
    assert {f.environment["POWERTOOLS_LOG_LEVEL"] for f in model.functions.values()} == {"INFO"}
    for logical_id, function in FUNCTIONS.items():
        own = function["Properties"].get("Environment", {}).get("Variables", {})
        assert "POWERTOOLS_LOG_LEVEL" not in own, logical_id


def test_each_function_reserves_concurrency_from_a_parameter_that_reserves_nothing_by_default() -> None:
    families = set()
    for logical_id, function in FUNCTIONS.items():
        reserved = function["Properties"].get("ReservedConcurrentExecutions")
        if logical_id == "CatalogSeedFunction":  # runs once per deploy (its checkov skip says why)
            assert reserved is None
            continue
        condition, when_set, otherwise = reserved["Fn::If"]
        parameter = when_set["Ref"]
        assert otherwise == {"Ref": "AWS::NoValue"}, logical_id
        # 0 must mean "no reservation": a reservation of 0 would throttle every invocation.
        assert TEMPLATE["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
        assert (PARAMETERS[parameter]["Default"], PARAMETERS[parameter]["MinValue"]) == (0, 0)
        families.add(parameter)
    assert len(families) == 6


def unauthenticated_routes() -> set[str]:
    routes = set()
    for function in FUNCTIONS.values():
        for event in (function["Properties"].get("Events") or {}).values():
            props = event.get("Properties", {})
            if event["Type"] == "HttpApi" and props.get("Auth", {}).get("Authorizer") == "NONE":
                routes.add(f"{props['Method']} {props['Path']}")
    return routes


def test_every_route_without_an_authorizer_has_its_own_lower_throttle() -> None:
    api = RESOURCES["HttpApi"]["Properties"]
    routes = unauthenticated_routes()
    assert routes == {
        "POST /webhooks/midtrans",
        "POST /webhooks/stripe",
        "GET /billing/invoices/{invoice_id}/hosted",
    }
    assert set(api["RouteSettings"]) == routes
    for settings in api["RouteSettings"].values():
        assert settings == {
            "ThrottlingBurstLimit": {"Ref": "PublicRouteBurstLimit"},
            "ThrottlingRateLimit": {"Ref": "PublicRouteRateLimit"},
        }
    assert PARAMETERS["PublicRouteRateLimit"]["Default"] < PARAMETERS["ApiRateLimit"]["Default"]
    assert PARAMETERS["PublicRouteBurstLimit"]["Default"] < PARAMETERS["ApiBurstLimit"]["Default"]


def test_the_authorizer_result_is_not_cached_so_a_revoked_key_stops_at_once() -> None:
    authorizer = RESOURCES["HttpApi"]["Properties"]["Auth"]["Authorizers"]["TagihAuthorizer"]
    assert authorizer["Identity"]["ReauthorizeEvery"] == 0


def test_only_the_webhook_functions_may_use_the_webhook_secrets_key() -> None:
    granted: dict[str, set[str]] = {}
    for logical_id, resource in {**FUNCTIONS, **MACHINES}.items():
        for statement in statements(resource):
            kms = {a for a in actions(statement) if a.lower().startswith("kms:")}
            if kms:
                assert statement["Resource"] == {"Fn::GetAtt": ["WebhookSecretsKey", "Arn"]}, logical_id
                assert set(statement["Condition"]["Null"]) == {
                    "kms:EncryptionContext:organization_id",
                    "kms:EncryptionContext:webhook_id",
                }
                granted.setdefault(logical_id, set()).update(kms)
    assert granted == {
        "WebhooksFunction": {"kms:Encrypt", "kms:Decrypt"},
        "WebhookDispatchFunction": {"kms:Decrypt"},
    }
    key = RESOURCES["WebhookSecretsKey"]
    assert (key["DeletionPolicy"], key["Properties"]["EnableKeyRotation"]) == ("Retain", True)


@pytest.mark.parametrize("logical_id", sorted(RESOURCES))
def test_every_checkov_skip_names_a_check_and_says_why(logical_id: str) -> None:
    skips = (RESOURCES[logical_id].get("Metadata") or {}).get("checkov", {}).get("skip", [])
    for skip in skips:
        assert skip["id"].startswith("CKV_AWS_"), logical_id
        assert len(skip["comment"]) > 40, (logical_id, skip["id"])
