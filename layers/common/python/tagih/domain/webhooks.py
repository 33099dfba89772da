"""Tenant webhooks: endpoints, the delivery of billing events to them, and its retries.

Endpoints (API.md "Tenant webhooks") are an organization's URLs with the event types each wants and
a signing secret shown once. Delivery runs behind the bus: an EventBridge rule puts every billing
event on an SQS queue, and the dispatcher (``functions/webhook_dispatch``) *fans out* each event
into one delivery per subscribed endpoint (``fan_out``), then *attempts* each delivery on its own
(``attempt_delivery``): a POST of the event envelope, signed, within a 5 s deadline, no redirects.

Retries. Each delivery is its own SQS message on the delivery queue; a failed attempt (non-2xx,
timeout, refused URL) records the attempt on the delivery item and sends the next message with
``DelaySeconds`` = the backoff. SQS delays at most 900 s, so a longer wait is chained: a message
that arrives before the delivery's ``next_attempt_at`` is sent again with the remaining delay.
Chosen over one message per event whose visibility is extended per retry because (1) each endpoint
backs off on its own, and one that already succeeded is never posted to again, since the per-endpoint
state lives on its delivery item, not in a shared message; (2) visibility cannot exceed 12 h, short
of the 24 h window; (3) every extension counts as a receive against the redrive policy, which is
meant for poison messages. When the window is over the delivery is marked ``failed`` and its message
is kept in the dead-letter queue.

At least once, like the bus: a crash between the POST and its record repeats an attempt, so
receivers dedupe by the envelope's ``id``. Every record is conditioned on the attempts already
recorded, so two copies of one message cannot both record an attempt, and a copy arriving after the
delivery moved on is dropped.

Sequence numbers. The envelope carries ``sequence``, a per-organization counter assigned by the
dispatcher once per event id (``DeliveryStore.next_sequence``, one transaction), so a redelivered
event keeps its number and receivers can order events. It counts the events dispatched to the
organization's endpoints: it is assigned only when some endpoint is subscribed, so no request path
and no organization without webhooks pays for it, and an endpoint subscribed to some types sees gaps.
Numbers follow dispatch order, which is publish order except for events published within the same
moment.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field

from tagih.domain.errors import InvalidField
from tagih.domain.webhook_urls import CheckedUrl
from tagih.events.models import EventType
from tagih.ids import new_id

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
ALL_EVENTS = "*"
TEST_EVENT_TYPE = "billing.webhook.test"  # sent by POST /billing/webhooks/{id}/test only, never on the bus
MAX_ENDPOINTS = 16
SECRET_OVERLAP = timedelta(hours=24)
DELIVERY_RETENTION = timedelta(days=30)
MAX_SQS_DELAY_SECONDS = 900
EXCERPT_CHARACTERS = 500
USER_AGENT = "Tagih-Webhooks/1"

DeliveryStatus = Literal["pending", "succeeded", "failed"]


# -- models ------------------------------------------------------------------------------------------
class WebhookEndpoint(BaseModel):
    """An endpoint as stored. ``secret`` and ``previous_secret`` never leave through a view model."""

    model_config = ConfigDict(frozen=True)

    id: str
    organization_id: str
    url: str
    events: list[str]
    description: str | None = None
    secret: str = Field(repr=False)
    previous_secret: str | None = Field(default=None, repr=False)
    previous_secret_expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    version: int = 1

    def subscribed_to(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events

    def secrets_in_force(self, now: datetime) -> list[str]:
        """The current secret, then the rotated-out one while its overlap lasts."""
        in_force = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and now < expires:
            in_force.append(self.previous_secret)
        return in_force

    def overlap_ends_at(self, now: datetime) -> datetime | None:
        expires = self.previous_secret_expires_at
        return expires if self.previous_secret and expires is not None and now < expires else None


class DeliveryAttempt(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=1)
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came back.")
    latency_ms: int = Field(ge=0)
    response_excerpt: str | None = Field(description="The start of the response body.")
    error: str | None = Field(description="Why there is no usable answer: timeout, refused URL, …")


class Delivery(BaseModel):
    """One event for one endpoint, with every attempt. Kept 30 days (the item's TTL)."""

    model_config = ConfigDict(frozen=True)

    id: str
    organization_id: str
    webhook_id: str
    event_id: str
    event_type: str
    event_created_at: str  # RFC 3339, as in the envelope
    sequence: int = Field(ge=1)  # with the endpoint, the item's key: one delivery per event
    payload: str = Field(repr=False)  # the exact body every attempt POSTs
    status: DeliveryStatus = "pending"
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    created_at: datetime
    updated_at: datetime

    def ref(self, attempt: int) -> DeliveryRef:
        return DeliveryRef(
            organization_id=self.organization_id,
            webhook_id=self.webhook_id,
            sequence=self.sequence,
            event_id=self.event_id,
            attempt=attempt,
        )


class DeliveryRef(BaseModel):
    """The delivery queue's message: which delivery, and which attempt of it is due."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    organization_id: str
    webhook_id: str
    sequence: int = Field(ge=1)
    event_id: str
    attempt: int = Field(ge=1)
    reason: str | None = None  # set on the message kept in the dead-letter queue


@dataclass(frozen=True)
class TransportResult:
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base * 2^(n-1)`` after the n-th attempt, each wait capped, until the
    window after the first attempt is over."""

    base_seconds: int = 30
    max_delay_seconds: int = 14_400
    window_seconds: int = 86_400

    def delay_after(self, attempt: int) -> int:
        return int(min(self.base_seconds * 2 ** min(attempt - 1, 30), self.max_delay_seconds))


# -- ports -------------------------------------------------------------------------------------------
class WebhookStore(Protocol):
    def create(self, endpoint: WebhookEndpoint) -> None: ...

    def list_for_organization(self, organization_id: str) -> list[WebhookEndpoint]:
        """Secrets as stored (sealed): only ``get`` and ``find`` open them, for signing."""
        ...

    def get(self, organization_id: str, webhook_id: str) -> WebhookEndpoint:
        """``WebhookEndpointNotFound`` for an unknown id or another organization's."""
        ...

    def find(self, organization_id: str, webhook_id: str) -> WebhookEndpoint | None: ...

    def delete(self, organization_id: str, webhook_id: str) -> None: ...

    def replace(self, endpoint: WebhookEndpoint, seen_version: int) -> None:
        """Write ``endpoint`` if the stored one is still at ``seen_version`` (else 409)."""
        ...


class DeliveryStore(Protocol):
    def next_sequence(self, organization_id: str, event_id: str, now: datetime) -> int:
        """The event's number in its organization: assigned once, the same on every later call."""
        ...

    def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        """The stored delivery for (endpoint, event), and whether this call created it."""
        ...

    def get(self, ref: DeliveryRef) -> Delivery | None: ...

    def record(self, delivery: Delivery, seen_attempts: int) -> bool:
        """Write ``delivery`` if the stored one still has ``seen_attempts`` attempts."""
        ...

    def list_for_webhook(self, organization_id: str, webhook_id: str) -> list[Delivery]:
        """Newest event (highest sequence) first."""
        ...


class DeliveryQueue(Protocol):
    def schedule(self, ref: DeliveryRef, delay_seconds: int) -> None: ...

    def dead_letter(self, ref: DeliveryRef) -> None: ...


class Transport(Protocol):
    def post(
        self, url: CheckedUrl, body: bytes, headers: dict[str, str], timeout_seconds: float
    ) -> TransportResult: ...


# -- endpoint services ---------------------------------------------------------------------------------
def check_event_types(events: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(events))
    if not unique:
        raise InvalidField("events", "Name at least one event type, or ['*'] for all.", "too_short")
    if ALL_EVENTS in unique and len(unique) > 1:
        raise InvalidField("events", "'*' already means every event type; send it alone.")
    unknown = [name for name in unique if name != ALL_EVENTS and name not in EVENT_TYPES]
    if unknown:
        raise InvalidField("events", f"Unknown event types: {', '.join(unknown)}.", "enum")
    return unique


def envelope_body(
    *, event_id: str, event_type: str, created_at: str, organization_id: str, sequence: int, data: Any
) -> str:
    """The bytes every attempt POSTs: the bus envelope plus ``sequence``, compact JSON."""
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created_at": created_at,
            "organization_id": organization_id,
            "sequence": sequence,
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def new_delivery(
    endpoint: WebhookEndpoint,
    *,
    event_id: str,
    event_type: str,
    created_at: str,
    sequence: int,
    data: Any,
    now: datetime,
) -> Delivery:
    return Delivery(
        id=new_id("whd"),
        organization_id=endpoint.organization_id,
        webhook_id=endpoint.id,
        event_id=event_id,
        event_type=event_type,
        event_created_at=created_at,
        sequence=sequence,
        payload=envelope_body(
            event_id=event_id,
            event_type=event_type,
            created_at=created_at,
            organization_id=endpoint.organization_id,
            sequence=sequence,
            data=data,
        ),
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


AttemptOutcome = Literal["succeeded", "retry_scheduled", "failed", "waiting", "stale", "gone"]
