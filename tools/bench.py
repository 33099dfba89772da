"""Cold-start import cost of every function in template.yaml, against a bare baseline.

    python -m tools.bench [--runs 9]

For each function, a fresh ``python`` process imports its handler module and reports the wall time
of that import (``time.perf_counter`` around it, inside the child, so interpreter start-up is not
counted) and which heavy libraries it left in ``sys.modules``. The baseline, in the same run, is a
child that imports Powertools' ``APIGatewayHttpResolver``, builds one, imports boto3 and creates a
DynamoDB client: the least any HTTP function here could cost. Runs are interleaved round-robin
(baseline and every function once per round) so drift of the machine hits all of them alike; the
median of the rounds is reported. Numbers only: this never fails on timing.

The child's environment is Lambda's, as far as an import can tell: ``LAMBDA_TASK_ROOT`` and
``AWS_LAMBDA_FUNCTION_NAME`` are set (the X-Ray SDK and Powertools Tracer key off them; without
``LAMBDA_TASK_ROOT`` the X-Ray recorder builds a centralized-sampling botocore client, ~90 ms
that Lambda never pays), the function's template environment with placeholders for intrinsics,
and ``PYTHONPATH`` = function folder + layer ``python/`` folders. ``POWERTOOLS_TRACE_DISABLED`` is
unset for the reported ratio because the template deploys with ``Tracing: Active``; the
``trace off`` column repeats the measurement with it set, to show what the Tracer costs.

Bytecode: the children use the ``.pyc`` caches of this checkout and venv (a warm-up round writes
any that are missing), i.e. a layer that ships compiled bytecode. A layer without ``.pyc`` for
the runtime's Python compiles every imported module at each cold start, on a read-only ``/opt``,
which costs far more than anything compared here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tests.fakes.lambda_runtime import ROOT
from tools import bench_usage
from tools.functions import Function, load_functions

GOAL = 1.3
DEFAULT_RUNS = 9
HEAVY_MODULES = (
    "stripe",
    "midtransclient",
    "jinja2",
    "fpdf",
    "jwt",
    "cryptography",
    "pydantic",
    "boto3",
    "aws_xray_sdk",
    "requests",  # not heavy itself, but X-Ray's patch_all imports it when it is installed
)
REGION = "us-east-1"

# Runs inside the child: time the import, then report it with the heavy modules now loaded.
_CHILD = """
import json, sys, time
started = time.perf_counter()
{body}
elapsed = time.perf_counter() - started
heavy = {heavy!r}
print(json.dumps({{"ms": elapsed * 1000, "modules": [m for m in heavy if m in sys.modules]}}))
"""
_IMPORT_HANDLER = "import importlib; importlib.import_module({module!r})"
_BASELINE = """
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
APIGatewayHttpResolver()
import boto3
boto3.client("dynamodb", region_name={region!r})
"""


@dataclass(frozen=True)
class Sample:
    ms: float
    modules: tuple[str, ...]


def lambda_environment(function: Function | None, *, trace_disabled: bool = False) -> dict[str, str]:
    """What Lambda's process environment holds at import time (minus credentials)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    }
    if function is not None:
        env.update(function.environment)
        env.update(
            {
                "LAMBDA_TASK_ROOT": str(function.code_dir),
                "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
                "_HANDLER": function.handler,
                "PYTHONPATH": os.pathsep.join(str(p) for p in (function.code_dir, *function.layer_dirs)),
            }
        )
    if trace_disabled:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def run_child(body: str, env: Mapping[str, str], cwd: Path) -> Sample:
    """One fresh interpreter: execute ``body`` timed, return the time and the heavy modules loaded."""
    code = _CHILD.format(body=body, heavy=HEAVY_MODULES)
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(env), cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed in {cwd}:\n{done.stderr.strip()}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Sample(ms=float(report["ms"]), modules=tuple(report["modules"]))


def import_handler(function: Function, *, trace_disabled: bool = False) -> Sample:
    function.module_path  # noqa: B018 — raises, naming the function, when its code is missing
    body = _IMPORT_HANDLER.format(module=function.module_name)
    return run_child(body, lambda_environment(function, trace_disabled=trace_disabled), function.code_dir)


def baseline() -> Sample:
    return run_child(_BASELINE.format(region=REGION), lambda_environment(None), ROOT)


@dataclass
class Series:
    label: str
    samples: list[Sample]

    @property
    def median(self) -> float:
        return statistics.median(s.ms for s in self.samples)

    @property
    def modules(self) -> tuple[str, ...]:
        return self.samples[-1].modules if self.samples else ()


def measure(functions: Sequence[Function], runs: int) -> tuple[Series, dict[str, Series], dict[str, Series]]:
    base = Series("baseline", [])
    traced = {f.logical_id: Series(f.logical_id, []) for f in functions}
    untraced = {f.logical_id: Series(f.logical_id, []) for f in functions}
    jobs: list[tuple[Series, Callable[[], Sample]]] = [(base, baseline)]
    for f in functions:
        jobs.append((traced[f.logical_id], partial(import_handler, f)))
        jobs.append((untraced[f.logical_id], partial(import_handler, f, trace_disabled=True)))
    for _, job in jobs:  # warm-up round, not counted: OS file cache, first-run effects
        job()
    for round_no in range(runs):
        shift = round_no % len(jobs)
        for series, job in jobs[shift:] + jobs[:shift]:
            series.samples.append(job())
        if sys.stderr.isatty():
            print(f"\rround {round_no + 1}/{runs}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return base, traced, untraced


def report(base: Series, traced: dict[str, Series], untraced: dict[str, Series], runs: int) -> str:
    header = f"{'function':<24} {'median ms':>9} {'ratio':>6} {'goal':>6}    {'trace off':>9}  heavy modules"
    lines = [header, "-" * len(header)]
    within = 0
    for logical_id, series in traced.items():
        ratio = round(series.median / base.median, 2)  # the printed ratio is the one judged
        ok = ratio <= GOAL
        within += ok
        off = untraced[logical_id]
        lines.append(
            f"{logical_id:<24} {series.median:>9.1f} {ratio:>5.2f}x {'≤1.3x':>6} {'✓' if ok else '✗'}  "
            f"{off.median:>7.1f}ms  {', '.join(series.modules) or '-'}"
        )
    lines.append(
        f"{'baseline':<24} {base.median:>9.1f} {1:>5.2f}x {'':>6}    {'':>9}  {', '.join(base.modules)}"
    )
    lines.append("")
    lines.append(
        f"bench: {within}/{len(traced)} functions within {GOAL}x of the baseline "
        f"({base.median:.1f} ms: resolver + boto3 DynamoDB client); median of {runs} fresh-process "
        f"imports, Python {platform.python_version()}, tracing as deployed (Tracing: Active)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="rounds per function (median)")
    args = parser.parse_args(argv)
    functions = load_functions()
    missing = [f.logical_id for f in functions if not (f.code_dir / f"{f.module_name}.py").is_file()]
    if missing:
        print(f"not measured (no handler module yet): {', '.join(missing)}", file=sys.stderr)
    functions = [f for f in functions if f.logical_id not in missing]
    base, traced, untraced = measure(functions, max(1, args.runs))
    print(report(base, traced, untraced, max(1, args.runs)))
    print()
    print(bench_usage.run(total=100_000, batch=1_000))  # usage ingestion (tools/bench_usage.py)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
