"""The local stack as a developer meets it: template.yaml's API over HTTP, authorizer in front.

Two kinds of stack: the real template (``local_stack``), and a small template written here whose
echo function returns the event it received, to check the HTTP API v2 translation itself.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
import requests

from local import tokens
from tests.e2e.conftest import LocalStack, free_port
from tests.fakes.lambda_runtime import ROOT

pytestmark = pytest.mark.e2e


def _aws(service: str, endpoint_url: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# ---------------------------------------------------------------------------------- real template
def test_plans_are_served_through_the_authorizer_from_the_seeded_catalog(local_stack: LocalStack) -> None:
    token = local_stack.session.post(
        f"{local_stack.base_url}/_local/token", json={"org_id": "org_1", "role": "member"}
    ).json()["token"]
    response = local_stack.request(
        "GET", "/billing/plans", headers={"Authorization": f"Bearer {token}", "X-Organization-ID": "org_1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    prices = {plan["slug"]: plan["base_price_monthly"] for plan in body["items"]}
    assert prices == {"free": 0, "pro": 299000, "business": 990000, "enterprise": None}
    assert body["page"] == 1
    assert body["has_next"] is False


def test_a_revoked_api_key_is_refused_on_its_very_next_request(local_stack: LocalStack) -> None:
    owner = local_stack.headers("org_revoke", "owner")
    key = local_stack.request("POST", "/billing/api-keys", headers=owner, json={"name": "ci"}).json()
    with_key = {"Authorization": f"Bearer {key['key']}", "X-Organization-ID": "org_revoke"}
    assert local_stack.request("GET", "/billing/plans", headers=with_key).status_code == 200

    assert local_stack.request("DELETE", f"/billing/api-keys/{key['id']}", headers=owner).status_code == 200

    refused = local_stack.request("GET", "/billing/plans", headers=with_key)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "unauthenticated"


def test_a_request_without_authorization_is_refused_by_the_gateway(local_stack: LocalStack) -> None:
    response = local_stack.request("GET", "/billing/plans", headers={"X-Organization-ID": "org_1"})
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}


def test_an_unknown_route_is_not_found(local_stack: LocalStack) -> None:
    response = local_stack.request("GET", "/billing/nothing-here", headers=local_stack.headers())
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


def test_malformed_json_is_a_400_in_the_api_error_format(local_stack: LocalStack) -> None:
    response = local_stack.request(
        "POST",
        "/billing/api-keys",
        data=b'{"name": ',
        headers={**local_stack.headers(role="owner"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "malformed_json"
    assert error["request_id"]


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("POST", "/billing/accounts", b'{"name": "\xff"}'),
        ("PUT", "/billing/wallet/auto-recharge", b'{"enabled": "\xc3\x28"}'),
        ("POST", "/billing/webhooks", b"[" * 1_000 + b"]" * 1_000),
        ("POST", "/webhooks/midtrans", b'{"order_id": ' + b"[" * 1_200 + b"]" * 1_200 + b"}"),
        ("POST", "/webhooks/midtrans", b'{"order_id": "\xfe\xff"}'),
    ],
    ids=["accounts-utf8", "auto-recharge-utf8", "webhooks-deep", "midtrans-deep", "midtrans-utf8"],
)
def test_undecodable_and_too_deep_bodies_are_400_over_http(
    local_stack: LocalStack, method: str, path: str, raw: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    if not path.startswith("/webhooks/"):
        headers |= local_stack.headers(role="owner")

    response = local_stack.request(method, path, data=raw, headers=headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_json"


def test_query_strings_reach_the_handler_repeated_keys_included(local_stack: LocalStack) -> None:
    headers = local_stack.headers()
    too_big = local_stack.request("GET", "/billing/plans?page_size=200", headers=headers)
    assert too_big.status_code == 422
    assert too_big.json()["error"]["code"] == "validation_error"
    assert [d["field"] for d in too_big.json()["error"]["details"]] == ["query.page_size"]
    # API Gateway joins repeated keys with commas: "2,3" is not a page number.
    repeated = local_stack.request("GET", "/billing/plans?page=2&page=3", headers=headers)
    assert repeated.status_code == 422
    assert [d["field"] for d in repeated.json()["error"]["details"]] == ["query.page"]
    second_page = local_stack.request("GET", "/billing/plans?page=2&page_size=2", headers=headers)
    assert second_page.status_code == 200
    assert [p["slug"] for p in second_page.json()["items"]] == ["business", "enterprise"]


def test_health_says_where_the_fakes_listen(local_stack: LocalStack) -> None:
    health = local_stack.request("GET", "/_local/health").json()
    assert health["status"] == "ok"
    assert health["aws_endpoint"].startswith("http://127.0.0.1:")
    assert health["stripe_endpoint"].startswith("http://127.0.0.1:")
    # The moto endpoint is a real AWS endpoint: the seeded table is there.
    dynamodb = _aws("dynamodb", health["aws_endpoint"])
    assert dynamodb.list_tables()["TableNames"] == ["tagih-local-BillingTable"]
    assert requests.get(
        health["stripe_endpoint"] + "/v1/customers", auth=("sk_test_local", ""), timeout=10
    ).ok


def test_tokens_are_signed_by_the_served_jwks_and_bad_requests_are_422(local_stack: LocalStack) -> None:
    token = local_stack.token("org_9", "admin", sub="user_9", scopes=["billing:operator"])
    jwks = local_stack.request("GET", "/_local/jwks.json").json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(
        token, key, algorithms=["RS256"], audience=tokens.LOCAL_AUDIENCE, issuer=tokens.LOCAL_ISSUER
    )
    assert claims["org_roles"] == ["org_9:admin"]
    assert claims["sub"] == "user_9"
    assert claims["scope"] == "billing:operator"

    bad = local_stack.request("POST", "/_local/token", json={"org_id": "", "role": "king", "extra": 1})
    assert bad.status_code == 422
    fields = {d["field"] for d in bad.json()["error"]["details"]}
    assert fields == {"body.org_id", "body.role", "body.extra"}


def test_docs_are_served(local_stack: LocalStack) -> None:
    page = local_stack.request("GET", "/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert "/docs/openapi.json" in page.text
    spec = local_stack.request("GET", "/docs/openapi.json")
    assert spec.status_code == 200
    assert "/billing/plans" in spec.json()["paths"]


def test_function_logs_reach_the_stack_output(local_stack: LocalStack) -> None:
    # The catalog seed ran as a custom resource at startup, in a worker; its log line is prefixed.
    assert "[CatalogSeedFunction]" in local_stack.logs()
    assert "catalog seeded" in local_stack.logs()


def test_published_events_and_unknown_rules(local_stack: LocalStack) -> None:
    events = local_stack.request("GET", "/_local/events?type=billing.subscription.created")
    assert events.status_code == 200
    assert isinstance(events.json()["items"], list)
    missing = local_stack.request("POST", "/_local/rules/no-such-rule/fire")
    assert missing.status_code == 404


# ---------------------------------------------------------------------------- a template of our own
ECHO_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.13
    Handler: app.lambda_handler
    Timeout: 10
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Gate
        Authorizers:
          Gate:
            FunctionArn: !GetAtt GateFunction.Arn
            AuthorizerPayloadFormatVersion: "2.0"
            EnableSimpleResponses: true
            Identity: {Headers: [Authorization]}
  GateFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: gate}
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo
      Timeout: 2
      Environment: {Variables: {GREETING: !Sub "hello-${AWS::Region}"}}
      Events:
        Echo: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: ANY, Path: "/echo/{proxy+}"}}
        Item: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: "/items/{item_id}"}}
        Open:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: POST, Path: /open, Auth: {Authorizer: NONE}}
"""

