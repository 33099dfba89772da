"""AWS operations, DynamoDB capacity and handler time per request, for every HTTP route (issue 20).

    python -m tools.bench_calls

In-process on moto: the table, bus, queues, bucket and timer state machines as template.yaml and the
tests make them, the Midtrans fake as the gateway, a webhook receiver on 127.0.0.1. One organization
goes through every route of template.yaml once, in an order where each answers its success status (a
test clock and an operator's target are organizations of their own), then the non-HTTP work of its
month: the authorizer for an API key, a webhook delivery and fan-out, a usage-ingest batch, the
renewal sweep's page and the renewal. The scenario runs twice in one moto: a warm-up pass (other
organizations; every module, code path and client warm), then the measured one.

Per request, ``tests/fakes/aws_costs.py`` counts each AWS operation and computes DynamoDB capacity
from the items' sizes by DynamoDB's rules (moto reports placeholders; shown beside, ``moto``). The
gateway-key cache starts the measured pass empty: the first request needing a gateway shows its
GetSecretValue (once per container per SECRETS_MAX_AGE_SECONDS, not per request). ``clk`` counts the
API kernel's test-clock GetItem, made on every request outside prod (this runs as ``dev``).

Numbers only: exit 0 whatever they are; a route that cannot be driven (an exception, a 5xx, a route of
template.yaml the scenario does not reach) fails the bench.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.fakes.lambda_runtime import (
    ROOT,
    FakeLambdaContext,
    PinnedClock,
    http_event,
    load_function,
    principal,
)

sys.path.append(str(ROOT / "layers" / "common" / "python"))  # the layer, as Lambda mounts it

from local.aws import make_dynamodb_calls_atomic, make_dynamodb_transactions_copy_once
from local.dispatch import sqs_record
from local.midtrans_fake import MidtransFake
from tagih import clock
from tagih.clock import parse_rfc3339, to_rfc3339
from tagih.domain.catalog import default_catalog
from tagih.gateways.registry import reset_default_gateways
from tagih.gateways.secrets import reset_secrets
from tagih.store import catalog as catalog_store
from tests.conftest import BUS_NAME, TABLE_NAME, WEBHOOK_SECRETS_KEY, create_timer_machines, table_definition
from tests.fakes.aws_costs import CostRecorder
from tests.fakes.billing_setup import CARD_TOKEN, add_method, mark_trialled
from tests.fakes.gateway_env import STRIPE_WEBHOOK_SECRET, configure_gateways, event_queue
from tests.fakes.key_source import authorizer_event
from tests.fakes.lambda_runtime import call_api
from tests.fakes.midtrans_server import running_midtrans_fake
from tests.fakes.webhooks import Receiver, running_receiver
from tests.integration.test_invoice_pdf_and_pages import open_invoice
from tests.integration.test_operator_api import ENTERPRISE
from tools.functions import Function, load_functions

READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_HTTP = frozenset({"REQUEST", "SQS", "TASK"})
BUCKET = "tagih-bench-invoices"
FROZEN = datetime(2027, 1, 1, tzinfo=UTC)
USAGE_BATCH = 100  # events in the measured POST /billing/usage/events, the gauge among them


@dataclass(frozen=True)
class RouteCost:
    """One measured request or task: what it asked of AWS and how long its handler ran (warm)."""

    function: str  # template logical id, "SubscriptionsFunction"
    method: str  # "GET" …, or "REQUEST" (authorizer), "SQS", "TASK" (a state machine's Lambda task)
    route: str  # the template's path, or what the task is ("renew")
    status: int  # HTTP status; 200 for non-HTTP work that completed
    duration_ms: float  # perf_counter around the handler call
    calls: dict[str, int]  # {"dynamodb.GetItem": 1, "events.PutEvents": 1, …}
    transact_items: int  # items of its TransactWriteItems, summed
    put_events_entries: int
    rcu: float
    wcu: float  # the table's own; transactions doubled
    capacity_source: str  # "computed" from item sizes (tests/fakes/aws_costs.py); "" without DynamoDB
    variant: str = ""  # "first render", "cached", …
    gsi_wcu: float = 0.0  # writes to the GSIs the items are projected into
    moto_capacity: float = 0.0  # what moto reported (placeholders), for comparison
    sfn_transitions: int = 0  # Step Functions state transitions of this step (renewal path)
    test_clock_reads: int = 0  # the kernel's test-clock GetItem (not made on prod)
    aws_ms: float = 0.0  # of duration_ms, the time spent inside AWS calls (on moto)

    def dynamodb_calls(self, names: frozenset[str] | None = None) -> int:
        found = ((n[9:], c) for n, c in self.calls.items() if n.startswith("dynamodb."))
        return sum(c for n, c in found if names is None or n in names)

    @property
    def label(self) -> str:
        return f"{self.method} {self.route}" + (f" ({self.variant})" if self.variant else "")


# -- driving the handlers ----------------------------------------------------------------------------------
class _Discard(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The handlers log and flush metrics (EMF) to stdout, as in Lambda: discarded here."""
    sink = _Discard()
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    bound = [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout
    ]
    for handler in bound:  # loggers made at import, before the redirection
        handler.setStream(sink)
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "No application metrics to publish")
            yield
    finally:
        for handler in bound:
            handler.setStream(sys.stdout)


