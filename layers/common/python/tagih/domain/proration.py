"""Per-second proration (DESIGN.md "Money, tax, proration").

A change at ``at`` inside ``[start, end)`` credits the unused part of the old price and debits the
unused part of the new one, each rounded half up on its own so that the two lines an invoice shows
add up to exactly the net it charges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tagih.domain.money import round_half_up


@dataclass(frozen=True)
class Proration:
    credit: int  # ≤ 0: the unused time of the old price
    debit: int  # ≥ 0: the unused time of the new price
    remaining_seconds: int
    period_seconds: int

    @property
    def net(self) -> int:
        return self.credit + self.debit


def _seconds(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds())


def prorate(old_price: int, new_price: int, start: datetime, end: datetime, at: datetime) -> Proration:
    period = _seconds(start, end)
    if period <= 0:
        raise ValueError("a period must end after it starts")
    if not start <= at < end:
        raise ValueError("the change must fall inside [start, end)")
    remaining = _seconds(at, end)
    return Proration(
        credit=-round_half_up(old_price * remaining, period),
        debit=round_half_up(new_price * remaining, period),
        remaining_seconds=remaining,
        period_seconds=period,
    )


def costs_more_per_day(old_price: int, old_period_days: int, new_price: int, new_period_days: int) -> bool:
    """Lago's rule for "upgrade": the new plan costs more per day (compared without division)."""
    return new_price * old_period_days > old_price * new_period_days
