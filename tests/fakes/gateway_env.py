"""Handlers' gateways on moto, as the deployed stack configures them: keys in Secrets Manager,
base URLs in the environment pointing at the local stand-ins (the Midtrans fake, localstripe)."""

from __future__ import annotations

import json

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tagih.events.publisher import reset_publisher
from tagih.gateways.registry import reset_default_gateways
from tagih.gateways.secrets import reset_secrets
from tagih.store.table import reset_clients
from tests.fakes.midtrans_server import KEYS as MIDTRANS_KEYS

MIDTRANS_SECRET = "tagih/test/midtrans"
STRIPE_SECRET = "tagih/test/stripe"
STRIPE_SECRET_KEY = "sk_test_tagih"
STRIPE_WEBHOOK_SECRET = "whsec_tagih_test"


def configure_gateways(
    monkeypatch: pytest.MonkeyPatch,
    midtrans: MidtransFake | None = None,
    stripe_url: str | None = None,
    timeout_seconds: float = 2.0,
) -> None:
    """Inside moto: create the gateway secrets and point the adapters at the stand-ins."""
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(
        Name=MIDTRANS_SECRET,
        SecretString=json.dumps(
            {
                "server_key": MIDTRANS_KEYS.server_key,
                "client_key": MIDTRANS_KEYS.client_key,
                "is_production": False,
            }
        ),
    )
    secrets.create_secret(
        Name=STRIPE_SECRET,
        SecretString=json.dumps({"secret_key": STRIPE_SECRET_KEY, "webhook_secret": STRIPE_WEBHOOK_SECRET}),
    )
    monkeypatch.setenv("MIDTRANS_SECRET_NAME", MIDTRANS_SECRET)
    monkeypatch.setenv("STRIPE_SECRET_NAME", STRIPE_SECRET)
    monkeypatch.setenv("GATEWAY_TIMEOUT_SECONDS", str(timeout_seconds))
    if midtrans is not None:
        monkeypatch.setenv("MIDTRANS_API_BASE", midtrans.api_base)
        monkeypatch.setenv("MIDTRANS_SNAP_BASE", midtrans.snap_base)
    if stripe_url is not None:
        monkeypatch.setenv("STRIPE_API_BASE", stripe_url)
    reset_clients()
    reset_secrets()
    reset_publisher()
    reset_default_gateways()


def event_queue(bus_name: str) -> str:
    """An SQS queue receiving every event of ``bus_name`` (moto delivers rule targets to SQS)."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="tagih-test-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(
        Name="all-billing-events", EventBusName=bus_name, EventPattern='{"source": ["tagih.billing"]}'
    )
    events.put_targets(
        Rule="all-billing-events", EventBusName=bus_name, Targets=[{"Id": "queue", "Arn": arn}]
    )
    return url


def received_events(queue_url: str) -> list[dict[str, object]]:
    """Every event delivered to the queue so far (EventBridge's envelope)."""
    sqs = boto3.client("sqs")
    found: list[dict[str, object]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return found
        found.extend(json.loads(message["Body"]) for message in batch)
