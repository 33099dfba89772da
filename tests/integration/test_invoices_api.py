"""Invoices through the real handler on moto: the list envelope newest first, paging and the status
filter, exactly API.md's fields in integers and whole-second timestamps, numbers, and another
organization's invoice not found. The invoices are made as billing makes them: domain + store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tagih.domain.invoices import INTERNAL_FIELDS, Invoice, InvoiceLine, draft_invoice, mark_paid
from tagih.store import catalog as catalog_store
from tagih.store.invoices import InvoiceItems, default_invoice_items
from tests.fakes.lambda_runtime import Answer, FakeLambdaContext, http_event, load_function, principal

ORG = "org_inv_api"
OTHER_ORG = "org_inv_api_other"
INVOICES = "/billing/invoices"
ONE_INVOICE = INVOICES + "/{invoice_id}"
# Microseconds on purpose: the API answers whole seconds.
NOW = datetime(2026, 3, 1, 3, 0, 0, 123_456, tzinfo=UTC)
API_FIELDS = {
    "id",
    "number",
    "organization_id",
    "subscription_id",
    "billing_reason",
    "currency",
    "lines",
    "subtotal",
    "tax_name",
    "tax_rate",
    "tax",
    "credits_applied",
    "total",
    "amount",
    "amount_paid",
    "amount_due",
    "status",
    "due_date",
    "period_start",
    "period_end",
    "paid_at",
    "retry_count",
    "last_retry_at",
    "next_retry_at",
    "payment_url",
    "gateway_invoice_id",
    "pdf_url",
    "hosted_invoice_url",
    "created_at",
}
LINE_FIELDS = {"description", "quantity", "unit_amount", "amount", "period_start", "period_end", "proration"}
AMOUNT_FIELDS = ("subtotal", "tax", "credits_applied", "total", "amount", "amount_paid", "amount_due")


def get(path: str, *, query: dict[str, str] | None = None, org: str = ORG, role: str = "member") -> Answer:
    """A GET as API Gateway hands it over after the authorizer accepted ``org``/``role``."""
    route = ONE_INVOICE if path.startswith(INVOICES + "/") else INVOICES
    parameters = {"invoice_id": path.rsplit("/", 1)[1]} if route == ONE_INVOICE else None
    event = http_event(
        "GET",
        path,
        route=route,
        query=query,
        path_parameters=parameters,
        authorizer=principal(org, role),
    )
    return Answer(load_function("invoices").lambda_handler(event, FakeLambdaContext()))


def listed(query: dict[str, str] | None = None, org: str = ORG) -> Answer:
    answer = get(INVOICES, query=query, org=org)
    assert answer.status == 200, answer.raw
    return answer


def ids(answer: Answer) -> list[str]:
    return [invoice["id"] for invoice in answer.body["items"]]


@dataclass(frozen=True)
class Invoices:
    paid: Invoice  # the oldest, INV-2026-0001
    open: Invoice  # INV-2026-0002
    draft: Invoice  # the newest, not numbered
    other_org: Invoice  # INV-2026-0003, another organization's


def pro_invoice(store: InvoiceItems, org: str, created: datetime) -> Invoice:
    """The draft of a Pro month, priced and taxed from the catalog, saved."""
    price = catalog_store.get_plan("pro").base_price_monthly
    assert price is not None
    period_end = created + timedelta(days=31)
    draft = draft_invoice(
        organization_id=org,
        subscription_id="sub_inv_api",
        billing_reason="subscription_create",
        currency="IDR",
        lines=[
            InvoiceLine(
                description="Pro (monthly)",
                unit_amount=price,
                amount=price,
                period_start=created,
                period_end=period_end,
            )
        ],
        tax=catalog_store.get_tax_rate("IDR"),
        period_start=created,
        period_end=period_end,
        due_date=created + timedelta(days=7),
        now=created,
    )
    store.save_draft(draft)
    return draft


@pytest.fixture
def invoices(catalog: None) -> Invoices:
    store = default_invoice_items()
    first = store.finalize(pro_invoice(store, ORG, NOW), NOW)
    paid = mark_paid(first, first.amount_due, NOW + timedelta(hours=1))
    store.replace(paid, expected_version=first.version)
    second_day = NOW + timedelta(days=1)
    opened = store.finalize(pro_invoice(store, ORG, second_day), second_day)
    draft = pro_invoice(store, ORG, NOW + timedelta(days=2))
    other = store.finalize(pro_invoice(store, OTHER_ORG, NOW), NOW)
    return Invoices(paid=paid, open=opened, draft=draft, other_org=other)


# -- the list -----------------------------------------------------------------------------------------
def test_the_list_is_the_envelope_newest_first(invoices: Invoices) -> None:
    answer = listed()

    assert ids(answer) == [invoices.draft.id, invoices.open.id, invoices.paid.id]
    envelope = {k: v for k, v in answer.body.items() if k != "items"}
    assert envelope == {"total": 3, "page": 1, "page_size": 20, "has_next": False, "has_prev": False}


def test_pages_of_one_walk_the_list(invoices: Invoices) -> None:
    first = listed({"page_size": "1"})
    second = listed({"page": "2", "page_size": "1"})
    last = listed({"page": "3", "page_size": "1"})

    assert [ids(first), ids(second), ids(last)] == [
        [invoices.draft.id],
        [invoices.open.id],
        [invoices.paid.id],
    ]
    assert (first.body["total"], first.body["has_next"], first.body["has_prev"]) == (3, True, False)
    assert (second.body["has_next"], second.body["has_prev"]) == (True, True)
    assert (last.body["has_next"], last.body["has_prev"]) == (False, True)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("paid", ["paid"]), ("open", ["open"]), ("draft", ["draft"]), ("void", []), ("overdue", [])],
)
def test_the_status_filter_keeps_only_that_status(
    invoices: Invoices, status: str, expected: list[str]
) -> None:
    answer = listed({"status": status})

    assert ids(answer) == [getattr(invoices, name).id for name in expected]
    assert answer.body["total"] == len(expected)
    assert {invoice["status"] for invoice in answer.body["items"]} <= {status}


def test_an_organization_without_invoices_lists_none(catalog: None) -> None:
    answer = listed()

    assert answer.body == {
        "items": [],
        "total": 0,
        "page": 1,
        "page_size": 20,
        "has_next": False,
        "has_prev": False,
    }


def test_the_list_shows_only_the_callers_organization(invoices: Invoices) -> None:
    assert ids(listed(org=OTHER_ORG)) == [invoices.other_org.id]
    assert invoices.other_org.id not in ids(listed())


# -- one invoice --------------------------------------------------------------------------------------
def test_an_invoice_has_exactly_the_api_fields_and_no_internal_one(invoices: Invoices) -> None:
    for invoice in listed().body["items"]:
        assert set(invoice) == API_FIELDS
        assert not set(invoice) & INTERNAL_FIELDS
        assert [set(line) for line in invoice["lines"]] == [LINE_FIELDS]
    answer = get(f"{INVOICES}/{invoices.open.id}")
    assert set(answer.body) == API_FIELDS
    # The hosted page's token is shown only inside its URL, never as a field of its own.
    assert "hosted_token" not in answer.raw
    assert "tax_rate_bps" not in answer.raw


def test_an_open_pro_invoice_reads_in_integer_rupiah_with_ppn(invoices: Invoices) -> None:
    answer = get(f"{INVOICES}/{invoices.open.id}")

    assert answer.status == 200, answer.raw
    invoice = answer.body
    assert (invoice["id"], invoice["organization_id"], invoice["status"]) == (invoices.open.id, ORG, "open")
    assert (invoice["currency"], invoice["tax_name"], invoice["tax_rate"]) == ("IDR", "PPN", "11")
    assert {name: invoice[name] for name in AMOUNT_FIELDS} == {
        "subtotal": 299_000,
        "tax": 32_890,
        "credits_applied": 0,
        "total": 331_890,
        "amount": 331_890,
        "amount_paid": 0,
        "amount_due": 331_890,
    }
    assert all(type(invoice[name]) is int for name in AMOUNT_FIELDS)
    assert invoice["lines"] == [
        {
            "description": "Pro (monthly)",
            "quantity": 1,
            "unit_amount": 299_000,
            "amount": 299_000,
            "period_start": "2026-03-02T03:00:00Z",
            "period_end": "2026-04-02T03:00:00Z",
            "proration": False,
        }
    ]
    assert (invoice["subscription_id"], invoice["billing_reason"]) == ("sub_inv_api", "subscription_create")
    assert (invoice["paid_at"], invoice["retry_count"], invoice["payment_url"]) == (None, 0, None)


def test_a_paid_invoice_shows_what_was_paid_and_nothing_due(invoices: Invoices) -> None:
    invoice = get(f"{INVOICES}/{invoices.paid.id}").body

    assert invoice["status"] == "paid"
    assert (invoice["amount_paid"], invoice["amount_due"], invoice["total"]) == (331_890, 0, 331_890)
    assert invoice["paid_at"] == "2026-03-01T04:00:00Z"


def test_numbers_urls_and_timestamps(invoices: Invoices) -> None:
    paid = get(f"{INVOICES}/{invoices.paid.id}").body
    opened = get(f"{INVOICES}/{invoices.open.id}").body
    draft = get(f"{INVOICES}/{invoices.draft.id}").body

    assert (paid["number"], opened["number"], draft["number"]) == (
        f"INV-{NOW.year}-0001", f"INV-{NOW.year}-0002", None,
    )  # fmt: skip
    assert draft["status"] == "draft"
    assert paid["pdf_url"] == f"/billing/invoices/{invoices.paid.id}/pdf"
    assert paid["hosted_invoice_url"] == (
        f"/billing/invoices/{invoices.paid.id}/hosted?token={invoices.paid.hosted_token}"
    )
    # RFC 3339 UTC with Z, in whole seconds.
    assert (paid["created_at"], paid["period_start"], paid["period_end"], paid["due_date"]) == (
        "2026-03-01T03:00:00Z", "2026-03-01T03:00:00Z", "2026-04-01T03:00:00Z", "2026-03-08T03:00:00Z",
    )  # fmt: skip


def test_get_answers_what_the_list_shows(invoices: Invoices) -> None:
    for invoice in listed().body["items"]:
        answer = get(f"{INVOICES}/{invoice['id']}")
        assert answer.status == 200, answer.raw
        assert answer.body == invoice


@pytest.mark.parametrize("whose", ["other_organization", "unknown"])
def test_another_organizations_or_an_unknown_invoice_is_not_found(invoices: Invoices, whose: str) -> None:
    invoice_id = invoices.other_org.id if whose == "other_organization" else "inv_doesnotexist000000"

    answer = get(f"{INVOICES}/{invoice_id}")

    assert answer.status == 404, answer.raw
    assert answer.error_code == "invoice_not_found"
    assert invoices.other_org.number is not None
    assert invoices.other_org.number not in answer.raw


# -- validation and roles -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "unpaid"}, "query.status"),
        ({"status": "PAID"}, "query.status"),
        ({"page_size": "101"}, "query.page_size"),
        ({"page_size": "0"}, "query.page_size"),
        ({"page": "0"}, "query.page"),
    ],
)
def test_a_bad_query_is_a_validation_error_naming_it(
    invoices: Invoices, query: dict[str, str], field: str
) -> None:
    answer = get(INVOICES, query=query)

    assert answer.status == 422, answer.raw
    assert answer.error_code == "validation_error"
    assert answer.fields == {field}


def test_an_invoice_id_longer_than_64_characters_is_a_validation_error(invoices: Invoices) -> None:
    answer = get(f"{INVOICES}/inv_{'x' * 61}")

    assert answer.status == 422, answer.raw
    assert answer.fields == {"path.invoice_id"}


@pytest.mark.parametrize("role", ["member", "admin", "owner"])
def test_every_member_may_read(invoices: Invoices, role: str) -> None:
    listing = get(INVOICES, role=role)
    one = get(f"{INVOICES}/{invoices.open.id}", role=role)

    assert (listing.status, one.status) == (200, 200)
    assert listing.body["total"] == 3
