"""Gateway notifications through the real handler (``functions/gateway_webhooks``) on moto.

The payment is created the way production creates it (``charge_attempt`` with the adapter
the registry builds from the environment and the Secrets Manager secret), at the local Midtrans
fake over HTTP. Notifications are the exact bytes the fake POSTs (caught by a ``NotificationInbox``)
and are handed to the handler as API Gateway would. Nothing of the project is patched (one race
test times the calls to DynamoDB with a botocore hook); what a user would notice is checked: the
HTTP answer, the stored payment and the processed-event markers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import ModuleType
from typing import Any

import boto3
import pytest

from local.midtrans_fake import MidtransFake, signature
from tagih import clock
from tagih.domain.gateway import AttachedMethod, ChargeRequest, Customer
from tagih.domain.payments import Payment
from tagih.gateways.registry import default_gateways, reset_default_gateways
from tagih.gateways.secrets import reset_secrets
from tagih.services.charging import charge_attempt
from tagih.store.payments import default_payment_items
from tagih.store.table import reset_clients
from tests.conftest import TABLE_NAME
from tests.fakes.aws_calls import count_calls
from tests.fakes.lambda_runtime import FakeLambdaContext, http_event, load_function
from tests.fakes.midtrans_server import KEYS, NotificationInbox, running_midtrans_fake

ORG = "org_webhooks"
AMOUNT = 299_000
MIDTRANS_SECRET = "tagih/test/midtrans"
STRIPE_SECRET = "tagih/test/stripe"
MIDTRANS_PATH = "/webhooks/midtrans"
STRIPE_PATH = "/webhooks/stripe"
CUSTOMER = Customer(account_id="acct_wh", organization_id=ORG, name="PT Contoh", email="billing@contoh.co.id")
BCA_VA = AttachedMethod(
    gateway="midtrans", gateway_payment_method_id="va:bca", type="bank_transfer", bank="bca"
)
ERROR_FIELDS = {"code", "message", "details", "request_id"}

Handler = Callable[[dict[str, Any], FakeLambdaContext], dict[str, Any]]


# -- the stack: moto, the Midtrans fake, and the function's environment --------------------------------
# One fake and one inbox for the module (starting and stopping HTTP servers costs ~1 s a test);
# every test charges invoices of its own, so no test sees another's transactions.
@pytest.fixture(scope="module")
def inbox() -> Iterator[NotificationInbox]:
    with NotificationInbox() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def fake(inbox: NotificationInbox) -> Iterator[MidtransFake]:
    with running_midtrans_fake(server_key=KEYS.server_key, notification_url=inbox.url) as running:
        yield running


def new_invoice_id() -> str:
    return f"inv_wh_{uuid.uuid4().hex[:16]}"


def put_secret(name: str, value: dict[str, Any]) -> None:
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))


def reread_settings() -> None:
    """What a new Lambda container does: settings, clients, keys and adapters read afresh."""
    reset_clients()
    reset_secrets()
    reset_default_gateways()


def point_midtrans_at(monkeypatch: pytest.MonkeyPatch, api_base: str, snap_base: str) -> None:
    monkeypatch.setenv("MIDTRANS_API_BASE", api_base)
    monkeypatch.setenv("MIDTRANS_SNAP_BASE", snap_base)
    reread_settings()


@pytest.fixture
def midtrans(aws: None, fake: MidtransFake, monkeypatch: pytest.MonkeyPatch) -> Iterator[MidtransFake]:
    """The function configured as the stack configures it: secret name in env, keys in the secret."""
    put_secret(
        MIDTRANS_SECRET,
        {"server_key": KEYS.server_key, "client_key": KEYS.client_key, "is_production": False},
    )
    monkeypatch.setenv("MIDTRANS_SECRET_NAME", MIDTRANS_SECRET)
    monkeypatch.setenv("GATEWAY_TIMEOUT_SECONDS", "2")
    point_midtrans_at(monkeypatch, fake.api_base, fake.snap_base)
    yield fake
    reread_settings()


# -- helpers -------------------------------------------------------------------------------------------
class Answer:
    def __init__(self, result: dict[str, Any], event: dict[str, Any]) -> None:
        self.status: int = result["statusCode"]
        self.raw: str = result.get("body") or ""
        self.body: dict[str, Any] = json.loads(self.raw) if self.raw else {}
        self.request_id: str = event["requestContext"]["requestId"]

    def assert_error(self, status: int, code: str) -> None:
        """API.md's error envelope, with the request's id and nothing of a stack trace."""
        assert self.status == status, self.raw
        assert set(self.body) == {"error"}, self.raw
        error = self.body["error"]
        assert set(error) == ERROR_FIELDS
        assert error["code"] == code
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["details"], list)
        assert error["request_id"] == self.request_id
        assert "Traceback" not in self.raw


def notification_event(
    body: bytes,
    *,
    path: str = MIDTRANS_PATH,
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """The HTTP API event API Gateway builds for a gateway's POST (no authorizer on these routes)."""
    event = http_event(
        "POST",
        path,
        raw_body="",
        headers={"content-type": "application/json", "user-agent": "Veritrans", **(headers or {})},
    )
    if base64_body:
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True
    else:
        event["body"] = body.decode("utf-8")
    return event


