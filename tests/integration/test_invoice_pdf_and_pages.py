"""Invoice PDFs, the hosted invoice page and "pay now" through the real handlers on moto, charging
through the real Midtrans adapter at the local Midtrans fake.

- ``GET /billing/invoices/{id}/pdf``: base64 PDF bytes whose text (pypdf) shows the number, each line
  and its amount, PPN and the total; cached on S3 under the content digest, so a second download
  renders and writes nothing, and a changed invoice gets a new object.
- ``GET /billing/invoices/{id}/hosted?token=…`` (no authorizer): the page with the right token, a 404
  identical to an unknown invoice's otherwise, escaped customer text, the virtual account to pay.
- ``POST /billing/invoices/{id}/pay``: a card pays at once and exactly once (Idempotency-Key replay,
  then 409 without it); a virtual account leaves the invoice open with its order id (asked again: the
  same transfer); a decline is 402 with the invoice unchanged and the next try a new attempt; a card
  pays an incomplete subscription's transfer invoice and activates it; money already taken settles
  the invoice without a new charge.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import boto3
import pytest
from pypdf import PdfReader

from local.midtrans_fake import MidtransFake
from tagih import clock
from tagih.domain.invoices import Invoice, InvoiceLine, draft_invoice, mark_paid, void
from tagih.invoices_pdf.storage import reset_pdf_clients
from tagih.store import catalog as catalog_store
from tagih.store.invoices import default_invoice_items
from tagih.store.payments import default_payment_items
from tagih.store.table import reset_clients
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.aws_calls import count_calls
from tests.fakes.billing_setup import (
    CARD_TOKEN,
    DECLINING,
    add_method,
    first_attempt_in_flight,
    mark_trialled,
    set_card_token,
)
from tests.fakes.gateway_env import configure_gateways, event_queue, received_events
from tests.fakes.lambda_runtime import Answer, FakeLambdaContext, call_route, http_event, load_function
from tests.fakes.midtrans_server import NotificationInbox, running_midtrans_fake

ORG = "org_inv_pages"
OTHER_ORG = "org_inv_pages_other"
BUCKET = "tagih-test-invoices"
INVOICE = "/billing/invoices/{invoice_id}"
HOSTILE = '<script>alert("pwned")</script> Pro'


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture
def bucket(catalog: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("INVOICE_BUCKET", BUCKET)
    reset_clients()  # settings are read again, with the bucket
    reset_pdf_clients()
    yield BUCKET
    reset_pdf_clients()


@pytest.fixture
def inbox() -> Iterator[NotificationInbox]:
    with NotificationInbox() as receiver:
        yield receiver


@pytest.fixture
def midtrans(
    bucket: str, inbox: NotificationInbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MidtransFake]:
    with running_midtrans_fake(notification_url=inbox.url) as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=2.0)
        yield fake


@pytest.fixture
def events(midtrans: MidtransFake) -> str:
    return event_queue(BUS_NAME)


def open_invoice(org: str = ORG, description: str = "Pro (monthly)") -> Invoice:
    """A finalized Pro month (Rp 299.000 + PPN 11 % = Rp 331.890), as billing makes it."""
    store = default_invoice_items()
    price = catalog_store.get_plan("pro").base_price_monthly
    assert price == 299_000
    now = clock.now()
    draft = draft_invoice(
        organization_id=org,
        subscription_id=None,
        billing_reason="manual",
        currency="IDR",
        lines=[
            InvoiceLine(
                description=description,
                unit_amount=price,
                amount=price,
                period_start=now,
                period_end=now + timedelta(days=31),
            )
        ],
        tax=catalog_store.get_tax_rate("IDR"),
        period_start=now,
        period_end=now + timedelta(days=31),
        due_date=now + timedelta(days=7),
        now=now,
    )
    store.save_draft(draft)
    return store.finalize(draft, now)


def stored(invoice_id: str, org: str = ORG) -> Invoice:
    return default_invoice_items().get(org, invoice_id)


# -- calls -------------------------------------------------------------------------------------------
def pdf(invoice_id: str, org: str = ORG, role: str = "member") -> dict[str, Any]:
    """The raw proxy result: the body is base64."""
    path = f"/billing/invoices/{invoice_id}/pdf"
    event = http_event(
        "GET",
        path,
        route=INVOICE + "/pdf",
        path_parameters={"invoice_id": invoice_id},
        authorizer={"organization_id": org, "role": role, "subject": "u", "scopes": "", "method": "jwt"},
    )
    result: dict[str, Any] = load_function("invoices").lambda_handler(event, FakeLambdaContext())
    return result


def pdf_bytes(result: dict[str, Any]) -> bytes:
    assert result["statusCode"] == 200, result.get("body")
    assert result["isBase64Encoded"] is True
    return base64.b64decode(result["body"])


def pdf_text(content: bytes) -> str:
    assert content.startswith(b"%PDF-")
    lines = [
        line.strip()
        for page in PdfReader(io.BytesIO(content)).pages
        for line in page.extract_text().splitlines()
    ]
    return " ".join(lines)


class Page:
    """The hosted page's answer: HTML when 200, the API's JSON error otherwise."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.status: int = result["statusCode"]
        self.headers: dict[str, str] = result.get("headers") or {}
        self.raw: str = result.get("body") or ""
        self.error = Answer(result) if self.status >= 400 else None

    @property
    def error_code(self) -> str:
        assert self.error is not None, self.raw
        return self.error.error_code


