"""``GET /docs``: Swagger UI of ``docs/openapi.json``, its assets served from the swagger-ui-py
package (``swagger_ui/static``, Swagger UI 5, which reads OpenAPI 3.1) rather than a CDN, so the
page works offline like the rest of the local stack.

The package is found without importing it: its ``__init__`` loads web-framework adapters the
front does not need; only its static files are served.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

ASSET_PREFIX = "/docs/assets/"
# The files the page loads, and their types; nothing else of the package is served.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tagih API (local)</title>
  <link rel="icon" type="image/png" href="{ASSET_PREFIX}favicon-32x32.png">
  <link rel="stylesheet" href="{ASSET_PREFIX}swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSET_PREFIX}swagger-ui-bundle.js"></script>
  <script>
    window.onload = () => {{
      window.ui = SwaggerUIBundle({{url: "/docs/openapi.json", dom_id: "#swagger-ui"}});
    }};
  </script>
</body>
</html>
"""

MISSING = "Swagger UI's files are not installed: make venv installs swagger-ui-py (requirements/dev.lock)."


@cache
def assets_dir() -> Path | None:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def asset(path: str) -> tuple[bytes, str] | None:
    """The bytes and type of ``/docs/assets/<name>``; None for anything not in ``ASSETS``."""
    name = path.removeprefix(ASSET_PREFIX)
    folder = assets_dir()
    if not path.startswith(ASSET_PREFIX) or name not in ASSETS or folder is None:
        return None
    return (folder / name).read_bytes(), ASSETS[name]
