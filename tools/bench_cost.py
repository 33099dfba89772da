"""What Tagih costs on AWS per active subscription-month, from the measured calls per request.

    python -m tools.bench_cost

The month of one active organization (``MONTH``) is priced from what ``tools.bench_calls``
measured for each request on moto: the AWS operations, DynamoDB capacity units, events and
timer starts it made, and its handler time. Prices are AWS's public on-demand prices for
us-east-1 (``PRICES``; free tiers left out, so this is what the thousandth tenant costs). What
does not grow with tenants (the hourly renewal sweep, queue polling, secrets, metrics, the
tracing reservoir) is priced separately as the fixed monthly cost.

Lambda time on moto is not Lambda time on AWS: the time spent inside moto is taken out of each
handler's measured time and every AWS call is charged a typical in-region latency instead
(``CALL_LATENCY_MS``); a renewal's charge waits for the payment gateway (``GATEWAY_CHARGE_MS``).
The bench runs on a dev stage, so the test-clock read the API kernel makes outside production is
taken out too. Numbers only: nothing here fails on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from local.cfn_yaml import load_template
from tests.fakes.lambda_runtime import ROOT
from tools import bench_calls
from tools.bench_calls import NOT_HTTP, USAGE_BATCH, RouteCost

GOAL_USD = 0.001  # per active subscription-month, fixed costs excluded
IDR_PER_USD = 16_600  # to set Stripe's fee beside the AWS bill; Tagih itself never converts
PRO_MONTHLY_IDR = 299_000
STRIPE_BILLING_RATE = 0.007  # Stripe Billing's pay-as-you-go fee on billing volume

# us-east-1 on-demand list prices (aws.amazon.com/<service>/pricing), in USD.
PRICES: Mapping[str, float] = {
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "http_api_request": 1.00 / 1e6,
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "dynamodb_gb_month": 0.25,
    "sfn_transition": 0.025 / 1e3,
    "eventbridge_event": 1.00 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "s3_put": 0.005 / 1e3,
    "s3_get": 0.0004 / 1e3,
    "s3_gb_month": 0.023,
    "secret_month": 0.40,
    "secrets_api_call": 0.05 / 1e4,
    "kms_key_month": 1.00,
    "kms_request": 0.03 / 1e4,
    "logs_gb_ingested": 0.50,
    "xray_trace": 5.00 / 1e6,
    "custom_metric_month": 0.30,
}

CALL_LATENCY_MS: Mapping[str, float] = {
    "dynamodb": 6.0,
    "events": 15.0,
    "stepfunctions": 20.0,
    "sqs": 10.0,
    "s3": 20.0,
    "secretsmanager": 15.0,
    "kms": 8.0,
}
GATEWAY_CHARGE_MS = 800.0  # a card charge at Midtrans or Stripe, as a renewal waits for it
LOG_BYTES_PER_INVOCATION = 1_200  # Lambda's JSON START/END/REPORT lines plus a few INFO lines
XRAY_SAMPLED = 0.05  # beyond the 1 request/s reservoir (priced as fixed), X-Ray samples 5 %
STORED_BYTES = 60_000  # one organization's items: subscription, invoices, usage days, ledger
PDF_BYTES = 40_000


@dataclass(frozen=True)
class Activity:
    """``count`` times the measured request ``method route`` in a month of one organization."""

    label: str
    method: str
    route: str
    count: float
    variant: str = ""


USAGE_EVENTS = 10_000  # a month's, sent in batches of USAGE_BATCH (the measured request's size)

# One active organization's month: a monthly renewal, 30 API reads a day, the usage events,
# 4 webhook deliveries and one invoice PDF.
MONTH: Sequence[Activity] = (
    Activity("reads: subscription", "GET", "/billing/subscription", 300),
    Activity("reads: entitlements", "GET", "/billing/entitlements", 300),
    Activity("reads: usage", "GET", "/billing/usage", 300),
    Activity(
        f"usage events ({USAGE_EVENTS // USAGE_BATCH} x {USAGE_BATCH})",
        "POST",
        "/billing/usage/events",
        USAGE_EVENTS / USAGE_BATCH,
    ),
    Activity("renewal (timer task)", "TASK", "renew", 1),
    Activity("webhook deliveries", "SQS", "webhook delivery", 4),
    Activity("invoice PDF (first render)", "GET", "/billing/invoices/{invoice_id}/pdf", 1, "first render"),
)
# Every API request runs the Lambda authorizer (it is not cached, so that a revoked API key is
# refused at once: template.yaml, ReauthorizeEvery 0) and passes API Gateway. Every event
# published reaches the webhook queue and the dispatcher's fan-out, whether or not the
# organization has an endpoint for it.
AUTHORIZER = ("REQUEST", "API key")
FAN_OUT = ("SQS", "webhook fan-out")
SWEEP = ("TASK", "find_due_renewals")
TIMER_TRANSITIONS = 3  # a timer a request arms (trial end, grace): wait, task, end
SQS_REQUESTS_PER_MESSAGE = 3  # send, receive, delete
# The bench runs on a dev stage (test-clock routes need one), where the API kernel reads the
# organization's test clock on every request (a consistent GetItem); production does not.
TEST_CLOCK_RRU = 1.0


def _memory_mb() -> dict[str, int]:
    template = load_template(ROOT / "template.yaml")
    default = int(template["Globals"]["Function"]["MemorySize"])
    return {
        name: int(resource["Properties"].get("MemorySize", default))
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def _row(rows: Sequence[RouteCost], method: str, route: str, variant: str | None = None) -> RouteCost:
    for row in rows:
        if row.method == method and row.route == route and (variant is None or row.variant == variant):
            return row
    raise LookupError(f"tools.bench_calls measured no {method} {route} {variant or ''}")


def _service_calls(row: RouteCost, service: str) -> int:
    return sum(n for name, n in row.calls.items() if name.split(".")[0] == service)


def _lambda_ms(row: RouteCost) -> float:
    """Billed ms on AWS: the handler's own time (moto's taken out), each call's AWS latency instead."""
    own = max(0.0, row.duration_ms - row.aws_ms)
    waits = sum(_service_calls(row, service) * ms for service, ms in CALL_LATENCY_MS.items())
    waits -= row.test_clock_reads * CALL_LATENCY_MS["dynamodb"]
    charges = GATEWAY_CHARGE_MS if row.route == "renew" else 0.0
    return max(1, math.ceil(own + waits + charges))  # Lambda bills whole milliseconds


