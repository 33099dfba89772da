"""The events catalog: every event type, what its ``data`` holds (a JSON Schema), and an example.

``tools.events_catalog`` writes it to ``docs/events.md`` and ``docs/events/<type>.schema.json``; a
unit test fails when those files are stale, and an integration test checks that what the services
publish validates against these schemas.

Where ``data`` is a domain model's public view (subscriptions: ``Subscription.public_data()``,
invoices: ``invoice_data``), its schema is generated from that model minus the model's internal
fields, so the catalog follows the model. Where ``data`` is a plain dict, a model here says what
it holds. Every ``data`` schema forbids other properties: a field leaking into an event fails the
test before it reaches a tenant. Usage events are provisional: the feature that emits them is being
built, and their schema follows API.md until then.

Imported by tools and tests only; no handler loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tagih.domain import invoices, subscriptions
from tagih.domain.webhooks import TEST_EVENT_TYPE
from tagih.events.models import EventType

CatalogType = EventType | Literal["billing.webhook.test"]


class Envelope(BaseModel):
    """The body of every webhook delivery (the bus's ``Detail`` is the same without ``sequence``)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The event's id (`evt_…`); deliveries repeat it, receivers dedupe by it.")
    type: str = Field(description="The event type.")
    created_at: str = Field(description="When the event happened: RFC 3339 UTC with `Z`.")
    organization_id: str = Field(description="The organization the event is about.")
    sequence: int = Field(
        ge=1,
        description="The event's number in its organization, assigned once per event id when it is "
        "dispatched to webhooks: order events by it. Gaps are normal (events of types an endpoint "
        "does not subscribe to).",
    )
    data: dict[str, Any] = Field(description="What the event is about; its schema depends on `type`.")


class PaymentMethodEventData(BaseModel):
    """A payment method's display data; never the gateway's reusable reference."""

    model_config = ConfigDict(extra="forbid")

    id: str
    gateway: Literal["midtrans", "stripe"]
    type: Literal["credit_card", "bank_transfer", "e_wallet"]
    brand: str | None
    last4: str | None
    bank: Literal["bca", "bni", "bri", "mandiri"] | None
    provider: Literal["gopay", "shopeepay", "ovo"] | None
    label: str | None
    is_default: bool


class UsageThresholdData(BaseModel):
    """Provisional: usage metering is being built (API.md "Usage")."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(examples=["api_calls"])
    period: str = Field(description="The month, `YYYY-MM`.")
    threshold: Literal[80, 100] = Field(description="The percentage of the quota reached.")
    used: int
    quota: int
    percent: int


class WalletTransactionData(BaseModel):
    """A wallet transaction (``domain.wallet.WalletTransaction.event_data``): API.md's fields, plus
    its currency, the method charged and whether auto-recharge started it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["top_up", "invoice_payment", "refund", "adjustment"]
    status: Literal["pending", "succeeded", "failed"]
    amount: int = Field(description="Signed, in the currency's unit: credits positive, debits negative.")
    currency: Literal["IDR", "USD", "EUR", "GBP", "AUD", "ZAR"]
    balance_after: int | None = Field(description="The wallet's balance once this landed.")
    invoice_id: str | None
    payment_method_id: str | None
    payment_url: str | None
    gateway_order_id: str | None = Field(description="Midtrans: the order id the payment was made under.")
    auto_recharge: bool = Field(description="Started by auto-recharge rather than by a top-up request.")
    created_at: str


class PaymentUnappliedData(BaseModel):
    """Money a gateway took that pays nothing (README "When money goes wrong")."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(description="The charge reference: Midtrans `order_id`, Stripe idempotency key.")
    gateway: Literal["midtrans", "stripe"]
    amount: int = Field(description="What the gateway took, in the currency's unit.")
    currency: Literal["IDR", "USD", "EUR", "GBP", "AUD", "ZAR"]
    invoice_id: str = Field(description="The invoice the payment was made for.")
    reason: Literal["invoice_already_paid", "invoice_void"] = Field(
        description="Why it pays nothing: the invoice was paid another way first, or voided."
    )
    resolution: Literal["credited_to_wallet", "needs_review"] = Field(
        description="`credited_to_wallet`: an `adjustment` entry of the whole amount "
        "(`transaction_id`); `needs_review`: it could not be (a wallet in another currency), a "
        "person must refund it."
    )
    transaction_id: str | None = Field(description="The wallet's `adjustment` entry, when credited.")


class WalletLowBalanceData(BaseModel):
    """Published once per crossing: by the debit that took the balance under the threshold."""

    model_config = ConfigDict(extra="forbid")

    balance: int = Field(description="The balance the debit left.")
    currency: Literal["IDR", "USD", "EUR", "GBP", "AUD", "ZAR"]
    threshold: int = Field(description="The auto-recharge threshold the balance fell below.")
    recharge_transaction_id: str | None = Field(
        description="The recharge this started (a pending `top_up`); `null` when none could start: one "
        "is in flight already, or this month's limit is reached."
    )


class WebhookTestData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_id: str
    message: str


def _public_schema(model: type[BaseModel], internal: frozenset[str], title: str) -> dict[str, Any]:
    """A domain model's serialization schema without its internal fields (and the definitions
    only they used)."""
    schema = model.model_json_schema(mode="serialization")
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in internal}
    schema["required"] = list(schema["properties"])  # model_dump writes every field, defaults too
    schema["title"] = title
    schema["additionalProperties"] = False
    definitions = schema.pop("$defs", {})
    used: dict[str, Any] = {}
    pending = _refs(schema)
    while pending:
        name = pending.pop()
        if name in used or name not in definitions:
            continue
        used[name] = definitions[name]
        pending.extend(_refs(definitions[name]))
    if used:
        schema["$defs"] = dict(sorted(used.items()))
    return schema


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value.rsplit("/", 1)[-1])
            else:
                found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    schema["additionalProperties"] = False
    return schema


SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "id": "sub_3kTMd9Qz1vXbR7pL0aYc",
    "organization_id": "org_acme",
    "plan": "business",
    "plan_name": "Business",
    "status": "active",
    "billing_cycle": "monthly",
    "cancel_at_period_end": False,
    "trial_ends_at": None,
    "current_period_start": "2026-02-01T00:00:00Z",
    "current_period_end": "2026-03-01T00:00:00Z",
    "grace_period_ends_at": None,
    "cancelled_at": None,
    "scheduled_change": None,
    "payment_method_id": "pm_9yQ2rT6vXbL0aYcK3kTM",
    "payment_gateway": "midtrans",
    "gateway_customer_id": None,
    "gateway_subscription_id": None,
    "limits": {
        "members": 50,
        "applications": 20,
        "storage_bytes": 107374182400,
        "api_calls": 1000000,
        "webhooks": 10,
    },
    "features": {
        "basic": True,
        "mfa": True,
        "webhooks": True,
        "sso": True,
        "scim": False,
        "audit_streaming": False,
        "sla": False,
        "dedicated_support": False,
    },
    "addons": [],
    "version": 4,
    "created_at": "2026-01-01T08:30:00Z",
    "updated_at": "2026-02-10T09:15:00Z",
}

INVOICE_EXAMPLE: dict[str, Any] = {
    "id": "inv_7hGk2Lm9Pq4Rs8Tu1VwX",
    "number": "INV-2026-0042",
    "organization_id": "org_acme",
    "subscription_id": "sub_3kTMd9Qz1vXbR7pL0aYc",
    "billing_reason": "subscription_cycle",
    "currency": "IDR",
    "lines": [
        {
            "description": "Business (monthly)",
            "quantity": 1,
            "unit_amount": 990000,
            "amount": 990000,
            "period_start": "2026-02-01T00:00:00Z",
            "period_end": "2026-03-01T00:00:00Z",
            "proration": False,
        }
    ],
    "subtotal": 990000,
    "tax_name": "PPN",
    "tax": 108900,
    "credits_applied": 0,
    "total": 1098900,
    "amount_paid": 1098900,
    "status": "paid",
    "due_date": "2026-02-01T00:00:00Z",
    "period_start": "2026-02-01T00:00:00Z",
    "period_end": "2026-03-01T00:00:00Z",
    "paid_at": "2026-02-01T00:00:05Z",
    "retry_count": 0,
    "last_retry_at": None,
    "next_retry_at": None,
    "payment_url": None,
    "gateway_invoice_id": "inv_7hGk2Lm9Pq4Rs8Tu1VwX-1",
    "created_at": "2026-02-01T00:00:00Z",
    "tax_rate": "11",
    "amount": 1098900,
    "amount_due": 0,
    "pdf_url": "/billing/invoices/inv_7hGk2Lm9Pq4Rs8Tu1VwX/pdf",
    "hosted_invoice_url": "/billing/invoices/inv_7hGk2Lm9Pq4Rs8Tu1VwX/hosted?token=Zx81…",
}


@dataclass(frozen=True)
class CatalogEntry:
    type: str
    when: str  # what makes Tagih emit it
    data_schema: dict[str, Any]
    example_data: dict[str, Any]
    provisional: bool = False
    bus: bool = True  # False: sent to webhooks only, never put on the bus

    @property
    def file_name(self) -> str:
        return f"{self.type}.schema.json"

    def example(self) -> dict[str, Any]:
        return Envelope(
            id="evt_5mNb8Vc3Xz1Lk7Jh2Gf4",
            type=self.type,
            created_at="2026-02-10T09:15:00Z",
            organization_id="org_acme",
            sequence=42,
            data=self.example_data,
        ).model_dump()

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a webhook body of this type, with the example."""
        envelope = Envelope.model_json_schema()
        data = dict(self.data_schema)
        definitions = data.pop("$defs", {})
        properties = dict(envelope["properties"])
        properties["type"] = {**properties["type"], "const": self.type}
        properties["data"] = data
        schema: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://tagih.dev/events/{self.file_name}",
            "title": self.type,
            "description": self.when,
            "type": "object",
            "required": envelope["required"],
            "additionalProperties": False,
            "properties": properties,
            "examples": [self.example()],
        }
        if definitions:
            schema["$defs"] = definitions
        return schema


