"""Which gateway a new payment method belongs to, and which combinations of fields are refused."""

from __future__ import annotations

from typing import Any

import pytest

from tagih.domain.errors import InvalidField
from tagih.domain.payment_methods import NewPaymentMethod, resolve_gateway


@pytest.mark.parametrize(
    ("fields", "gateway"),
    [
        ({"type": "credit_card", "token": "pm_1Q2w3E4r"}, "stripe"),
        ({"type": "credit_card", "gateway_payment_method_id": "pm_1Q2w3E4r"}, "stripe"),
        ({"type": "credit_card", "token": "481111-1114-a1b2"}, "midtrans"),
        ({"type": "credit_card", "token": "pm_1Q2w3E4r", "gateway": "stripe"}, "stripe"),
        ({"type": "bank_transfer", "bank": "mandiri"}, "midtrans"),
        ({"type": "e_wallet", "provider": "ovo"}, "midtrans"),
        ({"type": "e_wallet", "provider": "gopay", "gateway": "midtrans"}, "midtrans"),
    ],
)
def test_the_gateway_follows_from_the_token_and_the_type(fields: dict[str, Any], gateway: str) -> None:
    assert resolve_gateway(NewPaymentMethod(**fields)) == gateway


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "credit_card"}, "token"),
        ({"type": "credit_card", "token": "t", "gateway_payment_method_id": "g"}, "token"),
        ({"type": "credit_card", "token": "481111-1114-a1b2", "provider": "gopay"}, "provider"),
        ({"type": "bank_transfer"}, "bank"),
        (
            {"type": "bank_transfer", "bank": "bca", "gateway_payment_method_id": "va:bca"},
            "gateway_payment_method_id",
        ),
        ({"type": "e_wallet"}, "provider"),
        ({"type": "e_wallet", "provider": "gopay", "bank": "bni"}, "bank"),
        ({"type": "e_wallet", "provider": "gopay", "gateway": "stripe"}, "gateway"),
        (
            {"type": "credit_card", "gateway_payment_method_id": "saved-1114", "gateway": "stripe"},
            "gateway_payment_method_id",
        ),
        ({"type": "credit_card", "token": "pm_1Q2w3E4r", "gateway": "midtrans"}, "gateway"),
    ],
)
def test_refusals_name_the_field_at_fault(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as refused:
        resolve_gateway(NewPaymentMethod(**fields))

    assert [detail["field"] for detail in refused.value.details] == [field]
