"""Every payload in events/ works with its function (the ones `sam local invoke -e` would use).

Convention: ``events/<function folder>/<case>.json`` is an event for the function whose CodeUri in
template.yaml is ``functions/<function folder>``; beside it, ``<case>.expect.json`` says what the
real handler must answer, run here on moto:

- HTTP functions: ``{"statusCode": 200, "body_contains": "…"?}``; an error status also checks the
  body against the ``Error`` schema of docs/openapi.json;
- authorizers: ``{"isAuthorized": true, "context": {<subset that must match>}}``;
- custom resources: ``{"cfn_status": "SUCCESS"}``; the payload's ResponseURL is a placeholder, so
  the test points it at a loopback server and reads the PUT CloudFormation would receive;
- state machine tasks: ``{"result": {<subset of the answer that must match>}}``.

Optional in any sidecar: ``"items"`` (native JSON items put in the table before the call),
``"items_present"`` (keys that must exist in the table after it), ``"seed_catalog": false``
(start from an empty table instead of the default catalog), ``"secrets"`` (``{"<ENV VAR>": <JSON>}``:
a Secrets Manager secret on moto holding the JSON, its name in that variable, as the stack's gateway
secrets are named in ``STRIPE_SECRET_NAME`` / ``MIDTRANS_SECRET_NAME``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import pytest

from tagih.store.table import reset_clients
from tests.conftest import TABLE_NAME, TIMER_MACHINES
from tests.fakes.lambda_runtime import ROOT, FakeLambdaContext
from tools.functions import Function, by_folder, import_handler_module, load_functions
from tools.openapi import OUTPUT as OPENAPI_DOCUMENT

EVENTS = ROOT / "events"
SIDECAR = ".expect.json"
PAYLOADS = sorted(p for p in EVENTS.glob("*/*.json") if not p.name.endswith(SIDECAR))
FUNCTIONS = by_folder(load_functions())
# Set by the aws and timer_machines fixtures to moto's resources.
TEST_OWNED_ENV = {"TABLE_NAME", "EVENT_BUS_NAME", "STAGE", *TIMER_MACHINES}
# Keys the sidecar may use; anything else is a typo that would silently check nothing.
SIDECAR_KEYS = {
    "statusCode",
    "body_contains",
    "isAuthorized",
    "context",
    "cfn_status",
    "result",
    "items",
    "items_present",
    "seed_catalog",
    "secrets",
}


def read_json(path: Path) -> Any:
    # Decimal, not float: the items go to DynamoDB, which refuses floats.
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)


def function_for(payload: Path) -> Function:
    folder = payload.parent.name
    if folder not in FUNCTIONS:
        pytest.fail(f"events/{folder}/ maps to no function: no CodeUri functions/{folder} in template.yaml")
    return FUNCTIONS[folder]


def sidecar_for(payload: Path) -> dict[str, Any]:
    sidecar = payload.with_name(payload.name.removesuffix(".json") + SIDECAR)
    if not sidecar.exists():
        pytest.fail(f"{payload.relative_to(ROOT)} has no {sidecar.name} saying what it must produce")
    expect: dict[str, Any] = read_json(sidecar)
    unknown = set(expect) - SIDECAR_KEYS
    assert not unknown, f"{sidecar.relative_to(ROOT)}: unknown keys {sorted(unknown)}"
    kinds = {"statusCode", "isAuthorized", "cfn_status", "result"} & set(expect)
    assert len(kinds) == 1, f"{sidecar.name}: expect one of statusCode, isAuthorized, cfn_status, result"
    return expect


class CfnResponses:
    """A loopback stand-in for CloudFormation's pre-signed S3 URL: records each PUT body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cfn-response"


@pytest.fixture
def cfn_responses() -> Iterator[CfnResponses]:
    responses = CfnResponses()
    thread = threading.Thread(target=responses.server.serve_forever, daemon=True)
    thread.start()
    yield responses
    responses.server.shutdown()
    responses.server.server_close()
    thread.join()


def test_there_are_payloads() -> None:
    assert PAYLOADS, "events/ holds no payloads"


def test_every_function_has_a_payload() -> None:
    covered = {p.parent.name for p in PAYLOADS}
    missing = sorted(
        f"{f.logical_id} (events/{folder}/)" for folder, f in FUNCTIONS.items() if folder not in covered
    )
    assert not missing, f"functions without a sam local invoke payload: {missing}"


def configure_function(function: Function, expect: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # The function's own settings (service name, JWKS URL, …); the test's table and bus names win.
    for name, value in function.environment.items():
        if name not in TEST_OWNED_ENV:
            monkeypatch.setenv(name, value)
    # The template names secrets by ARNs only AWS knows: each gets a name of its own on moto.
    for variable, value in expect.get("secrets", {}).items():
        secret_name = f"tagih-events/{variable.lower()}"
        boto3.client("secretsmanager").create_secret(Name=secret_name, SecretString=json.dumps(value))
        monkeypatch.setenv(variable, secret_name)
    reset_clients()  # settings are read again, from the function's environment


@pytest.mark.usefixtures("aws", "timer_machines")
@pytest.mark.parametrize("payload", PAYLOADS, ids=[str(p.relative_to(EVENTS)) for p in PAYLOADS])
def test_payload_gives_what_its_sidecar_expects(
    payload: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    cfn_responses: CfnResponses,
) -> None:
    function = function_for(payload)
    expect = sidecar_for(payload)
    event = read_json(payload)
    if expect.get("seed_catalog", True):
        request.getfixturevalue("catalog")
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    for item in expect.get("items", []):
        table.put_item(Item=item)
    configure_function(function, expect, monkeypatch)
    if "cfn_status" in expect:
        event["ResponseURL"] = cfn_responses.url

    handler = getattr(import_handler_module(function), function.handler_name)
    result = handler(event, FakeLambdaContext(function_name=function.logical_id))

    if "statusCode" in expect:
        assert result["statusCode"] == expect["statusCode"], result.get("body")
        if "body_contains" in expect:
            assert expect["body_contains"] in result["body"]
        if result["statusCode"] >= 400:
            document = json.loads(OPENAPI_DOCUMENT.read_text(encoding="utf-8"))
            schema = {"$ref": "#/components/schemas/Error", "components": document["components"]}
            jsonschema.validate(json.loads(result["body"]), schema)
    if "isAuthorized" in expect:
        assert result["isAuthorized"] is expect["isAuthorized"]
        context = result.get("context") or {}
        assert {k: context.get(k) for k in expect.get("context", {})} == expect.get("context", {})
    if "cfn_status" in expect:
        assert len(cfn_responses.bodies) == 1, "the handler must answer CloudFormation exactly once"
        answer = cfn_responses.bodies[0]
        assert answer["Status"] == expect["cfn_status"], answer.get("Reason")
        assert (answer["RequestId"], answer["LogicalResourceId"]) == (
            event["RequestId"],
            event["LogicalResourceId"],
        )
    if "result" in expect:
        assert {k: result.get(k) for k in expect["result"]} == expect["result"]
    for key in expect.get("items_present", []):
        assert "Item" in table.get_item(Key=key), f"no item {key} after the call"