def request_cost(row: RouteCost, memory_mb: Mapping[str, int]) -> dict[str, float]:
    """One request's cost, by service."""
    gb_s = memory_mb[row.function] / 1024 * _lambda_ms(row) / 1000
    calls = row.calls
    cost = {
        "lambda": gb_s * PRICES["lambda_gb_second_arm64"] + PRICES["lambda_request"],
        "dynamodb": (row.rcu - row.test_clock_reads * TEST_CLOCK_RRU) * PRICES["dynamodb_rru"]
        + (row.wcu + row.gsi_wcu) * PRICES["dynamodb_wru"],
        "eventbridge": row.put_events_entries * PRICES["eventbridge_event"],
        "stepfunctions": (
            row.sfn_transitions + calls.get("stepfunctions.StartExecution", 0) * TIMER_TRANSITIONS
        )
        * PRICES["sfn_transition"],
        "sqs": _service_calls(row, "sqs") * PRICES["sqs_request"],
        "s3": calls.get("s3.PutObject", 0) * PRICES["s3_put"]
        + calls.get("s3.GetObject", 0) * PRICES["s3_get"],
        "secretsmanager": _service_calls(row, "secretsmanager") * PRICES["secrets_api_call"],
        "kms": _service_calls(row, "kms") * PRICES["kms_request"],
        "logs": LOG_BYTES_PER_INVOCATION / 1e9 * PRICES["logs_gb_ingested"],
        "xray": XRAY_SAMPLED * PRICES["xray_trace"],
    }
    if row.method == "SQS":  # the message it consumed
        cost["sqs"] += SQS_REQUESTS_PER_MESSAGE * PRICES["sqs_request"]
    return cost


def _add(total: dict[str, float], part: Mapping[str, float], times: float) -> None:
    for service, usd in part.items():
        total[service] = total.get(service, 0.0) + usd * times


def subscription_month(rows: Sequence[RouteCost]) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """(cost by service, cost by activity) of one active organization's month."""
    memory = _memory_mb()
    authorizer = request_cost(_row(rows, *AUTHORIZER), memory)
    fan_out = request_cost(_row(rows, *FAN_OUT), memory)
    by_service: dict[str, float] = {}
    by_activity: list[tuple[str, float]] = []
    for activity in MONTH:
        row = _row(rows, activity.method, activity.route, activity.variant or None)
        part = request_cost(row, memory)
        if activity.method not in NOT_HTTP:  # through API Gateway and the authorizer
            part["api_gateway"] = PRICES["http_api_request"]
            _add(part, authorizer, 1)
        _add(part, fan_out, row.put_events_entries)
        if activity.route.endswith("/pdf"):
            part["s3"] += PDF_BYTES / 1e9 * PRICES["s3_gb_month"]
        _add(by_service, part, activity.count)
        by_activity.append((activity.label, sum(part.values()) * activity.count))
    by_service["dynamodb"] += STORED_BYTES / 1e9 * PRICES["dynamodb_gb_month"]
    return by_service, by_activity


