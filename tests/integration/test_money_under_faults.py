"""Money under faults: each charging flow, killed at every boundary between its AWS calls (and so on
either side of the gateway's), then recovered the way the real caller would (a client retrying its
Idempotency-Key once the in-progress record expired; Midtrans redelivering a notification), ends
with what was captured at the gateway equal to what the ledger credited, nothing charged twice and
nothing left in flight. The real handlers run against moto and the Midtrans fake over HTTP; only
botocore's hooks are touched (``tests.fakes.faults``). Each test prints how many cases it ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import boto3
import pytest

from local.midtrans_fake import MidtransFake
from tagih import clock, wiring
from tagih.services import dunning, lifecycle, subscriptions
from tagih.services.context import Billing
from tagih.services.lifecycle import ActionResult
from tagih.services.wallet import pay_from_wallet_first
from tests.conftest import BUS_NAME, TABLE_NAME
from tests.fakes.billing_setup import CARD_TOKEN, DECLINING, add_method, mark_trialled, set_card_token
from tests.fakes.faults import Boundary, run_until_it_finishes
from tests.fakes.gateway_env import configure_gateways, event_queue, received_events
from tests.fakes.lambda_runtime import (
    Answer,
    FakeLambdaContext,
    call_api,
    call_route,
    http_event,
    load_function,
)
from tests.fakes.midtrans_server import NotificationInbox, running_midtrans_fake
from tests.integration.test_wallet import stored_invoice

TOP_UP = "/billing/wallet/top-up"
SUBS = "/billing/subscriptions"
AMOUNT = 150_000
PRO_WITH_PPN = 331_890  # 299,000 + 11 % PPN
KEY = {"Idempotency-Key": "the-request"}
TRIAL = timedelta(hours=1)
RETRY_LATER = timedelta(minutes=15)  # beyond paid_changes.ABANDONED_CHARGE and janitor.PROCESSING_STALE
T0 = datetime.now(UTC).replace(microsecond=0)


RUNNING: list[pytest.Item] = []  # the test running now, whose report carries its count


@pytest.fixture(autouse=True)
def count_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each flow's number of cases goes on its test's report, for the run's summary
    (``tests/conftest.py``), whatever the number of xdist workers."""
    RUNNING[:] = [request.node]
    yield
    RUNNING.clear()


@pytest.fixture
def inbox() -> Iterator[NotificationInbox]:
    with NotificationInbox() as receiver:
        yield receiver


@pytest.fixture
def midtrans(
    catalog: None, inbox: NotificationInbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MidtransFake]:
    with running_midtrans_fake(notification_url=inbox.url) as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=2.0)
        yield fake


# -- what a client does --------------------------------------------------------------------------------
def call(org: str, method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    return call_route("wallet", method, path, path, body=body, org=org, **kwargs)


def expire_requests_in_progress(org: str) -> None:
    """What the passing of time does to a dead request's Idempotency-Key record: its in-progress
    mark lapses (Powertools then runs the same key again instead of answering 409)."""
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    found = table.query(
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": f"IDEMPOTENCY#{org}"},
        ConsistentRead=True,
    )["Items"]
    for item in found:
        if item.get("status") == "INPROGRESS":
            table.update_item(
                Key={"PK": item["PK"], "SK": item["SK"]},
                UpdateExpression="SET in_progress_expiration = :lapsed",
                ExpressionAttributeValues={":lapsed": 1},
            )


def ledger(org: str) -> list[dict[str, Any]]:
    answer = call(org, "GET", "/billing/wallet/transactions", role="member")
    assert answer.status == 200, answer.raw
    return list(answer.body["items"])


def balance(org: str) -> int:
    answer = call(org, "GET", "/billing/wallet", role="member")
    assert answer.status == 200, answer.raw
    return int(answer.body["balance"])


def open_payments(org: str) -> list[dict[str, Any]]:
    """Charge attempts still in flight (claimed and never resolved)."""
    return [item for item in items(org, "PAYMENT#") if item.get("status") == "processing"]


def captures(midtrans: MidtransFake, orders: set[str]) -> list[dict[str, Any]]:
    return [c for c in midtrans.charges if c["order_id"] in orders and c["transaction_status"] == "capture"]


def captured(midtrans: MidtransFake) -> int:
    """Everything payers parted with at the Midtrans fake so far (cards captured, transfers settled;
    a card's verification charge is not captured)."""
    return midtrans.taken()


def items(org: str, prefix: str) -> list[dict[str, Any]]:
    return list(
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues={":pk": f"ORG#{org}", ":prefix": prefix},
            ConsistentRead=True,
        )["Items"]
    )


