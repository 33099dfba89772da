"""The CloudFormation custom-resource protocol: answer on the pre-signed ResponseURL."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal


def send_response(
    event: Mapping[str, Any],
    status: Literal["SUCCESS", "FAILED"],
    physical_id: str,
    reason: str = "",
    data: Mapping[str, Any] | None = None,
) -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:3000] or status,
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": dict(data or {}),
        }
    ).encode()
    url = str(event["ResponseURL"])
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError("ResponseURL must be https")
    request = urllib.request.Request(  # noqa: S310 — scheme checked above
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()
