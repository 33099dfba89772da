"""Cold-start import cost of every function in template.yaml, against a bare baseline.

    python -m tools.bench [--runs 9] [--source-only]

For each function, a fresh ``python`` process imports its handler module and reports the wall time
of that import (``time.perf_counter`` around it, inside the child, so interpreter start-up is not
counted) and which heavy libraries it left in ``sys.modules``. The baseline, in the same run, is a
child that imports Powertools' ``APIGatewayHttpResolver``, builds one, imports boto3 and creates a
DynamoDB client: the least any HTTP function here could cost. Runs are interleaved round-robin
(baseline and every function once per round, the baseline three times) so drift of the machine
hits all of them alike; a ratio is the median over rounds of the function's time over that round's
baseline, the times printed are medians. Numbers only: this never fails on timing.

The child's environment is Lambda's, as far as an import can tell: ``LAMBDA_TASK_ROOT`` and
``AWS_LAMBDA_FUNCTION_NAME`` are set (the X-Ray SDK and Powertools Tracer key off them; without
``LAMBDA_TASK_ROOT`` the X-Ray recorder builds a centralized-sampling botocore client, ~90 ms
that Lambda never pays), the function's template environment with placeholders for intrinsics,
and ``PYTHONPATH`` = function folder + layer ``python/`` folders. ``POWERTOOLS_TRACE_DISABLED`` is
unset for the reported ratio because the template deploys with ``Tracing: Active``; the
``trace off`` column repeats the measurement with it set, to show what the Tracer costs.

Two measurements, interleaved in the same rounds, each against its own baseline:
- source: the children use this checkout's folders and the ``.pyc`` caches of this checkout and
  venv (a warm-up round writes any that are missing), under this interpreter;
- built: the children run what ``sam build`` shipped (``.aws-sam/build``) under CPython 3.13, as
  Lambda does, with no bytecode written and no ``site`` (``tools/bench_artifact.py``). A module
  without a usable ``.pyc`` there is compiled at every cold start; the report counts them.
Then one untimed ``-X importtime`` child per function names its heaviest imports.
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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tests.fakes.lambda_runtime import ROOT
from tools import bench_artifact, bench_usage
from tools.bench_artifact import Artifact, heaviest_imports
from tools.functions import Function, load_functions

GOAL = 1.3
DEFAULT_RUNS = 15
BASELINE_SAMPLES = 3
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

# Runs inside the child: time the import, then report it with the heavy modules now loaded and how
# many of the modules it loaded from .py files had no bytecode to use (compiled at this import).
_CHILD = """
import json, sys, time
started = time.perf_counter()
{body}
elapsed = time.perf_counter() - started
heavy = {heavy!r}
import importlib.util, os
uncompiled = [
    name for name, module in list(sys.modules.items())
    if getattr(getattr(module, "__spec__", None), "origin", None)
    and module.__spec__.origin.endswith(".py")
    and not os.path.exists(importlib.util.cache_from_source(module.__spec__.origin))
]
print(json.dumps({{"ms": elapsed * 1000, "modules": [m for m in heavy if m in sys.modules],
                  "uncompiled": len(uncompiled)}}))
