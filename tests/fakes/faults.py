"""Kill the process at a boundary: before an AWS call is sent, or after AWS answered it.

A Lambda can die anywhere (a timeout, an out-of-memory kill, a host failure). What matters for
money is where it dies relative to the calls that change state: DynamoDB writes, the gateway's HTTP
call (which sits between two DynamoDB calls: the claim and the outcome), events. ``crash_at`` makes
the ``n``-th AWS call of a run raise ``Crash``, before it is sent or after it committed; ``Crash`` is
a ``BaseException``, so no handler turns it into a response, exactly as a killed process answers
nothing. Only botocore's hooks change: the code under test runs unmodified.

``run_until_it_finishes`` drives one flow through every boundary: case ``k`` crashes at boundary
``k`` and then lets the caller recover (a client's retry, a timer's, the janitor), until a run
meets no boundary left to crash at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3

from tagih.events.publisher import reset_publisher
from tagih.store.table import reset_clients
from tagih.timers.step_functions import reset_timers_client

When = Literal["before", "after"]
# Calls whose failure is not a money boundary: reading the gateways' keys (cached per process).
UNCOUNTED_SERVICES = frozenset({"secretsmanager", "sts"})


class Crash(BaseException):  # not an Exception: no handler may catch a dying process
    """The process died here."""


@dataclass
class Boundary:
    """The ``call``-th AWS call of a run (from 1), ``when`` it is sent or answered."""

    call: int
    when: When
    seen: list[str] = field(default_factory=list)  # the operations counted so far, in order
    crashed: str | None = None  # the operation it crashed at, once it did

    def __str__(self) -> str:
        return f"{self.when} call {self.call} ({self.crashed or 'not reached'})"


@contextmanager
def crash_at(boundary: Boundary) -> Iterator[Boundary]:
    """Within the block, the process dies at ``boundary`` (for clients created inside it)."""
    session = boto3._get_default_session()

    def service_of(model: Any) -> str:
        return str(model.service_model.endpoint_prefix)

    def before(model: Any, **_: Any) -> None:
        if service_of(model) in UNCOUNTED_SERVICES or boundary.crashed is not None:
            return
        boundary.seen.append(f"{service_of(model)}.{model.name}")
        if boundary.when == "before" and len(boundary.seen) == boundary.call:
            boundary.crashed = boundary.seen[-1]
            raise Crash(str(boundary))

    def after(model: Any, http_response: Any, **_: Any) -> None:
        if service_of(model) in UNCOUNTED_SERVICES or boundary.crashed is not None:
            return
        # Only a call that succeeded counts as "committed, then died": a refused write is the code's.
        ok = getattr(http_response, "status_code", 500) < 300
        if boundary.when == "after" and len(boundary.seen) == boundary.call and ok:
            boundary.crashed = boundary.seen[-1]
            raise Crash(str(boundary))

    _reset_cached_clients()
    session.events.register("before-call", before)
    session.events.register("after-call", after)
    try:
        yield boundary
    finally:
        session.events.unregister("before-call", before)
        session.events.unregister("after-call", after)
        _reset_cached_clients()


def _reset_cached_clients() -> None:
    """Clients carry the hooks registered when they were created: new ones, with or without them."""
    reset_clients()
    reset_publisher()
    reset_timers_client()


def run_until_it_finishes(
    prepare: Callable[[int], None],
    flow: Callable[[int, Boundary], None],
    recover_and_check: Callable[[int], None],
    *,
    limit: int = 200,
) -> int:
    """For ``k`` = 1, 2, …: ``prepare(case)`` (not killed), run ``flow(case, boundary)`` crashing at
    boundary ``k`` (before, then after, the ``k``-th call), then ``recover_and_check(case)``, until
    ``flow`` runs to its end with the boundary never reached. Returns the number of cases that
    crashed (each was recovered and checked)."""
    crashed = 0
    for call in range(1, limit + 1):
        reached = False
        for when in ("before", "after"):
            boundary = Boundary(call, when)
            case = 2 * call - (1 if when == "before" else 0)
            prepare(case)
            try:
                with crash_at(boundary):
                    flow(case, boundary)
            except Crash:
                crashed += 1
                reached = True
            recover_and_check(case)
        if not reached:
            return crashed
    raise AssertionError(f"the flow still had boundaries after {limit} calls")
