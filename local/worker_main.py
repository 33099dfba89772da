"""One Lambda "instance": imports a handler once, then serves invocations over its stdin/stdout.

Run as ``python -m local.worker_main`` by ``local.workers``; configuration comes from the
environment (``TAGIH_WORKER_*``). Frames are a 4-byte big-endian length and a UTF-8 JSON body.
The handler's own prints and logs go to stderr, so nothing it writes can corrupt the protocol.
Deliberately light: it imports nothing from the local stack's heavier modules.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import struct
import sys
import time
import traceback
import uuid
from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")


class LocalLambdaContext:
    """What the Lambda runtime passes as ``context`` (the attributes Powertools reads)."""

    def __init__(
        self, function_name: str, arn: str, memory_mb: int, deadline: float, request_id: str
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def read_frame(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None  # the parent closed the pipe: this instance is done
    (length,) = _HEADER.unpack(header)
    body = stream.read(length)
    return json.loads(body)


def write_frame(stream: BinaryIO, message: Any) -> None:
    body = json.dumps(message, default=str).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


class _Fault:
    """This invocation's planned death (``POST /_local/faults``): ``os._exit`` at an AWS call, as
    a killed Lambda instance stops, with nothing flushed and no answer. The hooks are registered
    before the handler creates any client, and do nothing unless a fault is planned."""

    UNCOUNTED = frozenset({"secretsmanager", "sts"})  # the gateways' keys: not a money boundary

    def __init__(self) -> None:
        self.plan: dict[str, Any] | None = None
        self.calls = 0

    def arm(self, plan: dict[str, Any] | None) -> None:
        self.plan, self.calls = plan, 0

    def before(self, model: Any, **_: Any) -> None:
        if self.plan is None or model.service_model.endpoint_prefix in self.UNCOUNTED:
            return
        self.calls += 1
        at_this_call = self.plan["when"] == "before" and self.calls == self.plan["at_call"]
        if self.plan.get("before_writing") is None and at_this_call:
            self._die(model)

    def before_parameters(self, model: Any, params: Any = None, **_: Any) -> None:
        """The call's own parameters (an item written) are seen before they are serialized."""
        writing = self.plan.get("before_writing") if self.plan is not None else None
        if writing is not None and self._writes(params, writing):
            self._die(model)

    @staticmethod
    def _writes(params: Any, writing: dict[str, str]) -> bool:
        """A Put of an item whose SK starts with ``sk_prefix`` and whose status is ``status``."""
        item = params.get("Item") if isinstance(params, dict) else None
        if not isinstance(item, dict):
            return False

        def text(value: Any) -> str:
            return str(value.get("S", "")) if isinstance(value, dict) else str(value or "")

        return (
            text(item.get("SK")).startswith(writing["sk_prefix"])
            and text(item.get("status")) == writing["status"]
        )

    def after(self, model: Any, **_: Any) -> None:
        if self.plan is None or model.service_model.endpoint_prefix in self.UNCOUNTED:
            return
        if (
            self.plan.get("before_writing") is None
            and self.plan["when"] == "after"
            and self.calls == self.plan["at_call"]
        ):
            self._die(model)

    def _die(self, model: Any) -> None:
        sys.stderr.write(
            f"local fault: killed {self.plan} at {model.service_model.endpoint_prefix}.{model.name}\n"
        )
        sys.stderr.flush()
        os._exit(137)


def main() -> None:
    # The stack decides when workers stop; Ctrl-C sent to the process group must not kill a
    # request halfway (the parent closes stdin or kills us instead).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # fd 1 (prints, C extensions) now goes to stderr
    sys.stdout = sys.stderr
    protocol_in = sys.stdin.buffer

    code_dir = os.environ["TAGIH_WORKER_CODE_DIR"]
    layer_dirs = json.loads(os.environ.get("TAGIH_WORKER_LAYER_DIRS", "[]"))
    repo_root = os.environ["TAGIH_WORKER_REPO_ROOT"]
    handler_spec = os.environ["TAGIH_WORKER_HANDLER"]
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    arn = os.environ["TAGIH_WORKER_FUNCTION_ARN"]
    memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    timeout = float(os.environ.get("TAGIH_WORKER_TIMEOUT", "3"))
    sys.path[:] = [code_dir, *layer_dirs, repo_root, *(p for p in sys.path if p not in ("", repo_root))]

    module_name, _, function = handler_spec.rpartition(".")
    fault = _Fault()
    import boto3  # every function's dependency (the layer): its clients inherit these hooks

    boto3._get_default_session().events.register("before-call", fault.before)
    boto3._get_default_session().events.register("after-call", fault.after)
    boto3._get_default_session().events.register("before-parameter-build", fault.before_parameters)
    try:
        handler = getattr(importlib.import_module(module_name), function)
    except Exception as exc:
        traceback.print_exc()
        write_frame(
            protocol_out, {"ready": False, "errorType": "Runtime.ImportModuleError", "errorMessage": str(exc)}
        )
        return
    write_frame(protocol_out, {"ready": True})

    while True:
        request = read_frame(protocol_in)
        if request is None:
            return
        request_id = str(request.get("request_id") or uuid.uuid4())
        context = LocalLambdaContext(function_name, arn, memory_mb, time.monotonic() + timeout, request_id)
        fault.arm(request.get("fault"))
        try:
            result = handler(request["event"], context)
            response: dict[str, Any] = {"ok": True, "result": result}
            json.dumps(response)  # a result Lambda could not serialize is the handler's error
        except Exception as exc:
            traceback.print_exc()
            response = {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc)}
        sys.stderr.flush()
        write_frame(protocol_out, response)


if __name__ == "__main__":
    main()
