"""Payment methods: Midtrans cards, virtual accounts and e-wallets, Stripe cards (owners and admins write).

Request bodies and responses are not logged: a request carries a card token (one-time, but a
token all the same) and a response a Midtrans saved token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from tagih import clock
from tagih.api.app import create_resolver
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.domain.gateway_names import Bank, GatewayName, MethodType, WalletProvider
from tagih.domain.payment_methods import NewPaymentMethod, PaymentMethod
from tagih.domain.text import RequestBody
from tagih.events.publisher import default_publisher
from tagih.gateways.registry import default_gateways
from tagih.observability import TRACED_LIBRARIES
from tagih.services import payment_methods
from tagih.store.accounts import default_account_items
from tagih.store.payment_methods import default_payment_method_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
# Reads: any member; writes: admin or owner (the kernel's defaults).
app = create_resolver("payment_methods")

TAGS = ["Payment methods"]
Token = Annotated[str, Field(min_length=1, max_length=500)]


class AddPaymentMethod(RequestBody):
    type: MethodType
    token: Token | None = Field(
        default=None,
        description="A card's one-time token: a Stripe PaymentMethod id (`pm_…`, from Stripe.js) or a "
        "Midtrans card token (from Midtrans.js). Card numbers are never sent to Tagih.",
    )
    gateway_payment_method_id: Token | None = Field(
        default=None,
        description="Instead of `token`: a card reference Tagih verified for this organization (its "
        "`pm_…` or `mtcard_…`); another organization's is 404 `payment_method_not_found`.",
    )
    gateway: GatewayName | None = Field(
        default=None, description="Default: Stripe for a `pm_…` token, Midtrans otherwise."
    )
    bank: Bank | None = Field(default=None, description="For `bank_transfer`: the virtual account's bank.")
    provider: WalletProvider | None = Field(default=None, description="For `e_wallet`.")
    label: Annotated[str, Field(max_length=100)] | None = None
    is_default: bool = Field(
        default=False, description="Make it the default (the first method always is); unsets the others."
    )


class PaymentMethodView(BaseModel):
    id: str = Field(examples=["pm_3kTMd9Qz1vXbR7pL0aYc"])
    organization_id: str
    gateway: GatewayName
    gateway_payment_method_id: str = Field(
        description="The gateway's reference as display data: Stripe `pm_…`, `mtcard_<digest>` for a "
        "Midtrans card (its saved token is never shown), `va:<bank>` or `ewallet:<provider>`."
    )
    type: MethodType
    brand: str | None
    last4: str | None
    bank: Bank | None
    provider: WalletProvider | None
    label: str | None
    is_default: bool
    created_at: datetime

    @classmethod
    def of(cls, method: PaymentMethod) -> PaymentMethodView:
        return cls(
            **method.model_dump(exclude={"version", "created_at", "updated_at", "gateway_payment_method_id"}),
            gateway_payment_method_id=method.public_reference,
            created_at=method.created_at.replace(microsecond=0),  # the API's whole seconds
        )


class DeletedPaymentMethod(BaseModel):
    id: str
    deleted: Literal[True] = True


MethodId = Annotated[str, Path(min_length=1, max_length=64)]
ADD_RESPONSES: dict[int, OpenAPIResponse] = {
    402: {"description": "`payment_failed`: the gateway declined the card; `details` has its reason."},
    503: {"description": "`gateway_unavailable`: the gateway did not answer; nothing was kept."},
}


# -- routes ------------------------------------------------------------------------------------------
@app.post(
    "/billing/payment-methods",
    status_code=201,
    summary="Add a payment method",
    tags=TAGS,
    responses=ADD_RESPONSES,
)
def add_payment_method(body: AddPaymentMethod) -> PaymentMethodView:
    method = payment_methods.add_payment_method(
        default_payment_method_items(),
        default_account_items(),
        default_gateways(),
        default_publisher(),
        organization_id=app.auth.organization_id,
        request=NewPaymentMethod(**body.model_dump()),
        now=clock.now(),
    )
    logger.info(
        "payment method added",
        extra={"payment_method_id": method.id, "gateway": method.gateway, "type": method.type},
    )
    return PaymentMethodView.of(method)


@app.get("/billing/payment-methods", summary="List payment methods", tags=TAGS)
def list_payment_methods(
    page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE
) -> Page[PaymentMethodView]:
    found = payment_methods.list_payment_methods(default_payment_method_items(), app.auth.organization_id)
    return paginate([PaymentMethodView.of(m) for m in found], page, page_size)


@app.post(
    "/billing/payment-methods/<payment_method_id>/default",
    summary="Make a payment method the default",
    tags=TAGS,
)
def set_default_payment_method(payment_method_id: MethodId) -> PaymentMethodView:
    method = payment_methods.set_default_payment_method(
        default_payment_method_items(), app.auth.organization_id, payment_method_id, clock.now()
    )
    logger.info("default payment method set", extra={"payment_method_id": method.id})
    return PaymentMethodView.of(method)


@app.delete(
    "/billing/payment-methods/<payment_method_id>",
    summary="Delete a payment method",
    description="Deleting the default makes the most recently added remaining method the default. "
    "The only method behind a paid subscription cannot be deleted (409 `payment_method_in_use`).",
    tags=TAGS,
)
def delete_payment_method(payment_method_id: MethodId) -> DeletedPaymentMethod:
    payment_methods.delete_payment_method(
        default_payment_method_items(), app.auth.organization_id, payment_method_id
    )
    logger.info("payment method deleted", extra={"payment_method_id": payment_method_id})
    return DeletedPaymentMethod(id=payment_method_id)


# Neither events nor responses are logged or traced: they carry card tokens and saved tokens.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
