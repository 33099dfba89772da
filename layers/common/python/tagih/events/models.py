"""The billing event envelope every publisher sends (DESIGN.md "Events").

EventBridge ``Source: tagih.billing``, ``DetailType`` = the event type, ``Detail`` = the envelope
``{id, type, created_at, organization_id, data}``. Consumers dedupe by ``id``: events are
published after the state they describe is committed, at least once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from tagih.clock import to_rfc3339
from tagih.ids import new_id

SOURCE = "tagih.billing"

EventType = Literal[
    "billing.subscription.created",
    "billing.subscription.updated",
    "billing.subscription.cancelled",
    "billing.subscription.trial_will_end",
    "billing.invoice.created",
    "billing.invoice.paid",
    "billing.invoice.payment_failed",
    "billing.invoice.overdue",
    "billing.usage.threshold",
    "billing.payment_method.added",
    "billing.wallet.topped_up",
    "billing.wallet.low_balance",
    "billing.payment.unapplied",
]


class BillingEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    type: EventType
    created_at: str  # RFC 3339 UTC with Z, like every timestamp of the API
    organization_id: str
    data: dict[str, Any]


def billing_event(
    event_type: EventType, organization_id: str, data: dict[str, Any], at: datetime
) -> BillingEvent:
    return BillingEvent(
        id=new_id("evt"),
        type=event_type,
        created_at=to_rfc3339(at),
        organization_id=organization_id,
        data=data,
    )


class EventPublisher(Protocol):
    """The port services publish through, after the write an event describes committed
    (``events.publisher.EventBridgePublisher`` on AWS)."""

    def publish(self, events: Sequence[BillingEvent]) -> None: ...
