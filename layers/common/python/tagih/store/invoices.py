"""Invoice items and the gapless invoice-number counter.

- invoice ``ORG#<org>`` / ``INVOICE#<id>``, GSI1 ``INV#<id>`` / ``INVOICE``;
- counter ``SEQ#INVOICE#<yyyy>`` / ``SEQ`` ``{last}``: the last number given in that UTC year.

Why ``INVOICE#<id>`` and not ``INVOICE#<created>#<id>`` (DESIGN.md's sketch): ``GET
/billing/invoices/{id}`` then is one strongly consistent GetItem built from the organization and the
id, so a client reads the invoice it was just given and a write conditioned on ``version`` starts
from the latest one. With the timestamp in the key, a GET would need GSI1 (eventually consistent) or
a pointer item (two reads). Ordering costs nothing extra: the list envelope reports ``total``, so a
listing reads every invoice of the organization anyway (one single-partition Query, paged), and
sorting a few dozen invoices a year in memory is free.

No status index either: the status filter is applied after that same Query, because ``total`` has
to count the matching invoices anyway, and an index keyed on a status that keeps changing would be
eventually consistent and rewritten on every transition.

GSI1 ``INV#<id>`` serves callers that know only the id (the hosted page, timers). An index read may
lag a write by a moment; every write is conditioned on ``version``, so a stale copy costs a
``VersionConflict``, never a lost write.

Numbers: ``finalize`` reads the year's counter strongly consistent and writes, in ONE transaction,
the counter (``last = :seen`` → ``:seen + 1``, or a conditional Put for the year's first) and the
invoice with that number (``version = :seen``). Whoever loses the race for the counter reads it again
and retries, so numbers are consecutive with no gap and no duplicate; a draft that changed meanwhile
fails the transaction as a whole, so no number is used up.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from tagih.domain import invoices as domain
from tagih.domain.errors import InvoiceNotFound, VersionConflict
from tagih.domain.invoices import Invoice, InvoiceStatus
from tagih.store.items import from_item, to_item
from tagih.store.organizations import org_pk
from tagih.store.table import ABSENT, AT_VERSION, VERSION_NAME, put_at_version, table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

INVOICE_PREFIX = "INVOICE#"
INDEX = "GSI1"
INDEX_SK = "INVOICE"
COUNTER_SK = "SEQ"
# Each lost race means another finalization got a number, so progress is guaranteed; the bound only
# stops a pathological pile-up from holding a request for long.
MAX_NUMBER_TRIES = 20
RETRY_PAUSE_SECONDS = 0.02
CONFLICT = "The invoice changed since it was read; read it again and retry."


def invoice_key(organization_id: str, invoice_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": f"{INVOICE_PREFIX}{invoice_id}"}


def invoice_index_key(invoice_id: str) -> dict[str, str]:
    return {"GSI1PK": f"INV#{invoice_id}", "GSI1SK": INDEX_SK}


def counter_key(year: int) -> dict[str, str]:
    return {"PK": f"SEQ#INVOICE#{year:04d}", "SK": COUNTER_SK}


def invoice_item(invoice: Invoice) -> dict[str, Any]:
    return to_item(
        invoice_key(invoice.organization_id, invoice.id), "invoice", invoice, **invoice_index_key(invoice.id)
    )


def _cancellation_codes(error: ClientError) -> list[str] | None:
    """Per transaction item, why it was cancelled (``None`` code → ``"None"``); None if not cancelled."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = cast(list[dict[str, Any]], error.response.get("CancellationReasons") or [])
    return [str(reason.get("Code")) for reason in reasons]


def replace_condition(invoice: Invoice, expected_version: int) -> tuple[str, dict[str, str], dict[str, Any]]:
    """How any write over a stored invoice is conditioned (``replace`` here, and transactions that
    write an invoice with its subscription): at ``expected_version``; an unnumbered invoice is still
    a draft where stored; a numbered one keeps the number ``finalize`` gave it, so nothing but
    ``finalize`` ever hands out a number."""
    condition = AT_VERSION
    names = dict(VERSION_NAME)
    values: dict[str, Any] = {":seen": expected_version}
    if invoice.number is None:
        if invoice.status not in {"draft", "void"}:
            raise ValueError("a draft becomes open only through finalize, which numbers it")
        condition += " AND #status = :draft"
        names["#status"] = "status"
        values[":draft"] = "draft"
    else:
        condition += " AND #number = :number"
        names["#number"] = "number"
        values[":number"] = invoice.number
    return condition, names, values


