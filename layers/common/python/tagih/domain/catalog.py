"""The catalog: plans, add-ons and tax rates. Pure data models; the store reads and writes them."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tagih.domain.money import Currency

CURRENCIES: tuple[str, ...] = ("IDR", "USD", "EUR", "GBP", "AUD", "ZAR")
METRICS: tuple[str, ...] = ("members", "applications", "storage_bytes", "api_calls", "webhooks")
# Metrics whose reports set the current value (a count of things), not add to a running total.
GAUGE_METRICS: frozenset[str] = frozenset({"members", "applications", "storage_bytes", "webhooks"})


class Limits(BaseModel):
    """Quotas per resource; ``None`` means unlimited."""

    model_config = ConfigDict(extra="forbid")

    members: int | None = Field(ge=0)
    applications: int | None = Field(ge=0)
    storage_bytes: int | None = Field(ge=0)
    api_calls: int | None = Field(ge=0)
    webhooks: int | None = Field(ge=0)


class Features(BaseModel):
    model_config = ConfigDict(extra="forbid")

    basic: bool = True
    mfa: bool = False
    webhooks: bool = False
    sso: bool = False
    scim: bool = False
    audit_streaming: bool = False
    sla: bool = False
    dedicated_support: bool = False


class OveragePrice(BaseModel):
    """What a unit of use beyond the quota costs: ``unit_amount`` for each started block of
    ``per_units`` (Rp 20.000 per 10.000 API calls), so prices below one rupiah per call stay integers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit_amount: int = Field(ge=0, description="In the plan's currency unit, per block of `per_units`.")
    per_units: int = Field(default=1, ge=1)


class Plan(BaseModel):
    id: str
    slug: str
    name: str
    currency: Currency
    base_price_monthly: int | None = Field(ge=0, description="In the currency's unit; null for custom plans.")
    base_price_annual: int | None = Field(ge=0)
    limits: Limits
    features: Features
    trial_days: int = Field(ge=0)
    overage: dict[str, OveragePrice] = Field(
        default_factory=dict,
        description="Counted metrics (api_calls, custom metrics) whose use beyond the quota is billed "
        "in arrears on the renewal invoice; a metric not listed stops at its quota.",
    )
    is_custom: bool
    is_active: bool
    sort_order: int
    created_at: datetime
    updated_at: datetime

    @field_validator("overage")
    @classmethod
    def _counted_metrics_only(cls, value: dict[str, OveragePrice]) -> dict[str, OveragePrice]:
        # A gauge (members, storage) has no "use beyond the quota" over time; add-ons raise those.
        gauges = sorted(set(value) & GAUGE_METRICS)
        if gauges:
            raise ValueError(f"overage applies to counted metrics only, not {', '.join(gauges)}")
        return value


class Addon(BaseModel):
    id: str
    slug: str
    name: str
    description: str
    unit: Literal["flat", "per_unit"]
    price_monthly: int = Field(ge=0)
    price_annual: int = Field(ge=0)
    currency: Currency
    limits_increase: dict[str, int] = Field(
        default_factory=dict, description="Added to the plan's limits per unit."
    )
    is_active: bool
    sort_order: int


class TaxRate(BaseModel):
    currency: Currency
    name: str | None
    rate_bps: int = Field(ge=0, le=10_000, description="Basis points: 1100 = 11 %.")


class Catalog(BaseModel):
    plans: list[Plan]
    addons: list[Addon]
    tax_rates: list[TaxRate]


def default_catalog() -> Catalog:
    """The catalog shipped in the repo (``tagih/data/catalog.json``), as deploy and local load it."""
    raw = json.loads(resources.files("tagih.data").joinpath("catalog.json").read_text(encoding="utf-8"))
    published = raw["published_at"]
    plans = [
        Plan.model_validate(
            {"id": f"plan_{p['slug']}", "created_at": published, "updated_at": published, **p}
        )
        for p in raw["plans"]
    ]
    addons = [Addon.model_validate({"id": f"addon_{a['slug']}", **a}) for a in raw["addons"]]
    taxes = [TaxRate.model_validate(t) for t in raw["tax_rates"]]
    return Catalog(plans=plans, addons=addons, tax_rates=taxes)


class CatalogReader(Protocol):
    def plan(self, slug: str) -> Plan:
        """``PlanNotFound`` for an unknown slug."""
        ...

    def plans(self) -> list[Plan]:
        """Active plans, cheapest first."""
        ...

    def addon(self, slug: str) -> Addon:
        """``AddonNotFound`` for an unknown slug."""
        ...

    def tax_rate(self, currency: str) -> TaxRate: ...