class Bench:
    """Calls handlers as API Gateway, SQS and Step Functions do, one row per call."""

    def __init__(self, recorder: CostRecorder, functions: list[Function], suffix: str) -> None:
        self.recorder, self.suffix = recorder, suffix
        self.rows: list[RouteCost] = []
        self.logical_ids = {f.folder: f.logical_id for f in functions}
        self.routes = {(r.method, r.path): (f.folder, r.authorized) for f in functions for r in f.routes}

    def task(self, folder: str, method: str, route: str, event: dict[str, Any], **extra: Any) -> Any:
        handler, context = load_function(folder).lambda_handler, FakeLambdaContext(self.logical_ids[folder])
        with self.recorder.recording() as sample:
            started = time.perf_counter()
            result = handler(event, context)
            elapsed = (time.perf_counter() - started) * 1000
        if method == "SQS" and result.get("batchItemFailures"):
            raise RuntimeError(f"{folder} failed its records: {result}")
        if method == "REQUEST" and "auth_error" in result["context"]:
            raise RuntimeError(f"the authorizer refused: {result}")
        self.rows.append(
            RouteCost(
                function=self.logical_ids[folder],
                method=method,
                route=route,
                status=200 if method in NOT_HTTP else int(result["statusCode"]),
                duration_ms=round(elapsed, 2),
                calls=dict(sorted(sample.calls.items())),
                transact_items=sample.transact_items,
                put_events_entries=sample.put_events_entries,
                rcu=sample.rcu,
                wcu=sample.wcu,
                capacity_source="computed" if any(c.startswith("dynamodb.") for c in sample.calls) else "",
                gsi_wcu=sample.gsi_wcu,
                moto_capacity=sample.moto,
                test_clock_reads=sample.test_clock_reads,
                aws_ms=round(sample.aws_ms, 2),
                **extra,
            )
        )
        return result

    def http(self, method: str, route: str, org: str, params: Mapping[str, str] | None, **kw: Any) -> Any:
        """``kw``: body, raw_body, query, headers, authorizer, role, variant. Returns the JSON body."""
        folder, authorized = self.routes[(method, route)]
        role, variant = kw.pop("role", "owner"), kw.pop("variant", "")
        authorizer = kw.pop("authorizer", None) or principal(org, role)
        path = route.format(**(params or {}))
        parameters = dict(params) if params else None
        event = http_event(method, path, route=route, path_parameters=parameters, **kw)
        if authorized:
            event["requestContext"]["authorizer"] = {"lambda": authorizer}
        result = self.task(folder, method, route, event, variant=variant)
        json_body = str(result.get("headers", {}).get("Content-Type", "")).startswith("application/json")
        return json.loads(result["body"]) if json_body and result.get("body") else {}


