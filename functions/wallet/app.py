"""The prepaid wallet: balance and auto-recharge settings (any member reads), top-ups and the
auto-recharge settings (owners and admins), and the ledger, newest first.

A top-up charges through the same payments code as invoices (one charge per transaction however
often it is retried); a card credits at once, a virtual account or e-wallet when its notification
arrives (``services.wallet.WalletPaymentListener``). Responses are not logged: a pending top-up
carries the payer's virtual account number.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from tagih import clock
from tagih.api.app import create_resolver
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.domain.money import Currency
from tagih.domain.text import RequestBody
from tagih.domain.wallet import (
    PaymentInstructionsData,
    TransactionStatus,
    TransactionType,
    Wallet,
    WalletTransaction,
)
from tagih.observability import TRACED_LIBRARIES
from tagih.services import wallet
from tagih.store.accounts import default_account_items
from tagih.store.wallet import default_wallet_items

if TYPE_CHECKING:
    from tagih.services.context import Billing

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
# Reads: any member; top-ups and settings: admin or owner (the kernel's defaults).
app = create_resolver("wallet")

TAGS = ["Wallet"]
Money = Annotated[int, Field(strict=True, ge=0, le=10**12)]
MethodId = Annotated[str, Field(min_length=1, max_length=64)]


# -- requests ------------------------------------------------------------------------------------------
class TopUp(RequestBody):
    amount: Annotated[int, Field(strict=True, gt=0, le=10**12)] = Field(
        description="In the wallet's currency unit (IDR rupiah, others cents): IDR 10.000 to "
        "100.000.000, other currencies 100 to 10.000.000 cents.",
        examples=[500000],
    )
    payment_method_id: MethodId | None = Field(
        default=None, description="Default: the organization's default payment method."
    )


class AutoRechargeSettings(RequestBody):
    enabled: bool = Field(strict=True)
    threshold: Money = Field(description="A debit that leaves the balance under this starts one recharge.")
    amount: Money = Field(description="What each recharge adds; within the top-up bounds when enabled.")
    payment_method_id: MethodId | None = Field(
        default=None, description="Charged for recharges. Default: the organization's default method."
    )
    monthly_limit: Money | None = Field(
        default=None,
        description="The most auto-recharge adds per calendar month (UTC), at least `amount`. "
        "Default: five times `amount`.",
    )


# -- responses -----------------------------------------------------------------------------------------
class AutoRechargeView(BaseModel):
    enabled: bool
    threshold: int
    amount: int
    payment_method_id: str | None
    monthly_limit: int = Field(description="The most auto-recharge adds per calendar month (UTC).")
    recharged_this_month: int = Field(description="What auto-recharge added this calendar month.")
    recharge_in_progress: bool = Field(description="A recharge is being charged or awaits its payment.")


class WalletView(BaseModel):
    organization_id: str
    balance: int = Field(description="In the currency's unit; never negative.", examples=[750000])
    currency: Currency
    auto_recharge: AutoRechargeView
    updated_at: datetime | None = Field(description="`null` until the wallet is first topped up or set.")

    @classmethod
    def of(cls, stored: Wallet, now: datetime) -> WalletView:
        settings = stored.auto_recharge
        return cls(
            organization_id=stored.organization_id,
            balance=stored.balance,
            currency=stored.currency,
            auto_recharge=AutoRechargeView(
                enabled=settings.enabled,
                threshold=settings.threshold,
                amount=settings.amount,
                payment_method_id=settings.payment_method_id,
                monthly_limit=settings.effective_monthly_limit,
                recharged_this_month=stored.recharged_in(now),
                recharge_in_progress=stored.recharge_in_flight is not None,
            ),
            updated_at=stored.updated_at.replace(microsecond=0) if stored.stored else None,
        )


class WalletTransactionView(BaseModel):
    id: str = Field(examples=["txn_2Bc4De6Fg8Hi0Jk2Lm4N"])
    type: TransactionType
    status: TransactionStatus
    amount: int = Field(
        description="Signed, in the currency's unit: a credit (`top_up`, `refund`) is positive, "
        "an `invoice_payment` negative."
    )
    currency: Currency
    balance_after: int | None = Field(description="The balance once this landed; `null` until it did.")
    invoice_id: str | None
    payment_url: str | None = Field(description="Where the payer completes an e-wallet or card payment.")
    gateway_order_id: str | None = Field(description="Midtrans: the order id the payment is made under.")
    payment_instructions: PaymentInstructionsData | None = Field(
        description="How to pay a pending top-up: the virtual account number, the e-wallet link."
    )
    payment_method_id: str | None
    auto_recharge: bool = Field(description="Started by auto-recharge.")
    failure_reason: str | None = Field(description="Why a `failed` top-up failed (the gateway's words).")
    created_at: datetime

    @classmethod
    def of(cls, entry: WalletTransaction) -> WalletTransactionView:
        return cls(
            **entry.model_dump(
                exclude={"organization_id", "created_at", "updated_at", "payment_instructions"}
            ),
            payment_instructions=entry.payment_instructions,
            created_at=entry.created_at.replace(microsecond=0),  # the API's whole seconds
        )


TOP_UP_RESPONSES: dict[int, OpenAPIResponse] = {
    # Listed, since a route's own responses replace the one Powertools derives from its return type.
    201: {
        "description": "The top-up: `succeeded` (a card, credited), or `pending` with `payment_url` / "
        "`payment_instructions` for virtual accounts and e-wallets (credited when paid).",
        "content": {"application/json": {"model": WalletTransactionView}},
    },
    402: {"description": "`payment_failed`: the charge was declined; the top-up is kept as `failed`."},
    503: {
        "description": "`gateway_unavailable`: the gateway refused (nothing was charged or kept) or did "
        "not answer (the top-up is kept `pending`): retry with the same `Idempotency-Key`, which "
        "resumes the same top-up and never charges twice."
    },
}


def _billing() -> Billing:
    # Charging (payments, gateways, events) is for writes alone: the reads never load it.
    from tagih.wiring import default_billing

    return default_billing()


# -- routes --------------------------------------------------------------------------------------------
@app.get("/billing/wallet", summary="Get the wallet", tags=TAGS)
def get_wallet() -> WalletView:
    now = clock.now()
    found = wallet.get_wallet(default_wallet_items(), default_account_items(), app.auth.organization_id, now)
    return WalletView.of(found, now)


@app.post(
    "/billing/wallet/top-up",
    status_code=201,
    summary="Top up the wallet",
    description="Charges `amount` (the wallet's currency) to the method, or the default one. Pays "
    "exactly once per top-up; the balance grows only once the payment succeeds.",
    tags=TAGS,
    responses=TOP_UP_RESPONSES,
)
def top_up(body: TopUp) -> WalletTransactionView:
    entry = wallet.top_up(
        _billing(),
        app.auth.organization_id,
        amount=body.amount,
        payment_method_id=body.payment_method_id,
        now=clock.now(),
        request_key=app.idempotency_key,
    )
    logger.info("wallet top-up", extra={"transaction_id": entry.id, "status": entry.status})
    return WalletTransactionView.of(entry)


@app.put(
    "/billing/wallet/auto-recharge",
    summary="Set auto-recharge",
    description="When a debit leaves the balance under `threshold`, `amount` is charged to the method "
    "once (never two at a time, at most `monthly_limit` a month).",
    tags=TAGS,
)
def set_auto_recharge(body: AutoRechargeSettings) -> WalletView:
    now = clock.now()
    configured = wallet.configure_auto_recharge(
        _billing(),
        app.auth.organization_id,
        enabled=body.enabled,
        threshold=body.threshold,
        amount=body.amount,
        payment_method_id=body.payment_method_id,
        monthly_limit=body.monthly_limit,
        now=now,
    )
    logger.info("wallet auto-recharge set", extra={"enabled": body.enabled})
    return WalletView.of(configured, now)


@app.get(
    "/billing/wallet/transactions", summary="List wallet transactions", description="Newest first.", tags=TAGS
)
def list_transactions(
    page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE
) -> Page[WalletTransactionView]:
    found = wallet.list_transactions(default_wallet_items(), app.auth.organization_id)
    return paginate([WalletTransactionView.of(entry) for entry in found], page, page_size)


# Neither events nor responses are logged or traced: a pending top-up carries the payer's account number.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
