"""The OpenAPI 3 document of the API, served by sanic-ext at ``/docs/openapi.json``
(Swagger UI on it at ``/docs``).

The document is written by hand, from the same pydantic models that validate requests,
rather than inferred from handlers: every status a route answers is listed with its body
schema (:mod:`api.openapi_paths`), and the tests run schemathesis against a live server to
keep it honest. sanic-ext emits OpenAPI 3.0, so pydantic's JSON Schema is adapted
(:mod:`api.openapi_components`).
"""

from __future__ import annotations

from typing import Any

from sanic import Sanic
from sanic.config import Config
from sanic_ext import Extend
from sanic_ext.extensions.openapi import openapi as oas
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from api import (
    openapi_bulk,
    openapi_console_assets,
    openapi_dead_letters,
    openapi_migrations,
    openapi_schedules,
)
from api.openapi_components import components, security_schemes
from api.openapi_paths import paths


def document(title: str, version: str) -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": {
            **paths(),
            **openapi_dead_letters.paths(),
            **openapi_bulk.paths(),
            **openapi_migrations.paths(),
            **openapi_schedules.paths(),
            **openapi_console_assets.paths(),
        },
        "components": {
            "schemas": {
                **components(),
                **openapi_migrations.components(),
                **openapi_schedules.components(),
            },
            "securitySchemes": security_schemes(),
        },
    }


class DocumentOnly(OpenAPIExtension):  # type: ignore[no-untyped-call]
    """sanic-ext's OpenAPI extension without its pages (whose start-up banner links one)."""

    name = "openapidocument"

    def label(self) -> str:
        return ""


def install(app: Sanic[Config, Any]) -> None:
    """Serve the document (``/docs/openapi.json``) with sanic-ext. Its pages, which load
    Swagger UI or ReDoc from a CDN, are off: ``/docs`` is our own page
    (:mod:`api.console.assets`), from files served by this process."""
    app.config.OAS_AUTODOC = False
    app.config.OAS_UI_DEFAULT = None
    app.config.OAS_UI_SWAGGER = False
    app.config.OAS_UI_REDOC = False
    extend = Extend(app, extensions=[DocumentOnly], built_in_extensions=False)
    doc = document("Conveyor", "1")
    # Our routes are described by the document above, not inferred from the handlers.
    for blueprint in app.blueprints.values():
        if blueprint.name != "openapi":
            oas.exclude(bp=blueprint)
    extend.openapi.raw(doc)  # type: ignore[no-untyped-call]
