"""Custom resource: writes the repo's catalog (plans, add-ons, tax rates) into the table at deploy."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from tagih.cfn import send_response
from tagih.domain.catalog import default_catalog
from tagih.store.catalog import put_catalog

logger = Logger()
PHYSICAL_ID = "tagih-catalog"


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    try:
        if event["RequestType"] in ("Create", "Update"):
            written = put_catalog(default_catalog())
            logger.info("catalog seeded", extra={"items": written})
        # Delete: the table is retained, and so is its catalog.
        send_response(event, "SUCCESS", PHYSICAL_ID)
    except Exception as exc:
        logger.exception("catalog seeding failed")
        send_response(event, "FAILED", PHYSICAL_ID, reason=str(exc))
