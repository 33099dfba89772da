"""The HTTP API of template.yaml on 127.0.0.1, as API Gateway (HTTP API, payload 2.0) serves it.

Route matching, the Lambda REQUEST authorizer in front, the v2 event, the v2 result translation,
and API Gateway's own answers (404 Not Found, 401 Unauthorized, 403 Forbidden, 500 Internal Server
Error). Authorizer results are not cached locally (API Gateway caches for ReauthorizeEvery): a
developer who revokes an API key or changes a role sees the effect on the next request.

Local-only routes live under ``/_local`` and ``/docs``, among them the gateway fakes' controls:
``POST /_local/midtrans/settle`` and ``/_local/midtrans/expire`` ``{order_id}`` move a transaction
of the Midtrans fake, which then POSTs its signed notification to ``/webhooks/midtrans`` here
before the route answers (with the status that notification got).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local import docs_ui, tokens
from local.midtrans_fake import OrderClosed
from local.model import ACCOUNT_ID, REGION, FunctionError, Route, StackModel
from local.resources import CfnResponses
from local.template import API_ID

if TYPE_CHECKING:
    from local.midtrans_fake import MidtransFake

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENAPI_PATH = REPO_ROOT / "docs" / "openapi.json"
ROLES = ("owner", "admin", "member")
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # HTTP API's request payload quota
_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded|graphql))$"
)


class _TooLarge(Exception):
    pass


@dataclass
class FrontState:
    """What the front needs from the rest of the stack; filled in as the stack starts."""

    model: StackModel
    invoke: Callable[[str, Any], Any] | None = None
    dispatcher: Any = None  # local.dispatch.Dispatcher once started
    cfn_responses: CfnResponses = field(default_factory=CfnResponses)
    ready: bool = False
    aws_endpoint: str | None = None
    stripe_endpoint: str | None = None
    midtrans: MidtransFake | None = None
    # POST /_local/faults: the next invocation of a function dies at an AWS call (local.workers)
    plan_fault: Callable[[str, dict[str, Any]], None] | None = None


def _fault_plan(body: Any, functions: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict) or body.get("function") not in functions:
        return None
    if set(body) == {"function", "at_call", "when"}:
        ok = isinstance(body["at_call"], int) and body["at_call"] >= 1 and body["when"] in ("before", "after")
        return {"at_call": body["at_call"], "when": body["when"]} if ok else None
    writing = body.get("before_writing")
    if (
        set(body) == {"function", "before_writing"}
        and isinstance(writing, dict)
        and set(writing) == {"sk_prefix", "status"}
        and all(isinstance(v, str) and v for v in writing.values())
    ):
        return {"when": "before", "at_call": 0, "before_writing": writing}
    return None


@dataclass(frozen=True)
class Match:
    route: Route
    path_parameters: dict[str, str]


def _segment_rank(segment: str) -> int:
    if segment.endswith("+}"):
        return 0
    if segment.startswith("{") and segment.endswith("}"):
        return 1
    return 2


def match_route(routes: list[Route], method: str, path: str) -> Match | None:
    """API Gateway's rule: the most specific route wins (literal > {param} > {proxy+}; method > ANY)."""
    segments = path.strip("/").split("/") if path.strip("/") else []
    best: tuple[tuple[Any, ...], Match] | None = None
    for route in routes:
        if route.method not in (method, "ANY"):
            continue
        pattern = route.path.strip("/").split("/") if route.path.strip("/") else []
        params: dict[str, str] = {}
        ranks: list[int] = []
        matched = True
        for index, part in enumerate(pattern):
            rank = _segment_rank(part)
            if rank == 0:
                rest = segments[index:]
                if not rest:
                    matched = False
                    break
                params[part[1:-2]] = unquote("/".join(rest))
                ranks.append(rank)
                break
            if index >= len(segments):
                matched = False
                break
            if rank == 1:
                if not segments[index]:
                    matched = False
                    break
                params[part[1:-1]] = unquote(segments[index])
            elif part != segments[index]:
                matched = False
                break
            ranks.append(rank)
        else:
            if len(pattern) != len(segments):
                matched = False
        if not matched:
            continue
        key = (tuple(ranks), route.method != "ANY")
        if best is None or key > best[0]:
            best = (key, Match(route, params))
    return best[1] if best else None


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return True
    return bool(_TEXT_TYPES.match(content_type.split(";", 1)[0].strip().lower()))


