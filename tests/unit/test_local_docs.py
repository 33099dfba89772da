"""``/docs`` works offline (issue 16 item 7: it loaded Swagger UI from a CDN and was blank without
one): the page references only the front's own URLs, and each of them answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from local.http_front import FrontServer, FrontState
from local.model import StackModel


@pytest.fixture
def front() -> Iterator[str]:
    server = FrontServer(0, FrontState(model=StackModel(parameters={})), lambda _: None)
    server.start()
    yield server.url
    server.stop()


def test_the_docs_page_loads_swagger_ui_and_the_spec_from_the_front_only(front: str) -> None:
    page = requests.get(f"{front}/docs", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    references = re.findall(r'(?:src|href|url:)\s*=?\s*"([^"]+)"', page.text)

    assert {urlsplit(r).netloc for r in references} == {""}  # no host: nothing from elsewhere
    assert "/docs/openapi.json" in references
    loaded = {r: requests.get(f"{front}{r}", timeout=10) for r in references}
    assert {r: answer.status_code for r, answer in loaded.items()} == dict.fromkeys(references, 200)
    bundle = loaded["/docs/assets/swagger-ui-bundle.js"]
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    assert loaded["/docs/openapi.json"].json()["openapi"].startswith("3.")


def test_only_the_pages_assets_are_served(front: str) -> None:
    for path in ("/docs/assets/swagger-editor.js", "/docs/assets/LICENSE", "/docs/assets/%2E%2E/__init__.py"):
        assert requests.get(f"{front}{path}", timeout=10).status_code == 404
