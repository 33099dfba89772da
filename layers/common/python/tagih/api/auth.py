"""Who is calling, as the authorizer established it, and what their role allows.

The authorizer never decides per route (its result is cached per token and organization), so it
returns either a principal or the reason there is none; the resolver turns the latter into the
API.md error before any route code runs (fail closed: no context means 401).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tagih.domain.errors import Forbidden, Unauthenticated

Role = Literal["owner", "admin", "member"]
ROLE_RANK: dict[str, int] = {"member": 1, "admin": 2, "owner": 3}


class AuthContext(BaseModel):
    model_config = ConfigDict(frozen=True)

    organization_id: str
    role: Role | None = None
    subject: str
    scopes: frozenset[str] = frozenset()
    method: Literal["jwt", "api_key"] = "jwt"

    def has_role(self, required: Role) -> bool:
        return self.role is not None and ROLE_RANK[self.role] >= ROLE_RANK[required]

    def require_role(self, required: Role) -> None:
        if not self.has_role(required):
            raise Forbidden(f"This action needs the {required} role or higher.")

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"This action needs the {scope} scope.")


def authorizer_context(event: Mapping[str, Any]) -> dict[str, Any]:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    return dict(authorizer.get("lambda") or {})


def auth_from_event(event: Mapping[str, Any]) -> AuthContext:
    ctx = authorizer_context(event)
    error = ctx.get("auth_error")
    if error == "forbidden":
        raise Forbidden(str(ctx.get("auth_message") or Forbidden.default_message))
    if error or not ctx.get("organization_id") or not ctx.get("subject"):
        raise Unauthenticated(str(ctx.get("auth_message") or Unauthenticated.default_message))
    scopes = frozenset(str(ctx.get("scopes") or "").split())
    return AuthContext(
        organization_id=str(ctx["organization_id"]),
        role=ctx.get("role") or None,
        subject=str(ctx["subject"]),
        scopes=scopes,
        method="api_key" if ctx.get("method") == "api_key" else "jwt",
    )
