"""The PDF cache on S3 (``INVOICE_BUCKET``): rendered invoices keyed by their content.

Keys are ``invoices/<org>/<invoice id>/<sha256 of the invoice's canonical data>.pdf``
(``service.pdf_key``): an object under a key never changes, so a cached PDF is served as it is, and
any change of the invoice (or of what the PDF shows) is a new key. The older objects stay as the
PDFs the invoice had; a lifecycle rule on the bucket may expire them.

A missing object must read as "not cached" (``NoSuchKey``), not "access denied": S3 answers 403 for
a missing key unless the caller may list the bucket, so the function's policy grants
``s3:ListBucket`` on the ``invoices/`` prefix besides Get/Put.

The cache only saves work: when S3 fails (throttling, a policy mistake) the PDF is rendered and
served anyway, and the failure is logged.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from tagih.config import get_settings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

logger = Logger()

PDF_TYPE = "application/pdf"
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3PdfCache:
    """Implements ``service.PdfCache`` on a bucket."""

    def __init__(self, bucket: str, client: S3Client) -> None:
        self._bucket = bucket
        self._client = client

    def get(self, key: str) -> bytes | None:
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            logger.warning("invoice PDF cache unreadable; rendering", extra={"key": key, "error": str(error)})
            return None
        return answer["Body"].read()

    def put(self, key: str, body: bytes) -> None:
        try:
            self._client.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=PDF_TYPE)
        except ClientError as error:
            logger.warning("invoice PDF not cached", extra={"key": key, "error": str(error)})


class NoPdfCache:
    """No bucket configured (``INVOICE_BUCKET`` empty): every request renders."""

    def get(self, key: str) -> bytes | None:
        return None

    def put(self, key: str, body: bytes) -> None:
        return None


@cache
def s3_client() -> S3Client:
    return boto3.client("s3")


def reset_pdf_clients() -> None:
    """Forget the cached S3 client (tests switch moto and environments)."""
    s3_client.cache_clear()


def default_pdf_cache() -> S3PdfCache | NoPdfCache:
    bucket = get_settings().invoice_bucket
    if not bucket:
        logger.warning("INVOICE_BUCKET is not set: invoice PDFs are rendered on every request")
        return NoPdfCache()
    return S3PdfCache(bucket, s3_client())
