"""The single source of "now". Business logic asks ``now()``; tests pass a fixed clock."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_now() -> datetime:
    return datetime.now(UTC)


def now() -> datetime:
    return system_now()


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
