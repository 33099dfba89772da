"""Organization API keys: owners create, list and revoke them; the secret is shown only on create."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from tagih import clock
from tagih.api.app import RoutePolicy, create_resolver
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.config import get_settings
from tagih.domain.api_keys import ApiKey
from tagih.domain.text import RequestBody
from tagih.observability import TRACED_LIBRARIES
from tagih.services import api_keys
from tagih.store.api_keys import default_api_key_items

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
OWNERS = RoutePolicy(role="owner")
app = create_resolver(
    "api_keys",
    policies={
        "POST /billing/api-keys": RoutePolicy(role="owner", secret_fields=("key",)),
        "GET /billing/api-keys": OWNERS,
        "DELETE /billing/api-keys/{key_id}": OWNERS,
    },
)


# -- the HTTP shapes (the domain keeps plain dataclasses: the authorizer imports it) ---------------
class CreateApiKey(RequestBody):
    name: str = Field(min_length=1, max_length=100, description="What the key is for, e.g. 'CI deploys'.")
    role: Literal["admin", "member"] = Field(default="admin", description="What the key may do.")


class ApiKeyView(BaseModel):
    id: str = Field(examples=["key_3kTMd9Qz1vXbR7pL0aYc"])
    name: str
    role: Literal["admin", "member"]
    prefix: str = Field(description="The key's first characters, to recognise it.", examples=["tk_test_Xy3q"])
    last4: str
    created_at: datetime

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyView:
        return cls(
            id=key.id,
            name=key.name,
            role=key.role,
            prefix=key.prefix,
            last4=key.last4,
            created_at=key.created_at.replace(microsecond=0),  # the API's whole seconds
        )


class CreatedApiKey(ApiKeyView):
    key: str | None = Field(
        description="The full key, shown only in this response (Tagih keeps only its hash); "
        "`null` when the response is an Idempotency-Key replay."
    )


class RevokedApiKey(BaseModel):
    id: str
    deleted: Literal[True] = True


KeyId = Annotated[str, Path(min_length=1, max_length=64)]


# -- routes ------------------------------------------------------------------------------------------
@app.post("/billing/api-keys", status_code=201, summary="Create an API key", tags=["API keys"])
def create_api_key(body: CreateApiKey) -> CreatedApiKey:
    issued = api_keys.issue_api_key(
        default_api_key_items(),
        organization_id=app.auth.organization_id,
        name=body.name,
        role=body.role,
        live=get_settings().is_prod,
        now=clock.now(),
    )
    logger.info("api key created", extra={"key_id": issued.api_key.id, "role": issued.api_key.role})
    return CreatedApiKey(**ApiKeyView.of(issued.api_key).model_dump(), key=issued.secret)


@app.get("/billing/api-keys", summary="List API keys", tags=["API keys"])
def list_api_keys(page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE) -> Page[ApiKeyView]:
    keys = api_keys.list_api_keys(default_api_key_items(), app.auth.organization_id)
    return paginate([ApiKeyView.of(k) for k in keys], page, page_size)


@app.delete("/billing/api-keys/<key_id>", summary="Revoke an API key", tags=["API keys"])
def revoke_api_key(key_id: KeyId) -> RevokedApiKey:
    api_keys.revoke_api_key(default_api_key_items(), app.auth.organization_id, key_id)
    logger.info("api key revoked", extra={"key_id": key_id})
    return RevokedApiKey(id=key_id)


# Neither the event nor the response goes to logs or traces: a create response holds the key.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
