"""The webhook delivery queue and its dead-letter queue (SQS), as ``domain.webhooks.DeliveryQueue``."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3

from tagih.config import get_settings
from tagih.domain.webhooks import DeliveryRef

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient


class SqsDeliveryQueue:
    def __init__(self, client: SQSClient, queue_url: str, dead_letter_url: str) -> None:
        self._client = client
        self._queue = queue_url
        self._dead_letters = dead_letter_url

    def schedule(self, ref: DeliveryRef, delay_seconds: int) -> None:
        self._client.send_message(
            QueueUrl=self._queue,
            MessageBody=ref.model_dump_json(exclude_none=True),
            DelaySeconds=delay_seconds,
        )

    def dead_letter(self, ref: DeliveryRef) -> None:
        self._client.send_message(QueueUrl=self._dead_letters, MessageBody=ref.model_dump_json())


@cache
def _sqs_client() -> SQSClient:
    return boto3.client("sqs")


def default_delivery_queue() -> SqsDeliveryQueue:
    settings = get_settings()
    return SqsDeliveryQueue(
        _sqs_client(), settings.webhook_delivery_queue_url, settings.webhook_dead_letter_queue_url
    )


def reset_delivery_queue() -> None:
    """Forget the cached client (tests switch moto accounts)."""
    _sqs_client.cache_clear()
