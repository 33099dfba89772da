"""Money as integers: rounding, tax and display. No floats anywhere.

Amounts are in the currency's unit as Tagih defines it (API.md): IDR whole rupiah, every other
supported currency in cents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

# Here rather than in the catalog: invoices, accounts and their views name a currency without the
# catalog's models.
Currency = Literal["IDR", "USD", "EUR", "GBP", "AUD", "ZAR"]
DEFAULT_CURRENCY: Currency = "IDR"  # an organization without a billing account bills in rupiah
ZERO_DECIMAL = frozenset({"IDR"})  # Tagih keeps IDR in whole rupiah
BASIS_POINTS = 10_000
_SYMBOLS = {"IDR": "Rp ", "USD": "US$", "EUR": "€", "GBP": "£", "AUD": "A$", "ZAR": "R "}


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half away from zero, in integer arithmetic."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    magnitude = (2 * abs(numerator) + denominator) // (2 * denominator)
    return magnitude if numerator >= 0 else -magnitude


def tax_on(taxable: int, rate_bps: int) -> int:
    """Tax per invoice: ``round_half_up(taxable * rate)``, the rate in basis points (1100 = 11 %)."""
    return round_half_up(taxable * rate_bps, BASIS_POINTS)


def minor_units(currency: str) -> int:
    """How many of Tagih's units make one major unit (1 for IDR, 100 for cents)."""
    return 1 if currency.upper() in ZERO_DECIMAL else 100


def format_money(amount: int, currency: str) -> str:
    """For people: ``Rp 331.890`` (Indonesian grouping), ``US$1,234.50``; a minus sign in front."""
    code = currency.upper()
    sign = "-" if amount < 0 else ""
    symbol = _SYMBOLS.get(code, f"{code} ")
    if code == "IDR":
        return f"{sign}{symbol}{abs(amount):,}".replace(",", ".")
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{symbol}{whole:,}.{cents:02d}"


def upper_case(value: Any) -> Any:
    """A code accepted in either case and kept upper-case (API.md, Conventions)."""
    return value.strip().upper() if isinstance(value, str) else value


CurrencyCode = Annotated[Currency, BeforeValidator(upper_case)]