GATE = """
def lambda_handler(event, context):
    token = event["headers"].get("authorization")
    if token == "Bearer boom":
        raise RuntimeError("authorizer exploded")
    if token != "Bearer good":
        return {"isAuthorized": False}
    return {
        "isAuthorized": True,
        "context": {"who": "tester", "identity": event["identitySource"], "type": event["type"]},
    }
"""

ECHO = """
import base64, json, os, time

def lambda_handler(event, context):
    path = event["rawPath"]
    if path == "/echo/raw":
        return {"plain": True}
    if path == "/echo/boom":
        raise ValueError("kaput")
    if path == "/echo/slow":
        time.sleep(60)
    if path == "/echo/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes([0, 1, 2, 255])).decode(), "isBase64Encoded": True}
    print("this print must not corrupt the worker protocol")
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-echo": "yes"},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": json.dumps({
            "event": event,
            "greeting": os.environ["GREETING"],
            "function_name": context.function_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        }),
    }
"""

FAILING_SEED_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  SeedFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: seed, Handler: app.lambda_handler, Timeout: 10}
  Seed:
    Type: Custom::Seed
    Properties: {ServiceToken: !GetAtt SeedFunction.Arn}
"""

FAILING_SEED = """
import json, urllib.request

def lambda_handler(event, context):
    body = json.dumps({"Status": "FAILED", "Reason": "seed data is broken", "PhysicalResourceId": "x",
                       "StackId": event["StackId"], "RequestId": event["RequestId"],
                       "LogicalResourceId": event["LogicalResourceId"]}).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT")
    urllib.request.urlopen(request, timeout=10).read()
