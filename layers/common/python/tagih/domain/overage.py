"""Overage: the invoice lines for use beyond a plan's quotas, billed in arrears at renewal.

Apart from ``domain/usage.py`` so that reading and reporting usage (the usage functions) does not
load the invoice model; only the renewal path bills overage.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from tagih.domain.catalog import Plan
from tagih.domain.invoices import InvoiceLine
from tagih.domain.usage import METRIC_LABELS, effective_quotas


def _grouped(number: int, currency: str) -> str:
    """Thousands grouped as the invoice's readers write them: 85.000 in rupiah, 85,000 otherwise."""
    text = f"{number:,}"
    return text.replace(",", ".") if currency == "IDR" else text


def overage_lines(
    plan: Plan,
    used: Mapping[str, int],
    *,
    period_start: datetime,
    period_end: datetime,
    quotas: Mapping[str, int | None] | None = None,
) -> list[InvoiceLine]:
    """Invoice lines for use beyond the quota in ``[period_start, period_end)``, billed in arrears:
    one line per metric the plan prices (``plan.overage``) and that went over, in the plan's
    currency. ``quantity`` is the number of started blocks of ``per_units`` beyond the quota, so
    ``amount = quantity * unit_amount`` exactly. ``quotas`` default to the plan's limits (pass
    ``effective_quotas(...)`` when add-ons raised them); an unlimited metric never has overage."""
    quotas = effective_quotas(plan.limits) if quotas is None else quotas
    lines = []
    for metric in sorted(plan.overage):
        quota = quotas.get(metric)
        if quota is None or used.get(metric, 0) <= quota:
            continue
        beyond = used[metric] - quota
        price = plan.overage[metric]
        blocks = -(-beyond // price.per_units)  # started blocks: 1 call over bills a whole block
        label = METRIC_LABELS.get(metric, metric.replace("_", " "))
        per = f", per {_grouped(price.per_units, plan.currency)}" if price.per_units > 1 else ""
        lines.append(
            InvoiceLine(
                description=f"{plan.name} overage: {_grouped(beyond, plan.currency)} {label} over "
                f"the quota of {_grouped(quota, plan.currency)}{per}",
                quantity=blocks,
                unit_amount=price.unit_amount,
                amount=blocks * price.unit_amount,
                period_start=period_start,
                period_end=period_end,
            )
        )
    return lines