def hosted(invoice_id: str, token: str | None) -> Page:
    path = f"/billing/invoices/{invoice_id}/hosted"
    event = http_event(
        "GET",
        path,
        route=INVOICE + "/hosted",
        query={"token": token} if token is not None else None,
        path_parameters={"invoice_id": invoice_id},
    )
    return Page(load_function("invoice_pages").lambda_handler(event, FakeLambdaContext()))


def pay(invoice_id: str, body: Any = None, *, key: str | None = None, role: str = "admin") -> Answer:
    return call_route(
        "invoices",
        "POST",
        f"/billing/invoices/{invoice_id}/pay",
        INVOICE + "/pay",
        body=body if body is not None else {},
        org=ORG,
        role=role,
        headers={"Idempotency-Key": key} if key else None,
    )


def charges_of(midtrans: MidtransFake, invoice: Invoice) -> list[dict[str, Any]]:
    return [c for c in midtrans.charges if str(c["order_id"]).startswith(f"{invoice.id}-a")]


def pdf_objects() -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="invoices/")
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


# -- the PDF -----------------------------------------------------------------------------------------
def test_the_pdf_shows_the_number_lines_ppn_and_total(bucket: str) -> None:
    invoice = open_invoice()
    account = call_route(
        "accounts",
        "POST",
        "/billing/accounts",
        "/billing/accounts",
        body={"name": "PT Jürgen Łukasz — Jaya", "email": "finance@jaya.example"},
        org=ORG,
    )
    assert account.status == 201, account.raw

    result = pdf(invoice.id)

    assert result["headers"]["Content-Type"] == "application/pdf"
    assert result["headers"]["Content-Disposition"] == f'inline; filename="{invoice.number}.pdf"'
    text = pdf_text(pdf_bytes(result))
    assert invoice.number is not None
    assert invoice.number in text
    assert "Pro (monthly)" in text
    assert "1 Rp 299.000 Rp 299.000" in text
    assert "PPN 11% Rp 32.890" in text
    assert "Total Rp 331.890" in text
    assert "Amount due Rp 331.890" in text
    assert "PT Jürgen ?ukasz - Jaya" in text  # the bill-to account, drawn in latin-1
    assert "finance@jaya.example" in text


