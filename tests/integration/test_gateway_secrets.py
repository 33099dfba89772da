"""Gateway keys from Secrets Manager (moto): values, Powertools caching, and an unfilled secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import boto3
import pytest

from tagih.api.errors import status_and_code
from tagih.domain.errors import GatewayUnavailable
from tagih.gateways.secrets import (
    GatewayNotConfigured,
    MidtransKeys,
    StripeKeys,
    midtrans_keys,
    reset_secrets,
    stripe_keys,
)
from tagih.store.table import reset_clients
from tests.fakes.aws_calls import count_calls

STRIPE_NAME = "tagih/test/stripe"
MIDTRANS_NAME = "tagih/test/midtrans"
STRIPE_VALUE = {"secret_key": "sk_test_secrets_1234", "webhook_secret": "whsec_secrets_5678"}


@pytest.fixture
def secrets_env(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STRIPE_SECRET_NAME", STRIPE_NAME)
    monkeypatch.setenv("MIDTRANS_SECRET_NAME", MIDTRANS_NAME)
    reset_clients()
    reset_secrets()
    yield
    reset_secrets()


def put_secret(name: str, value: object | None) -> None:
    client = boto3.client("secretsmanager")
    if value is None:
        client.create_secret(Name=name)  # what the stack creates: no value until the operator fills it
    else:
        client.create_secret(Name=name, SecretString=value if isinstance(value, str) else json.dumps(value))


def test_stripe_keys_come_from_the_secret(secrets_env: None) -> None:
    put_secret(STRIPE_NAME, STRIPE_VALUE)

    keys = stripe_keys()

    assert keys == StripeKeys(secret_key="sk_test_secrets_1234", webhook_secret="whsec_secrets_5678")
    assert "sk_test" not in repr(keys)
    assert "whsec_" not in repr(keys)


def test_midtrans_keys_come_from_the_secret(secrets_env: None) -> None:
    put_secret(
        MIDTRANS_NAME,
        {"server_key": "SB-Mid-server-x", "client_key": "SB-Mid-client-y", "is_production": "true"},
    )

    keys = midtrans_keys()

    assert keys == MidtransKeys(
        server_key="SB-Mid-server-x", client_key="SB-Mid-client-y", is_production=True
    )
    assert "SB-Mid" not in repr(keys)


def test_a_warm_process_reads_the_secret_once(secrets_env: None) -> None:
    put_secret(STRIPE_NAME, STRIPE_VALUE)

    with count_calls("secretsmanager") as calls:
        reset_secrets()  # the client is made inside the block, where calls are counted
        first = stripe_keys()
        second = stripe_keys()

    assert first == second
    assert calls["GetSecretValue"] == 1


def test_a_rotated_key_is_read_once_the_cached_one_is_too_old(
    secrets_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRETS_MAX_AGE_SECONDS", "0")
    reset_clients()
    put_secret(STRIPE_NAME, STRIPE_VALUE)
    assert stripe_keys().secret_key == "sk_test_secrets_1234"

    boto3.client("secretsmanager").put_secret_value(
        SecretId=STRIPE_NAME, SecretString=json.dumps({**STRIPE_VALUE, "secret_key": "sk_test_rotated"})
    )

    assert stripe_keys().secret_key == "sk_test_rotated"


def test_the_secret_the_stack_creates_empty_says_which_secret_to_fill(secrets_env: None) -> None:
    put_secret(STRIPE_NAME, None)

    with pytest.raises(GatewayNotConfigured) as raised:
        stripe_keys()

    assert STRIPE_NAME in raised.value.message
    assert '"secret_key"' in raised.value.message
    assert '"webhook_secret"' in raised.value.message
    assert isinstance(raised.value, GatewayUnavailable)
    assert status_and_code(raised.value) == (503, "gateway_unavailable")
    assert raised.value.gateway == "stripe"


@pytest.mark.parametrize("value", ["not json", "[]", {}, {"secret_key": "  ", "webhook_secret": "whsec_x"}])
def test_an_unusable_stripe_secret_is_not_configured(secrets_env: None, value: object) -> None:
    put_secret(STRIPE_NAME, value)

    with pytest.raises(GatewayNotConfigured, match=STRIPE_NAME):
        stripe_keys()


def test_a_half_filled_secret_names_what_is_missing_and_never_logs_values(
    secrets_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    put_secret(STRIPE_NAME, {"secret_key": "sk_test_only_half"})

    with caplog.at_level(logging.DEBUG, logger="tagih"), pytest.raises(GatewayNotConfigured) as raised:
        stripe_keys()

    assert "webhook_secret" in raised.value.message
    assert "sk_test_only_half" not in raised.value.message
    assert "sk_test_only_half" not in caplog.text
    assert STRIPE_NAME in caplog.text


def test_a_missing_midtrans_server_key_is_not_configured(secrets_env: None) -> None:
    put_secret(MIDTRANS_NAME, {"client_key": "SB-Mid-client-y"})

    with pytest.raises(GatewayNotConfigured, match="server_key") as raised:
        midtrans_keys()

    assert raised.value.gateway == "midtrans"
    assert MIDTRANS_NAME in raised.value.message


def test_a_function_without_the_secret_name_is_not_configured(
    secrets_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_SECRET_NAME")
    reset_clients()

    with pytest.raises(GatewayNotConfigured, match="STRIPE_SECRET_NAME"):
        stripe_keys()
