"""GET /billing/plans and /billing/addons: the default catalog of API.md, one read per request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from local.cfn_yaml import load_template
from tagih.domain.catalog import default_catalog
from tests.fakes.aws_calls import count_calls
from tests.fakes.lambda_runtime import ROOT, FakeLambdaContext, http_event, load_function, principal

catalog_function = load_function("catalog")


def get(path: str, query: dict[str, str] | None = None, role: str = "member") -> tuple[int, dict[str, Any]]:
    event = http_event("GET", path, query=query, authorizer=principal(role=role))
    result = catalog_function.lambda_handler(event, FakeLambdaContext())
    return result["statusCode"], json.loads(result["body"])


@pytest.mark.usefixtures("catalog")
def test_plans_are_the_default_catalog_in_rupiah() -> None:
    status, body = get("/billing/plans")
    assert status == 200
    plans = {p["slug"]: p for p in body["items"]}
    assert list(plans) == ["free", "pro", "business", "enterprise"]
    assert [p["base_price_monthly"] for p in plans.values()] == [0, 299000, 990000, None]
    assert plans["pro"]["base_price_annual"] == 2990000
    assert plans["business"]["base_price_annual"] == 9900000
    assert {p["currency"] for p in plans.values()} == {"IDR"}
    assert plans["free"]["limits"] == {
        "members": 3,
        "applications": 1,
        "storage_bytes": 1073741824,
        "api_calls": 10000,
        "webhooks": 0,
    }
    assert plans["pro"]["limits"]["members"] == 20
    assert plans["pro"]["limits"]["api_calls"] == 100000
    assert plans["pro"]["limits"]["webhooks"] == 10
    assert plans["pro"]["features"]["mfa"] is True
    assert plans["pro"]["features"]["sso"] is False
    assert plans["business"]["features"]["scim"] is True
    assert plans["enterprise"]["is_custom"] is True
    assert set(plans["enterprise"]["limits"].values()) == {None}
    assert plans["enterprise"]["features"]["dedicated_support"] is True
    assert plans["pro"]["trial_days"] == 14
    assert body["total"] == 4
    assert (body["has_next"], body["has_prev"]) == (False, False)


@pytest.mark.usefixtures("catalog")
def test_plans_page_through_the_envelope() -> None:
    status, body = get("/billing/plans", {"page": "2", "page_size": "3"})
    assert status == 200
    assert [p["slug"] for p in body["items"]] == ["enterprise"]
    assert (body["total"], body["page"], body["page_size"]) == (4, 2, 3)
    assert (body["has_next"], body["has_prev"]) == (False, True)


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(("query", "field"), [({"page_size": "101"}, "page_size"), ({"page": "0"}, "page")])
def test_page_limits_are_enforced(query: dict[str, str], field: str) -> None:
    status, body = get("/billing/plans", query)
    assert status == 422
    assert body["error"]["code"] == "validation_error"
    assert [d["field"] for d in body["error"]["details"]] == [f"query.{field}"]


@pytest.mark.usefixtures("catalog")
def test_addons_list() -> None:
    status, body = get("/billing/addons")
    assert status == 200
    addons = {a["slug"]: a for a in body["items"]}
    assert addons["extra-members"]["unit"] == "per_unit"
    assert addons["extra-members"]["price_monthly"] == 15000
    assert addons["priority-support"]["unit"] == "flat"


@pytest.mark.usefixtures("catalog")
def test_each_catalog_read_is_one_query() -> None:
    with count_calls() as calls:
        get("/billing/plans")
        assert calls == {"Query": 1}
        get("/billing/addons")
        assert calls == {"Query": 2}


def test_template_reseeds_when_the_catalog_changes() -> None:
    # CloudFormation re-runs the seeding custom resource only when its properties change.
    props = load_template(ROOT / "template.yaml")["Resources"]["CatalogSeed"]["Properties"]
    raw = json.loads((ROOT / "layers/common/python/tagih/data/catalog.json").read_text())
    assert props["CatalogVersion"] == raw["published_at"]


def test_default_catalog_prices_are_integers_and_annual_is_ten_months() -> None:
    for plan in default_catalog().plans:
        if plan.base_price_monthly is not None:
            assert plan.base_price_annual == 10 * plan.base_price_monthly
