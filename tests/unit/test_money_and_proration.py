"""What a customer sees on an invoice: rounding, PPN, rupiah formatting, per-second proration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tagih.domain.money import format_money, minor_units, round_half_up, tax_on
from tagih.domain.proration import costs_more_per_day, prorate


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(5, 2, 3), (-5, 2, -3), (4, 2, 2), (7, 3, 2), (8, 3, 3), (-8, 3, -3), (0, 9, 0), (1, 3, 0)],
)
def test_round_half_up_goes_away_from_zero_on_halves(numerator: int, denominator: int, expected: int) -> None:
    assert round_half_up(numerator, denominator) == expected


def test_ppn_eleven_percent_on_pro() -> None:
    assert tax_on(299_000, 1100) == 32_890
    assert 299_000 + tax_on(299_000, 1100) == 331_890


def test_tax_rounds_half_up() -> None:
    assert tax_on(50, 1100) == 6  # 5.5 → 6
    assert tax_on(45, 1100) == 5  # 4.95 → 5


def test_rupiah_is_written_with_dots() -> None:
    assert format_money(331_890, "IDR") == "Rp 331.890"
    assert format_money(2_990_000, "idr") == "Rp 2.990.000"
    assert format_money(-149_500, "IDR") == "-Rp 149.500"


def test_cents_currencies_show_two_decimals() -> None:
    assert format_money(123_450, "USD") == "US$1,234.50"
    assert format_money(5, "EUR") == "€0.05"
    assert minor_units("IDR") == 1
    assert minor_units("usd") == 100


START = datetime(2026, 2, 1, tzinfo=UTC)
END = datetime(2026, 3, 1, tzinfo=UTC)  # 28 days


def test_upgrade_halfway_credits_half_and_debits_half() -> None:
    proration = prorate(299_000, 990_000, START, END, START + timedelta(days=14))
    assert proration.credit == -149_500
    assert proration.debit == 495_000
    assert proration.net == 345_500


def test_proration_is_per_second_and_rounded_per_line() -> None:
    at = END - timedelta(seconds=1)
    proration = prorate(299_000, 990_000, START, END, at)
    assert proration.remaining_seconds == 1
    assert proration.credit == 0  # 299000 / 2419200 s rounds to 0
    assert proration.debit == 0


def test_change_at_the_start_swaps_the_whole_price() -> None:
    proration = prorate(299_000, 990_000, START, END, START)
    assert (proration.credit, proration.debit) == (-299_000, 990_000)


@pytest.mark.parametrize("at", [END, START - timedelta(seconds=1)])
def test_a_change_outside_the_period_is_refused(at: datetime) -> None:
    with pytest.raises(ValueError, match="inside"):
        prorate(1, 2, START, END, at)


def test_upgrade_means_more_per_day() -> None:
    assert costs_more_per_day(299_000, 30, 990_000, 30)
    assert not costs_more_per_day(990_000, 30, 299_000, 30)
    assert not costs_more_per_day(299_000, 30, 2_990_000, 365)  # annual Pro is cheaper per day
