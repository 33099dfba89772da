"""Cold imports from what ``sam build`` ships (``.aws-sam/build``), the way Lambda runs them.

Lambda runs a function as CPython 3.13 with the function's folder, the layer's ``python/`` and its
own runtime folder (boto3) on ``sys.path``, all read-only: a module without a usable ``.pyc``
is compiled again at every cold start. So the artifact's children run the Lambda runtime's
interpreter (``PYTHON313``), with ``PYTHONDONTWRITEBYTECODE`` set (no cache is written, none
from an earlier run helps) and only the built folders on the path.

The built layer holds wheels for arm64. On an arm64 machine it is measured as it is; elsewhere a
twin is measured: the same pinned requirements installed for this machine's platform and
compiled the same way, with the built ``tagih`` package copied in. The functions' folders are
the built ones either way. boto3 and its dependencies (which Lambda's runtime provides) are
installed at the version the project pins, compiled too.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.lambda_runtime import ROOT

BUILD = ROOT / ".aws-sam" / "build"
TWINS = ROOT / ".aws-sam" / "bench"
LAYER_REQUIREMENTS = ROOT / "layers" / "common" / "requirements.txt"
DEV_LOCK = ROOT / "requirements" / "dev.lock"
LAMBDA_MACHINE = "aarch64"


class ArtifactMissing(RuntimeError):
    """The built artifact or the 3.13 interpreter is not there: say what to run."""


@dataclass(frozen=True)
class Artifact:
    python: str  # the Lambda runtime's interpreter (CPython 3.13)
    layer: Path  # what Lambda mounts as /opt/python
    runtime: Path  # boto3 and its dependencies, as Lambda's /var/runtime holds them
    twin: bool  # True when ``layer`` is this machine's twin of the arm64 build

    def function_dir(self, logical_id: str) -> Path:
        return BUILD / logical_id

    def path_for(self, logical_id: str | None) -> str:
        folders = [self.layer, self.runtime]
        if logical_id is not None:
            folders.insert(0, self.function_dir(logical_id))
        return os.pathsep.join(str(folder) for folder in folders)


def python313() -> str:
    """The interpreter named by ``PYTHON313`` (the Makefile finds it the way ``sam build`` does)."""
    python = os.environ.get("PYTHON313", "")
    if not python:
        raise ArtifactMissing("PYTHON313 is not set: run `make bench`, which finds CPython 3.13")
    done = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.stdout.strip() != "True":
        raise ArtifactMissing(f"PYTHON313={python} is not a working CPython 3.13")
    return python


def prepare() -> Artifact:
    """The built artifact, with this machine's twin of the layer where the build is for arm64."""
    built_layer = BUILD / "CommonLayer" / "python"
    if not (built_layer / "tagih").is_dir():
        raise ArtifactMissing(f"{built_layer.relative_to(ROOT)} is missing: run `make build` first")
    python = python313()
    machine = platform.machine()
    runtime = _installed(python, "runtime", _runtime_requirements(), no_deps=False)
    if machine == LAMBDA_MACHINE:
        return Artifact(python=python, layer=built_layer, runtime=runtime, twin=False)
    layer = _installed(python, "layer", LAYER_REQUIREMENTS.read_text(encoding="utf-8"), no_deps=True)
    # The twin's own code is always the latest build's, bytecode included.
    shutil.rmtree(layer / "tagih", ignore_errors=True)
    shutil.copytree(built_layer / "tagih", layer / "tagih")
    return Artifact(python=python, layer=layer, runtime=runtime, twin=True)


def _runtime_requirements() -> str:
    """boto3 and botocore at the versions the project's lock pins (what the code is tested with)."""
    lock = DEV_LOCK.read_text(encoding="utf-8")
    pins = [re.search(rf"^{name}==\S+", lock, re.MULTILINE) for name in ("boto3", "botocore")]
    return "\n".join(pin.group(0) for pin in pins if pin is not None) + "\n"


def _platforms(machine: str) -> list[str]:
    return [f"manylinux2014_{machine}", f"manylinux_2_28_{machine}"]


def _installed(python: str, kind: str, requirements: str, *, no_deps: bool) -> Path:
    """``requirements`` installed for this machine and compiled for 3.13, once per content."""
    machine = platform.machine()
    key = hashlib.sha256(f"{machine}\n{no_deps}\n{requirements}".encode()).hexdigest()[:12]
    target = TWINS / f"{kind}-{machine}-{key}"
    if target.is_dir():
        return target / "python"
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    listed = staging / "requirements.txt"
    listed.write_text(requirements, encoding="utf-8")
    platforms = [arg for name in _platforms(machine) for arg in ("--platform", name)]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:", *platforms]
        + ["--implementation", "cp", "--python-version", "3.13", "--target", str(staging / "python")]
        + (["--no-deps"] if no_deps else [])
        + ["-r", str(listed)],
        check=True,
    )
    compile_for_lambda(python, staging / "python")
    staging.rename(target)
    return target / "python"


def compile_for_lambda(python: str, folder: Path) -> None:
    """What the build does: hash-based, unchecked ``.pyc`` for 3.13 (file times in a zip don't matter)."""
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(folder)],
        check=False,  # a wheel's stray py2 test file may not compile; the check below counts what loads
        stdout=subprocess.DEVNULL,
    )


_IMPORT_TIME = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)$")


def heaviest_imports(stderr: str, *, top: int = 3) -> list[tuple[str, float]]:
    """The top-level packages whose own import time (``-X importtime`` self column) is largest."""
    own: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        match = _IMPORT_TIME.match(line)
        if match is None:
            continue
        package = match.group(3).split(".")[0]
        own[package] += int(match.group(1)) / 1000
    ranked = sorted(own.items(), key=lambda item: item[1], reverse=True)
    return [(name, ms) for name, ms in ranked if name != "app"][:top]