def test_a_second_download_is_served_from_s3_without_rendering(bucket: str) -> None:
    invoice = open_invoice()

    with count_calls("s3") as first_calls:
        reset_pdf_clients()  # the S3 client is made inside the block, so its calls are counted
        first = pdf_bytes(pdf(invoice.id))
    with count_calls("s3") as second_calls:
        reset_pdf_clients()
        second = pdf_bytes(pdf(invoice.id))

    assert (first_calls["GetObject"], first_calls["PutObject"]) == (1, 1)
    assert (second_calls["GetObject"], second_calls["PutObject"]) == (1, 0)
    assert second == first
    [key] = pdf_objects()
    assert key.startswith(f"invoices/{ORG}/{invoice.id}/")
    assert key.endswith(".pdf")
    assert len(key.rsplit("/", 1)[1]) == len("0" * 64 + ".pdf")  # a sha256 in hex
    assert invoice.hosted_token not in key


def test_a_changed_invoice_gets_a_new_pdf(bucket: str) -> None:
    invoice = open_invoice()
    before = pdf_text(pdf_bytes(pdf(invoice.id)))
    paid = mark_paid(invoice, invoice.amount_due, clock.now())
    default_invoice_items().replace(paid, invoice.version)

    with count_calls("s3") as calls:
        reset_pdf_clients()
        after = pdf_text(pdf_bytes(pdf(invoice.id)))

    assert calls["PutObject"] == 1
    assert len(pdf_objects()) == 2
    assert "Status Open" in before
    assert "Status Paid" in after
    assert "Amount due Rp 0" in after


@pytest.mark.parametrize("whose", ["other_organization", "unknown"])
def test_another_organizations_or_an_unknown_pdf_is_not_found(bucket: str, whose: str) -> None:
    theirs = open_invoice(OTHER_ORG)
    invoice_id = theirs.id if whose == "other_organization" else "inv_doesnotexist000000"

    answer = Answer(pdf(invoice_id))

    assert answer.status == 404, answer.raw
    assert answer.error_code == "invoice_not_found"
    assert pdf_objects() == []


# -- the hosted page ---------------------------------------------------------------------------------
def test_the_hosted_page_with_its_token_shows_the_invoice(bucket: str) -> None:
    invoice = open_invoice()

    answer = hosted(invoice.id, invoice.hosted_token)

    assert answer.status == 200, answer.raw
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert invoice.number is not None
    html = answer.raw
    assert invoice.number in html
    assert "Rp 331.890" in html
    assert "PPN 11%" in html
    assert "Rp 32.890" in html
    assert "Open" in html
    assert "Pay now" in html  # no payment started yet: how to pay
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "script-src" not in answer.headers["Content-Security-Policy"]  # default-src 'none' forbids scripts


@pytest.mark.parametrize("token", ["wrong-token", "", None])
def test_a_wrong_or_missing_token_is_exactly_an_unknown_invoice(bucket: str, token: str | None) -> None:
    invoice = open_invoice()

    refused = hosted(invoice.id, token)
    unknown = hosted("inv_doesnotexist000000", invoice.hosted_token)

    assert (refused.status, unknown.status) == (404, 404)
    assert (refused.error_code, unknown.error_code) == ("invoice_not_found", "invoice_not_found")
    assert refused.error is not None
    assert unknown.error is not None
    refused_error = {k: v for k, v in refused.error.body["error"].items() if k != "request_id"}
    unknown_error = {k: v for k, v in unknown.error.body["error"].items() if k != "request_id"}
    assert refused_error == {
        **unknown_error,
        "message": unknown_error["message"].replace("inv_doesnotexist000000", invoice.id),
    }
    assert set(refused.headers) == set(unknown.headers)
    assert invoice.number is not None
    assert invoice.number not in refused.raw


def test_the_hosted_page_escapes_a_hostile_line(bucket: str) -> None:
    invoice = open_invoice(description=HOSTILE)

    answer = hosted(invoice.id, invoice.hosted_token)

    assert answer.status == 200, answer.raw
    assert "<script" not in answer.raw
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; Pro" in answer.raw


