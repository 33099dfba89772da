"""What an operator relies on in template.yaml: only the two webhook functions can decrypt webhook
secrets. Read with the local stack's loader (the template's own tags)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from local.cfn_yaml import load_template
from tests.fakes.lambda_runtime import ROOT

TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]


def of_type(resource_type: str) -> dict[str, dict[str, Any]]:
    return {lid: res for lid, res in RESOURCES.items() if res["Type"] == resource_type}


FUNCTIONS = of_type("AWS::Serverless::Function")
MACHINES = of_type("AWS::Serverless::StateMachine")


def statements(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in resource["Properties"].get("Policies") or []:
        if isinstance(policy, dict) and "Statement" in policy:
            yield from policy["Statement"]


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement.get("Action", [])
    return [action] if isinstance(action, str) else list(action)


def test_only_the_webhook_functions_may_use_the_webhook_secrets_key() -> None:
    granted: dict[str, set[str]] = {}
    for logical_id, resource in {**FUNCTIONS, **MACHINES}.items():
        for statement in statements(resource):
            kms = {a for a in actions(statement) if a.lower().startswith("kms:")}
            if kms:
                assert statement["Resource"] == {"Fn::GetAtt": ["WebhookSecretsKey", "Arn"]}, logical_id
                assert set(statement["Condition"]["Null"]) == {
                    "kms:EncryptionContext:organization_id",
                    "kms:EncryptionContext:webhook_id",
                }
                granted.setdefault(logical_id, set()).update(kms)
    assert granted == {
        "WebhooksFunction": {"kms:Encrypt", "kms:Decrypt"},
        "WebhookDispatchFunction": {"kms:Decrypt"},
    }
    key = RESOURCES["WebhookSecretsKey"]
    assert (key["DeletionPolicy"], key["Properties"]["EnableKeyRotation"]) == ("Retain", True)
