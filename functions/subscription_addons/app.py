"""Add-ons on a subscription: list, attach (prorated and charged like an upgrade), change the
quantity, remove at the period end. Any member reads; owners and admins write."""

from __future__ import annotations

from typing import Annotated, Any, Self

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ConfigDict, Field, model_validator

from tagih import clock
from tagih.api.app import create_resolver
from tagih.api.invoice_view import InvoiceView
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.api.subscription_view import SubscriptionAddonView
from tagih.domain.subscriptions import MAX_ADDON_QUANTITY
from tagih.domain.text import RequestBody
from tagih.observability import TRACED_LIBRARIES
from tagih.services import addons
from tagih.wiring import default_billing

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
app = create_resolver("subscription_addons")

TAGS = ["Add-ons"]
SubscriptionId = Annotated[str, Path(min_length=1, max_length=64)]
ItemId = Annotated[str, Path(min_length=1, max_length=64)]
Quantity = Annotated[int, Field(ge=1, le=MAX_ADDON_QUANTITY)]
CHARGED_RESPONSES: dict[int, OpenAPIResponse] = {
    402: {"description": "`payment_failed`: the prorated charge was declined; nothing changed."},
    409: {
        "description": "`addon_already_attached`, `version_conflict` (another change of the "
        "subscription won the race), `subscription_not_active`, `contact_sales` for custom terms."
    },
    422: {"description": "`payment_method_required`, `currency_mismatch`, `validation_error`."},
    503: {"description": "`gateway_unavailable`: the gateway did not answer; nothing changed."},
}


class AttachAddon(RequestBody):
    # Exactly one of the two as a string (null counts as left out), stated for the schema as the
    # validator below enforces it.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["addon_id"], "properties": {"addon_id": {"type": "string"}}},
                {"required": ["addon"], "properties": {"addon": {"type": "string"}}},
            ]
        },
    )

    addon_id: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        default=None, description="The add-on's `id` (`addon_extra-members`); or give `addon`."
    )
    addon: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="The add-on's slug (`extra-members`); or give `addon_id`."
    )
    quantity: Quantity = 1

    @model_validator(mode="after")
    def _one_addon(self) -> Self:
        if (self.addon_id is None) == (self.addon is None):
            raise ValueError("give exactly one of addon_id and addon")
        return self


class ChangeQuantity(RequestBody):
    quantity: Quantity


class AddonChangeView(SubscriptionAddonView):
    prorated_invoice: InvoiceView | None = Field(
        description="The invoice for the rest of the period: `paid`, or `open` with a `payment_url` "
        "while an asynchronous payment is awaited (the add-on is attached once it is paid); `null` "
        "when nothing was invoiced (a trial, fewer units, a removal)."
    )

    @classmethod
    def of_change(cls, changed: addons.AddonChanged) -> AddonChangeView:
        item = SubscriptionAddonView.of(changed.item).model_dump()
        invoice = InvoiceView.of(changed.invoice) if changed.invoice else None
        return cls.model_validate({**item, "prorated_invoice": invoice})


@app.get(
    "/billing/subscriptions/<subscription_id>/addons",
    summary="List a subscription's add-ons",
    tags=TAGS,
)
def list_subscription_addons(
    subscription_id: SubscriptionId, page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE
) -> Page[SubscriptionAddonView]:
    items = addons.list_addons(default_billing(), app.auth.organization_id, subscription_id)
    return paginate([SubscriptionAddonView.of(item) for item in items], page, page_size)


@app.post(
    "/billing/subscriptions/<subscription_id>/addons",
    status_code=201,
    summary="Attach an add-on",
    description="From now on: the rest of the current period is invoiced at once, prorated per "
    "second with tax, and charged like an upgrade (nothing during a trial: the trial-end invoice "
    "bills it). Every renewal bills it in full. An add-on that raises a limit raises the quota.",
    tags=TAGS,
    responses=CHARGED_RESPONSES,
)
def attach_addon(subscription_id: SubscriptionId, body: AttachAddon) -> AddonChangeView:
    changed = addons.attach_addon(
        default_billing(),
        app.auth.organization_id,
        subscription_id,
        addon_slug=addons.catalog_slug(body.addon_id, body.addon),
        quantity=body.quantity,
        now=clock.now(),
    )
    logger.info(
        "add-on attached",
        extra={"subscription_id": subscription_id, "item_id": changed.item.id, "slug": changed.item.slug},
    )
    return AddonChangeView.of_change(changed)


@app.patch(
    "/billing/subscriptions/<subscription_id>/addons/<item_id>",
    summary="Change an add-on's quantity",
    description="More units: at once, the difference prorated and charged like an upgrade. Fewer: from "
    "the next period (`scheduled_quantity`), no refund. Changing the quantity of an add-on being "
    "removed keeps it.",
    tags=TAGS,
    responses=CHARGED_RESPONSES,
)
def change_addon_quantity(
    subscription_id: SubscriptionId, item_id: ItemId, body: ChangeQuantity
) -> AddonChangeView:
    changed = addons.change_addon_quantity(
        default_billing(),
        app.auth.organization_id,
        subscription_id,
        item_id,
        quantity=body.quantity,
        now=clock.now(),
    )
    logger.info("add-on quantity changed", extra={"subscription_id": subscription_id, "item_id": item_id})
    return AddonChangeView.of_change(changed)


@app.delete(
    "/billing/subscriptions/<subscription_id>/addons/<item_id>",
    summary="Remove an add-on at the period end",
    description="It counts, and is not refunded, until the current period (or the trial) ends; the "
    "next invoice no longer bills it (`cancel_at_period_end: true`). Removing it again changes nothing.",
    tags=TAGS,
)
def remove_addon(subscription_id: SubscriptionId, item_id: ItemId) -> SubscriptionAddonView:
    changed = addons.remove_addon(
        default_billing(), app.auth.organization_id, subscription_id, item_id, now=clock.now()
    )
    logger.info("add-on removal scheduled", extra={"subscription_id": subscription_id, "item_id": item_id})
    return SubscriptionAddonView.of(changed.item)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
