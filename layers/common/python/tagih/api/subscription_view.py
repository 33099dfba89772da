"""How the API shows a subscription (API.md fields, whole-second timestamps), shared by the
subscriptions and operator functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tagih import clock
from tagih.domain.catalog import Features, Limits
from tagih.domain.gateway_names import GatewayName
from tagih.domain.subscriptions import (
    ADDON_INTERNAL_FIELDS,
    MAX_ADDON_QUANTITY,
    BillingCycle,
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionStatus,
)


class SubscriptionAddonView(BaseModel):
    """An add-on on a subscription (API.md "Add-ons"), plus when a removal or a smaller quantity
    takes effect."""

    id: str = Field(examples=["si_5hTq2LmB8xR3vKc9WnYe"])
    subscription_id: str
    addon_id: str = Field(examples=["addon_extra-members"])
    name: str
    slug: str
    price_monthly: int
    quantity: int = Field(ge=1, le=MAX_ADDON_QUANTITY)
    cancel_at_period_end: bool = Field(
        description="Removed when the current period ends; until then it counts."
    )
    scheduled_quantity: int | None = Field(description="The quantity from the next period on, if fewer.")
    created_at: datetime

    @classmethod
    def of(cls, item: SubscriptionAddon) -> SubscriptionAddonView:
        data = item.model_dump(mode="json", exclude=set(ADDON_INTERNAL_FIELDS))
        return cls.model_validate(_whole_seconds(data))


class SubscriptionView(BaseModel):
    id: str | None = Field(description="`null` for Free: an organization on Free has no subscription.")
    organization_id: str
    plan: str
    plan_name: str
    status: SubscriptionStatus
    billing_cycle: BillingCycle
    cancel_at_period_end: bool
    trial_ends_at: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    grace_period_ends_at: datetime | None
    cancelled_at: datetime | None
    scheduled_change: ScheduledChange | None
    payment_method_id: str | None
    payment_gateway: GatewayName | None
    gateway_customer_id: str | None
    gateway_subscription_id: str | None
    limits: Limits
    features: Features
    addons: list[SubscriptionAddonView]
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionView:
        return cls.model_validate(_whole_seconds(subscription.public_data()))


def _whole_seconds(data: dict[str, Any]) -> dict[str, Any]:
    """The API's timestamps have whole seconds (``…T12:00:00Z``), the add-ons' too."""
    return {
        key: clock.to_rfc3339(clock.parse_rfc3339(value))
        if isinstance(value, str) and key.endswith(("_at", "_start", "_end"))
        else [_whole_seconds(item) for item in value]
        if key == "addons" and isinstance(value, list)
        else value
        for key, value in data.items()
    }
