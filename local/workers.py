"""The local Lambda service: a pool of worker subprocesses per function.

Why processes and not threads: Powertools' resolver keeps the current event in a class attribute
(``BaseRouter.current_event``), so two requests in one interpreter would see each other's event.
Each worker is one "instance" (``local.worker_main``): it imports the handler once and serves one
invocation at a time; a pool keeps up to ``MAX_WORKERS`` of them per function and reuses idle ones,
as Lambda does with warm instances. A timed-out worker is killed, as Lambda kills the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from local.model import REGION, FunctionError, FunctionSpec, StackModel

MAX_WORKERS = 4
INIT_DEADLINE_SECONDS = 60.0  # importing a handler (pydantic, powertools) on a slow laptop
REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = REPO_ROOT / "local" / ".state" / "logs"
_HEADER = struct.Struct(">I")


class _WorkerDied(Exception):
    pass


class _Timeout(Exception):
    pass


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise _Timeout
        chunk = os.read(fd, remaining)
        if not chunk:
            raise _WorkerDied
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Worker:
    def __init__(self, spec: FunctionSpec, env: Mapping[str, str], log_lock: threading.Lock) -> None:
        self.spec = spec
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local.worker_main"],
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._stdin: IO[bytes] = self.process.stdin
        self._stdout_fd = self.process.stdout.fileno()
        self._logs = threading.Thread(
            target=self._forward_logs, args=(log_lock,), name=f"logs-{spec.logical_id}", daemon=True
        )
        self._logs.start()

    def _forward_logs(self, log_lock: threading.Lock) -> None:
        """The function's logs: to the stack's stderr with the logical id, and to a file per function."""
        assert self.process.stderr is not None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        prefix = f"[{self.spec.logical_id}] "
        with (LOG_DIR / f"{self.spec.logical_id}.log").open("a", encoding="utf-8") as log_file:
            for raw in iter(self.process.stderr.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                with log_lock:
                    sys.stderr.write(prefix + line + "\n")
                    sys.stderr.flush()
                    log_file.write(line + "\n")
                    log_file.flush()

    def receive(self, deadline: float) -> Any:
        (length,) = _HEADER.unpack(_read_exact(self._stdout_fd, _HEADER.size, deadline))
        return json.loads(_read_exact(self._stdout_fd, length, deadline))

    def send(self, message: Any) -> None:
        body = json.dumps(message).encode()
        try:
            self._stdin.write(_HEADER.pack(len(body)) + body)
            self._stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerDied from exc

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                with contextlib.suppress(OSError):
                    self._stdin.close()  # EOF: the worker's loop ends
                try:
                    self.process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class _Pool:
    def __init__(self, spec: FunctionSpec, invoker: Invoker) -> None:
        self.spec = spec
        self.invoker = invoker
        self.idle: list[_Worker] = []
        self.live = 0
        self.condition = threading.Condition()

    def acquire(self) -> _Worker:
        with self.condition:
            while True:
                if self.invoker.stopped:
                    raise FunctionError(self.spec.logical_id, "Local.Stopped", "the local stack is stopping")
                while self.idle:
                    worker = self.idle.pop()
                    if worker.alive():
                        return worker
                    self.live -= 1
                if self.live < MAX_WORKERS:
                    self.live += 1
                    break
                self.condition.wait()
        try:
            return self._spawn()
        except BaseException:
            self._forget()
            raise

    def _spawn(self) -> _Worker:
        worker = _Worker(self.spec, self.invoker.environment_for(self.spec), self.invoker.log_lock)
        try:
            ready = worker.receive(time.monotonic() + INIT_DEADLINE_SECONDS)
        except (_Timeout, _WorkerDied) as exc:
            worker.stop(kill=True)
            raise FunctionError(
                self.spec.logical_id, "Runtime.InitError", "the handler did not load"
            ) from exc
        if not ready.get("ready"):
            worker.stop(kill=True)
            raise FunctionError(
                self.spec.logical_id,
                str(ready.get("errorType", "Runtime.InitError")),
                str(ready.get("errorMessage", "")),
            )
        with self.condition:
            self.invoker.all_workers.add(worker)
        return worker

    def _forget(self) -> None:
        with self.condition:
            self.live -= 1
            self.condition.notify()

    def release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy or self.invoker.stopped:
            worker.stop(kill=True)
            with self.condition:
                self.invoker.all_workers.discard(worker)
            self._forget()
            return
        with self.condition:
            self.idle.append(worker)
            self.condition.notify()

    def stop(self) -> None:
        with self.condition:
            workers, self.idle = self.idle, []
            self.condition.notify_all()
        for worker in workers:
            worker.stop()


class Invoker:
    """``invoke(logical_id, event)``: the ``local.model.Invoker`` every part of the stack uses."""

    def __init__(self, model: StackModel, aws_endpoint: str) -> None:
        self.model = model
        self.aws_endpoint = aws_endpoint
        self.extra_env: dict[str, str] = {}  # e.g. STRIPE_API_BASE; read when a worker starts
        self.log_lock = threading.Lock()
        self.stopped = False
        self.all_workers: set[_Worker] = set()
        self._pools = {lid: _Pool(spec, self) for lid, spec in model.functions.items()}
        self._faults: dict[str, dict[str, Any]] = {}  # logical id → the next invocation's death
        self._faults_lock = threading.Lock()

    def plan_fault(self, logical_id: str, fault: dict[str, Any]) -> None:
        """The next invocation of ``logical_id`` dies at an AWS call (``local.worker_main``)."""
        with self._faults_lock:
            self._faults[logical_id] = fault

    def environment_for(self, spec: FunctionSpec) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in ("AWS_PROFILE",)}
        env.update(spec.environment)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.aws_endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "POWERTOOLS_TRACE_DISABLED": "1",
                "PYTHONUNBUFFERED": "1",
                # Lambda does not print this per invocation either; it would drown the stack's log.
                "PYTHONWARNINGS": "ignore:No application metrics to publish:UserWarning",
                "TAGIH_WORKER_CODE_DIR": str(spec.code_dir),
                "TAGIH_WORKER_LAYER_DIRS": json.dumps([str(d) for d in spec.layer_dirs]),
                "TAGIH_WORKER_REPO_ROOT": str(REPO_ROOT),
                "TAGIH_WORKER_HANDLER": spec.handler,
                "TAGIH_WORKER_FUNCTION_ARN": spec.arn,
                "TAGIH_WORKER_TIMEOUT": str(spec.timeout_seconds),
            }
        )
        env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Tagih")
        env.update(self.extra_env)
        return env

    def __call__(self, logical_id: str, event: Any) -> Any:
        return self.invoke(logical_id, event)

    def invoke(self, logical_id: str, event: Any) -> Any:
        pool = self._pools.get(logical_id)
        if pool is None:
            raise KeyError(f"no function {logical_id!r} in the template")
        worker = pool.acquire()
        healthy = False
        with self._faults_lock:
            # A death at a given call is this invocation's; one before a given write waits for
            # the invocation that makes that write (it is dropped once a worker died of it).
            fault = self._faults.get(logical_id)
            if fault is not None and "before_writing" not in fault:
                del self._faults[logical_id]
        try:
            worker.send({"event": event, "request_id": str(uuid.uuid4()), "fault": fault})
            response = worker.receive(time.monotonic() + pool.spec.timeout_seconds)
            healthy = True
        except _Timeout:
            raise FunctionError(
                logical_id,
                "Sandbox.Timedout",
                f"Task timed out after {pool.spec.timeout_seconds:.2f} seconds",
            ) from None
        except _WorkerDied:
            if fault is not None:
                with self._faults_lock:
                    if self._faults.get(logical_id) is fault:
                        del self._faults[logical_id]
            raise FunctionError(logical_id, "Runtime.ExitError", "the worker process exited") from None
        finally:
            pool.release(worker, healthy)
        if not response.get("ok"):
            raise FunctionError(logical_id, str(response.get("errorType")), str(response.get("errorMessage")))
        return response.get("result")

    def invoke_async(self, logical_id: str, event: Any) -> None:
        """InvocationType=Event: run in the background; an error is only logged, as Lambda does."""

        def run() -> None:
            try:
                self.invoke(logical_id, event)
            except (FunctionError, KeyError) as error:
                with self.log_lock:
                    sys.stderr.write(f"[{logical_id}] async invocation failed: {error}\n")

        threading.Thread(target=run, name=f"async-{logical_id}", daemon=True).start()

    def stop(self) -> None:
        self.stopped = True
        for pool in self._pools.values():
            pool.stop()
        for worker in list(self.all_workers):
            worker.stop(kill=True)