def invoices_paid(org: str) -> int:
    """What the organization's invoices say was paid to them by a gateway."""
    return sum(int(invoice["amount_paid"]) for invoice in items(org, "INVOICE#"))


def check_gapless_numbers() -> None:
    """Every invoice number handed out, in every organization, is used once, with no gap (numbers
    count from 1 in each year: ``INV-2026-0001``)."""
    scanned = boto3.resource("dynamodb").Table(TABLE_NAME).scan(ConsistentRead=True)["Items"]
    by_year: dict[str, list[int]] = {}
    for item in scanned:
        if str(item["SK"]).startswith("INVOICE#") and item.get("number"):
            _, year, sequence = str(item["number"]).split("-")
            by_year.setdefault(year, []).append(int(sequence))
    for year, sequences in by_year.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), year


# -- the harness ---------------------------------------------------------------------------------------
@dataclass
class Case:
    """One organization per case, set up before the crash window; what the gateway had captured then."""

    org: str
    captured_before: int
    card: str = ""
    ids: dict[str, Any] = field(default_factory=dict)


def billing() -> Billing:
    """The services' ports as the functions build them (built inside the crash window, so that
    their clients carry its hooks)."""
    return dataclasses.replace(wiring.default_billing(), trial_length=TRIAL)


def janitor_run() -> dict[str, Any]:
    """The timers function's scheduled ``reconcile``, as EventBridge invokes it."""
    answer: dict[str, Any] = load_function("timers").lambda_handler(
        {"action": "reconcile"}, FakeLambdaContext("TimersFunction")
    )
    return answer


def survives_every_crash(
    midtrans: MidtransFake,
    name: str,
    prepare: Callable[[Case], None],
    act: Callable[[Case], Any],
    check: Callable[[Case, Any], None],
    *,
    recover_by: Literal["retry", "janitor"] = "retry",
) -> int:
    """``act`` killed at every boundary, then recovered as its caller would (``act`` again, once
    the dead request's in-progress key lapsed; or, for a caller that never comes back, one janitor
    run), then ``check``ed with what the retry returned, and the money reconciled: captured at the
    gateway = paid on the organization's invoices + credited to its wallet; no attempt left claimed.
    Returns the number of cases."""
    cases: dict[int, Case] = {}

    def set_up(number: int) -> None:
        case = Case(org=f"org_fault_{name}_{number}", captured_before=captured(midtrans))
        prepare(case)
        cases[number] = case

    def run(number: int, boundary: Boundary) -> None:
        act(cases[number])

    def recover(number: int) -> None:
        case = cases[number]
        expire_requests_in_progress(case.org)
        # The retry comes once the dead request is surely dead: after its in-progress key lapsed
        # (the function's timeout) and a claim it left counts as abandoned.
        clock.use_wall_clock(lambda: datetime.now(UTC) + RETRY_LATER)
        try:
            retried = act(case) if recover_by == "retry" else janitor_run()
        finally:
            clock.use_wall_clock(None)
        check(case, retried)
        credited = sum(
            t["amount"] for t in ledger(case.org) if t["type"] == "top_up" and t["status"] == "succeeded"
        )
        assert captured(midtrans) - case.captured_before == invoices_paid(case.org) + credited, number
        assert open_payments(case.org) == [], number

    count = run_until_it_finishes(set_up, run, recover)
    check_gapless_numbers()
    print(f"{name}: {count} (boundary x crash) cases, each recovered and reconciled")
    for test in RUNNING:
        test.user_properties.append(("fault_cases", count))
    return count


def created(answer: Answer) -> dict[str, Any]:
    assert answer.status in (200, 201), answer.raw
    body: dict[str, Any] = answer.body
    return body


def attach_card(case: Case) -> None:
    case.card = add_method(case.org, {"type": "credit_card", "token": CARD_TOKEN})


def subscribed_pro(case: Case, status: str) -> None:
    attach_card(case)
    sub = subscriptions.subscribe(
        billing(),
        organization_id=case.org,
        plan_slug="pro",
        cycle="monthly",
        payment_method_id=case.card,
        now=T0,
    ).subscription
    assert sub.status == status
    case.ids["sub"] = sub


def active_pro(case: Case) -> None:
    mark_trialled(case.org)  # charged at once, no trial
    subscribed_pro(case, "active")