"""


def _write_project(root: Path, template: str, functions: dict[str, str]) -> Path:
    for folder, code in functions.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "app.py").write_text(textwrap.dedent(code), encoding="utf-8")
    path = root / "template.yaml"
    path.write_text(template, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def echo_stack(
    tmp_path_factory: pytest.TempPathFactory, local_stack_factory: Callable[..., LocalStack]
) -> LocalStack:
    root = tmp_path_factory.mktemp("echo")
    return local_stack_factory(_write_project(root, ECHO_TEMPLATE, {"gate": GATE, "echo": ECHO}))


GOOD = {"Authorization": "Bearer good"}


def _echoed(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_the_v2_event_is_built_as_api_gateway_builds_it(echo_stack: LocalStack) -> None:
    response = echo_stack.request(
        "POST",
        "/echo/a/b%20c?tag=x&tag=y&empty=",
        headers={
            **GOOD,
            "X-Thing": "1",
            "Cookie": "session=abc; theme=dark",
            "Content-Type": "application/json",
        },
        data=b'{"hello": "world"}',
    )
    echoed = _echoed(response)
    event = echoed["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "ANY /echo/{proxy+}"
    assert event["rawPath"] == "/echo/a/b%20c"
    assert event["rawQueryString"] == "tag=x&tag=y&empty="
    assert event["queryStringParameters"] == {"tag": "x,y", "empty": ""}
    assert event["pathParameters"] == {"proxy": "a/b c"}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-thing"] == "1"
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert event["headers"]["x-amzn-trace-id"].startswith("Root=1-")
    assert event["body"] == '{"hello": "world"}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"]["method"] == "POST"
    assert context["http"]["path"] == "/echo/a/b%20c"
    assert context["stage"] == "$default"
    assert context["routeKey"] == "ANY /echo/{proxy+}"
    assert context["requestId"] == response.headers["apigw-requestid"]
    assert context["authorizer"] == {
        "lambda": {"who": "tester", "identity": ["Bearer good"], "type": "REQUEST"}
    }
    assert echoed["greeting"] == "hello-us-east-1"
    assert echoed["function_name"] == "EchoFunction"
    assert 0 < echoed["remaining_ms"] <= 2000
    # The function's v2 result becomes the HTTP response.
    assert response.headers["x-echo"] == "yes"
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2"]


def test_binary_bodies_travel_base64_both_ways(echo_stack: LocalStack) -> None:
    echoed = _echoed(
        echo_stack.request(
            "PUT", "/echo/upload", headers={**GOOD, "Content-Type": "application/pdf"}, data=b"%PDF\x00\xff"
        )
    )
    assert echoed["event"]["isBase64Encoded"] is True
    assert base64.b64decode(echoed["event"]["body"]) == b"%PDF\x00\xff"
    binary = echo_stack.request("GET", "/echo/binary", headers=GOOD)
    assert binary.status_code == 200
    assert binary.content == bytes([0, 1, 2, 255])


def test_a_chunked_body_arrives_whole(echo_stack: LocalStack) -> None:
    echoed = _echoed(
        echo_stack.request(
            "POST",
            "/echo/chunks",
            headers={**GOOD, "Content-Type": "text/plain"},
            data=iter([b"hello ", b"world"]),  # no Content-Length: Transfer-Encoding chunked
        )
    )
    assert echoed["event"]["body"] == "hello world"


def test_a_result_without_status_code_is_a_200_json_body(echo_stack: LocalStack) -> None:
    response = echo_stack.request("GET", "/echo/raw", headers=GOOD)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"plain": True}


def test_path_parameters_and_method_matching(echo_stack: LocalStack) -> None:
    event = _echoed(echo_stack.request("GET", "/items/it_42", headers=GOOD))["event"]
    assert event["pathParameters"] == {"item_id": "it_42"}
    assert event["routeKey"] == "GET /items/{item_id}"
    assert "queryStringParameters" not in event
    assert "body" not in event
    wrong_method = echo_stack.request("DELETE", "/items/it_42", headers=GOOD)
    assert wrong_method.status_code == 404
    assert wrong_method.json() == {"message": "Not Found"}


def test_the_authorizer_decides_before_the_function(echo_stack: LocalStack) -> None:
    assert echo_stack.request("GET", "/items/1").json() == {"message": "Unauthorized"}
    denied = echo_stack.request("GET", "/items/1", headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 403
    assert denied.json() == {"message": "Forbidden"}
    broken = echo_stack.request("GET", "/items/1", headers={"Authorization": "Bearer boom"})
    assert broken.status_code == 500
    assert broken.json() == {"message": "Internal Server Error"}
    assert "authorizer exploded" in echo_stack.logs()  # the trace is in the logs, not the response
    # A route with Auth: {Authorizer: NONE} is reached without any credentials.
    opened = echo_stack.request("POST", "/open")
    assert opened.status_code == 201
    assert "authorizer" not in opened.json()["event"]["requestContext"]


def test_function_errors_and_timeouts_are_500_and_the_function_keeps_serving(echo_stack: LocalStack) -> None:
    boom = echo_stack.request("GET", "/echo/boom", headers=GOOD)
    assert boom.status_code == 500
    assert boom.json() == {"message": "Internal Server Error"}
    assert "kaput" in echo_stack.logs()
    slow = echo_stack.request("GET", "/echo/slow", headers=GOOD)
    assert slow.status_code == 500
    assert "timed out" in echo_stack.logs()
    assert echo_stack.request("GET", "/items/after", headers=GOOD).status_code == 201


def test_concurrent_requests_each_see_their_own_event(echo_stack: LocalStack) -> None:
    def call(index: int) -> str:
        event = _echoed(echo_stack.request("GET", f"/items/n{index}", headers=GOOD))["event"]
        return str(event["pathParameters"]["item_id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(call, range(16)))
    assert seen == [f"n{index}" for index in range(16)]


def test_lambda_invoke_through_the_aws_endpoint_runs_the_same_handler(echo_stack: LocalStack) -> None:
    client = _aws("lambda", echo_stack.aws_endpoint)
    ok = client.invoke(FunctionName="EchoFunction", Payload=json.dumps({"rawPath": "/echo/raw"}))
    assert ok.get("FunctionError") is None
    assert json.loads(ok["Payload"].read()) == {"plain": True}
    failed = client.invoke(
        FunctionName="arn:aws:lambda:us-east-1:123456789012:function:EchoFunction",
        Payload=json.dumps({"rawPath": "/echo/boom"}),
    )
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read()) == {"errorMessage": "kaput", "errorType": "ValueError"}


def test_ctrl_c_stops_the_stack_and_everything_it_started(
    tmp_path: Path, local_stack_factory: Callable[..., LocalStack]
) -> None:
    stack = local_stack_factory(_write_project(tmp_path, ECHO_TEMPLATE, {"gate": GATE, "echo": ECHO}))
    assert stack.request("GET", "/items/1", headers=GOOD).status_code == 201  # workers are running
    stack.stop()  # SIGINT to the process group, as Ctrl-C in a terminal
    assert stack.process.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(stack.process.pid, 0)  # no worker, localstripe or other child left in its group


def test_sigterm_to_the_stack_alone_stops_its_children_too(
    tmp_path: Path, local_stack_factory: Callable[..., LocalStack]
) -> None:
    stack = local_stack_factory(_write_project(tmp_path, ECHO_TEMPLATE, {"gate": GATE, "echo": ECHO}))
    assert stack.request("GET", "/items/1", headers=GOOD).status_code == 201
    stack.process.send_signal(signal.SIGTERM)  # only the stack's own process is told
    assert stack.process.wait(timeout=30) == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(stack.process.pid, 0)


def _start_expecting_failure(template: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local", "--port", str(free_port()), "--template", str(template)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_unknown_resource_type_stops_startup_naming_it(tmp_path: Path) -> None:
    template = _write_project(tmp_path, "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n", {})
    result = _start_expecting_failure(template)
    assert result.returncode == 1
    assert "AWS::SNS::Topic" in result.stderr


def test_a_custom_resource_that_fails_stops_startup(tmp_path: Path) -> None:
    template = _write_project(tmp_path, FAILING_SEED_TEMPLATE, {"seed": FAILING_SEED})
    result = _start_expecting_failure(template)
    assert result.returncode == 1
    assert "custom resource Seed FAILED: seed data is broken" in result.stderr


MACHINE_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  DoubleFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: double, Handler: app.lambda_handler, Timeout: 10}
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: machine.asl.json
      DefinitionSubstitutions: {DoubleArn: !GetAtt DoubleFunction.Arn}
"""

