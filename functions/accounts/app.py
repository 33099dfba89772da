"""Billing accounts: the customers an organization's invoices are addressed to (owners and admins write)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from tagih import clock
from tagih.api.app import create_resolver
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.domain.accounts import (
    AccountName,
    Address,
    BillingAccount,
    Description,
    Email,
    GatewayCustomerIds,
    Phone,
)
from tagih.domain.money import Currency, CurrencyCode
from tagih.domain.text import RequestBody
from tagih.observability import TRACED_LIBRARIES
from tagih.services import accounts
from tagih.store.accounts import default_account_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
# Reads: any member; writes: admin or owner (the kernel's defaults).
app = create_resolver("accounts")

CURRENCY_HELP = "idr, usd, eur, gbp, aud or zar, in either case; answered upper-case."


# -- the HTTP shapes -----------------------------------------------------------------------------
class CreateBillingAccount(RequestBody):
    multiline_fields = frozenset({"description"})

    name: AccountName = Field(description="Who is invoiced, e.g. the company's legal name.")
    email: Email = Field(description="Where invoices and receipts go.")
    phone: Phone | None = None
    description: Description | None = None
    currency: CurrencyCode | None = Field(
        default=None, description=f"{CURRENCY_HELP} Default: the default account's currency, or IDR."
    )
    address: Address | None = None


class UpdateBillingAccount(RequestBody):
    """Only the fields sent change; `null` clears phone, description or address."""

    multiline_fields = frozenset({"description"})

    # name, email and currency may be left out but not cleared: null is refused (below), so the
    # schema does not offer it (SkipJsonSchema), or a client reading it would send one.
    name: AccountName | SkipJsonSchema[None] = None
    email: Email | SkipJsonSchema[None] = None
    phone: Phone | None = None
    description: Description | None = None
    currency: CurrencyCode | SkipJsonSchema[None] = Field(default=None, description=CURRENCY_HELP)
    address: Address | None = None
    expected_version: int | None = Field(
        default=None, ge=1, description="The version you read; a stale one answers 409 version_conflict."
    )

    @field_validator("name", "email", "currency")
    @classmethod
    def _required_when_sent(cls, value: Any) -> Any:
        # Defaults are not validated, so this sees only an explicit null.
        if value is None:
            raise ValueError("May not be null.")
        return value

    def changes(self) -> dict[str, Any]:
        sent = self.model_fields_set - {"expected_version"}
        return {name: getattr(self, name) for name in sent}


class BillingAccountView(BaseModel):
    id: str = Field(examples=["acct_3kTMd9Qz1vXbR7pL0aYc"])
    organization_id: str
    name: str
    email: str
    phone: str | None
    description: str | None
    currency: Currency
    address: Address | None
    gateway_customer_ids: GatewayCustomerIds = Field(
        description="The account as a customer at each gateway, once it is one (Stripe on first use)."
    )
    is_default: bool = Field(description="Whether this is the organization's default billing account.")
    version: int = Field(description="Increases with every change; send it as `expected_version`.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, account: BillingAccount) -> BillingAccountView:
        return cls(
            **account.model_dump(exclude={"created_at", "updated_at", "address", "gateway_customer_ids"}),
            address=account.address,
            gateway_customer_ids=account.gateway_customer_ids,
            created_at=account.created_at.replace(microsecond=0),  # the API's whole seconds
            updated_at=account.updated_at.replace(microsecond=0),
        )


class DeletedBillingAccount(BaseModel):
    id: str
    deleted: Literal[True] = True


AccountId = Annotated[str, Path(min_length=1, max_length=64)]
TAGS = ["Billing accounts"]


# -- routes ------------------------------------------------------------------------------------------
@app.post("/billing/accounts", status_code=201, summary="Create a billing account", tags=TAGS)
def create_billing_account(body: CreateBillingAccount) -> BillingAccountView:
    account = accounts.create_billing_account(
        default_account_items(),
        organization_id=app.auth.organization_id,
        name=body.name,
        email=body.email,
        phone=body.phone,
        description=body.description,
        currency=body.currency,
        address=body.address,
        now=clock.now(),
    )
    logger.info("billing account created", extra={"account_id": account.id, "is_default": account.is_default})
    return BillingAccountView.of(account)


@app.get("/billing/accounts", summary="List billing accounts", tags=TAGS)
def list_billing_accounts(
    page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE
) -> Page[BillingAccountView]:
    found = accounts.list_billing_accounts(default_account_items(), app.auth.organization_id)
    return paginate([BillingAccountView.of(a) for a in found], page, page_size)


@app.get("/billing/accounts/<account_id>", summary="Get a billing account", tags=TAGS)
def get_billing_account(account_id: AccountId) -> BillingAccountView:
    account = accounts.get_billing_account(default_account_items(), app.auth.organization_id, account_id)
    return BillingAccountView.of(account)


@app.patch("/billing/accounts/<account_id>", summary="Update a billing account", tags=TAGS)
def update_billing_account(account_id: AccountId, body: UpdateBillingAccount) -> BillingAccountView:
    account = accounts.update_billing_account(
        default_account_items(),
        organization_id=app.auth.organization_id,
        account_id=account_id,
        changes=body.changes(),
        expected_version=body.expected_version,
        now=clock.now(),
    )
    logger.info("billing account updated", extra={"account_id": account.id, "version": account.version})
    return BillingAccountView.of(account)


@app.delete(
    "/billing/accounts/<account_id>",
    summary="Delete a billing account",
    description="Deleting the default account makes the most recently created remaining one the "
    "default. The default account of a paid subscription cannot be deleted (409 "
    "`billing_account_in_use`).",
    tags=TAGS,
)
def delete_billing_account(account_id: AccountId) -> DeletedBillingAccount:
    accounts.delete_billing_account(default_account_items(), app.auth.organization_id, account_id)
    logger.info("billing account deleted", extra={"account_id": account_id})
    return DeletedBillingAccount(id=account_id)


# Neither events nor responses are logged: they carry people's names, emails and addresses.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
