"""Fixtures shared by unit and integration tests: moto, the table as template.yaml defines it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.aws import make_dynamodb_calls_atomic
from local.cfn_yaml import load_template
from tagih.store.table import reset_clients
from tests.fakes.lambda_runtime import ROOT, FakeLambdaContext

# Powertools reads its namespace when a handler module creates its Metrics, which may happen before
# any fixture runs (the OpenAPI and import tests load every handler): Lambda always has it set.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TagihTest")

TABLE_NAME = "tagih-test"
BUS_NAME = "tagih-test"


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

    reset_secrets()
    reset_publisher()
    reset_default_gateways()
    make_dynamodb_calls_atomic()
    with mock_aws():
        boto3.client("dynamodb").create_table(**table_definition())
        boto3.client("events").create_event_bus(Name=BUS_NAME)
        yield
    reset_clients()
    reset_secrets()
    reset_publisher()
    reset_default_gateways()


@pytest.fixture
def catalog(aws: None) -> None:
    from tagih.domain.catalog import default_catalog
    from tagih.store.catalog import put_catalog

    put_catalog(default_catalog())


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()
