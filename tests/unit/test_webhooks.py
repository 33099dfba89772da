"""Webhooks with in-memory ports: the URL guard (a fake resolver, no DNS), signatures and secret
rotation, fan-out with sequence numbers, and retries that back off per endpoint until the window ends."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tagih.clock import epoch_seconds
from tagih.domain.webhook_signing import HEADER, signature_header, verify
from tagih.domain.webhook_urls import UrlRefused, check_url
from tagih.domain.webhooks import Delivery, DeliveryRef, RetryPolicy, TransportResult, WebhookEndpoint
from tagih.events.models import billing_event
from tagih.services import webhooks
from tests.fakes.lambda_runtime import ROOT
from tests.fakes.webhooks import (
    InMemoryDeliveries,
    InMemoryWebhooks,
    RecordingQueue,
    ScriptedTransport,
    fake_resolver,
)

ORG = "org_1"
T0 = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
PUBLIC = "93.184.216.34"
RESOLVE = fake_resolver(
    {
        "hooks.example.com": [PUBLIC],
        "rebinding.example.com": [PUBLIC],
        "sneaky.example.com": ["127.0.0.1"],
        "internal.example.com": ["10.1.2.3"],
        "mixed.example.com": [PUBLIC, "192.168.1.20"],
        "localhost": ["::1", "127.0.0.1"],
    }
)


# -- the URL guard ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/tagih", "https"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.7/hook", "private"),
        ("https://internal.example.com/hook", "private"),
        ("https://localhost/hook", "loopback"),
        ("https://sneaky.example.com/hook", "loopback"),
        ("https://mixed.example.com/hook", "private"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://100.64.0.1/hook", "not public"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("https://user:pw@hooks.example.com/hook", "Credentials"),
        ("https://nowhere.example.com/hook", "does not resolve"),
    ],
)
def test_the_guard_refuses_urls_that_are_not_https_to_public_addresses(url: str, why: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        check_url(url, resolve=RESOLVE, allow_loopback=False)
    assert why in refused.value.reason
    assert refused.value.details[0]["field"] == "url"


def test_the_guard_accepts_https_to_a_public_host_and_keeps_the_checked_addresses() -> None:
    checked = check_url("https://hooks.example.com:8443/tagih?x=1", resolve=RESOLVE)
    assert (checked.scheme, checked.host, checked.port, checked.target) == (
        "https",
        "hooks.example.com",
        8443,
        "/tagih?x=1",
    )
    assert checked.addresses == (PUBLIC,)


def test_the_local_stack_relaxes_127_0_0_1_and_localhost_only() -> None:
    assert check_url("http://127.0.0.1:4000/hook", resolve=RESOLVE, allow_loopback=True).scheme == "http"
    assert check_url("http://localhost:4000/hook", resolve=RESOLVE, allow_loopback=True).addresses == (
        "::1",
        "127.0.0.1",
    )
    for still_refused in ("https://sneaky.example.com/", "http://hooks.example.com/", "http://10.0.0.7/"):
        with pytest.raises(UrlRefused):
            check_url(still_refused, resolve=RESOLVE, allow_loopback=True)
    with pytest.raises(UrlRefused):
        check_url("http://127.0.0.1:4000/hook", resolve=RESOLVE, allow_loopback=False)


def test_creating_an_endpoint_for_a_refused_url_keeps_nothing() -> None:
    store = InMemoryWebhooks()
    with pytest.raises(UrlRefused):
        webhooks.create_webhook(
            store,
            organization_id=ORG,
            url="https://sneaky.example.com/hook",
            events=["*"],
            description=None,
            now=T0,
            resolve=RESOLVE,
            allow_loopback=True,
        )
    assert store.endpoints == {}


# -- signatures -------------------------------------------------------------------------------------
def test_a_signature_verifies_with_its_secret_only_and_within_the_tolerance() -> None:
    body = b'{"id":"evt_1"}'
    header = signature_header(["whsec_new"], 1_770_000_000, body)
    assert verify(header, body, "whsec_new", now=1_770_000_000)
    assert not verify(header, body, "whsec_other", now=1_770_000_000)
    assert not verify(header, body + b" ", "whsec_new", now=1_770_000_000)
    assert not verify(header, body, "whsec_new", now=1_770_000_000 + 301)


# -- fan-out and delivery ---------------------------------------------------------------------------
class World:
    def __init__(self, statuses: tuple[int, ...] = (200,), policy: RetryPolicy | None = None) -> None:
        self.store = InMemoryWebhooks()
        self.deliveries = InMemoryDeliveries()
        self.queue = RecordingQueue()
        self.transport = ScriptedTransport(statuses)
        self.policy = policy or RetryPolicy(base_seconds=30, max_delay_seconds=14_400, window_seconds=86_400)
        self.now = T0
        self.resolve = RESOLVE

    def endpoint(
        self, url: str = "https://hooks.example.com/tagih", events: tuple[str, ...] = ("*",)
    ) -> WebhookEndpoint:
        return webhooks.create_webhook(
            self.store,
            organization_id=ORG,
            url=url,
            events=list(events),
            description=None,
            now=self.now,
            resolve=self.resolve,
            allow_loopback=False,
        )

    def publish(self, event_type: str = "billing.invoice.paid") -> list[Delivery]:
        event = billing_event(event_type, ORG, {"id": "inv_1"}, self.now)  # type: ignore[arg-type]
        return webhooks.fan_out(event, self.store, self.deliveries, self.queue, self.now)

    def run(self, ref: DeliveryRef) -> str:
        return webhooks.attempt_delivery(
            ref,
            store=self.store,
            deliveries=self.deliveries,
            queue=self.queue,
            transport=self.transport,
            resolve=self.resolve,
            policy=self.policy,
            allow_loopback=False,
            timeout_seconds=5,
            now=lambda: self.now,
        )

    def run_due(self) -> list[str]:
        """Deliver every queued message whose delay has passed, as SQS would hand them out."""
        outcomes = []
        for ref, delay in self.queue.take():
            self.now = max(self.now, self.now + timedelta(seconds=delay))
            outcomes.append(self.run(ref))
        return outcomes


def test_each_event_gets_one_sequence_number_per_organization_kept_on_redelivery() -> None:
    world = World()
    world.endpoint()
    first = world.publish()
    second = world.publish("billing.subscription.updated")
    again = webhooks.fan_out(
        billing_event("billing.invoice.paid", ORG, {}, T0).model_copy(update={"id": first[0].event_id}),
        world.store,
        world.deliveries,
        world.queue,
        T0,
    )
    assert [first[0].sequence, second[0].sequence] == [1, 2]
    assert [d.sequence for d in again] == [1]  # its delivery was not attempted yet: queued again
    assert len(world.deliveries.sequences) == 2
    assert json.loads(first[0].payload)["sequence"] == 1


def test_only_subscribed_endpoints_get_a_delivery() -> None:
    world = World()
    invoices_only = world.endpoint(events=("billing.invoice.paid",))
    world.endpoint(events=("billing.subscription.updated",))
    queued = world.publish("billing.invoice.paid")
    assert [d.webhook_id for d in queued] == [invoices_only.id]


def test_a_delivery_is_signed_with_the_endpoint_secret_and_posted_once_on_success() -> None:
    world = World()
    endpoint = world.endpoint()
    world.publish()
    assert world.run_due() == ["succeeded"]
    [posted] = world.transport.posted
    assert verify(posted.headers[HEADER], posted.body, endpoint.secret, now=epoch_seconds(world.now))
    assert json.loads(posted.body)["type"] == "billing.invoice.paid"
    assert world.queue.scheduled == []


def test_retries_back_off_and_an_endpoint_that_succeeded_is_not_posted_to_again() -> None:
    world = World(statuses=(500, 500, 200))
    flaky = world.endpoint("https://hooks.example.com/flaky")
    world.publish()
    world.run_due()
    delays = []
    while world.queue.scheduled:
        delays += [delay for _, delay in world.queue.scheduled]
        world.run_due()
    [delivery] = world.deliveries.list_for_webhook(ORG, flaky.id)
    assert delivery.status == "succeeded"
    assert [a.status_code for a in delivery.attempts] == [500, 500, 200]
    assert delays == [30, 60]


def test_two_endpoints_back_off_independently() -> None:
    world = World()
    healthy = world.endpoint("https://hooks.example.com/healthy")
    broken = world.endpoint("https://rebinding.example.com/broken")
    world.publish()
    world.transport = FailingFor("rebinding.example.com")
    for _ in range(4):
        world.run_due()
    posted_hosts = [p.url.host for p in world.transport.posted]
    assert posted_hosts.count("hooks.example.com") == 1
    assert posted_hosts.count("rebinding.example.com") == 4
    assert world.deliveries.list_for_webhook(ORG, healthy.id)[0].status == "succeeded"
    assert world.deliveries.list_for_webhook(ORG, broken.id)[0].status == "pending"


class FailingFor(ScriptedTransport):
    def __init__(self, host: str) -> None:
        super().__init__((200,))
        self.host = host

    def post(self, url, body, headers, timeout_seconds):
        answer = super().post(url, body, headers, timeout_seconds)
        if url.host == self.host:
            return TransportResult(status_code=503, latency_ms=1, response_excerpt="down")
        return answer


def test_after_the_window_the_delivery_fails_and_goes_to_the_dead_letter_queue() -> None:
    world = World(
        statuses=(500,), policy=RetryPolicy(base_seconds=60, max_delay_seconds=3600, window_seconds=1800)
    )
    endpoint = world.endpoint()
    world.publish()
    while world.queue.scheduled:
        world.run_due()
    [delivery] = world.deliveries.list_for_webhook(ORG, endpoint.id)
    assert delivery.status == "failed"
    # 60 + 120 + 240 + 480 + 960 s: the next wait would end past the 30 min window.
    assert len(delivery.attempts) == 5
    assert [ref.event_id for ref in world.queue.dead_letters] == [delivery.event_id]


def test_a_long_wait_is_chained_through_delays_of_at_most_900_seconds() -> None:
    world = World(statuses=(500, 200), policy=RetryPolicy(base_seconds=2000, max_delay_seconds=9000))
    world.endpoint()
    world.publish()
    world.run_due()
    [(_, delay)] = world.queue.scheduled
    assert delay == 900
    assert world.run_due() == ["waiting"]
    world.run_due()
    assert world.run_due() == ["succeeded"]
    assert len(world.transport.posted) == 2


def test_a_duplicate_message_makes_no_second_attempt() -> None:
    world = World(statuses=(500,))
    world.endpoint()
    world.publish()
    [(ref, _)] = world.queue.take()
    assert world.run(ref) == "retry_scheduled"
    world.queue.take()
    assert world.run(ref) == "stale"
    assert len(world.transport.posted) == 1


def test_a_host_that_re_resolves_to_a_private_address_gets_nothing() -> None:
    world = World()
    endpoint = world.endpoint("https://rebinding.example.com/hook")
    world.publish()
    world.resolve = fake_resolver({"rebinding.example.com": ["169.254.169.254"]})
    assert world.run_due() == ["retry_scheduled"]
    assert world.transport.posted == []
    [delivery] = world.deliveries.list_for_webhook(ORG, endpoint.id)
    assert delivery.attempts[0].status_code is None
    assert "link-local" in (delivery.attempts[0].error or "")


def test_during_the_rotation_overlap_both_secrets_verify_and_after_it_only_the_new_one() -> None:
    world = World()
    endpoint = world.endpoint()
    rotated = webhooks.rotate_secret(world.store, ORG, endpoint.id, world.now)
    assert rotated.secret != endpoint.secret

    world.publish()
    world.run_due()
    during = world.transport.posted[-1]
    moment = epoch_seconds(world.now)
    assert verify(during.headers[HEADER], during.body, endpoint.secret, now=moment)
    assert verify(during.headers[HEADER], during.body, rotated.secret, now=moment)

    world.now += timedelta(hours=24, seconds=1)
    world.publish()
    world.run_due()
    after = world.transport.posted[-1]
    moment = epoch_seconds(world.now)
    assert not verify(after.headers[HEADER], after.body, endpoint.secret, now=moment)
    assert verify(after.headers[HEADER], after.body, rotated.secret, now=moment)


def test_the_readme_receiver_guide_verifies_a_tagih_signature() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = readme.split("## Receiving webhooks", 1)[1]
    code = guide.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 — the README's own example
    body = b'{"id":"evt_1","type":"billing.invoice.paid"}'
    header = signature_header(["whsec_new", "whsec_old"], int(time.time()), body)
    assert namespace["verify"](header, body, "whsec_old")
    assert namespace["verify"](header, body, "whsec_new")
    assert not namespace["verify"](header, body, "whsec_other")
    assert not namespace["verify"](header, body.replace(b"paid", b"void"), "whsec_new")