MACHINE = {
    "StartAt": "Double",
    "States": {"Double": {"Type": "Task", "Resource": "${DoubleArn}", "End": True}},
}

DOUBLE = """
def lambda_handler(event, context):
    return {"n": event["n"] * 2, "by": context.function_name}
"""


def test_state_machine_lambda_tasks_run_the_same_handlers(
    tmp_path: Path, local_stack_factory: Callable[..., LocalStack]
) -> None:
    (tmp_path / "machine.asl.json").write_text(json.dumps(MACHINE), encoding="utf-8")
    stack = local_stack_factory(_write_project(tmp_path, MACHINE_TEMPLATE, {"double": DOUBLE}))
    sfn = _aws("stepfunctions", stack.aws_endpoint)
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:tagih-local-Machine"
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"n": 21}))["executionArn"]
    deadline = time.monotonic() + 60
    status = "RUNNING"
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        status = described["status"]
        if status != "RUNNING":
            break
        time.sleep(0.2)  # bounded polling for the execution's outcome
    assert status == "SUCCEEDED", sfn.get_execution_history(executionArn=execution)["events"][-3:]
    assert json.loads(described["output"]) == {"n": 42, "by": "DoubleFunction"}


EVENTS_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Bus:
    Type: AWS::Events::EventBus
    Properties: {Name: tagih-events-test}
  PingFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ping
      Handler: app.lambda_handler
      Timeout: 10
      Events:
        Hourly:
          Type: Schedule
          Properties: {Schedule: rate(1 hour)}
        Happened:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern: {detail-type: [thing.happened]}