def trialing_pro(case: Case) -> None:
    subscribed_pro(case, "trialing")


def past_due_pro(case: Case) -> None:
    """A trial whose end was declined: past_due, an open invoice, its first dunning retry due; the
    card good again."""
    trialing_pro(case)
    good = set_card_token(case.org, case.card, DECLINING)
    sub = case.ids["sub"]
    failed = lifecycle.end_trial_action(billing(), case.org, sub.id, sub.version, T0 + TRIAL)
    assert (failed.reason, failed.invoice is not None) == ("payment_failed", True)
    set_card_token(case.org, case.card, good)
    case.ids["invoice"], case.ids["retry_at"] = failed.invoice, failed.next_retry_at


def stored_subscription(case: Case) -> dict[str, Any]:
    [sub] = items(case.org, "SUBSCRIPTION")
    return sub


def done_or_skipped(result: ActionResult) -> str:
    assert result.status in ("done", "skipped"), result
    return result.status


# -- wallet top-ups ------------------------------------------------------------------------------------
def test_a_card_top_up_killed_at_any_boundary_and_retried_charges_and_credits_once(
    midtrans: MidtransFake,
) -> None:
    def top_up(case: Case) -> dict[str, Any]:
        return created(call(case.org, "POST", TOP_UP, {"amount": AMOUNT}, headers=KEY))

    def check(case: Case, retried: dict[str, Any]) -> None:
        [entry] = ledger(case.org)
        assert (entry["id"], entry["status"], entry["amount"]) == (retried["id"], "succeeded", AMOUNT)
        assert len(captures(midtrans, {entry["gateway_order_id"]})) == 1
        assert balance(case.org) == AMOUNT

    assert survives_every_crash(midtrans, "card_top_up", attach_card, top_up, check) >= 10


def test_a_card_top_up_killed_at_any_boundary_and_never_retried_is_settled_by_one_janitor_run(
    midtrans: MidtransFake, timer_machines: dict[str, str]
) -> None:
    def top_up(case: Case) -> None:
        created(call(case.org, "POST", TOP_UP, {"amount": AMOUNT}, headers=KEY))

    def check(case: Case, janitor: dict[str, Any]) -> None:
        entries = ledger(case.org)
        assert [e["status"] for e in entries if e["status"] == "pending"] == [], (
            case.org,
            janitor,
            items(case.org, "PAYMENT#"),
        )
        credited = [e for e in entries if e["status"] == "succeeded"]
        assert balance(case.org) == sum(e["amount"] for e in credited)
        assert len(credited) <= 1
        again = janitor_run()  # a second run finds nothing left to do
        assert (again["settled"], again["failed"], again["unresolved"]) == (0, 0, 0)

    count = survives_every_crash(
        midtrans, "card_top_up_janitor", attach_card, top_up, check, recover_by="janitor"
    )
    assert count >= 10


def transfer_top_up(case: Case) -> dict[str, Any]:
    return created(
        call(case.org, "POST", TOP_UP, {"amount": AMOUNT, "payment_method_id": case.card}, headers=KEY)
    )


def attach_bca(case: Case) -> None:
    case.card = add_method(case.org, {"type": "bank_transfer", "bank": "bca"})


def deliver_notification(body: bytes) -> Answer:
    """A Midtrans notification, as API Gateway hands it to the gateway webhooks function."""
    event = http_event(
        "POST", "/webhooks/midtrans", raw_body="", headers={"content-type": "application/json"}
    )
    event["body"] = body.decode()
    return Answer(load_function("gateway_webhooks").lambda_handler(event, FakeLambdaContext()))


