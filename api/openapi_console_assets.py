"""The ``/docs`` page and the console's static files (``/ui/static/{path}``) in the OpenAPI
document (merged by :mod:`api.openapi`): public, no API key."""

from __future__ import annotations

from typing import Any

from api.console.assets import CONTENT_TYPES
from api.openapi_paths import PROBLEM, _ref

_BINARY = {"type": "string", "format": "binary"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def paths() -> dict[str, Any]:
    """The paths; either may also answer 500."""
    media_types = sorted({content_type.split(";")[0] for content_type in CONTENT_TYPES.values()})
    routes: dict[str, Any] = {
        "/docs": {
            "get": {
                "summary": "This API's documentation (Swagger UI), served from local files",
                "tags": ["operations"],
                "operationId": "docs",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page",
                        "headers": {
                            "Content-Security-Policy": {
                                "description": "Only this origin's scripts",
                                "schema": {"type": "string"},
                                "required": True,
                            }
                        },
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "400": _problem("A query parameter (the page takes none)"),
                },
            }
        },
        "/ui/static/{path}": {
            "get": {
                "summary": "A static file of the console or of /docs",
                "description": (
                    "Scripts, styles, images and fonts under the console's static directory, "
                    "among them the front-end packages installed from the npm registry "
                    "(`vendor/`). A `vendor/` file asked for with the current `v` may be "
                    "cached for good; anything else is revalidated."
                ),
                "tags": ["operations"],
                "operationId": "consoleStaticFile",
                "security": [],
                "parameters": [
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "description": "The file's path, e.g. vendor/mermaid.min.js",
                        "schema": {"type": "string", "minLength": 1},
                    },
                    {
                        "name": "v",
                        "in": "query",
                        "required": False,
                        "description": "The assets version (any other value: no long caching)",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {media_type: {"schema": _BINARY} for media_type in media_types},
                    },
                    "304": {"description": "Not modified since If-Modified-Since"},
                    "400": _problem("A query parameter other than v"),
                    "404": _problem("No such file, or one that is not served"),
                },
            }
        },
    }
    for item in routes.values():
        for op in item.values():
            op["responses"].setdefault("500", _problem("Unexpected error (no details are given)"))
    return routes
