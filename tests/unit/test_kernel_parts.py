"""Pure pieces of the kernel: the error table, the list envelope, item mapping, settings, ids."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from tagih.api.errors import proxy_error, status_and_code, validation_details
from tagih.api.pagination import paginate
from tagih.config import Settings, get_settings
from tagih.domain import errors
from tagih.ids import new_id
from tagih.store.items import from_item, to_item


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.Unauthenticated(), 401, "unauthenticated"),
        (errors.Forbidden(), 403, "forbidden"),
        (errors.OrganizationSuspended(), 403, "organization_suspended"),
        (errors.PlanNotFound(), 404, "plan_not_found"),
        (errors.ApiKeyNotFound(), 404, "api_key_not_found"),
        (errors.VersionConflict(), 409, "version_conflict"),
        (errors.RequestInProgress(), 409, "request_in_progress"),
        (errors.IdempotencyKeyReused(), 422, "idempotency_key_reused"),
        (errors.MalformedJson(), 400, "malformed_json"),
        (errors.PayloadTooLarge(), 413, "payload_too_large"),
        (errors.BillingError(), 500, "internal_error"),
    ],
)
def test_error_table(error: errors.BillingError, status: int, code: str) -> None:
    assert status_and_code(error) == (status, code)


def test_proxy_error_has_the_api_md_shape() -> None:
    result = proxy_error(401, "unauthenticated", "Token expired.", "req-1")
    assert result["statusCode"] == 401
    assert json.loads(result["body"]) == {
        "error": {
            "code": "unauthenticated",
            "message": "Token expired.",
            "details": [],
            "request_id": "req-1",
        }
    }


def test_validation_details_name_each_field() -> None:
    class Body(BaseModel, extra="forbid"):
        name: str

    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"colour": "red"})
    details = validation_details([{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()])
    assert {d["field"]: d["type"] for d in details} == {"name": "missing", "colour": "extra_forbidden"}


@pytest.mark.parametrize(
    ("page", "size", "items", "has_next", "has_prev"),
    [
        (1, 2, [0, 1], True, False),
        (2, 2, [2, 3], True, True),
        (3, 2, [4], False, True),
        (4, 2, [], False, True),
    ],
)
def test_paginate(page: int, size: int, items: list[int], has_next: bool, has_prev: bool) -> None:
    envelope = paginate(list(range(5)), page, size)
    assert (envelope.items, envelope.total, envelope.has_next, envelope.has_prev) == (
        items,
        5,
        has_next,
        has_prev,
    )


def test_items_round_trip_integers_and_refuse_fractions() -> None:
    class Money(BaseModel):
        amount: int

    item = to_item({"PK": "ORG#o", "SK": "X"}, "money", Money(amount=299000))
    assert item == {"PK": "ORG#o", "SK": "X", "entity": "money", "amount": 299000}
    assert from_item(Money, {**item, "amount": Decimal(299000)}) == Money(amount=299000)
    with pytest.raises(ValueError, match="non-integral"):
        from_item(Money, {**item, "amount": Decimal("1.5")})


def test_settings_come_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("TABLE_NAME", "t1")
    monkeypatch.setenv("STAGE", "prod")
    first = get_settings()
    monkeypatch.setenv("TABLE_NAME", "t2")
    assert get_settings() is first
    assert (first.table_name, first.is_prod) == ("t1", True)
    get_settings.cache_clear()


def test_settings_refuse_a_missing_table() -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({})


def test_ids_are_prefixed_and_unique() -> None:
    ids = {new_id("sub") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("sub_") and len(i) == 24 for i in ids)
    with pytest.raises(ValueError, match="unknown id prefix"):
        new_id("cus")