def deliver(
    body: bytes,
    *,
    path: str = MIDTRANS_PATH,
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
    handler: Handler | None = None,
) -> Answer:
    event = notification_event(body, path=path, headers=headers, base64_body=base64_body)
    run = handler or load_function("gateway_webhooks").lambda_handler
    return Answer(run(event, FakeLambdaContext(function_name="GatewayWebhooksFunction")), event)


def charge_request(invoice_id: str, amount: int = AMOUNT) -> ChargeRequest:
    return ChargeRequest(
        organization_id=ORG,
        invoice_id=invoice_id,
        attempt=1,
        amount=amount,
        currency="IDR",
        method=BCA_VA,
        customer=CUSTOMER,
        description="Pro, February 2026",
    )


def record_va_payment(invoice_id: str | None = None) -> Payment:
    """A BCA virtual-account payment, charged as production charges it: pending until the payer pays."""
    payment = charge_attempt(
        default_gateways().get("midtrans"),
        default_payment_items(),
        charge_request(invoice_id or new_invoice_id()),
        "invoice",
        payment_method_id="pm_va_bca",
    )
    assert payment.status == "pending"
    assert payment.instructions is not None
    assert payment.instructions.bank == "bca"
    return payment


def signed_notification(inbox: NotificationInbox, send: Callable[[], dict[str, Any]]) -> bytes:
    """Have the fake send one notification and return its exact bytes."""
    before = len(inbox.bodies)
    sent = send()
    assert sent["delivery"]["status"] == 200, sent["delivery"]
    assert len(inbox.bodies) == before + 1
    return inbox.bodies[-1]


def table_snapshot() -> list[dict[str, Any]]:
    items = boto3.resource("dynamodb").Table(TABLE_NAME).scan(ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (str(item["PK"]), str(item["SK"])))


def stored_payment(reference: str) -> dict[str, Any]:
    item = (
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .get_item(Key={"PK": f"ORG#{ORG}", "SK": f"PAYMENT#{reference}"}, ConsistentRead=True)
        .get("Item")
    )
    assert item is not None, f"no payment {reference}"
    return dict(item)


def markers() -> list[dict[str, Any]]:
    return [item for item in table_snapshot() if str(item["PK"]).startswith("GWEVENT#")]


def transaction_id(fake: MidtransFake, order_id: str) -> str:
    record = fake.transaction(order_id)
    assert record is not None
    return str(record["transaction_id"])


def assert_still_pending(reference: str) -> None:
    payment = stored_payment(reference)
    assert payment["status"] == "pending"
    assert payment["version"] == 2  # claimed (1), charge answer recorded (2); nothing since
    assert markers() == []


def assert_settled_once(fake: MidtransFake, reference: str) -> None:
    payment = stored_payment(reference)
    assert payment["status"] == "succeeded"
    assert payment["version"] == 3
    assert payment["gateway_charge_id"] == transaction_id(fake, reference)
    assert "decline_reason" not in payment
    [marker] = markers()
    assert marker["PK"] == f"GWEVENT#midtrans#{transaction_id(fake, reference)}:settlement"
    assert marker["SK"] == "GWEVENT"
    assert marker["reference"] == reference
    assert marker["ttl"] > clock.epoch_seconds(clock.now())


# -- 1. a forged signature -----------------------------------------------------------------------------
def _with(field: str, value: str) -> Callable[[dict[str, Any]], None]:
    def tamper(body: dict[str, Any]) -> None:
        body[field] = value

    return tamper


