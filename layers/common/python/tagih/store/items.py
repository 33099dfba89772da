"""Item ⇄ model mapping shared by every entity module.

DynamoDB returns numbers as ``Decimal``; money and counts are integers, so numbers are turned back
into ``int`` (a non-integral number in an item is a bug and fails loudly).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
KEY_ATTRIBUTES = frozenset({"PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK", "entity", "ttl"})


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            raise ValueError(f"non-integral number {value} in an item")
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_plain(v) for v in value]
    return value


def to_item(key: dict[str, str], entity: str, model: BaseModel, **extra: Any) -> dict[str, Any]:
    return {**key, "entity": entity, **model.model_dump(mode="json"), **extra}


def from_item(model: type[M], item: dict[str, Any]) -> M:
    return model.model_validate({k: _plain(v) for k, v in item.items() if k not in KEY_ATTRIBUTES})