"""
_IMPORT_HANDLER = "import importlib; importlib.import_module({module!r})"
# The built children skip ``site``: Lambda's interpreter imports nothing from a site-packages at
# start-up, while this machine's may (a ``.pth`` importing certifi, measured here: 30 ms of the
# baseline's import moved before the timer). Everything they import is on ``PYTHONPATH``.
_LAMBDA_FLAGS = ("-S",)
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
    uncompiled: int = 0  # modules imported from source with no .pyc: compiled at every cold start
    stderr: str = ""


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


def run_child(
    body: str, env: Mapping[str, str], cwd: Path, *, python: str = sys.executable, flags: Sequence[str] = ()
) -> Sample:
    """One fresh interpreter: execute ``body`` timed, return the time and the heavy modules loaded."""
    code = _CHILD.format(body=body, heavy=HEAVY_MODULES)
    done = subprocess.run(
        [python, *flags, "-c", code], env=dict(env), cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed in {cwd}:\n{done.stderr.strip()}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Sample(
        ms=float(report["ms"]),
        modules=tuple(report["modules"]),
        uncompiled=int(report["uncompiled"]),
        stderr=done.stderr,
    )


def import_handler(function: Function, *, trace_disabled: bool = False) -> Sample:
    function.module_path  # noqa: B018 — raises, naming the function, when its code is missing
    body = _IMPORT_HANDLER.format(module=function.module_name)
    return run_child(body, lambda_environment(function, trace_disabled=trace_disabled), function.code_dir)


def baseline() -> Sample:
    return run_child(_BASELINE.format(region=REGION), lambda_environment(None), ROOT)


def built_environment(function: Function | None, artifact: Artifact) -> dict[str, str]:
    """Lambda's environment over the built artifact: its folders only, no bytecode written."""
    env = lambda_environment(function)
    env["PYTHONPATH"] = artifact.path_for(function.logical_id if function else None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    if function is not None:
        env["LAMBDA_TASK_ROOT"] = str(artifact.function_dir(function.logical_id))
    return env


def import_built(function: Function, artifact: Artifact, *, flags: Sequence[str] = ()) -> Sample:
    body = _IMPORT_HANDLER.format(module=function.module_name)
    env = built_environment(function, artifact)
    return run_child(
        body,
        env,
        artifact.function_dir(function.logical_id),
        python=artifact.python,
        flags=(*_LAMBDA_FLAGS, *flags),
    )


def baseline_built(artifact: Artifact) -> Sample:
    body = _BASELINE.format(region=REGION)
    env = built_environment(None, artifact)
    return run_child(body, env, ROOT, python=artifact.python, flags=_LAMBDA_FLAGS)


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


@dataclass
class Measured:
    base: Series
    traced: dict[str, Series]  # source, tracing as deployed
    untraced: dict[str, Series]  # source, POWERTOOLS_TRACE_DISABLED
    built_base: Series | None = None  # the same baseline in the built artifact's interpreter
    built: dict[str, Series] = field(default_factory=dict)  # the built artifact, as Lambda runs it
    heaviest: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def measure(functions: Sequence[Function], runs: int, artifact: Artifact | None = None) -> Measured:
    result = Measured(
        Series("baseline", []),
        {f.logical_id: Series(f.logical_id, []) for f in functions},
        {f.logical_id: Series(f.logical_id, []) for f in functions},
    )
    jobs: list[tuple[Series, Callable[[], Sample]]] = [(result.base, baseline)]
    for f in functions:
        jobs.append((result.traced[f.logical_id], partial(import_handler, f)))
        jobs.append((result.untraced[f.logical_id], partial(import_handler, f, trace_disabled=True)))
    if artifact is not None:
        result.built_base = Series("baseline (built)", [])
        jobs.append((result.built_base, partial(baseline_built, artifact)))
        for f in functions:
            result.built[f.logical_id] = Series(f.logical_id, [])
            jobs.append((result.built[f.logical_id], partial(import_built, f, artifact)))
    # Every ratio divides by a baseline: it is sampled BASELINE_SAMPLES times a round, spread
    # through the round, so its median is steadier than any one function's.
    for base_job in [job for job in jobs if job[0] is result.base or job[0] is result.built_base]:
        for k in range(1, BASELINE_SAMPLES):
            jobs.insert(k * len(jobs) // BASELINE_SAMPLES, base_job)
    for _, job in {id(job): job for job in jobs}.values():  # warm-up round, not counted: file cache
        job()
    for round_no in range(runs):
        shift = round_no % len(jobs)
        for series, job in jobs[shift:] + jobs[:shift]:
            series.samples.append(job())
        if sys.stderr.isatty():
            print(f"\rround {round_no + 1}/{runs}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    result.heaviest = {f.logical_id: _heaviest_imports(f, artifact) for f in functions}
    return result


def _heaviest_imports(function: Function, artifact: Artifact | None) -> list[tuple[str, float]]:
    """One more child, not timed (-X importtime inflates what it reports): the heaviest packages."""
    importtime = ("-X", "importtime")
    if artifact is not None:
        sample = import_built(function, artifact, flags=importtime)
    else:
        body = _IMPORT_HANDLER.format(module=function.module_name)
        sample = run_child(body, lambda_environment(function), function.code_dir, flags=importtime)
    return heaviest_imports(sample.stderr)


def _ratio(series: Series | None, base: Series | None) -> float | None:
    """The median over rounds of the function's time over its round's baseline (the printed one is judged).

    Paired by round, a slow stretch of the machine (other tenants, frequency) slows both sides of
    each ratio alike instead of landing on whichever series happened to run then.
    """
    if series is None or base is None or not series.samples:
        return None
    per_round = len(base.samples) // len(series.samples)
    ratios = [
        sample.ms / statistics.median(s.ms for s in base.samples[r * per_round : (r + 1) * per_round])
        for r, sample in enumerate(series.samples)
    ]
    return round(statistics.median(ratios), 2)


def _meets_goal(ratio: float | None) -> bool:
    return ratio is not None and ratio <= GOAL


def report(measured: Measured, runs: int, artifact: Artifact | None = None) -> str:
    header = (
        f"{'function':<27} {'source ms':>9} {'ratio':>6}  {'built ms':>8} {'ratio':>6}  goal ≤{GOAL}x"
        f"  {'trace off':>9}  heavy modules"
    )
    lines = [header, "-" * len(header)]
    within = {"source": 0, "built": 0}
    for logical_id, series in measured.traced.items():
        source = _ratio(series, measured.base)
        built_series = measured.built.get(logical_id)
        built = _ratio(built_series, measured.built_base)
        within["source"] += _meets_goal(source)
        within["built"] += _meets_goal(built)
        ok = _meets_goal(source) and (artifact is None or _meets_goal(built))
        built_cells = (
            f"{built_series.median:>8.1f} {built:>5.2f}x" if built_series and built else f"{'-':>8} {'-':>6}"
        )
        lines.append(
            f"{logical_id:<27} {series.median:>9.1f} {source:>5.2f}x  {built_cells}  {'✓' if ok else '✗':^9}"
            f"  {measured.untraced[logical_id].median:>7.1f}ms  {', '.join(series.modules) or '-'}"
        )
    built_base = measured.built_base
    lines.append(
        f"{'baseline':<27} {measured.base.median:>9.1f} {1:>5.2f}x  "
        + (f"{built_base.median:>8.1f} {1:>5.2f}x" if built_base else f"{'-':>8} {'-':>6}")
        + f"  {'':9}  {'':>9}  {', '.join(measured.base.modules)}"
    )
    lines.append("")
    lines.append(
        f"heaviest imports ({'built artifact' if artifact else 'source'}, own time under -X importtime):"
    )
    for logical_id, heaviest in measured.heaviest.items():
        lines.append(f"  {logical_id:<27} " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in heaviest))
    lines.append("")
    count = len(measured.traced)
    lines.append(
        f"bench (source): {within['source']}/{count} functions within {GOAL}x of the baseline "
        f"({measured.base.median:.1f} ms: resolver + boto3 DynamoDB client); {runs} rounds of fresh-process "
        f"imports, ratio = median of (import / the round's baseline), Python {platform.python_version()}, "
        ".pyc of this checkout, tracing as deployed."
    )
    lines.append(f"  the baseline's own spread over the rounds: {_spread(measured.base)}")
    if artifact is not None and built_base is not None:
        uncompiled = max(s.uncompiled for series in measured.built.values() for s in series.samples)
        layer = "a twin of the arm64 layer for " + platform.machine() if artifact.twin else "the built layer"
        lines.append(
            f"bench (built):  {within['built']}/{count} functions within {GOAL}x of the baseline "
            f"({built_base.median:.1f} ms); .aws-sam/build with {layer}, {_version(artifact.python)}, "
            f"no bytecode written, no site; modules imported without a .pyc: {uncompiled}."
        )
        lines.append(f"  the baseline's own spread over the rounds: {_spread(built_base)}")
    return "\n".join(lines)


def _spread(base: Series) -> str:
    """How much the same import varies on this machine: a ratio moving by less is noise."""
    quartiles = statistics.quantiles((s.ms for s in base.samples), n=4)
    return (
        f"p25 {quartiles[0]:.1f} ms, p75 {quartiles[2]:.1f} ms "
        f"({(quartiles[2] - quartiles[0]) / base.median:.0%} of its median)"
    )


def _version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"Python {done.stdout.strip()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="rounds per function (median)")
    parser.add_argument("--source-only", action="store_true", help="skip the built artifact")
    args = parser.parse_args(argv)
    functions = load_functions()
    missing = [f.logical_id for f in functions if not (f.code_dir / f"{f.module_name}.py").is_file()]
    if missing:
        print(f"not measured (no handler module yet): {', '.join(missing)}", file=sys.stderr)
    functions = [f for f in functions if f.logical_id not in missing]
    artifact = None if args.source_only else bench_artifact.prepare()
    runs = max(1, args.runs)
    print(report(measure(functions, runs, artifact), runs, artifact))
    print()
    print(bench_usage.run(total=100_000, batch=1_000))  # usage ingestion (tools/bench_usage.py)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
