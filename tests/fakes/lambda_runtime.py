"""What the Lambda runtime hands a handler, and a loader for handler modules by function folder."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

ROOT = Path(__file__).resolve().parents[2]


class _PerThread:
    """A class attribute whose value belongs to the thread that set it."""

    def __init__(self, name: str, values: threading.local) -> None:
        self._name = name
        self._values = values

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        try:
            return getattr(self._values, self._name)
        except AttributeError:
            raise AttributeError(self._name) from None

    def __set__(self, instance: object, value: Any) -> None:
        setattr(self._values, self._name, value)


def _keep_each_invocation_to_its_thread() -> None:
    """Powertools keeps the request in class attributes (``BaseRouter.current_event`` and
    ``lambda_context``), shared by every resolver in the interpreter. Lambda never runs two
    invocations in one process, but a test's threads do: without this, one container's route
    could validate another container's body (seen as a batch of usage counted twice and another
    never). The resolver assigns them on the class, so the per-thread slot sits on its metaclass
    (for that assignment) and on the class (for reads through an instance)."""
    if isinstance(BaseRouter.__dict__.get("current_event"), _PerThread):
        return
    values = threading.local()
    names = ("current_event", "lambda_context")
    metaclass = type(
        "PerThreadRouterMeta",
        (type(BaseRouter),),
        {name: _PerThread(name, values) for name in names},
    )
    for name in names:  # before the metaclass's slot would take the assignment
        setattr(BaseRouter, name, _PerThread(name, values))
    BaseRouter.__class__ = metaclass  # type: ignore[method-assign]


_keep_each_invocation_to_its_thread()


class FakeLambdaContext(LambdaContext):
    """The context object the Lambda runtime passes, with a fixed amount of time left."""

    def __init__(self, function_name: str = "tagih-test", remaining_ms: int = 15_000) -> None:
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self._memory_limit_in_mb = 512
        self._aws_request_id = str(uuid.uuid4())
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = "local"
        self._remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]  # static in the stub
        return self._remaining_ms


def load_function(group: str, container: int = 0) -> ModuleType:
    """Import ``functions/<group>/app.py`` under a unique module name (every handler is ``app``).

    ``container`` > 0 imports it again under another name: another warm Lambda container. Lambda
    never runs two invocations in one process, and the resolver keeps per-request state
    (``app.context``), so concurrent calls in a test each need a container of their own (the state
    Powertools keeps on the class is per thread, see ``_keep_each_invocation_to_its_thread``).
    """
    name = f"tagih_function_{group}" + (f"_container{container}" if container else "")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / group / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def http_event(
    method: str,
    path: str,
    *,
    route: str | None = None,
    body: Any = None,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    authorizer: dict[str, Any] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event as API Gateway builds it after the Lambda authorizer."""
    text = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    lower_headers = {k.lower(): v for k, v in (headers or {}).items()}
    if text is not None:
        lower_headers.setdefault("content-type", "application/json")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route or path}",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": lower_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": f"req-{uuid.uuid4().hex[:12]}",
            "routeKey": f"{method} {route or path}",
            "stage": "$default",
            "time": "22/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1795305600000,
        },
        "isBase64Encoded": base64_body,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if text is not None:
        event["body"] = base64.b64encode(text.encode()).decode() if base64_body else text
    if authorizer is not None:
        event["requestContext"]["authorizer"] = {"lambda": authorizer}
    return event


def principal(
    org: str = "org_1", role: str = "owner", subject: str = "user_1", scopes: str = ""
) -> dict[str, Any]:
    """The authorizer context of an authenticated caller."""
    return {"organization_id": org, "role": role, "subject": subject, "scopes": scopes, "method": "jwt"}


class Answer:
    """A handler's HTTP API v2 result, read as a client reads the response."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.status: int = result["statusCode"]
        self.headers: dict[str, str] = result.get("headers") or {}
        self.raw: str = result.get("body") or ""
        self.body: dict[str, Any] = json.loads(self.raw) if self.raw else {}

    @property
    def error_code(self) -> str:
        return str(self.body["error"]["code"])

    @property
    def fields(self) -> set[str]:
        return {detail["field"] for detail in self.body["error"]["details"]}


def call_route(
    group: str,
    method: str,
    path: str,
    route: str,
    *,
    body: Any = None,
    org: str = "org_1",
    role: str = "owner",
    headers: dict[str, str] | None = None,
    container: int = 0,
) -> Answer:
    """Call ``functions/<group>`` as API Gateway would after the authorizer accepted ``org``/``role``.
    ``route`` is the template's path (``/billing/x/{id}``); its parameters are read from ``path``."""
    parameters = {
        part[1:-1]: value
        for part, value in zip(route.split("/"), path.split("/"), strict=True)
        if part.startswith("{")
    }
    event = http_event(
        method,
        path,
        route=route,
        body=body,
        headers=headers,
        path_parameters=parameters or None,
        authorizer=principal(org, role),
    )
    return Answer(load_function(group, container).lambda_handler(event, FakeLambdaContext()))


class PinnedClock:
    """A settable wall clock for tests, installed through ``clock.use_wall_clock`` (the clock's port)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def call_api(
    method: str,
    path: str,
    *,
    body: Any = None,
    org: str = "org_1",
    role: str = "owner",
    headers: dict[str, str] | None = None,
    container: int = 0,
) -> Answer:
    """Call whichever function ``template.yaml`` routes ``method path`` to, as API Gateway picks it
    (most specific route wins), after the authorizer accepted ``org``/``role``."""
    from local.http_front import match_route
    from local.model import Route
    from tools.functions import load_functions

    routes = [
        Route(method=route.method, path=route.path, function=function.folder, authorizer=None)
        for function in load_functions()
        for route in function.routes
    ]
    match = match_route(routes, method, path.split("?", 1)[0])
    assert match is not None, f"template.yaml has no route for {method} {path}"
    return call_route(
        match.route.function,
        method,
        path,
        match.route.path,
        body=body,
        org=org,
        role=role,
        headers=headers,
        container=container,
    )