def test_a_transfer_top_up_killed_at_any_boundary_and_retried_keeps_one_order_credited_once_paid(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    def check(case: Case, retried: dict[str, Any]) -> None:
        assert (retried["status"], retried["payment_instructions"]["bank"]) == ("pending", "bca")
        [entry] = ledger(case.org)
        assert entry["id"] == retried["id"]
        order = str(entry["gateway_order_id"])
        assert midtrans.charge_count(order) == 1  # one virtual account, shown again to the retry
        midtrans.settle(order)
        assert deliver_notification(inbox.bodies[-1]).status == 200
        assert balance(case.org) == AMOUNT

    assert survives_every_crash(midtrans, "transfer_top_up", attach_bca, transfer_top_up, check) >= 10


def test_a_settlement_notification_killed_at_any_boundary_and_redelivered_credits_once(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    def pending_transfer(case: Case) -> None:
        attach_bca(case)
        entry = transfer_top_up(case)
        midtrans.settle(str(entry["gateway_order_id"]))  # the payer paid; Midtrans notifies
        case.ids["notification"] = inbox.bodies[-1]

    def notify(case: Case) -> Answer:  # Midtrans delivers until it is answered 200
        return deliver_notification(case.ids["notification"])

    def check(case: Case, redelivered: Answer) -> None:
        assert redelivered.status == 200, redelivered.raw
        [entry] = ledger(case.org)
        assert (entry["status"], entry["balance_after"]) == ("succeeded", AMOUNT)
        assert balance(case.org) == AMOUNT

    assert survives_every_crash(midtrans, "settlement_notification", pending_transfer, notify, check) >= 10


def test_an_auto_recharge_killed_at_any_boundary_is_finished_by_one_janitor_run(
    midtrans: MidtransFake, timer_machines: dict[str, str]
) -> None:
    def low_on_credit(case: Case) -> None:
        attach_card(case)
        created(call(case.org, "POST", TOP_UP, {"amount": 500_000}, headers={"Idempotency-Key": "first"}))
        settings = {"enabled": True, "threshold": 400_000, "amount": 100_000}
        assert call(case.org, "PUT", "/billing/wallet/auto-recharge", settings).status == 200
        case.ids["invoice"] = stored_invoice(100_000, org=case.org)  # 111,000 with PPN

    def pay_from_the_wallet(case: Case) -> None:  # the debit crosses the threshold: one recharge
        pay_from_wallet_first(billing(), case.ids["invoice"], clock.now())

    def check(case: Case, janitor: dict[str, Any]) -> None:
        entries = ledger(case.org)
        assert [e for e in entries if e["status"] == "pending"] == []
        paid = [e for e in entries if e["type"] == "invoice_payment" and e["status"] == "succeeded"]
        recharged = [e for e in entries if e["auto_recharge"] and e["status"] == "succeeded"]
        assert len(paid) <= 1
        assert len(recharged) <= 1
        assert balance(case.org) == 500_000 - 111_000 * len(paid) + 100_000 * len(recharged)

    count = survives_every_crash(
        midtrans, "auto_recharge", low_on_credit, pay_from_the_wallet, check, recover_by="janitor"
    )
    assert count >= 10


# -- invoices charged by a request -----------------------------------------------------------------------
def test_a_first_subscription_killed_at_any_boundary_and_retried_is_charged_and_paid_once(
    midtrans: MidtransFake,
) -> None:
    def prepare(case: Case) -> None:
        mark_trialled(case.org)  # charged at once, no trial
        attach_card(case)

    def subscribe(case: Case) -> dict[str, Any]:
        body = {"plan": "pro", "payment_method_id": case.card}
        return created(call_api("POST", SUBS, body=body, org=case.org, headers=KEY))

    def check(case: Case, retried: dict[str, Any]) -> None:
        assert retried["status"] == "active"
        [invoice] = items(case.org, "INVOICE#")
        assert (invoice["status"], int(invoice["amount_paid"])) == ("paid", PRO_WITH_PPN)

    assert survives_every_crash(midtrans, "first_charge", prepare, subscribe, check) >= 10


def test_paying_an_open_invoice_killed_at_any_boundary_and_retried_pays_it_once(
    midtrans: MidtransFake,
) -> None:
    def pay(case: Case) -> Answer:
        invoice = case.ids["invoice"]
        return call_api("POST", f"/billing/invoices/{invoice.id}/pay", body={}, org=case.org, headers=KEY)

    def check(case: Case, retried: Answer) -> None:
        # Killed after the invoice was paid but before its key's answer was kept, the retry runs
        # again and is told so (Stripe answers a paid invoice's pay the same way).
        if retried.status == 409:
            assert retried.error_code == "invoice_not_payable"
        else:
            assert (retried.status, retried.body["status"]) == (200, "paid"), retried.raw
        [invoice] = items(case.org, "INVOICE#")
        assert (invoice["status"], int(invoice["amount_paid"])) == ("paid", PRO_WITH_PPN)
        assert stored_subscription(case)["status"] == "active"

    assert survives_every_crash(midtrans, "pay_now", past_due_pro, pay, check) >= 10


def test_an_upgrade_killed_at_any_boundary_and_retried_is_charged_once(midtrans: MidtransFake) -> None:
    def upgrade(case: Case) -> dict[str, Any]:
        sub = case.ids["sub"]
        path = f"{SUBS}/{sub.id}/change"
        return created(call_api("POST", path, body={"plan": "business"}, org=case.org, headers=KEY))

    def check(case: Case, retried: dict[str, Any]) -> None:
        assert stored_subscription(case)["plan"] == "business"
        assert [i["status"] for i in items(case.org, "INVOICE#")] == ["paid", "paid"]

    assert survives_every_crash(midtrans, "plan_change", active_pro, upgrade, check) >= 10


def test_an_add_on_killed_at_any_boundary_and_retried_is_charged_once(midtrans: MidtransFake) -> None:
    def attach(case: Case) -> Answer:
        sub = case.ids["sub"]
        body = {"addon": "extra-members", "quantity": 5}
        return call_api("POST", f"{SUBS}/{sub.id}/addons", body=body, org=case.org, headers=KEY)

    def check(case: Case, retried: Answer) -> None:
        # Killed after the add-on was written but before its key's answer was kept, the retry is
        # told it is attached; otherwise it finishes the first try's charge.
        if retried.status == 409:
            assert retried.error_code == "addon_already_attached"
        else:
            assert (retried.status, retried.body["quantity"]) == (201, 5), retried.raw
        [item] = stored_subscription(case)["addons"]
        assert (item["slug"], int(item["quantity"])) == ("extra-members", 5)
        assert [i["status"] for i in items(case.org, "INVOICE#")] == ["paid", "paid"]

    assert survives_every_crash(midtrans, "add_on", active_pro, attach, check) >= 10


# -- invoices charged by a timer ---------------------------------------------------------------------------
def test_a_trial_end_killed_at_any_boundary_and_retried_by_its_timer_is_paid_once(
    midtrans: MidtransFake,
) -> None:
    def end_trial(case: Case) -> str:
        sub = case.ids["sub"]
        return done_or_skipped(
            lifecycle.end_trial_action(billing(), case.org, sub.id, sub.version, T0 + TRIAL)
        )

    def check(case: Case, status: str) -> None:
        assert stored_subscription(case)["status"] == "active"
        [invoice] = items(case.org, "INVOICE#")
        assert (invoice["status"], int(invoice["amount_paid"])) == ("paid", PRO_WITH_PPN)

    assert survives_every_crash(midtrans, "trial_end", trialing_pro, end_trial, check) >= 10


def test_a_renewal_killed_at_any_boundary_and_retried_by_its_timer_is_paid_once(
    midtrans: MidtransFake,
) -> None:
    def renew(case: Case) -> str:
        sub = case.ids["sub"]
        return done_or_skipped(
            lifecycle.renew_action(billing(), case.org, sub.id, sub.version, sub.current_period_end)
        )

    def check(case: Case, status: str) -> None:
        renewed = stored_subscription(case)
        assert (renewed["status"], renewed["current_period_start"]) == (
            "active",
            case.ids["sub"].current_period_end.isoformat().replace("+00:00", "Z"),
        )
        assert [i["status"] for i in items(case.org, "INVOICE#")] == ["paid", "paid"]

    assert survives_every_crash(midtrans, "renewal", active_pro, renew, check) >= 10


def test_a_dunning_retry_killed_at_any_boundary_and_retried_by_its_timer_pays_once(
    midtrans: MidtransFake,
) -> None:
    def retry(case: Case) -> str:
        invoice = case.ids["invoice"]
        return done_or_skipped(
            dunning.retry_payment_action(billing(), case.org, invoice.id, 1, case.ids["retry_at"])
        )

    def check(case: Case, status: str) -> None:
        assert stored_subscription(case)["status"] == "active"
        [invoice] = items(case.org, "INVOICE#")
        assert (invoice["status"], int(invoice["amount_paid"])) == ("paid", PRO_WITH_PPN)

    assert survives_every_crash(midtrans, "dunning_retry", past_due_pro, retry, check) >= 10


# -- money that pays nothing ---------------------------------------------------------------------------
def test_a_transfer_that_lost_the_race_to_a_card_is_credited_to_the_wallet_once_with_an_event(
    midtrans: MidtransFake, inbox: NotificationInbox
) -> None:
    org = "org_fault_superseded"
    queue = event_queue(BUS_NAME)
    mark_trialled(org)
    bca = add_method(org, {"type": "bank_transfer", "bank": "bca"})
    card = add_method(org, {"type": "credit_card", "token": CARD_TOKEN})
    started = created(call_api("POST", SUBS, body={"plan": "pro", "payment_method_id": bca}, org=org))
    assert started["status"] == "incomplete"
    [invoice] = items(org, "INVOICE#")
    order = str(invoice["gateway_invoice_id"])  # the virtual account the payer was shown
    midtrans.settle(order)  # the payer transfers to it; its notification is on its way...
    late = inbox.bodies[-1]
    # ... while someone pays the invoice by card: the virtual account, paid already, cannot be cancelled
    paid = call_api(
        "POST", f"/billing/invoices/{invoice['id']}/pay", body={"payment_method_id": card}, org=org
    )
    assert (paid.status, paid.body["status"]) == (200, "paid"), paid.raw

    for _ in range(2):  # and Midtrans delivers its notification twice
        event = http_event(
            "POST", "/webhooks/midtrans", raw_body="", headers={"content-type": "application/json"}
        )
        event["body"] = late.decode()
        delivered = Answer(load_function("gateway_webhooks").lambda_handler(event, FakeLambdaContext()))
        assert delivered.status == 200, delivered.raw

    [adjustment] = [t for t in ledger(org) if t["type"] == "adjustment"]
    assert (adjustment["status"], adjustment["amount"], adjustment["invoice_id"]) == (
        "succeeded",
        PRO_WITH_PPN,
        invoice["id"],
    )
    assert balance(org) == PRO_WITH_PPN  # the card paid the invoice; the transfer is the wallet's
    assert invoices_paid(org) == PRO_WITH_PPN
    unapplied: list[Any] = [
        e["detail"] for e in received_events(queue) if e["detail-type"] == "billing.payment.unapplied"
    ]
    assert [u["data"] for u in unapplied] == [
        {
            "reference": order,
            "gateway": "midtrans",
            "amount": PRO_WITH_PPN,
            "currency": "IDR",
            "invoice_id": invoice["id"],
            "reason": "invoice_already_paid",
            "resolution": "credited_to_wallet",
            "transaction_id": adjustment["id"],
        }
    ]


def test_paying_an_invoice_by_card_cancels_the_virtual_account_it_showed(midtrans: MidtransFake) -> None:
    org = "org_fault_cancelled"
    mark_trialled(org)
    bca = add_method(org, {"type": "bank_transfer", "bank": "bca"})
    card = add_method(org, {"type": "credit_card", "token": CARD_TOKEN})
    created(call_api("POST", SUBS, body={"plan": "pro", "payment_method_id": bca}, org=org))
    [invoice] = items(org, "INVOICE#")
    order = str(invoice["gateway_invoice_id"])

    paid = call_api(
        "POST", f"/billing/invoices/{invoice['id']}/pay", body={"payment_method_id": card}, org=org
    )

    assert (paid.status, paid.body["status"]) == (200, "paid"), paid.raw
    transfer = midtrans.transaction(order)
    assert transfer is not None
    assert transfer["transaction_status"] == "cancel"  # nobody can pay the invoice a second time


def test_a_first_charge_the_gateway_did_not_answer_keeps_the_subscription_for_its_retry(
    midtrans: MidtransFake,
) -> None:
    org = "org_fault_in_doubt"
    mark_trialled(org)
    card = add_method(org, {"type": "credit_card", "token": CARD_TOKEN})
    good = set_card_token(org, card, "481111-hang-saved-1114")  # Midtrans does not answer
    body = {"plan": "pro", "payment_method_id": card}

    unanswered = call_api("POST", SUBS, body=body, org=org, headers=KEY)

    assert (unanswered.status, unanswered.error_code) == (503, "gateway_unavailable"), unanswered.raw
    # The money may have been taken: nothing is deleted, the charge stays claimed.
    assert stored_subscription_status(org) == "incomplete"
    assert [p["status"] for p in items(org, "PAYMENT#")] == ["processing"]
    set_card_token(org, card, good)
    retried = call_api("POST", SUBS, body=body, org=org, headers=KEY)
    assert (retried.status, retried.body["status"]) == (201, "active"), retried.raw
    [invoice] = items(org, "INVOICE#")
    assert (invoice["status"], int(invoice["amount_paid"])) == ("paid", PRO_WITH_PPN)
    assert len(captures(midtrans, {f"{invoice['SK'].removeprefix('INVOICE#')}-a1"})) == 1


def stored_subscription_status(org: str) -> str:
    [sub] = items(org, "SUBSCRIPTION")
    return str(sub["status"])
