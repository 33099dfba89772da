"""The local stack reads the webhook pipeline from template.yaml as AWS would run it, with the two
local-only settings API.md allows: retries back off in seconds, and loopback receivers."""

from __future__ import annotations

from local.stack import local_parameters
from local.template import build_model
from tests.fakes.lambda_runtime import ROOT


def test_billing_events_reach_the_dispatcher_through_its_queues_with_short_backoff() -> None:
    model = build_model(ROOT / "template.yaml", local_parameters(3000))
    rule = model.rules["WebhookEventsRule"]
    assert rule.bus_name == model.buses["BillingBus"]
    assert [(t.kind, t.ref) for t in rule.targets] == [("sqs", "WebhookEventsQueue")]
    mappings = {(m.queue, m.function) for m in model.event_source_mappings if m.report_batch_item_failures}
    assert {
        ("WebhookEventsQueue", "WebhookDispatchFunction"),
        ("WebhookDeliveryQueue", "WebhookDispatchFunction"),
    } <= mappings
    environment = model.functions["WebhookDispatchFunction"].environment
    assert int(environment["WEBHOOK_RETRY_BASE_SECONDS"]) <= 10  # first retry within 10 s (API.md)
    assert environment["WEBHOOK_DELIVERY_QUEUE_URL"].endswith(model.queues["WebhookDeliveryQueue"].name)
    assert "WebhookDeadLetterQueue" in model.queues["WebhookDeliveryQueue"].attributes["RedrivePolicy"]


def test_deployed_stacks_keep_hours_of_backoff_and_never_allow_loopback() -> None:
    model = build_model(
        ROOT / "template.yaml", {"Stage": "prod", "JwksUrl": "x", "JwtIssuer": "x", "JwtAudience": "x"}
    )
    environment = model.functions["WebhookDispatchFunction"].environment
    assert environment["WEBHOOK_RETRY_WINDOW_SECONDS"] == "86400"
    assert all("WEBHOOK_ALLOW_LOOPBACK" not in f.environment for f in model.functions.values())
