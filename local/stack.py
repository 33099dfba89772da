"""Start and stop the whole local stack, in the order its parts depend on each other.

moto → resources → state machines → custom resources (the catalog seed) → dispatcher →
localstripe → ready. The HTTP front listens from the start (health answers 503) because custom
resources answer on its ``/_local/cfn-response`` URL and the authorizer fetches its JWKS there.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from local import tokens
from local.aws import MotoServer
from local.cfn_yaml import load_template
from local.http_front import FrontServer, FrontState
from local.model import StackModel
from local.resources import create_resources, run_custom_resources
from local.template import build_model
from local.workers import Invoker

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCALSTRIPE_DEADLINE_SECONDS = 30.0
# localstripe's own CLI listens on every interface ("::"); this runs its app on loopback only,
# and never loads the pickle it leaves in /tmp, so each start is from scratch.
_LOCALSTRIPE = (
    "import sys\n"
    "from aiohttp import web\n"
    "from localstripe.server import app\n"
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    sys.stderr.write(f"[local] {message}\n")
    sys.stderr.flush()


def local_parameters(port: int) -> dict[str, str]:
    return {
        "Stage": "dev",
        "JwksUrl": f"http://127.0.0.1:{port}/_local/jwks.json",
        "JwtIssuer": tokens.LOCAL_ISSUER,
        "JwtAudience": tokens.LOCAL_AUDIENCE,
    }


def _forward(stream: IO[bytes], prefix: str) -> None:
    for raw in iter(stream.readline, b""):
        sys.stderr.write(f"{prefix}{raw.decode(errors='replace').rstrip()}\n")
    stream.close()


class LocalStack:
    def __init__(self, port: int, template_path: Path) -> None:
        self.port = port
        self.template_path = template_path
        self.model: StackModel | None = None
        self.moto: MotoServer | None = None
        self.invoker: Invoker | None = None
        self.front: FrontServer | None = None
        self.dispatcher: Any = None
        self.localstripe: subprocess.Popen[bytes] | None = None
        self.stripe_url: str | None = None
        self.aws_endpoint: str | None = None

    def start(self) -> None:
        # Imported here so that the template can be checked even while these are being written.
        from local.dispatch import Dispatcher
        from local.statemachines import create_state_machines

        # The template first: an unsupported type or intrinsic stops us before anything starts.
        declared = load_template(self.template_path).get("Parameters") or {}
        overrides = {k: v for k, v in local_parameters(self.port).items() if k in declared}
        model = build_model(self.template_path, overrides)
        self.model = model
        for spec in model.functions.values():
            module = spec.handler.rpartition(".")[0].replace(".", "/")
            if not (spec.code_dir / f"{module}.py").is_file():
                log(f"warning: no {module}.py in {spec.code_dir}: {spec.logical_id} will fail when invoked")
        state = FrontState(model=model)
        try:
            self.front = FrontServer(self.port, state, log)
        except OSError as error:
            raise RuntimeError(
                f"cannot listen on 127.0.0.1:{self.port} ({error}); is a stack already running?"
            ) from error
        self.front.start()

        # localstripe boots (a second or two) while moto and the resources are created.
        stripe_port = free_port()
        self.localstripe = subprocess.Popen(
            [sys.executable, "-c", _LOCALSTRIPE, str(stripe_port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert self.localstripe.stdout is not None
        threading.Thread(
            target=_forward, args=(self.localstripe.stdout, "[localstripe] "), daemon=True
        ).start()
        self.stripe_url = f"http://127.0.0.1:{stripe_port}"

        self.moto = MotoServer()
        endpoint = self.moto.start(model)
        self.aws_endpoint = endpoint
        invoker = Invoker(model, endpoint)
        invoker.extra_env["STRIPE_API_BASE"] = self.stripe_url
        self.invoker = invoker
        self.moto.set_invoker(invoker)
        state.invoke = invoker.invoke
        state.aws_endpoint = endpoint
        log(f"moto on {endpoint}")

        create_resources(model, endpoint)
        create_state_machines(model, endpoint)
        log(
            f"created {len(model.tables)} table(s), {len(model.buses)} bus(es), {len(model.buckets)} "
            f"bucket(s), {len(model.secrets)} secret(s), {len(model.queues)} queue(s), "
            f"{len(model.state_machines)} state machine(s)"
        )
        run_custom_resources(model, invoker.invoke, state.cfn_responses, self.front.url)
        log(f"custom resources done: {', '.join(model.custom_resources) or 'none'}")

        self.dispatcher = Dispatcher(model, invoker.invoke, endpoint)
        self.dispatcher.start()
        state.dispatcher = self.dispatcher

        self._wait_for_localstripe(stripe_port)
        state.stripe_endpoint = self.stripe_url
        state.ready = True

    def _wait_for_localstripe(self, port: int) -> None:
        assert self.localstripe is not None
        deadline = time.monotonic() + LOCALSTRIPE_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.localstripe.poll() is not None:
                raise RuntimeError(f"localstripe exited with {self.localstripe.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)  # polling readiness with a deadline
        raise RuntimeError(f"localstripe did not listen on {port} within {LOCALSTRIPE_DEADLINE_SECONDS}s")

    def banner(self) -> str:
        assert self.front is not None
        url = self.front.url
        return "\n".join(
            [
                "",
                "Tagih local stack ready",
                f"  API           {url}  (routes from {self.template_path.name})",
                f"  API docs      {url}/docs",
                f"  tokens        POST {url}/_local/token {{org_id, role}}",
                f"  AWS (moto)    {self.aws_endpoint}",
                f"  localstripe   {self.stripe_url}",
                "  Midtrans fake not yet (issue 3)",
                "  function logs local/.state/logs/<LogicalId>.log",
                "  Ctrl-C stops everything.",
                "",
            ]
        )

    def stop(self) -> None:
        """Stop whatever was started, newest first; safe after a failed start."""
        steps: list[tuple[str, Any]] = [
            ("http front", self.front.stop if self.front else None),
            ("dispatcher", self.dispatcher.stop if self.dispatcher else None),
            ("workers", self.invoker.stop if self.invoker else None),
            ("localstripe", self._stop_localstripe),
            ("moto", self.moto.stop if self.moto else None),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception as error:
                log(f"stopping {name}: {error!r}")

    def _stop_localstripe(self) -> None:
        process = self.localstripe
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