def _without_signature(body: dict[str, Any]) -> None:
    del body["signature_key"]


def _signed_with_a_guessed_key(body: dict[str, Any]) -> None:
    body["gross_amount"] = "1000.00"
    body["signature_key"] = signature(body["order_id"], body["status_code"], "1000.00", "SB-Mid-server-guess")


TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "gross_amount lowered": _with("gross_amount", "1000.00"),
    "status_code changed": _with("status_code", "201"),
    "order_id of another invoice": _with("order_id", "inv_wh_other-a1"),
    "signature_key replaced": _with("signature_key", "0" * 128),
    "signature_key missing": _without_signature,
    "re-signed with a guessed server key": _signed_with_a_guessed_key,
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_a_forged_midtrans_signature_is_401_and_changes_nothing(
    midtrans: MidtransFake, inbox: NotificationInbox, tamper: Callable[[dict[str, Any]], None]
) -> None:
    payment = record_va_payment()
    # Midtrans really has the money, so only the signature stands between a forger and "paid".
    genuine = signed_notification(inbox, lambda: midtrans.settle(payment.reference))
    forged_body = json.loads(genuine)
    tamper(forged_body)
    before = table_snapshot()

    answer = deliver(json.dumps(forged_body).encode())

    answer.assert_error(401, "invalid_signature")
    assert table_snapshot() == before
    assert_still_pending(payment.reference)
    # The genuine bytes of the same notification do apply: the tampering alone was refused.
    assert deliver(genuine).body == {"received": True, "result": "settled"}
    assert_settled_once(midtrans, payment.reference)


