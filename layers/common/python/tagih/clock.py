"""The single source of "now". Business logic asks ``now()``; tests pass a fixed clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

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
