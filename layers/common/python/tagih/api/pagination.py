"""The one list envelope of API.md and its page parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, Field

T = TypeVar("T")

PageNumber = Annotated[int, Query(ge=1, le=10_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]
DEFAULT_PAGE_SIZE = 20


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int
    has_next: bool
    has_prev: bool


def paginate(items: Sequence[T], page: int = 1, page_size: int = DEFAULT_PAGE_SIZE) -> Page[T]:
    """Slice an already-read, already-ordered list (one Query) into the envelope."""
    start = (page - 1) * page_size
    window = list(items[start : start + page_size])
    return Page[T](
        items=window,
        total=len(items),
        page=page,
        page_size=page_size,
        has_next=start + page_size < len(items),
        has_prev=page > 1,
    )


__all__ = ["DEFAULT_PAGE_SIZE", "Field", "Page", "PageNumber", "PageSize", "paginate"]
