"""The functions of template.yaml, as the tools and tests need them.

template.yaml is the only list of functions: the OpenAPI generator, the bench, the lazy-import test
and the ``events/`` test all start here, so a function another change adds is picked up everywhere
without editing a list. Intrinsics are resolved only as far as an import needs: a parameter's
default where it has one, a condition over such defaults, otherwise the ``PLACEHOLDER``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from local.cfn_yaml import load_template
from tests.fakes.lambda_runtime import ROOT, load_function

TEMPLATE = ROOT / "template.yaml"
PLACEHOLDER = "tagih-local"
FUNCTION_TYPE = "AWS::Serverless::Function"


@dataclass(frozen=True)
class Route:
    method: str  # upper case, as in the template ("GET", "POST", …)
    path: str  # "/billing/api-keys/{key_id}"
    authorized: bool  # False when the event says Auth: {Authorizer: NONE}


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_dir: Path  # absolute CodeUri
    handler: str  # "app.lambda_handler"
    environment: Mapping[str, str]  # Globals merged with the function's own, intrinsics resolved
    layer_dirs: tuple[Path, ...]  # each layer's ContentUri/python (what Lambda puts in /opt/python)
    routes: tuple[Route, ...]  # HttpApi events; empty for non-HTTP functions

    @property
    def folder(self) -> str:
        """The function's folder name: ``functions/<folder>``, ``events/<folder>``."""
        return self.code_dir.name

    @property
    def module_name(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    @property
    def module_path(self) -> Path:
        """The handler's file; fails loudly when the template names code that is not there."""
        path = self.code_dir / f"{self.module_name.replace('.', '/')}.py"
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.logical_id}: template.yaml names {path.relative_to(ROOT)}, which does not exist"
            )
        return path


class _Resolver:
    """Just enough of CloudFormation to give an importing process plausible environment values."""

    def __init__(self, template: Mapping[str, Any]) -> None:
        self.parameters = {
            name: str(spec["Default"])
            for name, spec in (template.get("Parameters") or {}).items()
            if "Default" in spec
        }
        self.conditions: Mapping[str, Any] = template.get("Conditions") or {}

    def value(self, node: Any) -> str:
        if isinstance(node, bool):
            return "true" if node else "false"
        if isinstance(node, str | int | float):
            return str(node)
        if isinstance(node, dict) and "Ref" in node:
            return self.parameters.get(str(node["Ref"]), PLACEHOLDER)
        if isinstance(node, dict) and "Fn::If" in node:
            name, when_true, when_false = node["Fn::If"]
            return self.value(when_true if self.condition(self.conditions[name]) else when_false)
        return PLACEHOLDER  # Sub, GetAtt, ImportValue …: a name only AWS knows

    def condition(self, node: Any) -> bool:
        if isinstance(node, dict) and "Condition" in node:
            return self.condition(self.conditions[node["Condition"]])
        if isinstance(node, dict) and "Fn::Equals" in node:
            left, right = node["Fn::Equals"]
            return self.value(left) == self.value(right)
        if isinstance(node, dict) and "Fn::Not" in node:
            return not self.condition(node["Fn::Not"][0])
        if isinstance(node, dict) and "Fn::And" in node:
            return all(self.condition(part) for part in node["Fn::And"])
        if isinstance(node, dict) and "Fn::Or" in node:
            return any(self.condition(part) for part in node["Fn::Or"])
        raise ValueError(f"unsupported condition in template.yaml: {node!r}")


def _layer_dirs(resources: Mapping[str, Any], layers: list[Any], root: Path) -> tuple[Path, ...]:
    dirs = []
    for layer in layers:
        ref = layer.get("Ref") if isinstance(layer, dict) else None
        resource = resources.get(str(ref)) or {}
        if resource.get("Type") != "AWS::Serverless::LayerVersion":
            raise ValueError(f"layer {layer!r} is not a layer of this template")
        dirs.append(root / str(resource["Properties"]["ContentUri"]) / "python")
    return tuple(dirs)


def _routes(properties: Mapping[str, Any]) -> tuple[Route, ...]:
    routes = []
    for event in (properties.get("Events") or {}).values():
        if event.get("Type") != "HttpApi":
            continue
        props = event.get("Properties") or {}
        auth = props.get("Auth") or {}
        routes.append(
            Route(
                method=str(props["Method"]).upper(),
                path=str(props["Path"]),
                authorized=auth.get("Authorizer") != "NONE",
            )
        )
    return tuple(sorted(routes, key=lambda r: (r.path, r.method)))


def load_functions(template_path: Path = TEMPLATE) -> list[Function]:
    """Every ``AWS::Serverless::Function`` of the template, sorted by logical id."""
    template = load_template(template_path)
    root = template_path.resolve().parent
    resources: Mapping[str, Any] = template["Resources"]
    resolver = _Resolver(template)
    defaults = (template.get("Globals") or {}).get("Function") or {}
    functions = []
    for logical_id, resource in sorted(resources.items()):
        if resource.get("Type") != FUNCTION_TYPE:
            continue
        props = {**defaults, **(resource.get("Properties") or {})}
        variables = {
            **((defaults.get("Environment") or {}).get("Variables") or {}),
            **(((resource.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}),
        }
        functions.append(
            Function(
                logical_id=logical_id,
                code_dir=root / str(props["CodeUri"]),
                handler=str(props["Handler"]),
                environment={name: resolver.value(value) for name, value in variables.items()},
                layer_dirs=_layer_dirs(resources, list(props.get("Layers") or []), root),
                routes=_routes(props),
            )
        )
    return functions


def authorizer_functions(template_path: Path = TEMPLATE) -> set[str]:
    """Logical ids of the functions an HttpApi uses as its Lambda authorizer."""
    template = load_template(template_path)
    ids = set()
    for resource in template["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::HttpApi":
            continue
        authorizers = ((resource.get("Properties") or {}).get("Auth") or {}).get("Authorizers") or {}
        for authorizer in authorizers.values():
            arn = authorizer.get("FunctionArn") or {}
            if isinstance(arn, dict) and "Fn::GetAtt" in arn:
                ids.add(str(arn["Fn::GetAtt"][0]))
    return ids


def import_handler_module(function: Function) -> ModuleType:
    """Import the function's handler module in this process, as Lambda would find it.

    The layer directories go on ``sys.path`` for good (they are shared); the function's own folder
    only while its module executes. The module gets a unique name (the tests' loader), but sibling
    modules it imports are cached under their bare names: two functions with a same-named sibling
    module cannot share one process. Today every function is a single ``app.py``.
    """
    function.module_path  # noqa: B018 — raises, naming the function, when its code is missing
    if function.module_name != "app" or function.code_dir.parent != ROOT / "functions":
        raise ValueError(
            f"{function.logical_id}: expected functions/<folder>/app.py, got "
            f"{function.code_dir}/{function.module_name}.py"
        )
    for layer_dir in function.layer_dirs:
        if str(layer_dir) not in sys.path:
            sys.path.append(str(layer_dir))
    sys.path.insert(0, str(function.code_dir))
    try:
        return load_function(function.folder)
    finally:
        sys.path.remove(str(function.code_dir))


def by_folder(functions: list[Function]) -> dict[str, Function]:
    return {function.folder: function for function in functions}
