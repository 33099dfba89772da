"""Wallet items.

- wallet ``ORG#<org>`` / ``WALLET``: balance, currency, auto-recharge settings and claim, ``version``;
- ledger entry ``ORG#<org>`` / ``WALLET#<created, µs UTC>#<txn id>``: the transactions API.md lists,
  newest first with one Query (``begins_with(SK, "WALLET#")``, read backwards);
- entry pointer ``ORG#<org>`` / ``WALLETTXN#<txn id>`` ``{entry_sk}``: written with its entry, so a
  gateway notification, which knows only the transaction id, finds the entry with two strongly
  consistent GetItems (an index would lag its write; a wallet top-up is credited from what is read
  here, conditioned on it). ``WALLETTXN#…`` does not start with ``WALLET#``, so listings skip it.

Every change is ONE ``TransactWriteItems`` (``WalletStore.commit``): the wallet at its ``version``, an
entry at the status it was read with, and, when the wallet pays an invoice, the invoice at its
``version`` (``store.invoices.replace_condition``). Writes are conditional Puts and Deletes of whole
items, built from the models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from tagih.domain.errors import VersionConflict
from tagih.domain.wallet import StaleWallet, Wallet, WalletChange, WalletTransaction
from tagih.store.invoices import invoice_item, replace_condition
from tagih.store.items import from_item, to_item
from tagih.store.organizations import org_pk
from tagih.store.table import ABSENT, put_at_version, table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

WALLET_SK = "WALLET"
ENTRY_PREFIX = "WALLET#"
POINTER_PREFIX = "WALLETTXN#"
AT_STATUS = "#status = :seen"
STATUS_NAME = {"#status": "status"}
INVOICE_MOVED = "The invoice changed since it was read; read it again and retry."
WALLET_MOVED = "The wallet changed since it was read."
RETRYABLE = frozenset({"None", "ConditionalCheckFailed", "TransactionConflict"})


def wallet_key(organization_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": WALLET_SK}


def entry_sk(created_at: datetime, transaction_id: str) -> str:
    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # sorts as it reads
    return f"{ENTRY_PREFIX}{stamp}#{transaction_id}"


def entry_key(entry: WalletTransaction) -> dict[str, str]:
    return {"PK": org_pk(entry.organization_id), "SK": entry_sk(entry.created_at, entry.id)}


def pointer_key(organization_id: str, transaction_id: str) -> dict[str, str]:
    return {"PK": org_pk(organization_id), "SK": f"{POINTER_PREFIX}{transaction_id}"}


def wallet_item(wallet: Wallet) -> dict[str, Any]:
    return to_item(wallet_key(wallet.organization_id), "wallet", wallet)


def entry_item(entry: WalletTransaction) -> dict[str, Any]:
    return to_item(entry_key(entry), "wallet_transaction", entry)


def _cancellation_codes(error: ClientError) -> list[str] | None:
    """Per transaction item, why it was cancelled; None if the call was not a cancelled transaction."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = cast(list[dict[str, Any]], error.response.get("CancellationReasons") or [])
    return [str(reason.get("Code")) for reason in reasons]


class WalletItems:
    """Implements ``domain.wallet.WalletStore`` on the single table."""

    def __init__(self, billing_table: Table) -> None:
        self._table = billing_table
        self._client = billing_table.meta.client
        self._name = billing_table.name

    # -- reads (strongly consistent: every write is conditioned on what they return) -------------------
    def get(self, organization_id: str) -> Wallet | None:
        item = self._table.get_item(Key=wallet_key(organization_id), ConsistentRead=True).get("Item")
        return None if item is None else from_item(Wallet, item)

    def find_transaction(self, organization_id: str, transaction_id: str) -> WalletTransaction | None:
        pointer = self._table.get_item(
            Key=pointer_key(organization_id, transaction_id), ConsistentRead=True
        ).get("Item")
        if pointer is None:
            return None
        item = self._table.get_item(
            Key={"PK": org_pk(organization_id), "SK": str(pointer["entry_sk"])}, ConsistentRead=True
        ).get("Item")
        return None if item is None else from_item(WalletTransaction, item)

    def list_transactions(self, organization_id: str) -> list[WalletTransaction]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(org_pk(organization_id))
            & Key("SK").begins_with(ENTRY_PREFIX),
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        entries: list[WalletTransaction] = []
        while True:
            page = self._table.query(**kwargs)
            entries.extend(from_item(WalletTransaction, item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return entries
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- the one write ---------------------------------------------------------------------------------
    def commit(self, change: WalletChange) -> None:
        items: list[dict[str, Any]] = []
        if change.wallet is not None:
            items.append(self._wallet_write(change.wallet, change.expected_version))
        for entry in change.added:
            items.append(
                {"Put": {"TableName": self._name, "Item": entry_item(entry), "ConditionExpression": ABSENT}}
            )
            pointer = {
                **pointer_key(entry.organization_id, entry.id),
                "entity": "wallet_transaction_pointer",
                "entry_sk": entry_key(entry)["SK"],
            }
            items.append({"Put": {"TableName": self._name, "Item": pointer, "ConditionExpression": ABSENT}})
        for entry, seen_status in change.updated:
            items.append(
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": entry_item(entry),
                        "ConditionExpression": AT_STATUS,
                        "ExpressionAttributeNames": STATUS_NAME,
                        "ExpressionAttributeValues": {":seen": seen_status},
                    }
                }
            )
        for entry in change.removed:
            items.append(
                {
                    "Delete": {
                        "TableName": self._name,
                        "Key": entry_key(entry),
                        "ConditionExpression": AT_STATUS,
                        "ExpressionAttributeNames": STATUS_NAME,
                        "ExpressionAttributeValues": {":seen": "pending"},
                    }
                }
            )
            items.append(
                {"Delete": {"TableName": self._name, "Key": pointer_key(entry.organization_id, entry.id)}}
            )
        if change.claim is not None:
            from tagih.store.payments import payment_item  # top-ups only (cold start)

            items.append(
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": payment_item(change.claim),
                        "ConditionExpression": ABSENT,
                    }
                }
            )
        invoice_index = None
        if change.invoice is not None:
            invoice, expected_version = change.invoice
            condition, names, values = replace_condition(invoice, expected_version)
            invoice_index = len(items)
            items.append(
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": invoice_item(invoice),
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        if not items:
            return
        try:
            self._client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as error:
            codes = _cancellation_codes(error)
            if codes is None:
                raise
            invoice_code = (
                codes[invoice_index] if invoice_index is not None and invoice_index < len(codes) else None
            )
            if invoice_code == "ConditionalCheckFailed":
                raise VersionConflict(INVOICE_MOVED) from error
            if not set(codes) <= RETRYABLE:
                raise
            # The wallet or an entry moved (ConditionalCheckFailed), or DynamoDB saw another
            # transaction on one of these items at once (TransactionConflict): read again, retry.
            raise StaleWallet(WALLET_MOVED) from error

    def _wallet_write(self, wallet: Wallet, expected_version: int) -> dict[str, Any]:
        if expected_version == 0:
            return {
                "Put": {"TableName": self._name, "Item": wallet_item(wallet), "ConditionExpression": ABSENT}
            }
        return put_at_version(self._name, wallet_item(wallet), expected_version)


def default_wallet_items() -> WalletItems:
    return WalletItems(table())
