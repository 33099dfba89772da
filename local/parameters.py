"""Template parameters checked before the stack starts: a bad one fails ``python -m local`` at once,
naming the parameter, instead of every timer that reads it later.

The timer settings (``TrialDuration``, ``GraceDuration``, ``DunningSchedule``) are checked by the
functions' own rule (``tagih.config.check_timer_setting``, which refuses them in a deployed function
too), applied to each function's environment as the template resolved it. A non-increasing
``DunningSchedule`` such as ``PT15S,PT15S`` matches the template's ``AllowedPattern`` and so passed
``sam deploy`` and started here, then broke every trial end with a ``ValueError``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local.model import StackModel


class ParameterError(Exception):
    """A parameter the stack's functions would refuse; the message names it."""


def _parameter_sources(template: Mapping[str, Any]) -> dict[str, str]:
    """Environment variable → the parameter a plain ``!Ref`` gives it (Globals, then functions)."""
    found: dict[str, str] = {}
    sections = [template.get("Globals", {}).get("Function", {})]
    sections += [r.get("Properties", {}) for r in template.get("Resources", {}).values()]
    for props in sections:
        variables = (props.get("Environment") or {}).get("Variables") or {}
        for env, value in variables.items():
            if isinstance(value, Mapping) and set(value) == {"Ref"}:
                found.setdefault(str(env), str(value["Ref"]))
    return found


SHARED_LAYER = Path(__file__).resolve().parents[1] / "layers" / "common" / "python"


def check_timer_parameters(template: Mapping[str, Any], model: StackModel) -> None:
    # The rule lives in the shared layer, which only the workers have on their path: put it here too.
    if str(SHARED_LAYER) not in sys.path:
        sys.path.append(str(SHARED_LAYER))
    from tagih.config import TIMER_SETTINGS, check_timer_setting, env_name

    variables = {env_name(field) for field in TIMER_SETTINGS}
    readers = [spec for spec in model.functions.values() if variables & set(spec.environment)]
    if not readers:  # a template whose functions read no timer setting (the tests' small ones)
        return
    sources = _parameter_sources(template)
    for field in TIMER_SETTINGS:
        env = env_name(field)
        values = {spec.logical_id: spec.environment[env] for spec in readers if env in spec.environment}
        for value in sorted(set(values.values())):
            try:
                check_timer_setting(field, value)
            except ValueError as error:
                parameter = sources.get(env, env)
                functions = sorted(f for f, v in values.items() if v == value)
                raise ParameterError(
                    f"parameter {parameter} is refused: {error}"
                    f" (in the environment of {len(functions)} functions, e.g. {functions[0]})"
                ) from None
