"""A small resolver built with the real kernel, for testing what every Tagih function shares.

Its routes stand in for any billing route: a read, a create with a strict body, role- and
scope-guarded writes, and routes that fail.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tagih.api.app import RoutePolicy, create_resolver
from tagih.domain.errors import PlanNotFound

app = create_resolver(
    "kernel-test",
    policies={
        "POST /billing/owner-only": RoutePolicy(role="owner"),
        "POST /billing/ops": RoutePolicy(scope="billing:operator"),
    },
)
calls: list[str] = []


class CreateThing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=10)]
    quantity: Annotated[int, Field(ge=1, le=5)] = 1


@app.get("/billing/things")
def list_things() -> dict[str, Any]:
    return {"organization_id": app.auth.organization_id, "role": app.auth.role}


@app.post("/billing/things")
def create_thing(body: CreateThing) -> tuple[dict[str, Any], int]:
    calls.append(body.name)
    return {"id": f"thing_{len(calls)}", "name": body.name, "quantity": body.quantity}, 201


@app.post("/billing/owner-only")
def owner_only() -> dict[str, str]:
    return {"ok": "yes"}


@app.post("/billing/ops")
def operator_only() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/billing/missing")
def missing_plan() -> dict[str, str]:
    raise PlanNotFound("No plan with slug 'gold'.")


@app.get("/billing/boom")
def boom() -> dict[str, str]:
    raise RuntimeError("secret internals /var/task/app.py line 12")
