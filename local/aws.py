"""moto in server mode, in this process, with Lambda Invoke answered by the local workers.

moto's own Lambda runs functions in Docker; here a WSGI middleware catches
``POST /2015-03-31/functions/<name-or-arn>/invocations`` and hands the payload to the ``Invoker``
(the same worker pools the HTTP front uses). Everything else goes to moto unchanged. moto's Step
Functions interpreter is switched on; its Lambda tasks call ``http://localhost:$MOTO_PORT``, so
``MOTO_PORT`` is set before the first execution can start.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from werkzeug.serving import BaseWSGIServer, make_server

from local.model import FunctionError, StackModel

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from local.workers import Invoker

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")


class LambdaInvokeMiddleware:
    def __init__(self, app: WSGIApplication, model: StackModel) -> None:
        self.app = app
        self.model = model
        self.invoker: Invoker | None = None  # set once the workers know moto's endpoint

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        match = _INVOKE_PATH.match(environ.get("PATH_INFO", ""))
        if environ.get("REQUEST_METHOD") != "POST" or match is None:
            return self.app(environ, start_response)
        return self._invoke(unquote(match.group("name")), environ, start_response)

    def _invoke(self, name: str, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        invoker = self.invoker

        def respond(status: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> list[bytes]:
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or [])],
            )
            return [body]

        if invoker is None:
            body = json.dumps({"Type": "Service", "Message": "the local stack is starting"}).encode()
            return respond("503 Service Unavailable", body, [("x-amzn-ErrorType", "ServiceException")])
        try:
            spec = self.model.function_by_arn(name)
        except KeyError:
            body = json.dumps({"Type": "User", "Message": f"Function not found: {name}"}).encode()
            return respond("404 Not Found", body, [("x-amzn-ErrorType", "ResourceNotFoundException")])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            event: Any = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = json.dumps({"Type": "User", "Message": "Could not parse request body into json"}).encode()
            return respond("400 Bad Request", body, [("x-amzn-ErrorType", "InvalidRequestContentException")])
        invocation_type = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        if invocation_type == "DryRun":
            return respond("204 No Content", b"")
        if invocation_type == "Event":
            invoker.invoke_async(spec.logical_id, event)
            return respond("202 Accepted", b"")
        version = [("X-Amz-Executed-Version", "$LATEST")]
        try:
            result = invoker.invoke(spec.logical_id, event)
        except FunctionError as error:
            body = json.dumps({"errorMessage": error.message, "errorType": error.error_type}).encode()
            return respond("200 OK", body, [*version, ("X-Amz-Function-Error", "Unhandled")])
        return respond("200 OK", json.dumps(result).encode(), version)


_DYNAMODB_LOCK = threading.RLock()


def make_dynamodb_calls_atomic() -> None:
    """Each DynamoDB API call runs alone in moto, as each is atomic in DynamoDB.

    moto's backend holds no lock: two threads' TransactWriteItems can interleave their condition
    checks and writes, which DynamoDB's serializable transactions never do, so a version race that
    must end in one winner could end in none. Serialising whole calls restores DynamoDB's guarantee
    (and nothing stronger: two calls of one request still interleave with other requests).
    """
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_tagih_atomic", False):
        return
    unlocked = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _DYNAMODB_LOCK:
            return unlocked(self)

    call_action._tagih_atomic = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def make_dynamodb_transactions_copy_once() -> None:
    """TransactWriteItems backs up each table once, not once per item of the transaction.

    moto deep-copies a table (for its rollback) for every item of a transaction naming it, so one
    transaction of 100 items copies the whole table 100 times: a usage batch of 1 000 events (11
    transactions) took a minute once the table held a few thousand items. The copies are identical
    (nothing is written before the backup is complete), so the first is reused. Tables alone are
    memoized; every other copy moto makes is left as it is. Needs ``make_dynamodb_calls_atomic``:
    the module's ``copy`` is swapped for the length of one call, which no other call overlaps.
    """
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend = models.DynamoDBBackend
    if getattr(backend.transact_write_items, "_tagih_copy_once", False):
        return
    unpatched = backend.transact_write_items
    real_copy = models.copy  # type: ignore[attr-defined]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups: dict[int, Any] = {}

        class CopyTablesOnce:
            @staticmethod
            def deepcopy(value: Any, memo: Any = None) -> Any:
                if not isinstance(value, Table):
                    return real_copy.deepcopy(value, memo)
                if id(value) not in backups:
                    backups[id(value)] = real_copy.deepcopy(value, memo)
                return backups[id(value)]

        models.copy = CopyTablesOnce  # type: ignore[attr-defined,assignment]
        try:
            unpatched(self, transact_items)
        finally:
            models.copy = real_copy  # type: ignore[attr-defined]

    transact_write_items._tagih_copy_once = True  # type: ignore[attr-defined]
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]


class MotoServer:
    """moto's server app on 127.0.0.1 and a free port, served by a thread of this process."""

    def __init__(self) -> None:
        # Imported here: moto is heavy, and ``local.template`` must stay importable without it.
        from moto.core.config import default_user_config

        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        make_dynamodb_calls_atomic()
        make_dynamodb_transactions_copy_once()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.middleware: LambdaInvokeMiddleware | None = None

    def start(self, model: StackModel) -> str:
        """Serve moto; Lambda Invoke answers 503 until ``set_invoker``."""
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        class QuietHandler(MotoRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass  # one access line per SDK call would drown the functions' logs

        app = LambdaInvokeMiddleware(DomainDispatcherApplication(create_backend_app), model)
        self.middleware = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        port = self._server.server_port
        os.environ["MOTO_PORT"] = str(port)  # read by moto's Step Functions interpreter per call
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{port}"

    def set_invoker(self, invoker: Invoker) -> None:
        assert self.middleware is not None
        self.middleware.invoker = invoker

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
