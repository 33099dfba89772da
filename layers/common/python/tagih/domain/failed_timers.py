"""Timer tasks a state machine gave up on, kept for the janitor (``services.janitor``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class FailedTimer:
    machine: str  # trial, grace_period, incomplete, dunning, renewal
    task: dict[str, Any]  # the timers function's payload that failed
    error: str
    cause: str
    failed_at: datetime
    failures: int = 1

    @property
    def key(self) -> str:
        """One kept item per task: the same task failing again is the same item."""
        subject = self.task.get("invoice_id") or self.task.get("subscription_id") or ""
        return (
            f"{self.machine}#{self.task.get('action', '')}#{self.task.get('organization_id', '')}#{subject}"
        )


class FailedTimerStore(Protocol):
    def record(self, failed: FailedTimer) -> FailedTimer:
        """Keep ``failed``; a task kept before keeps one item, its ``failures`` increased."""
        ...

    def kept(self) -> list[FailedTimer]: ...

    def remove(self, failed: FailedTimer) -> None:
        """Forget ``failed`` unless it failed again meanwhile."""
        ...