def catalog() -> list[CatalogEntry]:
    subscription = _public_schema(
        subscriptions.Subscription, subscriptions.INTERNAL_FIELDS, "SubscriptionEventData"
    )
    invoice = _public_schema(invoices.Invoice, invoices.INTERNAL_FIELDS, "InvoiceEventData")
    trialing = {
        **SUBSCRIPTION_EXAMPLE,
        "plan": "pro",
        "plan_name": "Pro",
        "status": "trialing",
        "trial_ends_at": "2026-02-13T09:15:00Z",
    }
    cancelled = {
        **SUBSCRIPTION_EXAMPLE,
        "status": "cancelled",
        "cancel_at_period_end": True,
        "cancelled_at": "2026-02-10T09:15:00Z",
        "grace_period_ends_at": "2026-03-01T00:00:00Z",
    }
    open_invoice = {
        **INVOICE_EXAMPLE,
        "status": "open",
        "amount_paid": 0,
        "amount_due": 1098900,
        "paid_at": None,
    }
    failed_invoice = {
        **open_invoice,
        "retry_count": 1,
        "last_retry_at": "2026-02-02T00:00:00Z",
        "next_retry_at": "2026-02-04T00:00:00Z",
    }
    overdue_invoice = {**failed_invoice, "status": "overdue"}
    entries = [
        CatalogEntry(
            "billing.subscription.created",
            "A subscription started: a trial, or a first paid period (or one awaiting its first payment).",
            subscription,
            {**trialing, "version": 1, "updated_at": trialing["created_at"]},
        ),
        CatalogEntry(
            "billing.subscription.updated",
            "A subscription changed: plan or cycle change, activation after payment, renewal, past due, "
            "cancellation into its grace period, reactivation, suspension.",
            subscription,
            SUBSCRIPTION_EXAMPLE,
        ),
        CatalogEntry(
            "billing.subscription.cancelled",
            "A subscription ended (the organization is back on Free): its grace period ran out, payment "
            "retries were exhausted, or a first payment never came.",
            subscription,
            cancelled,
        ),
        CatalogEntry(
            "billing.subscription.trial_will_end",
            "A trial ends in three days.",
            subscription,
            trialing,
        ),
        CatalogEntry(
            "billing.invoice.created", "An invoice was finalized (it has a number).", invoice, open_invoice
        ),
        CatalogEntry("billing.invoice.paid", "An invoice was paid in full.", invoice, INVOICE_EXAMPLE),
        CatalogEntry(
            "billing.invoice.payment_failed",
            "A charge of an invoice failed; `next_retry_at` says when it is retried.",
            invoice,
            failed_invoice,
        ),
        CatalogEntry(
            "billing.invoice.overdue", "An invoice is past its due date and unpaid.", invoice, overdue_invoice
        ),
        CatalogEntry(
            "billing.usage.threshold",
            "Usage of a metric reached 80 % or 100 % of its quota (once per metric, period and threshold).",
            _model_schema(UsageThresholdData),
            {
                "metric": "api_calls",
                "period": "2026-02",
                "threshold": 80,
                "used": 800000,
                "quota": 1000000,
                "percent": 80,
            },
            provisional=True,
        ),
        CatalogEntry(
            "billing.payment_method.added",
            "A payment method was added to the organization.",
            _model_schema(PaymentMethodEventData),
            {
                "id": "pm_9yQ2rT6vXbL0aYcK3kTM",
                "gateway": "midtrans",
                "type": "bank_transfer",
                "brand": None,
                "last4": None,
                "bank": "bca",
                "provider": None,
                "label": None,
                "is_default": True,
            },
        ),
        CatalogEntry(
            "billing.wallet.topped_up",
            "A wallet top-up succeeded and its credit landed.",
            _model_schema(WalletTransactionData),
            {
                "id": "txn_2Bc4De6Fg8Hi0Jk2Lm4N",
                "type": "top_up",
                "status": "succeeded",
                "amount": 500000,
                "currency": "IDR",
                "balance_after": 750000,
                "invoice_id": None,
                "payment_method_id": "pm_9yQ2rT6vXbL0aYcK3kTM",
                "payment_url": None,
                "gateway_order_id": "txn_2Bc4De6Fg8Hi0Jk2Lm4N-a1",
                "auto_recharge": False,
                "created_at": "2026-02-10T09:15:00Z",
            },
        ),
        CatalogEntry(
            "billing.wallet.low_balance",
            "A debit took the wallet balance under the auto-recharge threshold (auto-recharge enabled).",
            _model_schema(WalletLowBalanceData),
            {
                "balance": 40000,
                "currency": "IDR",
                "threshold": 50000,
                "recharge_transaction_id": "txn_7Qw3Er5Ty7Ui9Op1As3D",
            },
        ),
        CatalogEntry(
            "billing.payment.unapplied",
            "A gateway settled a payment for an invoice that was already paid another way (a superseded "
            "virtual-account order paid late) or voided: the money was credited to the wallet.",
            _model_schema(PaymentUnappliedData),
            {
                "reference": "inv_4Fh8Jk2Lm6Np0Qr4St8V-a1",
                "gateway": "midtrans",
                "amount": 331890,
                "currency": "IDR",
                "invoice_id": "inv_4Fh8Jk2Lm6Np0Qr4St8V",
                "reason": "invoice_already_paid",
                "resolution": "credited_to_wallet",
                "transaction_id": "txn_9Zx8Cv7Bn6Mm5Ll4Kk3J",
            },
        ),
        CatalogEntry(
            TEST_EVENT_TYPE,
            "Sent by `POST /billing/webhooks/{id}/test` to that endpoint alone; never put on the bus.",
            _model_schema(WebhookTestData),
            {"webhook_id": "wh_3kTMd9Qz1vXbR7pL0aYc", "message": "A test event sent from the Tagih API."},
            bus=False,
        ),
    ]
    return entries
