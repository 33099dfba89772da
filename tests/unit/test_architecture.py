"""The layers of the shared code (README "Architecture"): handler → services → domain.

``tagih.domain`` holds models, pure decisions and the Protocols of the ports they need;
``tagih.services`` orchestrates them with the ports passed in; stores, gateways, the publisher and
the timers are adapters behind those Protocols. These tests read the code itself (every import,
also those inside functions and ``TYPE_CHECKING`` blocks) and import the domain in a fresh
interpreter, so a back edge hidden in a function body fails here rather than in a reviewer's head.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

LAYER = Path(__file__).resolve().parents[2] / "layers" / "common" / "python"
PACKAGE = LAYER / "tagih"
MAX_LINES = 600
# Data tables are exempt from MAX_LINES: none lives in domain/ or services/ today.
LONG_DATA_TABLES: frozenset[str] = frozenset()
# What a pure domain never loads, directly or through another module.
IMPURE = ("boto3", "botocore", "aws_lambda_powertools", "tagih.services", "tagih.store", "tagih.gateways")
# Adapters and composition the domain never names, not even inside a function.
DOMAIN_NEVER_IMPORTS = (
    *IMPURE,
    "tagih.events.publisher",
    "tagih.timers",
    "tagih.api",
    "tagih.wiring",
    "tagih.invoices_pdf",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(LAYER).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """Every module ``name`` imports anywhere in its source, as absolute names."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            # ``from tagih.domain import invoices`` imports the module tagih.domain.invoices
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return found


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def tagih_graph() -> dict[str, set[str]]:
    return {name: {m for m in imported_modules(name) if m in MODULES and m != name} for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_tagih_modules_counting_imports_inside_functions() -> None:
    graph = tagih_graph()
    assert len(graph) > 50  # the walk found the package
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_back_edge_hidden_in_a_function() -> None:
    # The shape issue 14 measured: a → b at the top, b → a inside a function body.
    source = {"a": "import b\n", "b": "def f():\n    import a\n"}
    graph = {
        name: {
            alias.name
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        for name, text in source.items()
    }
    assert cycles(graph) == [["a", "b"]]


def test_the_domain_names_no_adapter_service_or_framework() -> None:
    offending = {
        name: sorted(m for m in imported_modules(name) if _within(m, DOMAIN_NEVER_IMPORTS))
        for name in MODULES
        if name.startswith("tagih.domain")
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_services_reach_adapters_only_through_ports() -> None:
    adapters = ("boto3", "botocore", "tagih.store", "tagih.gateways", "tagih.wiring", "tagih.api")
    offending = {
        name: sorted(m for m in imported_modules(name) if _within(m, adapters))
        for name in MODULES
        if name.startswith("tagih.services")
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_importing_the_whole_domain_loads_no_sdk_service_store_or_gateway() -> None:
    domain = sorted(name for name in MODULES if name.startswith("tagih.domain"))
    program = (
        "import importlib, json, sys\n"
        f"for name in {domain!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(LAYER), "PATH": ""},
        timeout=120,
    )
    loaded = json.loads(done.stdout)
    assert set(domain) <= set(loaded)
    assert [m for m in loaded if _within(m, IMPURE)] == []


def test_domain_and_service_modules_stay_under_600_lines() -> None:
    long = {
        name: lines
        for name, path in MODULES.items()
        if name.startswith(("tagih.domain", "tagih.services")) and name not in LONG_DATA_TABLES
        for lines in [len(path.read_text().splitlines())]
        if lines > MAX_LINES
    }
    assert long == {}
