"""The single source of "now". Business logic asks ``now()``; tests pass a fixed clock.

Outside prod an organization may own a test clock (DESIGN.md "Time and test clocks"): the API
kernel runs that organization's request inside ``frozen(its frozen time)``, so every ``now()`` of
the request answers the frozen moment without any caller knowing about test clocks. The override is
a context variable: it ends with the ``with`` block and never leaks into another request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_now() -> datetime:
    return datetime.now(UTC)


_frozen_now: ContextVar[datetime | None] = ContextVar("tagih_frozen_now", default=None)
_wall: Clock = system_now


def use_wall_clock(source: Clock | None) -> None:
    """Replace wall time for the whole process (``None`` restores it): the port through which tests
    that span threads (concurrent requests) pin "now"; a request's test clock still wins."""
    global _wall  # noqa: PLW0603 — one wall clock per process, as there is one in the real world
    _wall = source or system_now


def now() -> datetime:
    """Wall time, or the frozen moment of the test clock the current request runs under."""
    moment = _frozen_now.get()
    return moment if moment is not None else _wall()


def is_frozen() -> bool:
    """Whether the current request runs under a test clock."""
    return _frozen_now.get() is not None


@contextmanager
def frozen(moment: datetime) -> Iterator[datetime]:
    """Within the block ``now()`` answers ``moment`` (a test clock's frozen time)."""
    token = _frozen_now.set(moment.astimezone(UTC))
    try:
        yield moment
    finally:
        _frozen_now.reset(token)


def to_rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with ``Z`` and whole seconds, the API's timestamp format."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def epoch_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


_DURATION = re.compile(
    r"^P(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)


def parse_duration(value: str) -> timedelta:
    """An ISO-8601 duration of days and time (``P14D``, ``PT30S``, ``P1DT12H``), as configuration
    writes timer lengths; months and years are refused (their length depends on the date)."""
    match = _DURATION.match(value.strip().upper())
    if match is None or value.strip().upper() in ("P", "PT"):
        raise ValueError(f"{value!r} is not an ISO-8601 duration like P14D or PT30S")
    parts = {name: int(number) for name, number in match.groupdict().items() if number}
    return timedelta(**parts)
