"""Catalog items: ``CATALOG`` / ``PLAN#<slug>``, ``ADDON#<slug>``, ``TAX#<currency>``."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key

from tagih.domain.catalog import Addon, Catalog, Plan, TaxRate
from tagih.domain.errors import AddonNotFound, PlanNotFound
from tagih.store.items import from_item, to_item
from tagih.store.table import table

CATALOG_PK = "CATALOG"


def plan_key(slug: str) -> dict[str, str]:
    return {"PK": CATALOG_PK, "SK": f"PLAN#{slug}"}


def addon_key(slug: str) -> dict[str, str]:
    return {"PK": CATALOG_PK, "SK": f"ADDON#{slug}"}


def tax_key(currency: str) -> dict[str, str]:
    return {"PK": CATALOG_PK, "SK": f"TAX#{currency}"}


def _query_prefix(prefix: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": Key("PK").eq(CATALOG_PK) & Key("SK").begins_with(prefix)
    }
    while True:
        page = table().query(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def list_plans(include_inactive: bool = False) -> list[Plan]:
    plans = [from_item(Plan, item) for item in _query_prefix("PLAN#")]
    return sorted((p for p in plans if include_inactive or p.is_active), key=lambda p: (p.sort_order, p.slug))


def list_addons(include_inactive: bool = False) -> list[Addon]:
    addons = [from_item(Addon, item) for item in _query_prefix("ADDON#")]
    return sorted(
        (a for a in addons if include_inactive or a.is_active), key=lambda a: (a.sort_order, a.slug)
    )


def get_plan(slug: str) -> Plan:
    item = table().get_item(Key=plan_key(slug)).get("Item")
    if item is None:
        raise PlanNotFound(f"No plan with slug {slug!r}.")
    return from_item(Plan, item)


def get_addon(slug: str) -> Addon:
    item = table().get_item(Key=addon_key(slug)).get("Item")
    if item is None:
        raise AddonNotFound(f"No add-on with slug {slug!r}.")
    return from_item(Addon, item)


def get_tax_rate(currency: str) -> TaxRate:
    item = table().get_item(Key=tax_key(currency)).get("Item")
    return from_item(TaxRate, item) if item else TaxRate(currency=currency, name=None, rate_bps=0)  # type: ignore[arg-type]


def put_catalog(catalog: Catalog) -> int:
    """Write every catalog entry (deploy-time seeding; idempotent: the same catalog writes the same items)."""
    entries: list[dict[str, Any]] = []
    entries += [to_item(plan_key(p.slug), "plan", p) for p in catalog.plans]
    entries += [to_item(addon_key(a.slug), "addon", a) for a in catalog.addons]
    entries += [to_item(tax_key(t.currency), "tax_rate", t) for t in catalog.tax_rates]
    with table().batch_writer() as batch:
        for entry in entries:
            batch.put_item(Item=entry)
    return len(entries)


class CatalogItems:
    """The catalog as the billing services read it (``domain.catalog.CatalogReader``)."""

    def plan(self, slug: str) -> Plan:
        return get_plan(slug)

    def plans(self) -> list[Plan]:
        return list_plans()

    def addon(self, slug: str) -> Addon:
        return get_addon(slug)

    def tax_rate(self, currency: str) -> TaxRate:
        return get_tax_rate(currency)