class InvoiceItems:
    """Implements ``domain.invoices.InvoiceStore`` on the single table."""

    def __init__(self, billing_table: Table) -> None:
        self._table = billing_table
        self._client = billing_table.meta.client
        self._name = billing_table.name

    # -- reads --------------------------------------------------------------------------------------
    def get(self, organization_id: str, invoice_id: str) -> Invoice:
        item = self._table.get_item(Key=invoice_key(organization_id, invoice_id), ConsistentRead=True).get(
            "Item"
        )
        if item is None:
            raise InvoiceNotFound(f"No invoice {invoice_id!r} in this organization.")
        return from_item(Invoice, item)

    def get_by_id(self, invoice_id: str) -> Invoice:
        page = self._table.query(
            IndexName=INDEX,
            KeyConditionExpression=Key("GSI1PK").eq(invoice_index_key(invoice_id)["GSI1PK"])
            & Key("GSI1SK").eq(INDEX_SK),
        )
        if not page["Items"]:
            raise InvoiceNotFound(f"No invoice {invoice_id!r}.")
        return from_item(Invoice, page["Items"][0])

    def list_for_organization(
        self, organization_id: str, status: InvoiceStatus | None = None
    ) -> list[Invoice]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(org_pk(organization_id))
            & Key("SK").begins_with(INVOICE_PREFIX),
            "ConsistentRead": True,
        }
        invoices: list[Invoice] = []
        while True:
            page = self._table.query(**kwargs)
            invoices.extend(from_item(Invoice, item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if status is not None:
            invoices = [invoice for invoice in invoices if invoice.status == status]
        return sorted(invoices, key=lambda invoice: (invoice.created_at, invoice.id), reverse=True)

    def last_number(self, year: int) -> int:
        """The last sequence given in ``year`` (0 before the year's first invoice)."""
        item = self._table.get_item(Key=counter_key(year), ConsistentRead=True).get("Item")
        return int(str(item["last"])) if item else 0

    # -- writes -------------------------------------------------------------------------------------
    def save_draft(self, invoice: Invoice) -> None:
        if invoice.status != "draft" or invoice.number is not None:
            raise ValueError("only a draft without a number is saved as new; finalize numbers it")
        try:
            self._table.put_item(Item=invoice_item(invoice), ConditionExpression=ABSENT)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise VersionConflict(f"Invoice {invoice.id} already exists.") from error
            raise

    def finalize(self, invoice_draft: Invoice, now: datetime) -> Invoice:
        year = now.astimezone(UTC).year
        for attempt in range(MAX_NUMBER_TRIES):
            seen = self.last_number(year)
            finalized = domain.finalize(invoice_draft, domain.format_invoice_number(year, seen + 1), now)
            items = [self._counter_write(year, seen), self._invoice_write(finalized, invoice_draft.version)]
            try:
                self._client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
            except ClientError as error:
                codes = _cancellation_codes(error)
                if codes is None:
                    raise
                if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                    raise VersionConflict(CONFLICT) from error
                # The counter moved (another finalization won) or DynamoDB saw two transactions
                # on it at once (TransactionConflict): read it again, after a short jittered pause
                # so the losers do not collide again in lockstep.
                time.sleep(RETRY_PAUSE_SECONDS * random.random() * (1 + attempt))  # noqa: S311 — jitter
                continue
            return finalized
        raise VersionConflict("Too many invoices are being numbered at once; retry.")

    def replace(self, invoice: Invoice, expected_version: int) -> None:
        condition, names, values = replace_condition(invoice, expected_version)
        try:
            self._table.put_item(
                Item=invoice_item(invoice),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise VersionConflict(CONFLICT) from error
            raise

    # -- transaction parts --------------------------------------------------------------------------
    def _counter_write(self, year: int, seen: int) -> dict[str, Any]:
        if seen == 0:
            return {
                "Put": {
                    "TableName": self._name,
                    "Item": {**counter_key(year), "entity": "invoice_counter", "last": 1},
                    "ConditionExpression": ABSENT,
                }
            }
        return {
            "Update": {
                "TableName": self._name,
                "Key": counter_key(year),
                "UpdateExpression": "SET #last = :next",
                "ConditionExpression": "#last = :seen",
                "ExpressionAttributeNames": {"#last": "last"},
                "ExpressionAttributeValues": {":seen": seen, ":next": seen + 1},
            }
        }

    def _invoice_write(self, invoice: Invoice, seen_version: int) -> dict[str, Any]:
        return put_at_version(self._name, invoice_item(invoice), seen_version)


def default_invoice_items() -> InvoiceItems:
    return InvoiceItems(table())
