"""Start and stop the whole local stack, in the order its parts depend on each other.

HTTP front → localstripe (a child process, booting meanwhile) and the Midtrans fake (in-process) →
moto → resources → state machines → custom resources (the catalog seed) → dispatcher → localstripe
listening → ready. The HTTP front listens from the start (health answers 503) because custom
resources answer on its ``/_local/cfn-response`` URL, the authorizer fetches its JWKS there and the
gateway fakes send their notifications to its ``/webhooks/*`` routes.

Both gateway fakes use the keys of ``LOCAL_SECRET_VALUES``, the values the functions read from
moto's Secrets Manager, so signatures and Basic auth agree on both sides. Every function gets the
fakes' URLs and the front's (``PUBLIC_BASE_URL``) in its environment before any worker starts.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from local import localstripe_app, tokens
from local.aws import MotoServer
from local.cfn_yaml import load_template
from local.http_front import FrontServer, FrontState
from local.midtrans_fake import MidtransFake
from local.model import StackModel
from local.parameters import check_timer_parameters
from local.resources import LOCAL_SECRET_VALUES, create_resources, run_custom_resources
from local.template import build_model
from local.workers import Invoker

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCALSTRIPE_DEADLINE_SECONDS = 30.0
STRIPE_WEBHOOK_SECRET = str(LOCAL_SECRET_VALUES["StripeSecret"]["webhook_secret"])
MIDTRANS_SERVER_KEY = str(LOCAL_SECRET_VALUES["MidtransSecret"]["server_key"])


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
        # Webhook retries back off in seconds here, so the retry path shows within a minute (API.md).
        "WebhookRetryBaseSeconds": "2",
        "WebhookRetryMaxDelaySeconds": "30",
        "WebhookRetryWindowSeconds": "300",
    }


def _forward(stream: IO[bytes], prefix: str) -> None:
    for raw in iter(stream.readline, b""):
        sys.stderr.write(f"{prefix}{raw.decode(errors='replace').rstrip()}\n")
    stream.close()


def _midtrans_log(line: str) -> None:
    sys.stderr.write(f"[midtrans] {line}\n")


class LocalStack:
    def __init__(
        self, port: int, template_path: Path, parameter_overrides: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.template_path = template_path
        self.parameter_overrides = dict(parameter_overrides or {})
        self.model: StackModel | None = None
        self.moto: MotoServer | None = None
        self.invoker: Invoker | None = None
        self.front: FrontServer | None = None
        self.dispatcher: Any = None
        self.localstripe: subprocess.Popen[bytes] | None = None
        self.stripe_url: str | None = None
        self.midtrans: MidtransFake | None = None
        self.aws_endpoint: str | None = None

    def start(self) -> None:
        # Imported here so that the template can be checked even while these are being written.
        from local.dispatch import Dispatcher
        from local.statemachines import create_state_machines

        # The template first: an unsupported type or intrinsic stops us before anything starts.
        template = load_template(self.template_path)
        declared = template.get("Parameters") or {}
        overrides = {k: v for k, v in local_parameters(self.port).items() if k in declared}
        overrides.update(self.parameter_overrides)  # the developer's, as sam deploy takes them
        model = build_model(self.template_path, overrides)
        check_timer_parameters(template, model)  # what every timer would trip on, said now
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
        front_url = self.front.url

        # localstripe boots (a second or two) while moto and the resources are created.
        stripe_port = free_port()
        self.localstripe = localstripe_app.start(
            stripe_port,
            webhook_url=f"{front_url}/webhooks/stripe",
            webhook_secret=STRIPE_WEBHOOK_SECRET,
            stdout=subprocess.PIPE,
        )
        assert self.localstripe.stdout is not None
        threading.Thread(
            target=_forward, args=(self.localstripe.stdout, "[localstripe] "), daemon=True
        ).start()
        stripe_url = self.stripe_url = f"http://127.0.0.1:{stripe_port}"

        # Kept for stop() only once serving: stopping a fake that never served would wait forever.
        midtrans = MidtransFake(
            MIDTRANS_SERVER_KEY, notification_url=f"{front_url}/webhooks/midtrans", log=_midtrans_log
        )
        self.midtrans = midtrans.start()
        state.midtrans = midtrans

        self.moto = MotoServer()
        endpoint = self.moto.start(model)
        self.aws_endpoint = endpoint
        invoker = Invoker(model, endpoint)
        # Read when a worker starts, and workers start lazily on the first invoke (the custom
        # resources below are the first): everything is set here, before any of them.
        invoker.extra_env.update(
            {
                "STRIPE_API_BASE": stripe_url,
                "MIDTRANS_API_BASE": midtrans.api_base,
                "MIDTRANS_SNAP_BASE": midtrans.snap_base,
                "PUBLIC_BASE_URL": front_url,
                # Receivers on 127.0.0.1/localhost over http, here only (API.md "Tenant webhooks").
                "WEBHOOK_ALLOW_LOOPBACK": "true",
            }
        )
        self.invoker = invoker
        self.moto.set_invoker(invoker)
        state.invoke = invoker.invoke
        state.plan_fault = invoker.plan_fault
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

        localstripe_app.wait_until_listening(self.localstripe, stripe_port, LOCALSTRIPE_DEADLINE_SECONDS)
        state.stripe_endpoint = self.stripe_url
        state.ready = True

    def banner(self) -> str:
        assert self.front is not None
        url = self.front.url
        midtrans_url = self.midtrans.url if self.midtrans else None
        return "\n".join(
            [
                "",
                "Tagih local stack ready",
                f"  API           {url}  (routes from {self.template_path.name})",
                f"  API docs      {url}/docs",
                f"  tokens        POST {url}/_local/token {{org_id, role}}",
                f"  AWS (moto)    {self.aws_endpoint}",
                f"  localstripe   {self.stripe_url}  (webhooks to {url}/webhooks/stripe)",
                f"  Midtrans fake {midtrans_url}  (notifications to {url}/webhooks/midtrans)",
                f"  settle/expire POST {url}/_local/midtrans/settle {{order_id}}  (or .../expire)",
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
            ("Midtrans fake", self.midtrans.stop if self.midtrans else None),
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
        if self.localstripe is not None:
            localstripe_app.stop(self.localstripe)