class _Handler(BaseHTTPRequestHandler):
    server: FrontServer
    protocol_version = "HTTP/1.1"

    # -- plumbing ----------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.address_string()} {format % args}")

    def _send(
        self,
        status: int,
        body: bytes | str | dict[str, Any] | list[Any],
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> None:
        if isinstance(body, (dict, list)):
            payload = json.dumps(body).encode()
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = body
        self.send_response(status)
        names = {name.lower() for name, _ in headers or []}
        if "content-type" not in names:
            self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("apigw-requestid", self._request_id)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _body(self) -> bytes:
        return self._raw_body

    def _read_body(self) -> bytes:
        """The whole body, read once up front so that a keep-alive connection stays in step."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                if sum(map(len, chunks)) > MAX_PAYLOAD_BYTES:
                    raise _TooLarge
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD_BYTES:
            raise _TooLarge
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        self._request_id = f"{uuid.uuid4().hex[:14]}="
        try:
            self._raw_body = self._read_body()
        except _TooLarge:
            self.close_connection = True  # the unread body would be taken for the next request
            self._send(413, {"message": "Request Entity Too Large"})
            return
        except ValueError:
            self.close_connection = True
            self._send(400, {"message": "Bad Request"})
            return
        try:
            url = urlsplit(self.path)
            if url.path.startswith(("/_local/", "/docs")) and self._local(url.path, url.query):
                return
            self._api(url.path, url.query)
        except Exception as error:  # the front must answer, whatever failed behind it
            self.server.log(f"front error on {self.command} {self.path}: {error!r}")
            self._send(500, {"message": "Internal Server Error"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    # -- the template's routes ---------------------------------------------------------------------
    def _api(self, path: str, query: str) -> None:
        state = self.server.state
        body = self._body()
        if not state.ready or state.invoke is None:
            self._send(503, {"message": "Service Unavailable"})
            return
        match = match_route(state.model.routes, self.command, path)
        if match is None:
            self._send(404, {"message": "Not Found"})
            return
        event = self._event(match, path, query, body)
        route = match.route
        if route.authorizer is not None:
            authorizer = route.authorizer
            identity = []
            for header in authorizer.identity_headers:
                value = event["headers"].get(header.lower())
                if not value:
                    self._send(401, {"message": "Unauthorized"})  # API Gateway does not call it
                    return
                identity.append(value)
            auth_event = {
                "version": "2.0",
                "type": "REQUEST",
                "routeArn": (
                    f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{API_ID}/$default/{self.command}{path}"
                ),
                "identitySource": identity,
                "routeKey": event["routeKey"],
                "rawPath": event["rawPath"],
                "rawQueryString": event["rawQueryString"],
                "headers": event["headers"],
                "requestContext": event["requestContext"],
            }
            for optional in ("cookies", "queryStringParameters", "pathParameters"):
                if optional in event:
                    auth_event[optional] = event[optional]
            try:
                answer = state.invoke(authorizer.function, auth_event)
            except FunctionError as error:
                self.server.log(f"authorizer {authorizer.function} failed: {error}")
                self._send(500, {"message": "Internal Server Error"})
                return
            allowed, context = _authorizer_decision(answer, authorizer.simple_responses)
            if allowed is None:
                self.server.log(f"authorizer {authorizer.function} answered {answer!r}")
                self._send(500, {"message": "Internal Server Error"})
                return
            if not allowed:
                self._send(403, {"message": "Forbidden"})
                return
            event["requestContext"]["authorizer"] = {"lambda": context}
        try:
            result = state.invoke(route.function, event)
        except FunctionError as error:
            self.server.log(f"{route.function} failed: {error}")
            self._send(500, {"message": "Internal Server Error"})
            return
        self._respond_v2(result)

    def _event(self, match: Match, path: str, query: str, body: bytes) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
        # Headers API Gateway adds in front of every integration.
        forwarded_for = headers.get("x-forwarded-for")
        client_ip = self.client_address[0]
        headers["x-forwarded-for"] = f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip
        headers["x-forwarded-proto"] = "http"
        headers["x-forwarded-port"] = str(self.server.server_address[1])
        headers.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
        query_parameters: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            query_parameters[key] = f"{query_parameters[key]},{value}" if key in query_parameters else value
        now = time.time()
        route_key = match.route.route_key
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": API_ID,
                "domainName": headers.get("host", "127.0.0.1"),
                "domainPrefix": headers.get("host", "127.0.0.1").split(".", 1)[0],
                "http": {
                    "method": self.command,
                    "path": path,
                    "protocol": self.request_version,
                    "sourceIp": self.client_address[0],
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": self._request_id,
                "routeKey": route_key,
                "stage": "$default",
                "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if query_parameters:
            event["queryStringParameters"] = query_parameters
        if match.path_parameters:
            event["pathParameters"] = match.path_parameters
        if body:
            text: str | None = None
            if _is_text(headers.get("content-type")):
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
            if text is None:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
            else:
                event["body"] = text
        return event

    def _respond_v2(self, result: Any) -> None:
        if not (isinstance(result, dict) and "statusCode" in result):
            # HTTP API v2: any other valid JSON is the body of a 200 application/json response.
            self._send(200, json.dumps(result).encode())
            return
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers.extend((str(name), str(v)) for v in values)
        headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or [])
        raw = result.get("body")
        if raw is None:
            payload = b""
        elif result.get("isBase64Encoded"):
            payload = base64.b64decode(str(raw))
        else:
            payload = str(raw).encode()
        self._send(int(result["statusCode"]), payload, headers)

    # -- local-only routes --------------------------------------------------------------------------
    def _local(self, path: str, query: str) -> bool:
        state = self.server.state
        method = self.command
        if path == "/_local/health" and method == "GET":
            if not state.ready:
                self._send(503, {"status": "starting"})
            else:
                self._send(
                    200,
                    {
                        "status": "ok",
                        "aws_endpoint": state.aws_endpoint,
                        "stripe_endpoint": state.stripe_endpoint,
                        "midtrans_endpoint": state.midtrans.url if state.midtrans else None,
                    },
                )
            return True
        if path == "/_local/jwks.json" and method == "GET":
            self._send(200, tokens.jwks())
            return True
        if path == "/_local/token" and method == "POST":
            self._token()
            return True
        if path == "/_local/events" and method == "GET":
            if state.dispatcher is None:
                self._send(503, {"message": "the event dispatcher is not running yet"})
                return True
            detail_type = dict(parse_qsl(query)).get("type") or None
            self._send(200, {"items": state.dispatcher.published_events(detail_type)})
            return True
        fire = re.fullmatch(r"/_local/rules/([^/]+)/fire", path)
        if fire and method == "POST":
            if state.dispatcher is None:
                self._send(503, {"message": "the event dispatcher is not running yet"})
                return True
            try:
                state.dispatcher.fire_rule(unquote(fire.group(1)))
            except KeyError:
                self._send(404, {"message": f"no rule {unquote(fire.group(1))!r}"})
                return True
            self._send(202, {"fired": unquote(fire.group(1))})
            return True
        if path == "/_local/faults" and method == "POST":
            self._fault()
            return True
        midtrans = re.fullmatch(r"/_local/midtrans/(settle|expire)", path)
        if midtrans and method == "POST":
            self._midtrans(midtrans.group(1))
            return True
        cfn = re.fullmatch(r"/_local/cfn-response/([0-9a-f]+)", path)
        if cfn and method == "PUT":
            try:
                answer = json.loads(self._body())
            except ValueError:
                self._send(400, {"message": "not JSON"})
                return True
            if not isinstance(answer, dict) or not state.cfn_responses.deliver(cfn.group(1), answer):
                self._send(404, {"message": "no such pending custom resource"})
                return True
            self._send(200, b"", content_type="text/plain")
            return True
        if path in ("/docs", "/docs/") and method == "GET":
            if docs_ui.assets_dir() is None:
                self._send(503, {"message": docs_ui.MISSING})
            else:
                self._send(200, docs_ui.PAGE, content_type="text/html; charset=utf-8")
            return True
        if path.startswith(docs_ui.ASSET_PREFIX) and method == "GET":
            found = docs_ui.asset(path)
            if found is None:
                self._send(404, {"message": "Not Found"})
            else:
                self._send(200, found[0], content_type=found[1])
            return True
        if path == "/docs/openapi.json" and method == "GET":
            if not OPENAPI_PATH.is_file():
                self._send(404, {"message": "docs/openapi.json has not been generated (make openapi)"})
            else:
                self._send(200, OPENAPI_PATH.read_bytes())
            return True
        if path.startswith("/_local/"):
            self._send(404, {"message": "Not Found"})
            return True
        return False

    def _token(self) -> None:
        try:
            body = json.loads(self._body() or b"null")
        except ValueError:
            self._validation([{"field": "body", "message": "Not valid JSON.", "type": "json_invalid"}])
            return
        details: list[dict[str, str]] = []
        if not isinstance(body, dict):
            self._validation([{"field": "body", "message": "Must be an object.", "type": "object_type"}])
            return
        org_id, role = body.get("org_id"), body.get("role")
        sub, scopes = body.get("sub", "user_local"), body.get("scopes")
        if not isinstance(org_id, str) or not org_id:
            details.append({"field": "body.org_id", "message": "A non-empty string.", "type": "string_type"})
        if role not in ROLES:
            details.append({"field": "body.role", "message": f"One of {', '.join(ROLES)}.", "type": "enum"})
        if not isinstance(sub, str) or not sub:
            details.append({"field": "body.sub", "message": "A non-empty string.", "type": "string_type"})
        if isinstance(scopes, str):
            scopes = scopes.split()
        if scopes is not None and not (isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)):
            details.append({"field": "body.scopes", "message": "A list of strings.", "type": "list_type"})
        unknown = set(body) - {"org_id", "role", "sub", "scopes"}
        details.extend(
            {"field": f"body.{name}", "message": "Unknown field.", "type": "extra_forbidden"}
            for name in sorted(unknown)
        )
        if details:
            self._validation(details)
            return
        token = tokens.mint_token(org_roles=[f"{org_id}:{role}"], subject=str(sub), scopes=scopes)
        self._send(200, {"token": token})

    def _fault(self) -> None:
        """``{function, at_call, when}``: the next invocation of ``function`` (a logical id) dies
        ``before`` its ``at_call``-th AWS call is sent, or ``after`` it was answered; or
        ``{function, before_writing: {sk_prefix, status}}``: it dies before it writes such an item
        (``PAYMENT#`` ``succeeded``: after the gateway took the money, before it was recorded). As a
        killed Lambda would: for fault tests over HTTP."""
        state = self.server.state
        try:
            body = json.loads(self._body() or b"null")
        except ValueError:
            body = None
        plan = _fault_plan(body, state.model.functions)
        if plan is None or state.plan_fault is None or not isinstance(body, dict):
            message = "{function, at_call >= 1, when} or {function, before_writing: {sk_prefix, status}}"
            self._validation([{"field": "body", "message": message, "type": "value_error"}])
            return
        state.plan_fault(str(body["function"]), plan)
        self._send(202, {"planned": body})

    def _midtrans(self, action: str) -> None:
        """Settle or expire a Midtrans fake transaction; the fake notifies /webhooks/midtrans first."""
        state = self.server.state
        # The notification goes to this front's /webhooks/midtrans, which answers only once ready.
        if not state.ready or state.midtrans is None:
            self._send(503, {"message": "the local stack is not ready yet"})
            return
        try:
            body = json.loads(self._body() or b"null")
        except ValueError:
            self._validation([{"field": "body", "message": "Not valid JSON.", "type": "json_invalid"}])
            return
        if not isinstance(body, dict):
            self._validation([{"field": "body", "message": "Must be an object.", "type": "object_type"}])
            return
        order_id = body.get("order_id")
        details = [
            {"field": f"body.{name}", "message": "Unknown field.", "type": "extra_forbidden"}
            for name in sorted(set(body) - {"order_id"})
        ]
        if not isinstance(order_id, str) or not order_id:
            message = "A non-empty string."
            details.insert(0, {"field": "body.order_id", "message": message, "type": "string_type"})
            self._validation(details)
            return
        if details:
            self._validation(details)
            return
        fake = state.midtrans
        try:
            sent = fake.settle(order_id) if action == "settle" else fake.expire(order_id)
        except KeyError:
            self._error(404, "order_not_found", f"The Midtrans fake has no order {order_id!r}.")
            return
        except OrderClosed as closed:
            self._error(409, "order_closed", f"The payer can no longer pay it: {closed}.")
            return
        delivery = sent["delivery"]
        self._send(
            200,
            {
                "order_id": order_id,
                "transaction_status": sent["notification"]["transaction_status"],
                "notification": {"status": delivery["status"], "error": delivery["error"]},
            },
        )

    def _error(
        self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None
    ) -> None:
        """API.md's error envelope, so local routes fail the way the API does."""
        self._send(
            status,
            {
                "error": {
                    "code": code,
                    "message": message,
                    "details": details or [],
                    "request_id": self._request_id,
                }
            },
        )

    def _validation(self, details: list[dict[str, str]]) -> None:
        self._error(422, "validation_error", "The request is invalid.", details)


def _authorizer_decision(answer: Any, simple: bool) -> tuple[bool | None, dict[str, Any]]:
    """(allowed, context); allowed is None when the answer is malformed (API Gateway: 500)."""
    if not isinstance(answer, dict):
        return None, {}
    context = answer.get("context") or {}
    if not isinstance(context, dict):
        return None, {}
    if simple:
        allowed = answer.get("isAuthorized")
        return (allowed if isinstance(allowed, bool) else None), context
    policy = answer.get("policyDocument")
    if not isinstance(policy, dict) or "principalId" not in answer:
        return None, {}
    statements = policy.get("Statement") or []
    effects = {str(s.get("Effect")) for s in statements if isinstance(s, dict)}
    return ("Allow" in effects and "Deny" not in effects), context


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The listen backlog: connections the kernel completes while the accept loop is busy. The
    # default (5) dropped the rest of a 50-request burst; 256 holds 200 parallel clients (Linux
    # caps it at net.core.somaxconn, 4096 by default).
    request_queue_size = 256

    def __init__(self, port: int, state: FrontState, log: Callable[[str], None]) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        self.log = log
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http-front", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serve_forever that must have begun
            self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


__all__ = ["FrontServer", "FrontState", "match_route"]
