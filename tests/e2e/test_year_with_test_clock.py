"""One organization's year on the local stack, driven by its test clock over HTTP: a trial, its
conversion, an upgrade mid-period, a downgrade at the period's end, a renewal that fails and is
recovered by the second retry, a cancel and a reactivation, and a cancel that ends in Free.

Every invoice's lines, PPN and total are asserted to the rupiah, and each step's events through
``/_local/events``. The amounts follow DESIGN.md "Money, tax, proration": per-second proration of a
31-day period with 16 days left, each line rounded half up, then 11 % PPN on the subtotal."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e

CARD_TOKEN = "481111-1114-one-time-7d1b"
DECLINING = "481111-decline-saved-1114"
PRO, PRO_TAX = 299_000, 32_890
# Upgrade on 2026-02-03, period 2026-01-19 → 2026-02-19 (31 days), 16 days left:
UNUSED_PRO = -154_323  # -round_half_up(299,000 * 16/31)
REMAINING_BUSINESS = 510_968  # round_half_up(990,000 * 16/31)
UPGRADE_TAX = 39_231  # round_half_up(356,645 * 11 %)


class Org:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.id = f"org_year_{uuid.uuid4().hex[:8]}"
        self.headers = stack.headers(self.id, "owner")
        self.seen = 0

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        answer = self.stack.request(method, path, headers=self.headers, json=body)
        assert answer.status_code == status, answer.text
        return answer.json()

    def advance(self, to: str) -> list[tuple[str, str]]:
        moved = self.call("POST", "/billing/test-clock/advance", {"to": to})
        assert moved["frozen_time"] == to
        return [(p["action"], p["at"]) for p in moved["processed"]]

    def new_events(self) -> list[str]:
        """The organization's events published since the last call, oldest first."""
        items = self.stack.request("GET", "/_local/events").json()["items"]
        mine = [e["detail"] for e in items if e["detail"]["organization_id"] == self.id]
        fresh, self.seen = mine[self.seen :], len(mine)
        return [e["type"] for e in fresh]

    def invoices(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", "/billing/invoices")["items"]
        return list(reversed(items))  # oldest first


def amounts(invoice: dict[str, Any]) -> tuple[list[tuple[int, bool]], int, int, int]:
    lines = [(line["amount"], line["proration"]) for line in invoice["lines"]]
    return lines, invoice["subtotal"], invoice["tax"], invoice["total"]


def test_one_organizations_year(local_stack: LocalStack) -> None:
    org = Org(local_stack)
    org.call("POST", "/billing/test-clock", {"frozen_time": "2026-01-05T00:00:00Z"}, status=201)
    card = org.call(
        "POST", "/billing/payment-methods", {"type": "credit_card", "token": CARD_TOKEN}, status=201
    )

    # January: a 14-day trial of Pro, converted when it ends.
    trial = org.call("POST", "/billing/subscriptions", {"plan": "pro"}, status=201)
    assert (trial["status"], trial["trial_ends_at"]) == ("trialing", "2026-01-19T00:00:00Z")
    assert org.new_events() == ["billing.payment_method.added", "billing.subscription.created"]

    assert org.advance("2026-01-19T00:00:00Z") == [
        ("trial_will_end", "2026-01-16T00:00:00Z"),
        ("end_trial", "2026-01-19T00:00:00Z"),
    ]
    [first] = org.invoices()
    assert amounts(first) == ([(PRO, False)], PRO, PRO_TAX, PRO + PRO_TAX)
    assert (first["status"], first["billing_reason"], first["tax_name"], first["tax_rate"]) == (
        "paid",
        "subscription_create",
        "PPN",
        "11",
    )
    assert org.new_events() == [
        "billing.subscription.trial_will_end",
        "billing.invoice.created",
        "billing.invoice.paid",
        "billing.subscription.updated",
    ]

    # February 3: upgrade to Business, prorated and charged at once.
    assert org.advance("2026-02-03T00:00:00Z") == []
    upgraded = org.call("POST", f"/billing/subscriptions/{trial['id']}/change", {"plan": "business"})
    assert upgraded["subscription"]["plan"] == "business"
    upgrade = upgraded["prorated_invoice"]
    assert amounts(upgrade) == (
        [(UNUSED_PRO, True), (REMAINING_BUSINESS, True)],
        UNUSED_PRO + REMAINING_BUSINESS,
        UPGRADE_TAX,
        UNUSED_PRO + REMAINING_BUSINESS + UPGRADE_TAX,
    )
    assert (upgrade["status"], upgrade["billing_reason"]) == ("paid", "subscription_update")
    assert org.new_events() == [
        "billing.subscription.updated",
        "billing.invoice.created",
        "billing.invoice.paid",
    ]

    # February 10: back to Pro from the period's end; nothing is invoiced now.
    assert org.advance("2026-02-10T00:00:00Z") == []
    downgraded = org.call("POST", f"/billing/subscriptions/{trial['id']}/change", {"plan": "pro"})
    assert downgraded["prorated_invoice"] is None
    assert downgraded["subscription"]["scheduled_change"]["effective_at"] == "2026-02-19T00:00:00Z"
    assert org.new_events() == ["billing.subscription.updated"]

    assert org.advance("2026-02-19T00:00:00Z") == [("renew", "2026-02-19T00:00:00Z")]
    renewal = org.invoices()[-1]
    assert amounts(renewal) == ([(PRO, False)], PRO, PRO_TAX, PRO + PRO_TAX)
    assert (renewal["status"], renewal["billing_reason"]) == ("paid", "subscription_cycle")
    assert org.call("GET", "/billing/subscription")["plan"] == "pro"
    assert org.new_events() == [
        "billing.invoice.created",
        "billing.invoice.paid",
        "billing.subscription.updated",  # renewed: in its new period (docs/events.md)
    ]

    # March 19: the card declines the renewal; the first retry fails too, the second pays.
    good = local_stack.set_saved_card_token(org.id, card["id"], DECLINING)
    assert org.advance("2026-03-20T00:00:00Z") == [
        ("renew", "2026-03-19T00:00:00Z"),
        ("retry_payment", "2026-03-20T00:00:00Z"),
    ]
    dunned = org.invoices()[-1]
    assert amounts(dunned) == ([(PRO, False)], PRO, PRO_TAX, PRO + PRO_TAX)
    assert (dunned["status"], dunned["retry_count"], dunned["next_retry_at"]) == (
        "overdue",
        2,
        "2026-03-22T00:00:00Z",
    )
    assert org.call("GET", "/billing/subscription")["status"] == "past_due"
    assert org.new_events() == [
        "billing.invoice.created",
        "billing.invoice.payment_failed",
        "billing.subscription.updated",
        "billing.invoice.overdue",
        "billing.invoice.payment_failed",
    ]
    local_stack.set_saved_card_token(org.id, card["id"], good)
    assert org.advance("2026-03-22T00:00:00Z") == [("retry_payment", "2026-03-22T00:00:00Z")]
    recovered = org.call("GET", f"/billing/invoices/{dunned['id']}")
    assert (recovered["status"], recovered["amount_paid"]) == ("paid", PRO + PRO_TAX)
    assert org.call("GET", "/billing/subscription")["status"] == "active"
    assert org.new_events() == ["billing.invoice.paid", "billing.subscription.updated"]

    # April: cancelled on the 1st, reactivated on the 2nd; the renewal on the 19th goes on.
    assert org.advance("2026-04-01T00:00:00Z") == []
    cancelled = org.call("POST", f"/billing/subscriptions/{trial['id']}/cancel")
    assert (cancelled["status"], cancelled["grace_period_ends_at"]) == (
        "grace_period",
        "2026-04-19T00:00:00Z",
    )
    assert org.advance("2026-04-02T00:00:00Z") == []
    reactivated = org.call("POST", f"/billing/subscriptions/{trial['id']}/reactivate")
    assert (reactivated["status"], reactivated["grace_period_ends_at"]) == ("active", None)
    assert org.new_events() == ["billing.subscription.updated", "billing.subscription.updated"]
    assert org.advance("2026-04-19T00:00:00Z") == [("renew", "2026-04-19T00:00:00Z")]
    assert amounts(org.invoices()[-1]) == ([(PRO, False)], PRO, PRO_TAX, PRO + PRO_TAX)
    assert org.new_events() == [
        "billing.invoice.created",
        "billing.invoice.paid",
        "billing.subscription.updated",  # renewed: in its new period (docs/events.md)
    ]

    # May: cancelled for good; when the paid period ends the organization is on Free.
    assert org.advance("2026-05-01T00:00:00Z") == []
    org.call("POST", f"/billing/subscriptions/{trial['id']}/cancel")
    assert org.advance("2026-05-20T00:00:00Z") == [("end_grace", "2026-05-19T00:00:00Z")]
    free = org.call("GET", "/billing/subscription")
    assert (free["plan"], free["status"]) == ("free", "active")
    assert org.new_events() == ["billing.subscription.updated", "billing.subscription.cancelled"]

    # The rest of the year: nothing renews, nothing is charged.
    assert org.advance("2027-01-05T00:00:00Z") == []
    invoices = org.invoices()
    assert [i["billing_reason"] for i in invoices] == [
        "subscription_create",
        "subscription_update",
        "subscription_cycle",
        "subscription_cycle",
        "subscription_cycle",
    ]
    assert all(i["status"] == "paid" for i in invoices)
    numbers = [i["number"] for i in invoices]
    assert all(n.startswith("INV-2026-") for n in numbers)
    assert numbers == sorted(numbers)
    assert sum(i["amount_paid"] for i in invoices) == 4 * (PRO + PRO_TAX) + (
        UNUSED_PRO + REMAINING_BUSINESS + UPGRADE_TAX
    )
    assert org.new_events() == []
