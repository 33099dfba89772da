"""The janitor's open payments, with in-memory ports: what the gateway says is recorded once, and
one payment whose invoice cannot take it yet neither stops the others nor goes uncounted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tagih.domain.errors import InvoiceNotPayable
from tagih.domain.gateway import PaymentGateway
from tagih.domain.gateway_names import GatewayName
from tagih.domain.payments import Payment, PaymentFailed, PaymentSettled
from tagih.services.janitor import reconcile_open_payments
from tests.fakes.payments import InMemoryPayments, ScriptedGateway, status

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
ORG = "org_janitor"


def claim(reference: str, minutes_ago: int) -> Payment:
    at = NOW - timedelta(minutes=minutes_ago)
    return Payment(
        organization_id=ORG,
        reference=reference,
        purpose="invoice",
        subject_id=reference.rsplit("-", 1)[0],
        attempt=1,
        gateway="midtrans",
        payment_method_id="pm_1",
        amount=299_000,
        currency="IDR",
        status="processing",
        created_at=at,
        updated_at=at,
    )


@dataclass
class Invoices:
    """A listener whose first invoice is still a draft (it refuses the payment)."""

    drafts: set[str]
    paid: list[str] = field(default_factory=list)

    def on_payment_settled(self, settled: PaymentSettled) -> None:
        if settled.subject_id in self.drafts:
            raise InvoiceNotPayable(f"Invoice {settled.subject_id} is draft; it cannot be paid.")
        self.paid.append(settled.subject_id)

    def on_payment_failed(self, failed: PaymentFailed) -> None:
        return None


@dataclass
class Directory:
    gateway: ScriptedGateway

    def get(self, name: GatewayName) -> PaymentGateway:
        return self.gateway


def test_a_payment_its_invoice_cannot_take_yet_is_counted_and_the_next_ones_still_reconciled() -> None:
    store = InMemoryPayments()
    for reference, minutes in (("inv_draft-a1", 30), ("inv_open-a1", 20), ("inv_fresh-a1", 2)):
        assert store.claim(claim(reference, minutes)) is None
    gateway = ScriptedGateway(
        statuses={r: status(r) for r in ("inv_draft-a1", "inv_open-a1", "inv_fresh-a1")}
    )
    listener = Invoices(drafts={"inv_draft"})

    done = reconcile_open_payments(
        store,
        find_open=lambda before, lookback: [
            (ORG, r) for r in ("inv_draft-a1", "inv_open-a1", "inv_fresh-a1")
        ],
        find_recent=lambda since, until: [],
        gateway_events=store,
        gateways=Directory(gateway),
        listener=listener,
        now=NOW,
    )

    assert (done.settled, done.failed, done.unresolved) == (1, 0, 1)
    assert listener.paid == ["inv_open"]
    recorded = {r: p.status for r, p in store.payments.items()}
    # The draft's payment is recorded (the money is known), the fresh claim left to its own request.
    assert recorded == {"inv_draft-a1": "succeeded", "inv_open-a1": "succeeded", "inv_fresh-a1": "processing"}