# -- 2. the notification's claim is not the truth ------------------------------------------------------
def test_a_signed_settlement_claim_the_status_api_denies_leaves_the_payment_pending(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    payment = record_va_payment()
    claim = signed_notification(inbox, lambda: midtrans.notify(payment.reference, "settlement"))
    assert json.loads(claim)["transaction_status"] == "settlement"
    before = table_snapshot()

    answer = deliver(claim)

    assert answer.status == 200, answer.raw
    assert answer.body == {"received": True, "result": "ignored"}
    assert table_snapshot() == before
    assert_still_pending(payment.reference)

    # No marker was left, so the real settlement (same transaction and status, so the same event id)
    # still applies when the payer pays.
    settlement = signed_notification(inbox, lambda: midtrans.settle(payment.reference))
    assert json.loads(settlement)["transaction_id"] == json.loads(claim)["transaction_id"]
    assert deliver(settlement).body == {"received": True, "result": "settled"}
    assert_settled_once(midtrans, payment.reference)


# -- 3. settle once, then a duplicate ------------------------------------------------------------------
def test_a_settlement_succeeds_the_payment_once_and_a_redelivery_is_a_duplicate(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    payment = record_va_payment()
    settlement = signed_notification(inbox, lambda: midtrans.settle(payment.reference))

    first = deliver(settlement)

    assert first.status == 200, first.raw
    assert first.body == {"received": True, "result": "settled"}
    assert_settled_once(midtrans, payment.reference)
    after_first = table_snapshot()

    again = deliver(settlement)

    assert again.status == 200, again.raw
    assert again.body == {"received": True, "result": "duplicate"}
    assert table_snapshot() == after_first  # the payment's version and the one marker unchanged
    assert_settled_once(midtrans, payment.reference)


# -- 4. two deliveries at once -------------------------------------------------------------------------
def second_container() -> ModuleType:
    """The handler imported again under another name: a second warm Lambda container."""
    return load_function("gateway_webhooks", container=2)


@pytest.fixture
def no_shared_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools keeps metrics in class-level state shared by every handler in the process; two
    containers in one process would flush each other's. Metrics are not what is tested here.
    (moto itself runs each DynamoDB call atomically, as DynamoDB does: see tests/conftest.py.)"""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


@contextmanager
def rendezvous_before(operation: str, parties: int) -> Iterator[None]:
    """Hold each DynamoDB ``operation`` call until ``parties`` of them are waiting, then let all go.

    A botocore hook on the default session (the same mechanism as ``count_calls``): only the timing
    of the calls to DynamoDB changes. Every delivery has then read "not processed" and the pending
    payment before any of them writes.
    """
    rendezvous = threading.Barrier(parties)

    def hold(model: Any, **_: Any) -> None:
        if model.name == operation:
            rendezvous.wait(timeout=10)

    session = boto3._get_default_session()
    session.events.register("before-call.dynamodb", hold)
    reset_clients()  # clients made from now on carry the hook
    try:
        yield
    finally:
        session.events.unregister("before-call.dynamodb", hold)
        rendezvous.abort()
        reset_clients()


def deliver_concurrently(settlement: bytes) -> list[Answer]:
    """The same notification delivered by two containers at the same moment."""
    handlers: list[Handler] = [
        load_function("gateway_webhooks").lambda_handler,
        second_container().lambda_handler,
    ]
    start = threading.Barrier(len(handlers))
    answers: list[Answer] = []
    failures: list[BaseException] = []

    def delivery(handler: Handler) -> None:
        try:
            start.wait(timeout=10)
            answers.append(deliver(settlement, handler=handler))
        except BaseException as error:  # surfaced below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=delivery, args=(handler,)) for handler in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    assert len(answers) == len(handlers)
    return answers


@pytest.mark.usefixtures("no_shared_metrics")
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_two_concurrent_deliveries_settle_once(
    midtrans: MidtransFake, inbox: NotificationInbox, round_: int
) -> None:
    payment = record_va_payment()
    settlement = signed_notification(inbox, lambda: midtrans.settle(payment.reference))

    answers = deliver_concurrently(settlement)

    assert [answer.status for answer in answers] == [200, 200], [answer.raw for answer in answers]
    assert sorted(answer.body["result"] for answer in answers) == ["duplicate", "settled"]
    assert_settled_once(midtrans, payment.reference)


@pytest.mark.usefixtures("no_shared_metrics")
def test_two_deliveries_both_past_the_duplicate_check_still_settle_once(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    # Left to chance, the second delivery usually finds the first one's marker and stops there. Here
    # both reach the transition (payment write + marker, one transaction) before either has written:
    # the transaction itself must let only one through.
    payment = record_va_payment()
    settlement = signed_notification(inbox, lambda: midtrans.settle(payment.reference))

    with rendezvous_before("TransactWriteItems", parties=2), count_calls("dynamodb") as calls:
        answers = deliver_concurrently(settlement)

    assert calls["TransactWriteItems"] == 2  # both tried to write; one was refused
    assert [answer.status for answer in answers] == [200, 200], [answer.raw for answer in answers]
    assert sorted(answer.body["result"] for answer in answers) == ["duplicate", "settled"]
    assert_settled_once(midtrans, payment.reference)


# -- 5. the status API's amount is not the recorded one ------------------------------------------------
def test_a_settlement_of_another_amount_does_not_succeed_the_payment(
    midtrans: MidtransFake, inbox: NotificationInbox, caplog: pytest.LogCaptureFixture
) -> None:
    # charge_attempt sends the amount it records, so it cannot produce a mismatch. Build the
    # one it guards against with the same store and adapter: Tagih's record of the attempt says
    # Rp 150.000 while the transaction under that order_id at Midtrans is for Rp 299.000 (a stale
    # record, or another system charging on the same merchant account with a colliding order_id).
    recorded_amount = 150_000
    request = charge_request(new_invoice_id())
    payments = default_payment_items()
    moment = clock.now()
    claim = Payment(
        organization_id=ORG,
        reference=request.reference,
        purpose="invoice",
        subject_id=request.invoice_id,
        attempt=request.attempt,
        gateway="midtrans",
        payment_method_id="pm_va_bca",
        amount=recorded_amount,
        currency="IDR",
        status="processing",
        created_at=moment,
        updated_at=moment,
    )
    assert payments.claim(claim) is None
    result = default_gateways().get("midtrans").charge(request)
    assert result.outcome == "pending"
    pending = replace(
        claim,
        status="pending",
        version=2,
        gateway_charge_id=result.gateway_charge_id,
        instructions=result.instructions,
    )
    assert payments.save_outcome(pending, expected_version=1)
    settlement = signed_notification(inbox, lambda: midtrans.settle(request.reference))
    assert json.loads(settlement)["gross_amount"] == "299000.00"
    before = table_snapshot()

    answer = deliver(settlement)

    assert answer.status == 200, answer.raw
    assert answer.body["result"] not in ("settled", "failed")
    assert answer.body == {"received": True, "result": "ignored"}
    assert table_snapshot() == before
    payment = stored_payment(request.reference)
    assert (payment["status"], payment["amount"]) == ("pending", recorded_amount)
    assert_still_pending(request.reference)
    # Money moved that Tagih does not count: the operator is told.
    [warning] = [r for r in caplog.records if r.getMessage() == "gateway notification needs review"]
    assert warning.levelname == "WARNING"
    assert getattr(warning, "reason", None) == "amount or currency mismatch"


# -- 6. the status API cannot be asked -----------------------------------------------------------------
@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: every connection to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_an_unreachable_status_api_is_503_and_the_redelivery_then_settles(
    midtrans: MidtransFake, inbox: NotificationInbox, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    payment = record_va_payment()
    settlement = signed_notification(inbox, lambda: midtrans.settle(payment.reference))
    point_midtrans_at(monkeypatch, f"http://127.0.0.1:{closed_port}", f"http://127.0.0.1:{closed_port}/snap")
    before = table_snapshot()

    answer = deliver(settlement)

    answer.assert_error(503, "gateway_unavailable")
    assert table_snapshot() == before
    assert_still_pending(payment.reference)

    # Midtrans retries a non-2xx answer; once its status API answers, the same bytes settle.
    point_midtrans_at(monkeypatch, midtrans.api_base, midtrans.snap_base)
    assert deliver(settlement).body == {"received": True, "result": "settled"}
    assert_settled_once(midtrans, payment.reference)


@pytest.mark.usefixtures("midtrans")
def test_a_stopped_midtrans_is_503_and_changes_nothing(
    inbox: NotificationInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_midtrans_fake(server_key=KEYS.server_key, notification_url=inbox.url) as going_down:
        point_midtrans_at(monkeypatch, going_down.api_base, going_down.snap_base)
        payment = record_va_payment()
        settlement = signed_notification(inbox, lambda: going_down.settle(payment.reference))
        going_down.stop()  # Midtrans goes down after sending the notification
        before = table_snapshot()

        answer = deliver(settlement)

    answer.assert_error(503, "gateway_unavailable")
    assert table_snapshot() == before
    assert_still_pending(payment.reference)


# -- 7. not a charge Tagih made ------------------------------------------------------------------------
def test_a_signed_notification_of_an_unknown_order_is_acknowledged_and_ignored(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    # Another system on the same merchant account charged this order: Midtrans signs its
    # notification with our server key, but Tagih never recorded the payment.
    request = charge_request(new_invoice_id())
    assert default_gateways().get("midtrans").charge(request).outcome == "pending"
    settlement = signed_notification(inbox, lambda: midtrans.settle(request.reference))
    before = table_snapshot()

    answer = deliver(settlement)

    assert answer.status == 200, answer.raw
    assert answer.body == {"received": True, "result": "ignored"}
    assert table_snapshot() == before
    assert markers() == []


# -- 8. how the body arrives ---------------------------------------------------------------------------
def test_a_base64_encoded_body_verifies_like_the_raw_one(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    payment = record_va_payment()
    settlement = signed_notification(inbox, lambda: midtrans.settle(payment.reference))

    answer = deliver(settlement, base64_body=True)

    assert answer.status == 200, answer.raw
    assert answer.body == {"received": True, "result": "settled"}
    assert_settled_once(midtrans, payment.reference)


NOT_NOTIFICATIONS: dict[str, tuple[bytes, bool]] = {
    "form-encoded": (b"order_id=inv_wh_01-a1&status_code=200&gross_amount=299000.00", False),
    "plain text": (b"settlement", False),
    "empty": (b"", False),
    "a JSON array": (b"[]", False),
}


@pytest.mark.parametrize(("body", "encoded"), NOT_NOTIFICATIONS.values(), ids=NOT_NOTIFICATIONS.keys())
def test_a_body_that_is_not_a_json_notification_is_401(
    midtrans: MidtransFake, body: bytes, encoded: bool
) -> None:
    record_va_payment()
    before = table_snapshot()

    answer = deliver(body, base64_body=encoded)

    answer.assert_error(401, "invalid_signature")
    assert table_snapshot() == before


def test_a_binary_body_is_400_malformed_json_and_changes_nothing(midtrans: MidtransFake) -> None:
    record_va_payment()
    before = table_snapshot()

    answer = deliver(b"\x89PNG\r\n\x1a\n\x00\xff\xfe", base64_body=True)

    answer.assert_error(400, "malformed_json")
    assert table_snapshot() == before


def test_a_body_flagged_base64_that_is_not_base64_is_400(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    payment = record_va_payment()
    settlement = signed_notification(inbox, lambda: midtrans.settle(payment.reference))
    event = notification_event(settlement)
    event["isBase64Encoded"] = True  # the raw JSON, wrongly flagged: not valid base64
    before = table_snapshot()

    answer = Answer(load_function("gateway_webhooks").lambda_handler(event, FakeLambdaContext()), event)

    answer.assert_error(400, "malformed_json")
    assert table_snapshot() == before


# -- 9. Stripe without its signature -------------------------------------------------------------------
STRIPE_WEBHOOK_SECRET = "whsec_x"
STRIPE_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
STRIPE_EVENT = {
    "id": "evt_wh_forged",
    "object": "event",
    "type": "payment_intent.succeeded",
    "created": 1795348800,
    "livemode": False,
    "data": {
        "object": {
            "id": "pi_wh_forged",
            "object": "payment_intent",
            "amount": 2900,
            "currency": "usd",
            "status": "succeeded",
            "metadata": {"reference": "inv_wh_stripe-a1"},
        }
    },
}


def stripe_signature(payload: bytes, secret: str, signed_at: int) -> str:
    """``Stripe-Signature`` as Stripe computes it: HMAC-SHA256 of ``<t>.<payload>`` with the secret."""
    digest = hmac.new(secret.encode(), f"{signed_at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={signed_at},v1={digest}"


@pytest.fixture
def stripe_configured(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    pytest.importorskip(
        "tagih.gateways.stripe_gateway",
        reason="the Stripe adapter (tagih/gateways/stripe_gateway.py) is not written yet",
    )
    put_secret(STRIPE_SECRET, {"secret_key": "sk_test_x", "webhook_secret": STRIPE_WEBHOOK_SECRET})
    monkeypatch.setenv("STRIPE_SECRET_NAME", STRIPE_SECRET)
    reread_settings()
    yield
    reread_settings()


STRIPE_FORGERIES: dict[str, Callable[[bytes], dict[str, str]]] = {
    "no Stripe-Signature": lambda payload: {},
    "a made-up Stripe-Signature": lambda payload: {"stripe-signature": f"t={int(time.time())},v1={'0' * 64}"},
    "signed with another webhook secret": lambda payload: {
        "stripe-signature": stripe_signature(payload, "whsec_guess", int(time.time()))
    },
    "a genuine signature ten minutes old (replayed)": lambda payload: {
        "stripe-signature": stripe_signature(payload, STRIPE_WEBHOOK_SECRET, int(time.time()) - 600)
    },
    "a genuine signature 301 s old (past the tolerance)": lambda payload: {
        "stripe-signature": stripe_signature(payload, STRIPE_WEBHOOK_SECRET, int(time.time()) - 301)
    },
    "a genuine signature dated two minutes ahead": lambda payload: {
        "stripe-signature": stripe_signature(payload, STRIPE_WEBHOOK_SECRET, int(time.time()) + 120)
    },
}


@pytest.mark.usefixtures("stripe_configured")
@pytest.mark.parametrize("forge", STRIPE_FORGERIES.values(), ids=STRIPE_FORGERIES.keys())
def test_a_stripe_event_without_a_valid_signature_is_401(forge: Callable[[bytes], dict[str, str]]) -> None:
    payload = json.dumps(STRIPE_EVENT).encode()
    before = table_snapshot()

    answer = deliver(payload, path=STRIPE_PATH, headers={"user-agent": STRIPE_AGENT, **forge(payload)})

    answer.assert_error(401, "invalid_signature")
    assert table_snapshot() == before


@pytest.mark.usefixtures("stripe_configured")
def test_a_correctly_signed_stripe_event_of_an_unknown_payment_is_200_ignored() -> None:
    """The control for the 401s above: the same event, signed with the webhook secret, is accepted
    (and, being for no payment Tagih made, acknowledged without asking Stripe anything)."""
    payload = json.dumps(STRIPE_EVENT).encode()
    before = table_snapshot()

    answer = deliver(
        payload,
        path=STRIPE_PATH,
        headers={
            "user-agent": STRIPE_AGENT,
            "stripe-signature": stripe_signature(payload, STRIPE_WEBHOOK_SECRET, int(time.time())),
        },
    )

    assert answer.status == 200, answer.raw
    assert answer.body == {"received": True, "result": "ignored"}
    assert table_snapshot() == before
