"""Tenant webhooks' services: the endpoint routes, and the dispatcher's fan-out and delivery
attempts (``fan_out``, ``attempt_delivery``). How delivery, retries and sequence numbers work is
``domain.webhooks``'s docstring; the stores, the queue and the HTTP transport are passed in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from tagih.clock import epoch_seconds, to_rfc3339
from tagih.domain import webhook_signing
from tagih.domain.errors import WebhookEndpointLimitReached
from tagih.domain.webhook_urls import Resolver, UrlRefused, check_url
from tagih.domain.webhooks import (
    MAX_ENDPOINTS,
    MAX_SQS_DELAY_SECONDS,
    SECRET_OVERLAP,
    TEST_EVENT_TYPE,
    USER_AGENT,
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryQueue,
    DeliveryRef,
    DeliveryStatus,
    DeliveryStore,
    RetryPolicy,
    Transport,
    TransportResult,
    WebhookEndpoint,
    WebhookStore,
    check_event_types,
    new_delivery,
)
from tagih.events.models import BillingEvent
from tagih.ids import new_id


def create_webhook(
    store: WebhookStore,
    *,
    organization_id: str,
    url: str,
    events: Sequence[str],
    description: str | None,
    now: datetime,
    resolve: Resolver,
    allow_loopback: bool,
) -> WebhookEndpoint:
    checked_events = check_event_types(events)
    check_url(url, resolve=resolve, allow_loopback=allow_loopback)
    if len(store.list_for_organization(organization_id)) >= MAX_ENDPOINTS:
        raise WebhookEndpointLimitReached(f"An organization may have {MAX_ENDPOINTS} webhook endpoints.")
    endpoint = WebhookEndpoint(
        id=new_id("wh"),
        organization_id=organization_id,
        url=url,
        events=checked_events,
        description=description,
        secret=webhook_signing.new_secret(),
        created_at=now,
        updated_at=now,
    )
    store.create(endpoint)
    return endpoint


def list_webhooks(store: WebhookStore, organization_id: str) -> list[WebhookEndpoint]:
    """Newest first."""
    found = store.list_for_organization(organization_id)
    return sorted(found, key=lambda e: (e.created_at, e.id), reverse=True)


def delete_webhook(store: WebhookStore, organization_id: str, webhook_id: str) -> None:
    store.delete(organization_id, webhook_id)


def rotate_secret(
    store: WebhookStore, organization_id: str, webhook_id: str, now: datetime
) -> WebhookEndpoint:
    """A new secret at once; the one it replaces stays valid for 24 h (signatures carry both)."""
    endpoint = store.get(organization_id, webhook_id)
    rotated = endpoint.model_copy(
        update={
            "secret": webhook_signing.new_secret(),
            "previous_secret": endpoint.secret,
            "previous_secret_expires_at": now + SECRET_OVERLAP,
            "updated_at": now,
            "version": endpoint.version + 1,
        }
    )
    store.replace(rotated, endpoint.version)
    return rotated


def list_deliveries(
    store: WebhookStore, deliveries: DeliveryStore, organization_id: str, webhook_id: str
) -> list[Delivery]:
    store.get(organization_id, webhook_id)  # another organization's id is not found
    return deliveries.list_for_webhook(organization_id, webhook_id)


def send_test_event(
    store: WebhookStore,
    deliveries: DeliveryStore,
    queue: DeliveryQueue,
    *,
    organization_id: str,
    webhook_id: str,
    now: datetime,
) -> Delivery:
    """A ``billing.webhook.test`` event for this endpoint alone, delivered (and retried) like any."""
    endpoint = store.get(organization_id, webhook_id)
    event_id = new_id("evt")
    delivery, _ = deliveries.create(
        new_delivery(
            endpoint,
            event_id=event_id,
            event_type=TEST_EVENT_TYPE,
            created_at=to_rfc3339(now),
            sequence=deliveries.next_sequence(organization_id, event_id, now),
            data={"webhook_id": endpoint.id, "message": "A test event sent from the Tagih API."},
            now=now,
        )
    )
    queue.schedule(delivery.ref(1), 0)
    return delivery


# -- the dispatcher ------------------------------------------------------------------------------------
def fan_out(
    event: BillingEvent,
    store: WebhookStore,
    deliveries: DeliveryStore,
    queue: DeliveryQueue,
    now: datetime,
) -> list[Delivery]:
    """One delivery per endpoint subscribed to the event, each queued for its first attempt.
    Idempotent: a redelivered event finds its deliveries and its sequence number already there."""
    endpoints = [e for e in store.list_for_organization(event.organization_id) if e.subscribed_to(event.type)]
    if not endpoints:
        return []
    sequence = deliveries.next_sequence(event.organization_id, event.id, now)
    queued = []
    for endpoint in sorted(endpoints, key=lambda e: e.id):
        delivery, created = deliveries.create(
            new_delivery(
                endpoint,
                event_id=event.id,
                event_type=event.type,
                created_at=event.created_at,
                sequence=sequence,
                data=event.data,
                now=now,
            )
        )
        # An existing delivery without attempts may have lost its first message: queue it again
        # (a duplicate is dropped by the attempt count); one with attempts has its own chain.
        if created or (delivery.status == "pending" and not delivery.attempts):
            queue.schedule(delivery.ref(1), 0)
            queued.append(delivery)
    return queued


def attempt_delivery(
    ref: DeliveryRef,
    *,
    store: WebhookStore,
    deliveries: DeliveryStore,
    queue: DeliveryQueue,
    transport: Transport,
    resolve: Resolver,
    policy: RetryPolicy,
    allow_loopback: bool,
    timeout_seconds: float,
    now: Callable[[], datetime],
) -> AttemptOutcome:
    """Make attempt ``ref.attempt`` of a delivery if it is due, and schedule what comes next."""
    delivery = deliveries.get(ref)
    if delivery is None:
        return "gone"  # past its 30 days
    done = len(delivery.attempts)
    moment = now()
    not_now = _not_due(delivery, ref, queue, moment)
    if not_now is not None:
        return not_now

    endpoint = store.find(delivery.organization_id, delivery.webhook_id)
    if endpoint is None:
        result = TransportResult(status_code=None, latency_ms=0, error="the endpoint was deleted")
    else:
        result = _post(
            endpoint=endpoint,
            delivery=delivery,
            transport=transport,
            resolve=resolve,
            allow_loopback=allow_loopback,
            timeout_seconds=timeout_seconds,
            moment=moment,
        )
    attempt = DeliveryAttempt(
        number=ref.attempt,
        at=moment,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        response_excerpt=result.response_excerpt,
        error=result.error,
    )
    finished = now()
    status: DeliveryStatus
    if result.succeeded:
        status, next_at = "succeeded", None
    else:
        next_at = finished + timedelta(seconds=policy.delay_after(ref.attempt))
        window_end = delivery.created_at + timedelta(seconds=policy.window_seconds)
        if endpoint is None or next_at > window_end:
            status, next_at = "failed", None
        else:
            status = "pending"
    updated = delivery.model_copy(
        update={
            "status": status,
            "attempts": [*delivery.attempts, attempt],
            "next_attempt_at": next_at,
            "updated_at": finished,
        }
    )
    if not deliveries.record(updated, seen_attempts=done):
        return "stale"  # another copy of this message recorded the attempt first
    if status == "pending":
        _schedule(queue, updated, ref.attempt + 1, finished)
        return "retry_scheduled"
    if status == "failed":
        queue.dead_letter(
            updated.ref(ref.attempt).model_copy(
                update={"reason": attempt.error or f"HTTP {result.status_code}"}
            )
        )
        return "failed"
    return "succeeded"


def _schedule(queue: DeliveryQueue, delivery: Delivery, attempt: int, moment: datetime) -> None:
    due = delivery.next_attempt_at or moment
    remaining = max(0, int((due - moment).total_seconds() + 0.999))
    queue.schedule(delivery.ref(attempt), min(remaining, MAX_SQS_DELAY_SECONDS))


def _post(
    *,
    endpoint: WebhookEndpoint,
    delivery: Delivery,
    transport: Transport,
    resolve: Resolver,
    allow_loopback: bool,
    timeout_seconds: float,
    moment: datetime,
) -> TransportResult:
    try:
        checked = check_url(endpoint.url, resolve=resolve, allow_loopback=allow_loopback)
    except UrlRefused as refused:
        return TransportResult(status_code=None, latency_ms=0, error=f"URL refused: {refused.reason}")
    body = delivery.payload.encode()
    timestamp = epoch_seconds(moment)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        webhook_signing.HEADER: webhook_signing.signature_header(
            endpoint.secrets_in_force(moment), timestamp, body
        ),
        "Tagih-Event-Id": delivery.event_id,
        "Tagih-Event-Type": delivery.event_type,
    }
    return transport.post(checked, body, headers, timeout_seconds)


def _not_due(
    delivery: Delivery, ref: DeliveryRef, queue: DeliveryQueue, moment: datetime
) -> AttemptOutcome | None:
    """Why this message makes no attempt now (a stale copy, a chained wait), or None: attempt."""
    done = len(delivery.attempts)
    if delivery.status != "pending" or done != ref.attempt - 1:
        if delivery.status == "pending" and done == ref.attempt:
            # This attempt was recorded but its successor may not have been queued (a crash
            # between the two): queue it again; a duplicate is dropped by the attempt count.
            _schedule(queue, delivery, done + 1, moment)
        return "stale"
    if delivery.next_attempt_at is not None and delivery.next_attempt_at - moment > timedelta(seconds=1):
        _schedule(queue, delivery, ref.attempt, moment)  # a chained wait longer than SQS delays
        return "waiting"
    return None
