"""The timers' state machines (``statemachines/*.asl.json``) as a person who must never lose a timer
reads them: every Lambda task retries whatever fails, with backoff, and once the retries are spent
it Catches into ``record_failed_timer`` with the very task that failed (so the janitor can run it
again), then fails the execution (so its alarm fires)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

MACHINES = sorted((Path(__file__).parents[2] / "statemachines").glob("*.asl.json"))
# The sweep's page read is not kept: the next hourly sweep reads the same due entries again.
NOT_KEPT = {("renewal", "FindDue")}


def lambda_tasks(states: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, state, the states beside it) of every Lambda task, Map item processors included."""
    found = []
    for name, state in states.items():
        if state.get("Type") == "Map":
            found += lambda_tasks(state["ItemProcessor"]["States"])
        elif state.get("Type") == "Task" and state["Parameters"].get("Payload", {}).get("action") != (
            "record_failed_timer"
        ):
            found.append((name, state, states))
    return found


@pytest.mark.parametrize("path", MACHINES, ids=[p.name for p in MACHINES])
def test_every_timer_task_retries_everything_then_is_kept_for_the_janitor(path: Path) -> None:
    machine = path.name.split(".")[0]
    tasks = lambda_tasks(json.loads(path.read_text())["States"])
    assert tasks
    for name, state, siblings in tasks:
        last = state["Retry"][-1]
        assert last["ErrorEquals"] == ["States.ALL"], name
        assert last["MaxAttempts"] >= 2, name
        assert last["BackoffRate"] > 1, name
        if (machine, name) in NOT_KEPT:
            assert "Catch" not in state
            continue
        [catch] = state["Catch"]
        assert (catch["ErrorEquals"], catch["ResultPath"]) == (["States.ALL"], "$.failure"), name
        record = siblings[catch["Next"]]
        payload = record["Parameters"]["Payload"]
        assert (payload["action"], payload["machine"]) == ("record_failed_timer", machine)
        assert (payload["error.$"], payload["cause.$"]) == ("$.failure.Error", "$.failure.Cause")
        kept = payload.get("task", payload.get("task.$"))
        assert kept == state["Parameters"].get("Payload", state["Parameters"].get("Payload.$")), name
        assert record["Retry"][-1]["ErrorEquals"] == ["States.ALL"]
        assert siblings[record["Next"]]["Type"] == "Fail"
