"""The HTTP contract: ``openapi.yaml`` (package data) served as is, and loaded once for tests."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from flask import Blueprint, Response

docs = Blueprint("docs", __name__, url_prefix="/api/v1")

DOCUMENT = "openapi.yaml"


def openapi_text() -> str:
    return files("gateway").joinpath(DOCUMENT).read_text(encoding="utf-8")


@cache
def load_openapi() -> dict[str, Any]:
    """The OpenAPI document as data, parsed once."""
    import yaml  # only readers of the document as data need PyYAML

    document: dict[str, Any] = yaml.safe_load(openapi_text())
    return document


@docs.get("/openapi.yaml")
def openapi_document() -> Response:
    """The contract itself; a blueprint of its own, so the api's authentication does not apply."""
    return Response(openapi_text(), mimetype="application/yaml")
