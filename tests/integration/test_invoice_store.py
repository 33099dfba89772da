"""The invoice store on moto: gapless numbers assigned in the transaction that finalizes, under
concurrency too; newest-first listing with a status filter; another organization's invoice is not
found."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from tagih.domain.catalog import TaxRate
from tagih.domain.errors import InvoiceNotDraft, InvoiceNotFound, VersionConflict
from tagih.domain.invoices import Invoice, InvoiceLine, draft_invoice, mark_paid, void
from tagih.store.invoices import InvoiceItems, counter_key, invoice_key
from tests.conftest import TABLE_NAME

PPN = TaxRate(currency="IDR", name="PPN", rate_bps=1100)
NOW = datetime(2026, 2, 1, 3, 0, tzinfo=UTC)
ORG = "org_inv"
OTHER_ORG = "org_inv_other"


@pytest.fixture
def store(aws: None) -> InvoiceItems:
    return InvoiceItems(boto3.resource("dynamodb").Table(TABLE_NAME))


def new_draft(org: str = ORG, *, amount: int = 299_000, now: datetime = NOW) -> Invoice:
    return draft_invoice(
        organization_id=org,
        subscription_id="sub_1",
        billing_reason="subscription_cycle",
        currency="IDR",
        lines=[InvoiceLine(description="Pro (monthly)", unit_amount=amount, amount=amount)],
        tax=PPN,
        period_start=now,
        period_end=now + timedelta(days=28),
        due_date=now + timedelta(days=7),
        now=now,
    )


def saved_draft(store: InvoiceItems, org: str = ORG, **kwargs: Any) -> Invoice:
    invoice = new_draft(org, **kwargs)
    store.save_draft(invoice)
    return invoice


def raw_item(key: dict[str, str]) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        boto3.resource("dynamodb").Table(TABLE_NAME).get_item(Key=key, ConsistentRead=True).get("Item")
    )
    return item


def counter(year: int = 2026) -> int | None:
    item = raw_item(counter_key(year))
    return None if item is None else int(item["last"])


# -- numbers ------------------------------------------------------------------------------------------
def test_a_draft_has_no_number_and_finalizing_gives_the_next_of_the_year(store: InvoiceItems) -> None:
    first = saved_draft(store)
    assert store.get(ORG, first.id).number is None
    assert counter() is None

    finalized = store.finalize(first, NOW)
    second = store.finalize(saved_draft(store), NOW + timedelta(seconds=1))

    assert (finalized.number, finalized.status, finalized.version) == ("INV-2026-0001", "open", 2)
    assert store.get(ORG, first.id) == finalized
    assert second.number == "INV-2026-0002"
    assert counter() == 2


def test_numbering_restarts_each_utc_year(store: InvoiceItems) -> None:
    # Midnight of 1 January in Jakarta (UTC+7) is still 31 December in UTC: the year is the UTC one.
    jakarta_new_year = store.finalize(saved_draft(store), datetime(2026, 12, 31, 17, 0, tzinfo=UTC))
    last_second = store.finalize(saved_draft(store), datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    new_year = store.finalize(saved_draft(store), datetime(2027, 1, 1, tzinfo=UTC))

    assert [jakarta_new_year.number, last_second.number, new_year.number] == [
        "INV-2026-0001", "INV-2026-0002", "INV-2027-0001",
    ]  # fmt: skip
    assert (counter(2026), counter(2027)) == (2, 1)


def test_a_zero_total_invoice_is_numbered_and_paid_at_once(store: InvoiceItems) -> None:
    finalized = store.finalize(saved_draft(store, amount=0), NOW)

    assert (finalized.number, finalized.status, finalized.paid_at, finalized.amount_due) == (
        "INV-2026-0001", "paid", NOW, 0,
    )  # fmt: skip


def test_concurrent_finalizations_across_organizations_leave_no_gap(store: InvoiceItems) -> None:
    drafts = [saved_draft(store, f"org_c{i:02d}") for i in range(50)]
    # Each finalization on a client of its own, as concurrent Lambda containers have. (Made here:
    # creating clients from one session is not thread-safe, using them is.)
    session = boto3.session.Session()
    stores = [InvoiceItems(session.resource("dynamodb").Table(TABLE_NAME)) for _ in drafts]

    def finalize(store_and_draft: tuple[InvoiceItems, Invoice]) -> Invoice:
        own, invoice = store_and_draft
        return own.finalize(invoice, NOW)

    with ThreadPoolExecutor(max_workers=len(drafts)) as pool:
        finalized = list(pool.map(finalize, zip(stores, drafts, strict=True)))

    numbers = sorted(invoice.number or "" for invoice in finalized)
    assert numbers == [f"INV-2026-{n:04d}" for n in range(1, 51)]
    assert counter() == 50
    stored = {store.get(invoice.organization_id, invoice.id).number for invoice in finalized}
    assert stored == set(numbers)


def test_a_finalize_whose_invoice_write_fails_uses_no_number(store: InvoiceItems) -> None:
    store.finalize(saved_draft(store), NOW)
    stale = saved_draft(store)
    store.replace(void(stale, NOW), expected_version=stale.version)  # the draft changed meanwhile

    with pytest.raises(VersionConflict, match="changed since it was read"):
        store.finalize(stale, NOW)

    assert counter() == 1  # the counter moves only together with an invoice
    assert store.get(ORG, stale.id).status == "void"
    assert store.finalize(saved_draft(store), NOW).number == "INV-2026-0002"


def test_the_years_first_number_is_not_used_up_by_a_failed_finalize(store: InvoiceItems) -> None:
    stale = saved_draft(store)
    store.replace(void(stale, NOW), expected_version=stale.version)

    with pytest.raises(VersionConflict, match="changed since it was read"):
        store.finalize(stale, NOW)

    assert raw_item(counter_key(2026)) is None
    assert store.finalize(saved_draft(store), NOW).number == "INV-2026-0001"


def test_only_a_draft_is_finalized_and_nothing_is_written_otherwise(store: InvoiceItems) -> None:
    finalized = store.finalize(saved_draft(store), NOW)

    with pytest.raises(InvoiceNotDraft):
        store.finalize(finalized, NOW)
    assert counter() == 1


# -- writes -------------------------------------------------------------------------------------------
def test_a_draft_is_saved_once(store: InvoiceItems) -> None:
    invoice = saved_draft(store)
    with pytest.raises(VersionConflict):
        store.save_draft(invoice)


def test_replace_is_conditioned_on_the_version(store: InvoiceItems) -> None:
    opened = store.finalize(saved_draft(store), NOW)
    paid = mark_paid(opened, opened.amount_due, NOW + timedelta(hours=1))
    store.replace(paid, expected_version=opened.version)

    with pytest.raises(VersionConflict):
        store.replace(void(opened, NOW), expected_version=opened.version)  # a stale copy
    assert store.get(ORG, opened.id) == paid


def test_replace_never_numbers_an_invoice(store: InvoiceItems) -> None:
    invoice = saved_draft(store)
    numbered = invoice.model_copy(update={"number": "INV-2026-0042", "version": 2})

    with pytest.raises(VersionConflict):
        store.replace(numbered, expected_version=invoice.version)
    with pytest.raises(ValueError, match="finalize"):
        store.replace(invoice.model_copy(update={"status": "open"}), expected_version=invoice.version)
    assert store.get(ORG, invoice.id).number is None


def test_the_item_has_its_keys_and_no_float(store: InvoiceItems) -> None:
    invoice = store.finalize(saved_draft(store), NOW)
    item = raw_item(invoice_key(ORG, invoice.id))

    assert item is not None
    assert (item["PK"], item["SK"], item["GSI1PK"], item["GSI1SK"]) == (
        f"ORG#{ORG}", f"INVOICE#{invoice.id}", f"INV#{invoice.id}", "INVOICE",
    )  # fmt: skip
    assert (item["entity"], item["number"], item["total"], item["tax_rate_bps"]) == (
        "invoice", "INV-2026-0001", 331_890, 1100,
    )  # fmt: skip


# -- reads --------------------------------------------------------------------------------------------
def test_listing_is_newest_first_with_a_status_filter(store: InvoiceItems) -> None:
    ids = []
    for hours in range(4):
        invoice = saved_draft(store, now=NOW + timedelta(hours=hours))
        ids.append(invoice.id)
        if hours % 2:
            store.finalize(invoice, NOW + timedelta(hours=hours))
    saved_draft(store, OTHER_ORG)

    assert [i.id for i in store.list_for_organization(ORG)] == ids[::-1]
    assert [i.id for i in store.list_for_organization(ORG, "open")] == [ids[3], ids[1]]
    assert [i.id for i in store.list_for_organization(ORG, "draft")] == [ids[2], ids[0]]
    assert store.list_for_organization(ORG, "paid") == []
    assert store.list_for_organization("org_nobody") == []


def test_another_organizations_invoice_is_not_found(store: InvoiceItems) -> None:
    invoice = saved_draft(store)

    with pytest.raises(InvoiceNotFound) as refused:
        store.get(OTHER_ORG, invoice.id)
    assert refused.value.code == "invoice_not_found"
    with pytest.raises(InvoiceNotFound):
        store.get(ORG, "inv_missing")


def test_get_by_id_finds_an_invoice_without_its_organization(store: InvoiceItems) -> None:
    invoice = store.finalize(saved_draft(store), NOW)

    assert store.get_by_id(invoice.id) == invoice
    with pytest.raises(InvoiceNotFound):
        store.get_by_id("inv_missing")
