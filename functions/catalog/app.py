"""Catalog: the public list of plans and add-ons (any authenticated caller)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih.api.app import create_resolver
from tagih.api.pagination import DEFAULT_PAGE_SIZE, Page, PageNumber, PageSize, paginate
from tagih.domain.catalog import Addon, Plan
from tagih.observability import TRACED_LIBRARIES
from tagih.store import catalog as catalog_store

logger = Logger()
tracer = Tracer(patch_modules=TRACED_LIBRARIES)
metrics = Metrics()
app = create_resolver("catalog", test_clock=False)  # the catalog never asks the time


@app.get("/billing/plans", summary="List plans", tags=["Catalog"])
def list_plans(page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE) -> Page[Plan]:
    return paginate(catalog_store.list_plans(), page, page_size)


@app.get("/billing/addons", summary="List add-ons", tags=["Catalog"])
def list_addons(page: PageNumber = 1, page_size: PageSize = DEFAULT_PAGE_SIZE) -> Page[Addon]:
    return paginate(catalog_store.list_addons(), page, page_size)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