"""

PING = """
def lambda_handler(event, context):
    print(f"ping got {event['detail-type']} id={event['id']}")
"""


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)  # bounded polling for an asynchronous outcome
    raise AssertionError(f"not seen within {seconds}s: {what}")


def test_bus_events_are_tapped_and_delivered_and_rules_can_be_fired(
    tmp_path: Path, local_stack_factory: Callable[..., LocalStack]
) -> None:
    stack = local_stack_factory(_write_project(tmp_path, EVENTS_TEMPLATE, {"ping": PING}))
    events = _aws("events", stack.aws_endpoint)
    events.put_events(
        Entries=[
            {
                "EventBusName": "tagih-events-test",
                "Source": "tagih.test",
                "DetailType": "thing.happened",
                "Detail": json.dumps({"n": 1}),
            }
        ]
    )

    def published() -> list[dict[str, Any]]:
        response = stack.request("GET", "/_local/events?type=thing.happened")
        return list(response.json()["items"])

    _wait_for(lambda: len(published()) == 1, "the event in /_local/events")
    assert published()[0]["detail"] == {"n": 1}
    _wait_for(lambda: "ping got thing.happened" in stack.logs(), "the rule's target ran")

    fired = stack.request("POST", "/_local/rules/PingFunctionHourly/fire")
    assert fired.status_code == 202
    _wait_for(lambda: "ping got Scheduled Event" in stack.logs(), "the fired schedule's target ran")
