"""Billing accounts through the real handler on moto: limits and 422 details, currency and country
rules, the organization's default account, versions, deletes and another organization's ids."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tagih.services.accounts import ensure_gateway_customer
from tagih.store.accounts import default_account_items
from tests.conftest import TABLE_NAME
from tests.fakes.gateways import FakeGateway
from tests.fakes.lambda_runtime import Answer, call_route

ORG = "org_1"
OTHER_ORG = "org_2"
ACCOUNTS = "/billing/accounts"
ADDRESS = {"country": "id", "line1": "Jl. Sudirman 1", "city": "Jakarta", "postal_code": "10220"}


def call(
    method: str,
    path: str,
    *,
    body: Any = None,
    org: str = ORG,
    role: str = "owner",
    headers: dict[str, str] | None = None,
) -> Answer:
    route = ACCOUNTS + "/{account_id}" if path.startswith(ACCOUNTS + "/") else ACCOUNTS
    return call_route("accounts", method, path, route, body=body, org=org, role=role, headers=headers)


def create(body: dict[str, Any] | None = None, **kwargs: Any) -> Answer:
    return call(
        "POST",
        ACCOUNTS,
        body={"name": "PT Maju Jaya", "email": "billing@maju.co.id", **(body or {})},
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _aws(aws: None) -> None:
    pass


def table_items(org: str = ORG) -> list[dict[str, Any]]:
    items = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    return [item for item in items if item["PK"] == f"ORG#{org}"]


def put_subscription(status: str, plan: str = "pro", org: str = ORG) -> None:
    # Subscriptions come in a later issue; their item is written here as that issue will.
    boto3.resource("dynamodb").Table(TABLE_NAME).put_item(
        Item={"PK": f"ORG#{org}", "SK": "SUBSCRIPTION", "status": status, "plan": plan}
    )


# -- create and read -----------------------------------------------------------------------------------
def test_first_account_is_created_as_the_default_with_every_field() -> None:
    created = create(
        {
            "phone": "+62 21 555 0100",
            "description": "Head office",
            "currency": "usd",
            "address": {**ADDRESS, "line2": "Lantai 5", "state": "DKI Jakarta"},
        }
    )
    assert created.status == 201, created.raw
    account = created.body
    assert set(account) == {
        "id",
        "organization_id",
        "name",
        "email",
        "phone",
        "description",
        "currency",
        "address",
        "gateway_customer_ids",
        "is_default",
        "version",
        "created_at",
        "updated_at",
    }
    assert account["id"].startswith("acct_")
    assert account["organization_id"] == ORG
    assert account["currency"] == "USD"
    assert account["address"] == {**ADDRESS, "country": "ID", "line2": "Lantai 5", "state": "DKI Jakarta"}
    assert account["gateway_customer_ids"] == {"stripe": None, "midtrans": None}
    assert (account["is_default"], account["version"]) == (True, 1)
    assert account["created_at"].endswith("Z")

    fetched = call("GET", f"{ACCOUNTS}/{account['id']}")
    assert fetched.status == 200
    assert fetched.body == account


def test_currency_defaults_to_idr_then_to_the_default_accounts_currency() -> None:
    first = create()
    assert first.body["currency"] == "IDR"
    call("PATCH", f"{ACCOUNTS}/{first.body['id']}", body={"currency": "Eur"})
    second = create({"name": "Second"})
    assert (second.body["currency"], second.body["is_default"]) == ("EUR", False)


def test_list_is_the_envelope_newest_first_with_one_default() -> None:
    ids = [create({"name": f"Account {n}"}).body["id"] for n in range(3)]
    listed = call("GET", ACCOUNTS, headers={}, role="member")
    assert listed.status == 200
    assert (listed.body["total"], listed.body["page"], listed.body["has_next"]) == (3, 1, False)
    assert [a["id"] for a in listed.body["items"]] == list(reversed(ids))
    assert [a["id"] for a in listed.body["items"] if a["is_default"]] == [ids[0]]


# -- validation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 101}, "name"),
        ({"name": "   "}, "name"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a" * 140 + "@example.com"}, "email"),
        ({"phone": "1" * 51}, "phone"),
        ({"description": "d" * 201}, "description"),
        ({"currency": "jpy"}, "currency"),
        ({"address": {**ADDRESS, "country": "XX"}}, "address.country"),
        ({"address": {**ADDRESS, "country": "IDN"}}, "address.country"),
        ({"address": {k: v for k, v in ADDRESS.items() if k != "city"}}, "address.city"),
        ({"address": {**ADDRESS, "planet": "Mars"}}, "address.planet"),
        ({"organization_id": "org_2"}, "organization_id"),
        ({"is_default": True}, "is_default"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(body: dict[str, Any], field: str) -> None:
    refused = create(body)
    assert refused.status == 422, refused.raw
    assert refused.error_code == "validation_error"
    assert field in refused.fields
    assert table_items() == []


def test_limits_are_inclusive() -> None:
    created = create(
        {
            "name": "n" * 100,
            "email": "b" * 64 + "@" + "e" * 60 + "." + "e" * 20 + ".com",
            "phone": "1" * 50,
            "description": "d" * 200,
        }
    )
    assert created.status == 201, created.raw
    assert len(created.body["email"]) == 150


def test_name_and_email_are_required() -> None:
    refused = call("POST", ACCOUNTS, body={})
    assert refused.status == 422
    assert refused.fields == {"name", "email"}


# -- access ---------------------------------------------------------------------------------------------
def test_member_reads_but_may_not_write() -> None:
    account = create().body
    assert create(role="member").status == 403
    assert call("PATCH", f"{ACCOUNTS}/{account['id']}", body={"name": "x"}, role="member").status == 403
    assert call("DELETE", f"{ACCOUNTS}/{account['id']}", role="member").status == 403
    assert call("GET", f"{ACCOUNTS}/{account['id']}", role="member").status == 200
    assert create(role="admin").status == 201


def test_another_organizations_account_is_not_found() -> None:
    account = create().body
    for method, body in (("GET", None), ("PATCH", {"name": "Mine now"}), ("DELETE", None)):
        answer = call(method, f"{ACCOUNTS}/{account['id']}", body=body, org=OTHER_ORG)
        assert answer.status == 404, (method, answer.raw)
        assert answer.error_code == "billing_account_not_found"
    assert call("GET", f"{ACCOUNTS}/{account['id']}").body == account
    assert call("GET", ACCOUNTS, org=OTHER_ORG).body["total"] == 0


# -- update ---------------------------------------------------------------------------------------------
def test_patch_changes_only_the_fields_sent_and_bumps_the_version() -> None:
    account = create({"phone": "+62 1", "address": ADDRESS}).body
    patched = call("PATCH", f"{ACCOUNTS}/{account['id']}", body={"name": "PT Baru", "phone": None})
    assert patched.status == 200, patched.raw
    assert patched.body["name"] == "PT Baru"
    assert patched.body["phone"] is None
    assert patched.body["email"] == account["email"]
    assert patched.body["address"] == {**ADDRESS, "country": "ID", "line2": None, "state": None}
    assert patched.body["version"] == 2
    assert call("GET", f"{ACCOUNTS}/{account['id']}").body == patched.body


def test_patch_refuses_null_for_required_fields_and_unknown_fields() -> None:
    account = create().body
    for body, field in (
        ({"name": None}, "name"),
        ({"email": None}, "email"),
        ({"is_default": False}, "is_default"),
    ):
        refused = call("PATCH", f"{ACCOUNTS}/{account['id']}", body=body)
        assert refused.status == 422
        assert field in refused.fields


def test_stale_expected_version_is_a_version_conflict() -> None:
    account = create().body
    first = call("PATCH", f"{ACCOUNTS}/{account['id']}", body={"name": "A", "expected_version": 1})
    assert first.status == 200
    stale = call("PATCH", f"{ACCOUNTS}/{account['id']}", body={"name": "B", "expected_version": 1})
    assert stale.status == 409
    assert stale.error_code == "version_conflict"
    assert call("GET", f"{ACCOUNTS}/{account['id']}").body["name"] == "A"


# -- delete ---------------------------------------------------------------------------------------------
def test_deleting_the_default_promotes_the_most_recent_remaining_account() -> None:
    first, second, third = (create({"name": n}).body for n in ("first", "second", "third"))
    deleted = call("DELETE", f"{ACCOUNTS}/{first['id']}")
    assert deleted.status == 200
    assert deleted.body == {"id": first["id"], "deleted": True}
    listed = call("GET", ACCOUNTS).body["items"]
    assert {a["id"]: a["is_default"] for a in listed} == {third["id"]: True, second["id"]: False}
    assert call("GET", f"{ACCOUNTS}/{first['id']}").status == 404


def test_deleting_a_non_default_account_keeps_the_default() -> None:
    first, second = create().body, create({"name": "other"}).body
    assert call("DELETE", f"{ACCOUNTS}/{second['id']}").status == 200
    assert call("GET", f"{ACCOUNTS}/{first['id']}").body["is_default"] is True
    assert call("DELETE", f"{ACCOUNTS}/{second['id']}").status == 404


def test_deleting_the_last_account_lets_the_next_one_be_default_again() -> None:
    first = create().body
    assert call("DELETE", f"{ACCOUNTS}/{first['id']}").status == 200
    assert table_items() == []
    assert create({"name": "again"}).body["is_default"] is True


@pytest.mark.parametrize("status", ["active", "past_due", "trialing", "incomplete"])
def test_the_default_account_of_a_paid_subscription_cannot_be_deleted(status: str) -> None:
    first, second = create().body, create({"name": "other"}).body
    put_subscription(status)
    refused = call("DELETE", f"{ACCOUNTS}/{first['id']}")
    assert refused.status == 409
    assert refused.error_code == "billing_account_in_use"
    assert call("GET", f"{ACCOUNTS}/{first['id']}").body["is_default"] is True
    assert call("DELETE", f"{ACCOUNTS}/{second['id']}").status == 200  # a non-default one may go


@pytest.mark.parametrize(
    ("status", "plan"), [("active", "free"), ("cancelled", "pro"), ("grace_period", "pro")]
)
def test_an_unpaid_subscription_does_not_hold_the_default_account(status: str, plan: str) -> None:
    first = create().body
    put_subscription(status, plan)
    assert call("DELETE", f"{ACCOUNTS}/{first['id']}").status == 200


def test_idempotent_create_replays_the_same_account() -> None:
    headers = {"Idempotency-Key": "create-account-1"}
    first = create(headers=headers)
    replay = create(headers=headers)
    assert first.status == replay.status == 201
    assert replay.body == first.body
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert call("GET", ACCOUNTS).body["total"] == 1


# -- the Stripe customer of an account ----------------------------------------------------------------
def test_gateway_customer_is_created_once_and_indexed() -> None:
    account_id = create().body["id"]
    store = default_account_items()
    stripe = FakeGateway("stripe")
    account = store.get(ORG, account_id)
    customer_id = ensure_gateway_customer(store, stripe, account)
    assert customer_id is not None
    again = ensure_gateway_customer(store, stripe, store.get(ORG, account_id))
    assert again == customer_id
    assert len(stripe.customers) == 1
    shown = call("GET", f"{ACCOUNTS}/{account_id}").body
    assert shown["gateway_customer_ids"] == {"stripe": customer_id, "midtrans": None}
    assert shown["version"] == 2
    found = boto3.client("dynamodb").query(
        TableName=TABLE_NAME,
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"GWCUST#stripe#{customer_id}"}},
    )["Items"]
    assert [item["id"]["S"] for item in found] == [account_id]


def test_a_lost_customer_race_uses_the_stored_id() -> None:
    account_id = create().body["id"]
    store = default_account_items()
    stale = store.get(ORG, account_id)
    winner = ensure_gateway_customer(store, FakeGateway("stripe"), stale)
    loser_gateway = FakeGateway("stripe", customer_prefix="cus_late")
    assert ensure_gateway_customer(store, loser_gateway, stale) == winner  # the read was stale
    assert call("GET", f"{ACCOUNTS}/{account_id}").body["gateway_customer_ids"]["stripe"] == winner