def _take(queue_url: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first message of the queue that is ``wanted`` (others are dropped), as Lambda's poller hands it."""
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    end = time.monotonic() + 10
    while time.monotonic() < end:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if wanted(json.loads(message["Body"])):
                return sqs_record(message, arn)
        time.sleep(0.05)
    raise RuntimeError(f"no wanted message on {queue_url}")


def _renewal_transitions() -> tuple[int, int]:
    """State transitions in statemachines/renewal.asl.json: (a sweep of one page, each renewal's Map item)."""
    machine = json.loads((ROOT / "statemachines" / "renewal.asl.json").read_text(encoding="utf-8"))

    def walk(states: dict[str, Any], name: str) -> tuple[int, int]:
        entered, per_item = 0, 0
        while True:
            state, entered = states[name], entered + 1
            if state["Type"] == "Map":
                per_item = walk(state["ItemProcessor"]["States"], state["ItemProcessor"]["StartAt"])[0]
            if state["Type"] == "Choice":
                name = state["Choices"][0]["Next"]  # the last page: no cursor left
            elif "Next" in state:
                name = state["Next"]
            else:
                return entered, per_item

    return walk(machine["States"], machine["StartAt"])


def _stripe_event(org: str) -> tuple[str, dict[str, str]]:
    """A payment_intent.succeeded of no payment Tagih made, signed as Stripe signs it."""
    intent = {"id": f"pi_{org}", "object": "payment_intent", "amount": 2900, "currency": "usd"}
    intent |= {"status": "succeeded", "metadata": {"reference": f"inv_{org}_stripe-a1"}}
    at = int(time.time())
    event = {"id": f"evt_{org}", "object": "event", "type": "payment_intent.succeeded", "created": at}
    payload = json.dumps({**event, "livemode": False, "data": {"object": intent}})
    digest = hmac.new(STRIPE_WEBHOOK_SECRET.encode(), f"{at}.{payload}".encode(), hashlib.sha256).hexdigest()
    return payload, {"user-agent": "Stripe/1.0", "stripe-signature": f"t={at},v1={digest}"}


def _scenario(b: Bench, fake: MidtransFake, receiver: Receiver, queues: Mapping[str, str]) -> None:  # noqa: PLR0915
    org = f"org_bench{b.suffix}"

    def call(method: str, route: str, params: Mapping[str, str] | None = None, **kw: Any) -> Any:
        return b.http(method, route, kw.pop("org", org), params, **kw)

    call("GET", "/billing/plans")
    call("GET", "/billing/addons")
    account_body = {"name": "PT Bench Jaya", "email": "finance@bench.example", "phone": "+62 21 5550100"}
    account = {"account_id": call("POST", "/billing/accounts", body=account_body)["id"]}
    call("GET", "/billing/accounts")
    call("GET", "/billing/accounts/{account_id}", account)
    call("PATCH", "/billing/accounts/{account_id}", account, body={"description": "Finance team"})
    spare = call_api("POST", "/billing/accounts", org=org, body={**account_body, "name": "PT Spare"}).body
    call("DELETE", "/billing/accounts/{account_id}", {"account_id": spare["id"]})  # not the default

    key = call("POST", "/billing/api-keys", body={"name": "CI deploys"})
    call("GET", "/billing/api-keys")
    headers = {"Authorization": f"Bearer {key['key']}", "X-Organization-ID": org}
    b.task("authorizer", "REQUEST", "API key", authorizer_event(headers, path="/billing/subscription"))
    call("DELETE", "/billing/api-keys/{key_id}", {"key_id": key["id"]})

    card_body = {"type": "credit_card", "token": CARD_TOKEN}
    call("POST", "/billing/payment-methods", body=card_body)
    call("GET", "/billing/payment-methods")
    card = add_method(org, card_body)
    call("POST", "/billing/payment-methods/{payment_method_id}/default", {"payment_method_id": card})
    spare_card = {"payment_method_id": add_method(org, card_body)}
    call("DELETE", "/billing/payment-methods/{payment_method_id}", spare_card)

    # An endpoint at the local receiver: its test event is the delivery measured.
    created = call("POST", "/billing/webhooks", body={"url": receiver.url, "events": ["*"]})
    hook = {"webhook_id": created["id"]}
    call("GET", "/billing/webhooks")
    call("POST", "/billing/webhooks/{webhook_id}/test", hook)
    delivery = _take(queues["deliveries"], lambda body: body.get("webhook_id") == created["id"])
    received = len(receiver.requests())
    b.task("webhook_dispatch", "SQS", "webhook delivery", {"Records": [delivery]})
    if len(receiver.requests()) != received + 1 or receiver.requests()[-1].answered != 200:
        raise RuntimeError("the test event did not reach the receiver")
    call("GET", "/billing/webhooks/{webhook_id}/deliveries", hook)
    call("POST", "/billing/webhooks/{webhook_id}/rotate-secret", hook)

    # No trial (the organization had one): the first invoice is charged at once to the default card.
    mark_trialled(org)
    sub = {"subscription_id": call("POST", "/billing/subscriptions", body={"plan": "pro"})["id"]}
    one = "/billing/subscriptions/{subscription_id}"
    call("GET", "/billing/subscription")
    call("GET", one, sub)
    call("POST", one + "/change/preview", sub, body={"plan": "business"})
    call("POST", one + "/change", sub, body={"plan": "business"})  # an upgrade, charged
    call("PATCH", one, sub, body={"plan": "pro"})  # a downgrade, at the period's end
    addon = call("POST", one + "/addons", sub, body={"addon": "extra-members", "quantity": 2})["id"]
    call("GET", one + "/addons", sub)
    call("PATCH", one + "/addons/{item_id}", {**sub, "item_id": addon}, body={"quantity": 3})
    call("DELETE", one + "/addons/{item_id}", {**sub, "item_id": addon})

    def paid(event: dict[str, Any]) -> bool:
        return (
            event.get("detail-type") == "billing.invoice.paid" and event["detail"]["organization_id"] == org
        )

    b.task("webhook_dispatch", "SQS", "webhook fan-out", {"Records": [_take(queues["events"], paid)]})
    call("DELETE", "/billing/webhooks/{webhook_id}", hook)

    gauge = {"id": f"{org}-2", "metric": "members", "quantity": 4, "action": "set"}
    # A typical batch of USAGE_BATCH events, as the cost model's month sends them (tools/bench_cost.py).
    counted = [{"id": f"{org}-{i}", "metric": "api_calls", "quantity": 12} for i in range(3, USAGE_BATCH + 2)]
    reported = [*counted, gauge]
    call("POST", "/billing/usage/events", body={"events": reported})
    call("GET", "/billing/usage")
    call("GET", "/billing/usage/{metric}", {"metric": "api_calls"})
    call("GET", "/billing/usage/history")
    call("GET", "/billing/entitlements")
    events = [{"id": f"{org}-ingest-{i}", "metric": "api_calls", "quantity": 50} for i in range(10)]
    message = {
        "detail-type": "usage",
        "source": "tagih.usage",
        "detail": {"organization_id": org, "events": events},
    }
    boto3.client("sqs").send_message(QueueUrl=queues["usage"], MessageBody=json.dumps(message))
    record = _take(queues["usage"], lambda body: body["detail"]["organization_id"] == org)
    b.task("usage_ingest", "SQS", "usage batch (1 message, 10 events)", {"Records": [record]})

    invoice = open_invoice(org)  # one-off, open: to read, render, show and pay
    inv = {"invoice_id": invoice.id}
    call("GET", "/billing/invoices")
    call("GET", "/billing/invoices/{invoice_id}", inv)
    call("GET", "/billing/invoices/{invoice_id}/pdf", inv, variant="first render")
    call("GET", "/billing/invoices/{invoice_id}/pdf", inv, variant="cached")
    call("GET", "/billing/invoices/{invoice_id}/hosted", inv, query={"token": invoice.hosted_token or ""})
    call("POST", "/billing/invoices/{invoice_id}/pay", inv, body={})

    # A wallet (its organization's own, so the renewal below is a card's), topped up by BCA virtual
    # account: Midtrans' signed settlement credits it.
    payer = f"org_bench_wallet{b.suffix}"
    call_api("POST", "/billing/accounts", org=payer, body=account_body)
    payer_card = add_method(payer, card_body)
    bca = add_method(payer, {"type": "bank_transfer", "bank": "bca"})
    call("GET", "/billing/wallet", org=payer)
    recharge = {"enabled": True, "threshold": 100_000, "amount": 200_000, "payment_method_id": payer_card}
    call("PUT", "/billing/wallet/auto-recharge", org=payer, body=recharge)
    top_up_body = {"amount": 200_000, "payment_method_id": bca}
    top_up = call("POST", "/billing/wallet/top-up", org=payer, body=top_up_body)
    settled = fake.settle(str(top_up["gateway_order_id"]))["notification"]
    call("POST", "/webhooks/midtrans", raw_body=json.dumps(settled), headers={"user-agent": "Veritrans"})
    call("GET", "/billing/wallet/transactions", org=payer)
    # Stripe: a correctly signed event of no payment of Tagih's, acknowledged ("ignored"). Nothing here
    # pays through Stripe (localstripe is not started), so no Stripe payment of Tagih's exists to settle.
    payload, signed = _stripe_event(org)
    call("POST", "/webhooks/stripe", raw_body=payload, headers=signed)

    call("POST", one + "/cancel", sub)
    call("POST", one + "/reactivate", sub)

    clocked = f"org_bench_clock{b.suffix}"  # a test clock needs an organization never subscribed
    call("POST", "/billing/test-clock", org=clocked, body={"frozen_time": to_rfc3339(FROZEN)})
    call("GET", "/billing/test-clock", org=clocked)
    add_method(clocked, card_body)
    trial = call_api("POST", "/billing/subscriptions", org=clocked, body={"plan": "pro"})
    if trial.status != 201:
        raise RuntimeError(f"the test clock's trial was refused: {trial.raw}")
    to = to_rfc3339(FROZEN + timedelta(days=14))  # through the trial's notice and end (charged)
    call("POST", "/billing/test-clock/advance", org=clocked, body={"to": to})

    target = {"org_id": f"org_bench_enterprise{b.suffix}"}
    operator = principal(f"org_ops{b.suffix}", "", "op_1", "billing:operator")
    for action, body in (("enterprise", ENTERPRISE), ("suspend", {"reason": "review"}), ("unsuspend", None)):
        route = f"/billing/operator/organizations/{{org_id}}/{action}"
        call("POST", route, target, body=body, authorizer=operator)

    # The month ends: the hourly sweep finds the renewal in a page, and the page's Map item renews it.
    ends = parse_rfc3339(call_api("GET", "/billing/subscription", org=org).body["current_period_end"])
    sweep, per_renewal = _renewal_transitions()
    clock.use_wall_clock(PinnedClock(ends + timedelta(minutes=30)))
    try:
        find = {"action": "find_due_renewals", "at": to_rfc3339(clock.now()), "cursor": ""}
        page = b.task("timers", "TASK", "find_due_renewals", find, sfn_transitions=sweep)
        b.rows[-1] = dataclasses.replace(b.rows[-1], variant=f"a page of {len(page['items'])} due")
        [due] = [item for item in page["items"] if item["organization_id"] == org]
        renewed = b.task("timers", "TASK", "renew", due, sfn_transitions=per_renewal)
        if renewed["status"] != "done":
            raise RuntimeError(f"the renewal did not happen: {renewed}")
    finally:
        clock.use_wall_clock(None)


# -- the run -----------------------------------------------------------------------------------------------
def _stack(mp: pytest.MonkeyPatch) -> dict[str, str]:
    """Inside moto: the environment, and what template.yaml deploys that the handlers reach."""
    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    stack = {"TABLE_NAME": TABLE_NAME, "EVENT_BUS_NAME": BUS_NAME, "STAGE": "dev", "INVOICE_BUCKET": BUCKET}
    powertools = {"POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_NAMESPACE": "TagihBench"}
    for name, value in {**aws, **stack, **powertools, "POWERTOOLS_SERVICE_NAME": "tagih-bench"}.items():
        mp.setenv(name, value)
    mp.setenv("WEBHOOK_ALLOW_LOOPBACK", "true")  # the receiver is on 127.0.0.1, as on the local stack
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        mp.delenv(name, raising=False)
    make_dynamodb_calls_atomic()
    make_dynamodb_transactions_copy_once()
    boto3.client("dynamodb").create_table(**table_definition())
    boto3.client("events").create_event_bus(Name=BUS_NAME)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    kms = boto3.client("kms")  # webhook secrets are stored encrypted with the stack's key
    kms.create_alias(AliasName=WEBHOOK_SECRETS_KEY, TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    mp.setenv("WEBHOOK_SECRETS_KEY", WEBHOOK_SECRETS_KEY)
    sqs = boto3.client("sqs")
    queues = {
        n: sqs.create_queue(QueueName=f"tagih-bench-{n}")["QueueUrl"] for n in ("deliveries", "dlq", "usage")
    }
    queues["events"] = event_queue(BUS_NAME)
    mp.setenv("WEBHOOK_DELIVERY_QUEUE_URL", queues["deliveries"])
    mp.setenv("WEBHOOK_DEAD_LETTER_QUEUE_URL", queues["dlq"])
    create_timer_machines(mp, prefix="tagih-bench")
    return queues


def measure() -> list[RouteCost]:
    """Every route and the month's non-HTTP work, once each after a warm-up pass: one row per request."""
    functions = load_functions()
    with (
        pytest.MonkeyPatch.context() as mp,
        mock_aws(),
        running_midtrans_fake() as fake,
        running_receiver() as receiver,
        _quiet(),
    ):
        queues = _stack(mp)
        for function in functions:
            load_function(function.folder)  # imported once, as a container's init does
        recorder = CostRecorder()
        configure_gateways(mp, midtrans=fake)
        catalog_store.put_catalog(default_catalog())
        _scenario(Bench(recorder, functions, "_warm"), fake, receiver, queues)
        reset_secrets()  # the keys leave the cache: the first gateway request fetches them again
        reset_default_gateways()
        measured = Bench(recorder, functions, "")
        _scenario(measured, fake, receiver, queues)
    if recorder.errors:
        raise RuntimeError(f"{len(recorder.errors)} hook errors, the first: {recorder.errors[0]!r}")
    missing = set(measured.routes) - {(row.method, row.route) for row in measured.rows}
    if missing:
        raise RuntimeError(f"routes of template.yaml the scenario did not call: {sorted(missing)}")
    return measured.rows


def _calls_text(row: RouteCost) -> str:
    sizes = {
        "TransactWriteItems": f"[{row.transact_items}]",
        "events.PutEvents": f"[{row.put_events_entries}]",
    }
    labels = ((name.removeprefix("dynamodb."), count) for name, count in row.calls.items())
    return " ".join(label + sizes.get(label, "") + (f"x{n}" if n > 1 else "") for label, n in labels)


def report(rows: list[RouteCost]) -> str:
    """The table, then the goals' check (numbers only)."""
    lines = [
        f"{'function':<18} {'request':<78} {'st':>3} {'ms':>6} {'R':>2} {'clk':>3} {'W':>2} {'RCU':>5} "
        f"{'WCU':>5} {'GSI':>3} {'moto':>5} {'sfn':>3}  calls ([n]: transaction items, PutEvents entries)"
    ]
    for r in rows:
        reads = r.dynamodb_calls(READS)
        lines.append(
            f"{r.function.removesuffix('Function'):<18} {r.label:<78} {r.status:>3} {r.duration_ms:>6.1f} "
            f"{reads:>2} {r.test_clock_reads:>3} {r.dynamodb_calls() - reads:>2} {r.rcu:>5.1f} {r.wcu:>5.1f} "
            f"{r.gsi_wcu:>3.0f} {r.moto_capacity:>5.1f} {r.sfn_transitions or '':>3}  {_calls_text(r)}"
            + ("" if 200 <= r.status < 300 else "   <-- NOT 2xx")
        )
    http = [r for r in rows if r.method not in NOT_HTTP]
    gets = [r for r in http if r.method == "GET"]
    writes = [r for r in http if r.method in WRITE_METHODS]

    def listed(found: list[RouteCost], what: Callable[[RouteCost], str], among: int | None = None) -> str:
        count = f"{len(found)}" if among is None else f"{len(found)} of {among}"
        return count + "".join(f"\n    {r.label}: {what(r)}" for r in found)

    def reads_on(r: RouteCost, prod: bool = False) -> int:
        return r.dynamodb_calls(READS) - (r.test_clock_reads if prod else 0)

    def others(r: RouteCost, prod: bool = False) -> int:  # DynamoDB calls besides its transactions
        transactions = r.calls.get("dynamodb.TransactWriteItems", 0)
        return r.dynamodb_calls() - transactions - (r.test_clock_reads if prod else 0)

    def over_write_budget(r: RouteCost, prod: bool = False) -> bool:
        transactions = r.calls.get("dynamodb.TransactWriteItems", 0)
        return r.method in WRITE_METHODS and (transactions > 1 or others(r, prod) > 1)

    lines += [
        "",
        "R: DynamoDB read calls (clk of them: the test-clock GetItem, not on prod), W: other DynamoDB calls; "
        "RCU/WCU/GSI computed from item sizes, moto: its placeholders; sfn: state transitions.",
        "goal: one DynamoDB read call for a simple GET -- over here: "
        + listed(
            [r for r in gets if reads_on(r) > 1],
            lambda r: f"{reads_on(r)} reads: {_calls_text(r)}",
            len(gets),
        ),
        "  over on prod (without the test-clock read): "
        + listed(
            [r for r in gets if reads_on(r, prod=True) > 1],
            lambda r: f"{reads_on(r, prod=True)} reads",
            len(gets),
        ),
        "goal: at most one transaction plus one other DynamoDB call per write -- over: "
        + listed([r for r in http if over_write_budget(r)], _calls_text, len(writes)),
        "  over on prod (without the test-clock read): "
        + listed(
            [r for r in http if over_write_budget(r, prod=True)],
            lambda r: f"{others(r, prod=True)} others",
            len(writes),
        ),
        "goal: no Scan -- " + listed([r for r in rows if r.calls.get("dynamodb.Scan")], _calls_text),
        "not 2xx: " + listed([r for r in rows if not 200 <= r.status < 300], lambda r: str(r.status)),
    ]
    return "\n".join(lines)


def main() -> int:
    started = time.perf_counter()
    rows = measure()
    print(report(rows))
    print(f"{len(rows)} requests measured; {time.perf_counter() - started:.1f} s with the warm-up pass")
    return 1 if any(row.status >= 500 for row in rows) else 0  # a 5xx: a route that could not be driven


if __name__ == "__main__":
    raise SystemExit(main())
