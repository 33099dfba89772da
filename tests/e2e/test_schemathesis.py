"""Schemathesis against the local stack: docs/openapi.json is what the API answers.

The CLI (``schemathesis run``) runs every phase (examples, coverage, fuzzing, stateful) and every
check that applies (tests/e2e/schemathesis.toml says which do not, and why; schemathesis_hooks.py
what is changed in the requests), bounded to ``TAGIH_SCHEMATHESIS_EXAMPLES`` examples per operation
(default 8) so it fits CI's budget. Its own stack, so operator routes acting on generated
organizations touch no other test's data. It authenticates as an owner holding the operator scope
(every route is reachable) of its own organization.

The counts (operations, requests, server errors, conformance failures) come from the run's JSON
report and VCR cassette, are printed in the session summary (tests/conftest.py) whether the run
passes or not, and must be zero for server errors and conformance failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import LocalStack
from tests.e2e.schemathesis_hooks import valid_data_not_refused_as_invalid
from tests.fakes.lambda_runtime import ROOT

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
ORG = "org_schemathesis"
EXAMPLES = int(os.environ.get("TAGIH_SCHEMATHESIS_EXAMPLES", "8"))
SEED = int(os.environ.get("TAGIH_SCHEMATHESIS_SEED", "16"))  # fixed: a CI failure replays as it was
RUN_DEADLINE_SECONDS = 540  # well over the ~2-3 min it takes, under the foreground limit
SERVER_ERROR = "ST101"


def summarize(report: dict[str, Any], cassette: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run: from the JSON report (operations, failures by code) and the VCR
    cassette (every request sent and the status it got)."""
    interactions = cassette.get("http_interactions") or []
    statuses = Counter(int(i["response"]["status"]["code"]) for i in interactions if i.get("response"))
    failures = {f["code"]: int(f["count"]) for f in report.get("failures") or []}
    return {
        "operations": int(report["operations"]["tested"]),
        "operations_total": int(report["operations"]["total"]),
        "requests": len(interactions),
        "server_errors": sum(n for status, n in statuses.items() if status >= 500),
        "conformance_failures": sum(n for code, n in failures.items() if code != SERVER_ERROR),
        "failures": failures,
        "errors": len(report.get("errors") or []),
        "seconds": round(float(report.get("running_time") or 0.0), 1),
    }


def test_summarize_counts_server_errors_from_the_responses_and_the_rest_as_conformance() -> None:
    report = {
        "operations": {"tested": 2, "total": 2},
        "failures": [
            {"code": "ST101", "count": 1},
            {"code": "ST108", "count": 3},
            {"code": "ST103", "count": 1},
        ],
        "errors": [],
        "running_time": 1.25,
    }
    cassette = {
        "http_interactions": [
            {"response": {"status": {"code": "200"}}},
            {"response": {"status": {"code": "500"}}},
            {"response": {"status": {"code": "422"}}},
            {"response": None},  # a request that got no answer is still a request
        ]
    }
    counted = summarize(report, cassette)
    assert (counted["requests"], counted["server_errors"], counted["conformance_failures"]) == (4, 1, 4)


class _Response:
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status_code, self._body = status, {"error": error}

    def json(self) -> dict[str, Any]:
        return self._body


def _case(method: str, path: str, *, positive: bool = True) -> Any:
    mode = SimpleNamespace(is_positive=positive)
    operation = SimpleNamespace(method=method.lower(), path=path)
    return SimpleNamespace(
        method=method, operation=operation, meta=SimpleNamespace(generation=SimpleNamespace(mode=mode))
    )


def test_the_acceptance_check_fails_a_schema_mismatch_and_passes_a_business_rule() -> None:
    invalid = {"code": "validation_error", "details": [{"field": "currency", "type": "value_error"}]}
    with pytest.raises(AssertionError, match="schema-valid data refused"):
        valid_data_not_refused_as_invalid(
            None, _Response(422, invalid), _case("PATCH", "/billing/accounts/{id}")
        )
    rule = {"code": "payment_method_required", "details": []}
    assert (
        valid_data_not_refused_as_invalid(None, _Response(422, rule), _case("POST", "/billing/wallet/top-up"))
        is None
    )
    stateful = {"code": "validation_error", "details": [{"field": "to", "type": "value_error"}]}
    assert (
        valid_data_not_refused_as_invalid(
            None, _Response(422, stateful), _case("POST", "/billing/test-clock/advance")
        )
        is None
    )
    negative = _case("PATCH", "/billing/accounts/{id}", positive=False)
    assert valid_data_not_refused_as_invalid(None, _Response(422, invalid), negative) is None


def run_schemathesis(stack: LocalStack, report_dir: Path) -> subprocess.CompletedProcess[str]:
    token = stack.token(ORG, "owner", scopes=["billing:operator"])
    command = [
        *(sys.executable, "-m", "schemathesis.cli"),
        *("--config-file", str(HERE / "schemathesis.toml")),
        *("run", str(ROOT / "docs" / "openapi.json")),
        *("--url", stack.base_url),
        *("--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "2"),
        *("--report", "json,vcr", "--report-dir", str(report_dir)),
        *("--report-json-path", str(report_dir / "report.json")),
        *("--report-vcr-path", str(report_dir / "cassette.yaml")),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "TAGIH_SCHEMATHESIS_TOKEN": token,  # schemathesis.toml's [auth.openapi.*]
        "TAGIH_SCHEMATHESIS_ORG": ORG,
    }
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_DEADLINE_SECONDS, check=False
    )


def test_the_api_answers_as_docs_openapi_json_says(
    local_stack_factory: Callable[..., LocalStack],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    stack = local_stack_factory()
    started = time.monotonic()
    finished = run_schemathesis(stack, tmp_path)
    elapsed = time.monotonic() - started
    (tmp_path / "output.txt").write_text(finished.stdout + finished.stderr)
    assert (tmp_path / "report.json").exists(), finished.stdout[-4000:] + finished.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    cassette = yaml.load((tmp_path / "cassette.yaml").read_text(), Loader=yaml.CSafeLoader)
    counted = summarize(report, cassette)
    counted["seconds"] = round(elapsed, 1)
    record_property("schemathesis", json.dumps(counted))
    assert counted["operations"] == counted["operations_total"], counted
    assert counted["errors"] == 0, finished.stdout[-6000:]
    assert counted["server_errors"] == 0, f"{counted}\n{finished.stdout[-12000:]}"
    assert counted["conformance_failures"] == 0, f"{counted}\n{finished.stdout[-12000:]}"
    assert finished.returncode == 0, finished.stdout[-6000:]