def fixed_month(rows: Sequence[RouteCost]) -> list[tuple[str, float]]:
    """What a deployment costs each month however many organizations it bills."""
    memory = _memory_mb()
    sweeps = 24 * 30
    sweep_row = _row(rows, *SWEEP)
    sweep = request_cost(sweep_row, memory)
    minutes = 60 * 24 * 30
    return [
        (
            f"renewal sweep: {sweeps} runs ({sweep_row.dynamodb_calls()} Queries, "
            f"{sweep_row.sfn_transitions} transitions each)",
            sweeps * sum(sweep.values()),
        ),
        # Lambda's SQS pollers long-poll each queue (about 5 pollers, one request per 20 s each).
        ("SQS polling: 2 queues x 5 pollers x 3 requests/min", 2 * 5 * 3 * minutes * PRICES["sqs_request"]),
        ("Secrets Manager: 2 secrets", 2 * PRICES["secret_month"]),
        ("KMS: 2 customer keys (webhook secrets, log groups)", 2 * PRICES["kms_key_month"]),
        ("CloudWatch metrics: about 20 custom metrics", 20 * PRICES["custom_metric_month"]),
        ("X-Ray reservoir: 1 trace/s", 30 * 24 * 3600 * PRICES["xray_trace"]),
    ]


SCOPE = ("lambda", "dynamodb", "stepfunctions", "eventbridge", "sqs", "s3", "secretsmanager", "kms")


def report(rows: Sequence[RouteCost]) -> str:
    by_service, by_activity = subscription_month(rows)
    in_scope = sum(by_service.get(service, 0.0) for service in SCOPE)
    all_in = sum(by_service.values())
    stripe_idr = PRO_MONTHLY_IDR * STRIPE_BILLING_RATE
    lines = ["cost of one active subscription-month (us-east-1 on-demand, free tiers left out):"]
    lines += [f"  {label:<36} ${usd:.6f}" for label, usd in by_activity]
    lines.append("  by service:")
    for service, usd in sorted(by_service.items(), key=lambda item: -item[1]):
        lines.append(
            f"    {service:<34} ${usd:.6f}{'' if service in SCOPE else '  (outside the goal scope)'}"
        )
    lines.append(
        f"  total: ${in_scope:.6f} (Lambda, DynamoDB, Step Functions, EventBridge, SQS, S3, Secrets "
        f"Manager; goal ≤ ${GOAL_USD}: {'met' if in_scope <= GOAL_USD else 'not met'}); "
        f"${all_in:.6f} with API Gateway, CloudWatch Logs and X-Ray"
    )
    lines.append(
        f"  Stripe Billing on a Pro invoice: 0.7 % of Rp {PRO_MONTHLY_IDR:,} = Rp {stripe_idr:,.0f} "
        f"(${stripe_idr / IDR_PER_USD:.4f} at Rp {IDR_PER_USD:,}/USD), "
        f"{stripe_idr / IDR_PER_USD / all_in:,.0f}x the all-in AWS cost"
    )
    usage = _row(rows, "POST", "/billing/usage/events")
    events = round(sum(a.count for a in MONTH if a.route == usage.route) * USAGE_BATCH)
    per_event = (usage.wcu + usage.gsi_wcu) / USAGE_BATCH
    usage_usd = next(usd for label, usd in by_activity if label.startswith("usage events"))
    lines.append(
        f"  the usage events are {usage_usd / all_in:.0%} of it: {per_event:.2f} WRU an event, because each "
        f"event's id claim is written in the transaction that counts it (exactly once, even across a "
        f"crash; a transactional write costs 2 WRU); {events:,} events: ${usage_usd:.6f}"
    )
    fixed = fixed_month(rows)
    lines.append("fixed monthly cost of a deployment (any number of organizations):")
    lines += [f"  {label:<52} ${usd:.2f}" for label, usd in fixed]
    lines.append(f"  total fixed: ${sum(usd for _, usd in fixed):.2f}")
    lines.append(
        "assumptions: each AWS call adds its typical in-region latency to the measured handler time "
        f"({', '.join(f'{s} {ms:.0f} ms' for s, ms in CALL_LATENCY_MS.items())}), a renewal's charge "
        f"{GATEWAY_CHARGE_MS:.0f} ms; {LOG_BYTES_PER_INVOCATION:,} log bytes per invocation."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    rows = bench_calls.measure()
    print(bench_calls.report(rows))
    print()
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
