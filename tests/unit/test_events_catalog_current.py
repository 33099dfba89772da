"""docs/events.md and docs/events/*.schema.json are what the event models generate, cover every event
type, and each example validates against its schema."""

from __future__ import annotations

from typing import get_args

import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import pytest

from tagih.domain.webhooks import TEST_EVENT_TYPE
from tagih.events.catalog import CatalogEntry, catalog
from tagih.events.models import EventType
from tools.events_catalog import stale_files


def test_committed_catalog_is_what_the_models_generate() -> None:
    stale = stale_files()
    assert not stale, f"stale: {[str(p) for p in stale]}: run `make openapi` and commit them"


def test_the_catalog_documents_every_event_type() -> None:
    assert {e.type for e in catalog()} == {*get_args(EventType), TEST_EVENT_TYPE}


@pytest.mark.parametrize("entry", catalog(), ids=lambda e: e.type)
def test_each_example_is_valid_against_its_schema(entry: CatalogEntry) -> None:
    schema = entry.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(entry.example(), schema)
    wrong_type = {**entry.example(), "type": "billing.something.else"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong_type, schema)
