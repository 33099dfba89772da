"""Fixtures shared by unit and integration tests: moto, the table as template.yaml defines it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.aws import make_dynamodb_calls_atomic, make_dynamodb_transactions_copy_once
from local.cfn_yaml import load_template
from tagih.store.table import reset_clients
from tests.fakes.lambda_runtime import ROOT, FakeLambdaContext

# Powertools reads its namespace when a handler module creates its Metrics, which may happen before
# any fixture runs (the OpenAPI and import tests load every handler): Lambda always has it set.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TagihTest")

TABLE_NAME = "tagih-test"
BUS_NAME = "tagih-test"
WEBHOOK_SECRETS_KEY = "alias/tagih-test/webhook-secrets"


def table_definition() -> dict[str, Any]:
    """CreateTable arguments taken from template.yaml, so tests and the template cannot drift."""
    props = load_template(ROOT / "template.yaml")["Resources"]["BillingTable"]["Properties"]
    return {
        "TableName": TABLE_NAME,
        "BillingMode": props["BillingMode"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"],
    }


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TABLE_NAME": TABLE_NAME,
        "EVENT_BUS_NAME": BUS_NAME,
        "STAGE": "dev",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "TagihTest",
        "POWERTOOLS_SERVICE_NAME": "tagih-test",
        "WEBHOOK_SECRETS_KEY": WEBHOOK_SECRETS_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    reset_clients()


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    """moto for every AWS call, with the billing table and bus created from template.yaml."""
    # Cached gateway keys and clients must not outlive their moto.
    from tagih.events.publisher import reset_publisher
    from tagih.gateways.registry import reset_default_gateways
    from tagih.gateways.secrets import reset_secrets
    from tagih.store.webhook_secrets import reset_secret_sealer
    from tagih.timers.step_functions import reset_timers_client

    reset_secrets()
    reset_publisher()
    reset_default_gateways()
    reset_timers_client()
    reset_secret_sealer()
    make_dynamodb_calls_atomic()
    make_dynamodb_transactions_copy_once()
    with mock_aws():
        boto3.client("dynamodb").create_table(**table_definition())
        boto3.client("events").create_event_bus(Name=BUS_NAME)
        kms = boto3.client("kms")
        kms.create_alias(AliasName=WEBHOOK_SECRETS_KEY, TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
        yield
    reset_clients()
    reset_secrets()
    reset_publisher()
    reset_default_gateways()
    reset_timers_client()
    reset_secret_sealer()


# The timers' state machines, by the settings variable that names each (template.yaml).
TIMER_MACHINES = {
    "TRIAL_STATE_MACHINE_ARN": "trial",
    "GRACE_STATE_MACHINE_ARN": "grace_period",
    "INCOMPLETE_STATE_MACHINE_ARN": "incomplete",
    "DUNNING_STATE_MACHINE_ARN": "dunning",
}


@pytest.fixture
def timer_machines(aws: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The timers' state machines on moto, from statemachines/*.asl.json, named in the settings.
    moto here records executions without running them: tests read what was armed, with what input
    (the local stack runs them for real). Returns ``{"trial": arn, …}``."""
    arns = create_timer_machines(monkeypatch)
    reset_clients()  # settings are read again
    return arns


def create_timer_machines(monkeypatch: pytest.MonkeyPatch, prefix: str = "tagih-test") -> dict[str, str]:
    """Create the timers' state machines on the current moto and name them in the environment."""
    client = boto3.client("stepfunctions")
    arns: dict[str, str] = {}
    for variable, name in TIMER_MACHINES.items():
        definition = (ROOT / "statemachines" / f"{name}.asl.json").read_text(encoding="utf-8")
        arn = client.create_state_machine(
            name=f"{prefix}-{name.replace('_', '-')}",
            definition=definition.replace(
                "${TimersFunctionArn}", "arn:aws:lambda:us-east-1:123456789012:function:timers"
            ),
            roleArn=f"arn:aws:iam::123456789012:role/{prefix}-timers",
        )["stateMachineArn"]
        monkeypatch.setenv(variable, arn)
        arns[name] = arn
    return arns


@pytest.fixture
def catalog(aws: None) -> None:
    from tagih.domain.catalog import default_catalog
    from tagih.store.catalog import put_catalog

    put_catalog(default_catalog())


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault-injection harness's count (``tests/integration/test_money_under_faults.py``): how
    many (flow x boundary) cases ran, whatever the number of xdist workers."""
    counted = [
        (report.nodeid, int(value))
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "fault_cases"
    ]
    if counted:
        terminalreporter.write_line(
            f"fault injection: {sum(n for _, n in counted)} (flow x boundary) cases in {len(counted)} flows, "
            "each recovered and reconciled"
        )
    # Schemathesis (tests/e2e/test_schemathesis.py): its counts, whether the run passed or failed.
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", ()):
                if name == "schemathesis" and report.when == "call":
                    n = json.loads(str(value))
                    terminalreporter.write_line(
                        f"schemathesis: {n['operations']}/{n['operations_total']} operations covered, "
                        f"{n['requests']} requests, {n['server_errors']} server errors, "
                        f"{n['conformance_failures']} conformance failures in {n['seconds']}s"
                        + (f" (failures by code: {n['failures']})" if n["failures"] else "")
                    )
