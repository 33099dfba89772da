"""Fixtures the billing integration tests share: the Midtrans fake as the stack's gateway, and a
queue receiving what is published on the billing bus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.midtrans_fake import MidtransFake
from tests.conftest import BUS_NAME
from tests.fakes.gateway_env import configure_gateways, event_queue
from tests.fakes.midtrans_server import running_midtrans_fake


@pytest.fixture
def midtrans(catalog: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[MidtransFake]:
    """The local Midtrans fake, on a free port, as the functions' Midtrans (the default catalog seeded)."""
    with running_midtrans_fake() as fake:
        configure_gateways(monkeypatch, midtrans=fake, timeout_seconds=2.0)
        yield fake


@pytest.fixture
def events(midtrans: MidtransFake) -> str:
    """An SQS queue URL that receives every event published on the billing bus from now on."""
    return event_queue(BUS_NAME)