# -- pay now -----------------------------------------------------------------------------------------
def test_pay_now_with_a_card_pays_once_however_often_it_is_asked(midtrans: MidtransFake, events: str) -> None:
    invoice = open_invoice()
    add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})  # the default method

    paid = pay(invoice.id, key="pay-once-1")
    replayed = pay(invoice.id, key="pay-once-1")
    again = pay(invoice.id)

    assert paid.status == 200, paid.raw
    assert (paid.body["status"], paid.body["amount_paid"], paid.body["amount_due"]) == ("paid", 331_890, 0)
    assert paid.body["paid_at"] is not None
    assert replayed.status == 200, replayed.raw
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.body == paid.body
    assert again.status == 409, again.raw
    assert again.error_code == "invoice_not_payable"
    assert "already paid" in again.body["error"]["message"]
    [charge] = charges_of(midtrans, invoice)
    assert (charge["order_id"], charge["gross_amount"]) == (f"{invoice.id}-a1", 331_890)
    assert stored(invoice.id).status == "paid"
    paid_events = [e for e in received_events(events) if e["detail-type"] == "billing.invoice.paid"]
    assert [e["detail"]["data"]["id"] for e in paid_events] == [invoice.id]  # type: ignore[index]


def test_pay_now_by_virtual_account_leaves_the_invoice_open_until_the_transfer(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    invoice = open_invoice()
    add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    bca = add_method(ORG, {"type": "bank_transfer", "bank": "bca"})

    answer = pay(invoice.id, {"payment_method_id": bca})
    asked_again = pay(invoice.id, {"payment_method_id": bca})

    assert answer.status == 200, answer.raw
    order_id = f"{invoice.id}-a1"
    assert (answer.body["status"], answer.body["gateway_invoice_id"]) == ("open", order_id)
    assert answer.body["payment_url"] is None  # a virtual account has a number, not a page
    assert asked_again.status == 200, asked_again.raw
    assert asked_again.body["gateway_invoice_id"] == order_id  # the same transfer, not a second one
    assert midtrans.charge_count(order_id) == 1
    assert len(charges_of(midtrans, invoice)) == 1
    va_number = midtrans.transaction(order_id)["va_numbers"][0]["va_number"]  # type: ignore[index]
    page = hosted(invoice.id, invoice.hosted_token)
    assert va_number in page.raw
    assert "BCA" in page.raw

    midtrans.settle(order_id)
    delivered = load_function("gateway_webhooks").lambda_handler(
        http_event("POST", "/webhooks/midtrans", raw_body=inbox.bodies[-1].decode()), FakeLambdaContext()
    )

    assert json.loads(delivered["body"]) == {"received": True, "result": "settled"}
    assert stored(invoice.id).status == "paid"
    assert "This invoice is paid" in hosted(invoice.id, invoice.hosted_token).raw


def test_a_declined_card_is_402_with_the_invoice_unchanged_and_the_next_try_a_new_attempt(
    midtrans: MidtransFake,
) -> None:
    invoice = open_invoice()
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    set_card_token(ORG, card, DECLINING)

    declined = pay(invoice.id, {"payment_method_id": card})

    assert declined.status == 402, declined.raw
    assert declined.error_code == "payment_failed"
    assert stored(invoice.id) == invoice
    failed = table.get_item(Key={"PK": f"ORG#{ORG}", "SK": f"PAYMENT#{invoice.id}-a1"})["Item"]
    assert failed["status"] == "failed"

    set_card_token(ORG, card, "481111-saved-1114")
    paid = pay(invoice.id, {"payment_method_id": card})

    assert paid.status == 200, paid.raw
    assert paid.body["status"] == "paid"
    # The declined attempt stays a1 (recorded, never asked again); the new try is a2.
    assert [c["order_id"] for c in charges_of(midtrans, invoice)] == [f"{invoice.id}-a1", f"{invoice.id}-a2"]
    assert midtrans.transaction(f"{invoice.id}-a2")["transaction_status"] == "capture"  # type: ignore[index]


@pytest.mark.parametrize("state", ["paid", "void", "draft"])
def test_paid_void_and_draft_invoices_are_not_payable(midtrans: MidtransFake, state: str) -> None:
    add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    store = default_invoice_items()
    invoice = open_invoice()
    if state == "paid":
        store.replace(mark_paid(invoice, invoice.amount_due, clock.now()), invoice.version)
    elif state == "void":
        store.replace(void(invoice, clock.now()), invoice.version)
    else:
        now = clock.now()
        invoice = draft_invoice(
            organization_id=ORG,
            subscription_id=None,
            billing_reason="manual",
            currency="IDR",
            lines=invoice.lines,
            tax=catalog_store.get_tax_rate("IDR"),
            period_start=now,
            period_end=now + timedelta(days=31),
            due_date=now,
            now=now,
        )
        store.save_draft(invoice)

    answer = pay(invoice.id)

    assert answer.status == 409, answer.raw
    assert answer.error_code == "invoice_not_payable"
    assert charges_of(midtrans, invoice) == []


def test_pay_now_refusals(midtrans: MidtransFake) -> None:
    invoice = open_invoice()
    theirs = open_invoice(OTHER_ORG)

    no_method = pay(invoice.id)
    member = pay(invoice.id, role="member")
    other = pay(theirs.id)
    unknown_method = pay(invoice.id, {"payment_method_id": "pm_someone_elses"})
    extra = pay(invoice.id, {"payment_method_id": "pm_x", "amount": 1})

    assert (no_method.status, no_method.error_code) == (422, "payment_method_required")
    assert member.status == 403
    assert (other.status, other.error_code) == (404, "invoice_not_found")
    assert (unknown_method.status, unknown_method.error_code) == (404, "payment_method_not_found")
    assert (extra.status, extra.error_code) == (422, "validation_error")
    assert midtrans.charges == []


def test_paying_an_incomplete_subscriptions_transfer_invoice_by_card_activates_it(
    midtrans: MidtransFake, events: str
) -> None:
    # Subscribed by BCA virtual account (no trial left): incomplete, its first invoice open at a1.
    mark_trialled(ORG)
    bca = add_method(ORG, {"type": "bank_transfer", "bank": "bca"})
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    subscribed = call_route(
        "subscriptions",
        "POST",
        "/billing/subscriptions",
        "/billing/subscriptions",
        body={"plan": "pro", "payment_method_id": bca},
        org=ORG,
    )
    assert subscribed.status == 201, subscribed.raw
    assert subscribed.body["status"] == "incomplete"
    [invoice] = default_invoice_items().list_for_organization(ORG)
    assert invoice.gateway_invoice_id == f"{invoice.id}-a1"

    paid = pay(invoice.id, {"payment_method_id": card})

    assert paid.status == 200, paid.raw
    assert paid.body["status"] == "paid"
    # The open transfer (another method) is left alone; the card is a new attempt.
    assert [c["order_id"] for c in charges_of(midtrans, invoice)] == [f"{invoice.id}-a1", f"{invoice.id}-a2"]
    current = call_route("subscriptions", "GET", "/billing/subscription", "/billing/subscription", org=ORG)
    assert current.body["status"] == "active"
    assert [e["detail-type"] for e in received_events(events)][-2:] == [
        "billing.invoice.paid",
        "billing.subscription.updated",
    ]


def test_money_already_taken_for_the_invoice_settles_it_without_a_new_charge(midtrans: MidtransFake) -> None:
    # A charge that succeeded while its invoice never heard (a crash between the two writes).
    invoice = open_invoice()
    card = add_method(ORG, {"type": "credit_card", "token": CARD_TOKEN})
    now = clock.now()
    claim = first_attempt_in_flight(invoice, card, now)
    payments = default_payment_items()
    assert payments.claim(claim) is None
    assert payments.save_outcome(replace(claim, status="succeeded", version=2), claim.version)

    answer = pay(invoice.id)

    assert answer.status == 200, answer.raw
    assert (answer.body["status"], answer.body["amount_paid"]) == ("paid", 331_890)
    assert charges_of(midtrans, invoice) == []
