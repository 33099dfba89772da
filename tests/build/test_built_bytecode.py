"""``sam build`` ships bytecode for the Lambda interpreter (CPython 3.13), not just sources.

Lambda's code is read-only (/opt for the layer, /var/task for a function), so a module without a
usable .pyc is compiled again on every cold start. For every .py in the CommonLayer artifact and in
every function artifact there must be ``__pycache__/<stem>.cpython-313.pyc`` that 3.13 accepts
without looking at the source's mtime (zip files carry their own times): an unchecked hash-based
pyc (PEP 552) whose header holds 3.13's magic number and the hash of exactly the shipped source.
No bytecode of another interpreter (the dev venv's cpython-311) may ship.

Run by ``make build`` after ``sam build``; skipped only when there is no .aws-sam/build at all.
"""

from __future__ import annotations

import _imp
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local.cfn_yaml import load_template
from tests.fakes.lambda_runtime import ROOT

BUILD = ROOT / ".aws-sam" / "build"

# importlib.util.MAGIC_NUMBER of CPython 3.13 (3571), the same for every 3.13.x release.
MAGIC_313 = b"\xf3\r\r\n"
CACHE_TAG = "cpython-313"
# PEP 552 pyc header: magic (4 bytes), flags (4, little-endian), then the 8-byte source hash.
HASH_BASED = 0b01  # bit 0 set: hash-based; bit 1 (check_source) clear: "unchecked"
HEADER_SIZE = 16
SHOWN = 20


def source_hash_313(source: bytes) -> bytes:
    """importlib.util.source_hash as CPython 3.13 computes it, from any interpreter.

    source_hash is ``_imp.source_hash(<the interpreter's magic number as a little-endian int>, source)``,
    so it differs between versions only through the key; test_source_hash_is_keyed_by_the_magic_number
    checks that convention on the interpreter running the tests.
    """
    return _imp.source_hash(int.from_bytes(MAGIC_313, "little"), source)


def built_artifacts() -> list[str]:
    """Logical ids of everything template.yaml builds with a Makefile: the layer and every function."""
    resources = load_template(ROOT / "template.yaml")["Resources"]
    return sorted(
        name
        for name, resource in resources.items()
        if resource["Type"] in {"AWS::Serverless::Function", "AWS::Serverless::LayerVersion"}
        and resource.get("Metadata", {}).get("BuildMethod") == "makefile"
    )


@dataclass
class Report:
    modules: int = 0
    problems: list[str] = field(default_factory=list)


def check_artifact(root: Path) -> Report:
    report = Report()
    for source in sorted(root.rglob("*.py")):
        report.modules += 1
        where = source.relative_to(root)
        pyc = source.parent / "__pycache__" / f"{source.stem}.{CACHE_TAG}.pyc"
        if not pyc.is_file():
            report.problems.append(f"{where}: no __pycache__/{pyc.name}")
            continue
        header = pyc.read_bytes()[:HEADER_SIZE]
        if len(header) < HEADER_SIZE:
            report.problems.append(f"{where}: {pyc.name} is truncated")
            continue
        if header[:4] != MAGIC_313:
            report.problems.append(f"{where}: {pyc.name} has magic {header[:4]!r}, not 3.13's {MAGIC_313!r}")
            continue
        flags = int.from_bytes(header[4:8], "little")
        if flags != HASH_BASED:
            kind = {0: "timestamp-based", 0b11: "checked hash-based"}.get(flags, f"flags {flags:#b}")
            report.problems.append(f"{where}: {pyc.name} is {kind}, not unchecked hash-based")
            continue
        if header[8:16] != source_hash_313(source.read_bytes()):
            report.problems.append(f"{where}: {pyc.name} was compiled from a different source")
    for pyc in sorted(root.rglob("*.pyc")):
        where = pyc.relative_to(root)
        stem, _, tag = pyc.name.partition(".")
        if pyc.parent.name != "__pycache__" or tag != f"{CACHE_TAG}.pyc":
            report.problems.append(f"{where}: not __pycache__/<stem>.{CACHE_TAG}.pyc (another Python's?)")
        elif not (pyc.parent.parent / f"{stem}.py").is_file():
            report.problems.append(f"{where}: no {stem}.py beside __pycache__ (stale bytecode)")
    return report


def test_source_hash_is_keyed_by_the_magic_number() -> None:
    probe = b"print('tagih')\n"
    running = int.from_bytes(importlib.util.MAGIC_NUMBER, "little")
    assert _imp.source_hash(running, probe) == importlib.util.source_hash(probe)


if not BUILD.is_dir():
    pytest.skip(f"{BUILD.relative_to(ROOT)} does not exist: run `make build` first", allow_module_level=True)


def test_every_built_resource_has_an_artifact() -> None:
    names = built_artifacts()
    assert "CommonLayer" in names
    assert len(names) > 1, names
    missing = [name for name in names if not (BUILD / name).is_dir()]
    assert not missing, f"not in {BUILD}: {missing}"


@pytest.mark.parametrize("name", built_artifacts())
def test_every_module_ships_unchecked_hash_bytecode_for_python313(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = BUILD / name
    if not root.is_dir():
        pytest.fail(f"{root} was not built")
    report = check_artifact(root)
    with capsys.disabled():
        print(f"\n  {name:<28} {report.modules:>5} modules, {len(report.problems)} problems ", end="")
    assert report.modules > 0, f"{name} ships no Python modules"
    shown = "\n".join(report.problems[:SHOWN])
    more = f"\n... and {len(report.problems) - SHOWN} more" if len(report.problems) > SHOWN else ""
    assert not report.problems, f"{name}: {len(report.problems)} problems in {root}\n{shown}{more}"
