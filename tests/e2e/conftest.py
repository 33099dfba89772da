"""Start the local stack (``python -m local``) as a child process and drive it over HTTP.

Readiness is polled on ``/_local/health`` with a deadline; the stack is stopped with SIGINT (as
Ctrl-C would) and killed if it does not exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.fakes.lambda_runtime import ROOT

STARTUP_DEADLINE_SECONDS = 120
OUTCOME_DEADLINE_SECONDS = 60.0


def eventually(check: Callable[[], Any], what: str, deadline: float = OUTCOME_DEADLINE_SECONDS) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; fail naming ``what`` at
    the deadline. How every end-to-end test waits for an asynchronous outcome."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline}s: {what}")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    health: dict[str, Any] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def aws_endpoint(self) -> str:
        return str(self.health["aws_endpoint"])

    def token(self, org_id: str = "org_1", role: str = "owner", **extra: Any) -> str:
        response = self.session.post(
            f"{self.base_url}/_local/token", json={"org_id": org_id, "role": role, **extra}
        )
        response.raise_for_status()
        return str(response.json()["token"])

    def headers(self, org_id: str = "org_1", role: str = "owner", **extra: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(org_id, role, **extra)}", "X-Organization-ID": org_id}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, f"{self.base_url}{path}", **kwargs)

    def aws_client(self, service: str) -> Any:
        """A boto3 client of the stack's moto (for what a test inspects, never for what it asserts on)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.aws_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def table_name(self) -> str:
        [name] = self.aws_client("dynamodb").list_tables()["TableNames"]
        return str(name)

    def set_saved_card_token(self, org_id: str, method_id: str, token: str) -> str:
        """Make a saved card decline (a token containing ``decline``) or work again: history the API
        cannot fake. Returns the token it had."""
        dynamodb = self.aws_client("dynamodb")
        key = {"PK": {"S": f"ORG#{org_id}"}, "SK": {"S": f"PM#{method_id}"}}
        saved = dynamodb.get_item(TableName=self.table_name(), Key=key)["Item"]["gateway_payment_method_id"][
            "S"
        ]
        dynamodb.update_item(
            TableName=self.table_name(),
            Key=key,
            UpdateExpression="SET gateway_payment_method_id = :token",
            ExpressionAttributeValues={":token": {"S": token}},
        )
        return str(saved)

    def gateway_secret(self, suffix: str) -> dict[str, Any]:
        """A gateway secret (``stripe`` or ``midtrans``) as the functions read it: from the stack's
        Secrets Manager, so tests use the keys the functions use rather than copies of them."""
        client = self.aws_client("secretsmanager")
        names = [s["Name"] for s in client.list_secrets()["SecretList"] if s["Name"].endswith(f"/{suffix}")]
        assert len(names) == 1, names
        value: dict[str, Any] = json.loads(client.get_secret_value(SecretId=names[0])["SecretString"])
        return value

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def run_the_janitor(self) -> None:
        """Fire the janitor's schedule (the timers function's ``reconcile``) and wait for its run."""
        before = self.logs().count('"message":"janitor"')
        fired = self.request("POST", "/_local/rules/tagih-local-TimersFunctionJanitor/fire")
        assert fired.status_code == 202, fired.text
        eventually(lambda: self.logs().count('"message":"janitor"') > before, "the janitor ran")

    def in_flight(self, org_id: str) -> list[str]:
        """The organization's charges still claimed and unresolved (``processing``)."""
        found = self.aws_client("dynamodb").query(
            TableName=self.table_name(),
            KeyConditionExpression="PK = :pk AND begins_with(SK, :payment)",
            ExpressionAttributeValues={":pk": {"S": f"ORG#{org_id}"}, ":payment": {"S": "PAYMENT#"}},
        )["Items"]
        return [str(item["SK"]["S"]) for item in found if item["status"]["S"] == "processing"]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_local_stack(
    tmp_dir: Path,
    template: Path | None = None,
    env: dict[str, str] | None = None,
    parameters: dict[str, str] | None = None,
) -> LocalStack:
    port = free_port()
    log_path = tmp_dir / f"local-stack-{port}.log"
    args = [sys.executable, "-m", "local", "--port", str(port)]
    if template is not None:
        args += ["--template", str(template)]
    if parameters:
        args += ["--parameter-overrides", *(f"{key}={value}" for key, value in parameters.items())]
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack = LocalStack(base_url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"local stack exited with {process.returncode}:\n{stack.logs()[-4000:]}")
        try:
            response = requests.get(f"{stack.base_url}/_local/health", timeout=2)
            if response.status_code == 200:
                stack.health = response.json()
                return stack
        except requests.ConnectionError:
            pass
        time.sleep(0.2)  # polling readiness with a deadline, not waiting for an outcome
    stack.stop()
    raise RuntimeError(f"local stack not ready in {STARTUP_DEADLINE_SECONDS}s:\n{stack.logs()[-4000:]}")


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The whole API from template.yaml, shared by the end-to-end tests of a session."""
    stack = start_local_stack(tmp_path_factory.mktemp("local"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def local_stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalStack]]:
    """Start extra stacks (another template, other settings); all are stopped at the end."""
    started: list[LocalStack] = []

    def start(
        template: Path | None = None,
        env: dict[str, str] | None = None,
        parameters: dict[str, str] | None = None,
    ) -> LocalStack:
        stack = start_local_stack(tmp_path_factory.mktemp("local"), template, env, parameters)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()
