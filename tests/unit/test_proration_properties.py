"""Per-second proration and invoice tax against exact rational arithmetic, for any period a billing
cycle can have (28 to 31 days, 365/366 days), any change instant in it and any price up to Rp 100 M."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tagih.domain.catalog import TaxRate
from tagih.domain.invoices import InvoiceLine, draft_invoice
from tagih.domain.proration import prorate

PPN = TaxRate(currency="IDR", name="PPN", rate_bps=1100)
PRICES = st.integers(min_value=0, max_value=100_000_000)
PERIOD_DAYS = st.sampled_from([28, 29, 30, 31, 365, 366])
STARTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda moment: moment.replace(microsecond=0, tzinfo=UTC)
)
PROPERTIES = settings(max_examples=300, deadline=None)
# Exact halves, which random draws rarely hit: a change halfway through February, price 1 (½ → 1)
# and price 100 (a net of 50, whose 11 % is 5.5 → 6).
FEB = datetime(2026, 2, 1, tzinfo=UTC)
HALFWAY = (FEB, FEB + timedelta(days=28), FEB + timedelta(days=14))


@st.composite
def changes(draw: st.DrawFn) -> tuple[datetime, datetime, datetime]:
    """A period ``[start, end)`` and an instant in it, to the second."""
    start = draw(STARTS)
    end = start + timedelta(days=draw(PERIOD_DAYS))
    offset = draw(st.integers(min_value=0, max_value=int((end - start).total_seconds()) - 1))
    return start, end, start + timedelta(seconds=offset)


def half_up(value: Fraction) -> int:
    """Exact rounding half away from zero, independent of ``money.round_half_up``."""
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


def unused_share(start: datetime, end: datetime, at: datetime) -> Fraction:
    return Fraction(int((end - at).total_seconds()), int((end - start).total_seconds()))


@PROPERTIES
@given(period=changes(), old=PRICES, new=PRICES)
@example(period=HALFWAY, old=1, new=1)
def test_each_proration_line_is_the_exact_amount_rounded_half_up(
    period: tuple[datetime, datetime, datetime], old: int, new: int
) -> None:
    start, end, at = period
    change = prorate(old, new, start, end, at)
    exact_credit = -old * unused_share(start, end, at)
    exact_debit = new * unused_share(start, end, at)

    assert abs(change.credit - exact_credit) <= Fraction(1, 2)
    assert abs(change.debit - exact_debit) <= Fraction(1, 2)
    assert change.credit == half_up(exact_credit)
    assert change.debit == half_up(exact_debit)
    assert -old <= change.credit <= 0 <= change.debit <= new


@PROPERTIES
@given(period=changes(), old=PRICES, new=PRICES)
@example(period=HALFWAY, old=0, new=100)
@example(period=HALFWAY, old=100, new=0)
def test_a_proration_invoice_taxes_the_net_once_at_eleven_percent(
    period: tuple[datetime, datetime, datetime], old: int, new: int
) -> None:
    start, end, at = period
    change = prorate(old, new, start, end, at)
    lines = [
        InvoiceLine(description=text, unit_amount=amount, amount=amount, proration=True)
        for text, amount in (("Unused time", change.credit), ("Remaining time", change.debit))
    ]
    invoice = draft_invoice(
        organization_id="org_p",
        subscription_id="sub_p",
        billing_reason="subscription_update",
        currency="IDR",
        lines=lines,
        tax=PPN,
        period_start=at,
        period_end=end,
        due_date=at,
        now=at,
    )

    net = change.credit + change.debit
    assert invoice.subtotal == net
    assert invoice.tax == (half_up(Fraction(net * 11, 100)) if net > 0 else 0)
    assert invoice.total == sum(line.amount for line in lines) + invoice.tax
    assert invoice.amount_due == max(invoice.total, 0)
