"""The payment-gateway stand-ins of the local stack: localstripe and the Midtrans fake.

Both fakes must take the keys the functions read from the stack's Secrets Manager, so the keys
used here are read from there (through the moto endpoint), not copied from the stack's code. The
notification tests go all the way round: the fake (or localstripe) signs a notification, POSTs it
to the stack's ``/webhooks/*`` route and the gateway_webhooks function verifies it with its secret.
Orders are ones Tagih never recorded, which that function acknowledges with 200 and ignores.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.e2e.conftest import LocalStack
from tests.fakes.lambda_runtime import ROOT

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 30.0
STRIPE_ADAPTER = ROOT / "layers" / "common" / "python" / "tagih" / "gateways" / "stripe_gateway.py"


@pytest.fixture(scope="module")
def midtrans(local_stack: LocalStack) -> tuple[str, tuple[str, str]]:
    """The Midtrans fake's URL and the Basic auth of the server key the functions use."""
    return str(local_stack.health["midtrans_endpoint"]), (
        local_stack.gateway_secret("midtrans")["server_key"],
        "",
    )


def _va_order(midtrans: tuple[str, tuple[str, str]], bank: str = "bca") -> str:
    """A pending bank-transfer order at the fake's Core API, as the Midtrans adapter would create it."""
    url, auth = midtrans
    order_id = f"local-e2e-{uuid.uuid4().hex[:12]}"
    response = requests.post(
        f"{url}/v2/charge",
        auth=auth,
        json={
            "payment_type": "bank_transfer",
            "bank_transfer": {"bank": bank},
            "transaction_details": {"order_id": order_id, "gross_amount": 150000},
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.json()["transaction_status"] == "pending"
    return order_id


def test_health_says_where_both_gateway_fakes_listen(local_stack: LocalStack) -> None:
    health = local_stack.request("GET", "/_local/health").json()
    assert health["status"] == "ok"
    assert health["midtrans_endpoint"].startswith("http://127.0.0.1:")
    assert health["stripe_endpoint"].startswith("http://127.0.0.1:")
    assert health["midtrans_endpoint"] != health["stripe_endpoint"]


def test_the_midtrans_fake_takes_the_server_key_the_functions_read(
    midtrans: tuple[str, tuple[str, str]],
) -> None:
    url, auth = midtrans
    unknown = requests.get(f"{url}/v2/no-such-order/status", auth=auth, timeout=10)
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["status_code"] == "404"
    wrong_key = requests.get(f"{url}/v2/no-such-order/status", auth=("SB-Mid-server-other", ""), timeout=10)
    assert wrong_key.status_code == 401


def test_localstripe_takes_the_secret_key_the_functions_read(local_stack: LocalStack) -> None:
    stripe_url = local_stack.health["stripe_endpoint"]
    secret_key = local_stack.gateway_secret("stripe")["secret_key"]
    listed = requests.get(f"{stripe_url}/v1/customers", auth=(secret_key, ""), timeout=10)
    assert listed.status_code == 200, listed.text
    assert listed.json()["object"] == "list"
    assert requests.get(f"{stripe_url}/v1/customers", timeout=10).status_code == 401


def test_settling_an_unknown_order_is_order_not_found(local_stack: LocalStack) -> None:
    response = local_stack.request("POST", "/_local/midtrans/settle", json={"order_id": "never-created"})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "order_not_found"
    assert error["details"] == []
    assert error["request_id"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b"{}", ["body.order_id"]),
        (b'{"order_id": 5}', ["body.order_id"]),
        (b'{"order_id": ""}', ["body.order_id"]),
        (b'{"order_id": "x", "extra": 1}', ["body.extra"]),
        (b'["x"]', ["body"]),
        (b"order_id=x", ["body"]),
    ],
    ids=["empty", "not-a-string", "empty-string", "unknown-field", "not-an-object", "not-json"],
)
@pytest.mark.parametrize("action", ["settle", "expire"])
def test_a_bad_settle_or_expire_request_is_a_422(
    local_stack: LocalStack, action: str, body: bytes, fields: list[str]
) -> None:
    response = local_stack.request(
        "POST", f"/_local/midtrans/{action}", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [detail["field"] for detail in error["details"]] == fields


def test_a_settled_order_notifies_the_webhook_function_which_verifies_it(
    local_stack: LocalStack, midtrans: tuple[str, tuple[str, str]]
) -> None:
    order_id = _va_order(midtrans)
    response = local_stack.request("POST", "/_local/midtrans/settle", json={"order_id": order_id})
    assert response.status_code == 200, response.text
    # 200 from /webhooks/midtrans: the signature verified with the function's server key (else 401).
    assert response.json() == {
        "order_id": order_id,
        "transaction_status": "settlement",
        "notification": {"status": 200, "error": None},
    }
    url, auth = midtrans
    status = requests.get(f"{url}/v2/{order_id}/status", auth=auth, timeout=10).json()
    assert status["transaction_status"] == "settlement"


def test_an_expired_order_notifies_the_webhook_function_too(
    local_stack: LocalStack, midtrans: tuple[str, tuple[str, str]]
) -> None:
    order_id = _va_order(midtrans, bank="bni")
    response = local_stack.request("POST", "/_local/midtrans/expire", json={"order_id": order_id})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "order_id": order_id,
        "transaction_status": "expire",
        "notification": {"status": 200, "error": None},
    }


@pytest.mark.skipif(not STRIPE_ADAPTER.is_file(), reason="the Stripe adapter is not written yet")
def test_localstripe_events_reach_the_webhook_function_signed_with_its_secret(
    local_stack: LocalStack,
) -> None:
    """localstripe logs each delivery's outcome (on the stack's output); 401 would be a bad signature."""
    delivered = '[localstripe] webhook "customer.created" successfully delivered'
    refused = '[localstripe] webhook "customer.created" failed'
    logs = local_stack.logs()
    before, refused_before = logs.count(delivered), logs.count(refused)
    stripe_url = local_stack.health["stripe_endpoint"]
    secret_key = local_stack.gateway_secret("stripe")["secret_key"]
    created = requests.post(
        f"{stripe_url}/v1/customers", auth=(secret_key, ""), data={"email": "e2e@example.com"}, timeout=10
    )
    assert created.status_code == 200, created.text
    end = time.monotonic() + DEADLINE_SECONDS
    while (logs := local_stack.logs()).count(delivered) == before:
        assert logs.count(refused) == refused_before, logs[-3000:]
        if time.monotonic() > end:
            pytest.fail(f"localstripe did not deliver customer.created within {DEADLINE_SECONDS}s")
        time.sleep(0.2)  # polling for the delivery with a deadline
