"""The Flask application factory.

Today it serves verification over HTTP (the same service as ``rogatory
verify``); intake, the message store and the audit trail arrive with the
gateway issue. Nothing is built at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``settings`` override ``ROGATORY_*`` environment variables."""
    from signing.trust import RevocationPolicy

    from .verification import build_engine, verify_document

    config = {
        "TRUST": os.environ.get("ROGATORY_TRUST", ""),
        "REVOCATION": os.environ.get("ROGATORY_REVOCATION", "hard"),
        **(settings or {}),
    }
    app = Flask("rogatory")
    app.config["MAX_CONTENT_LENGTH"] = MAX_DOCUMENT_BYTES
    anchors = [Path(p) for p in str(config["TRUST"]).split(":") if p]
    engine = build_engine(anchors, revocation=RevocationPolicy(config["REVOCATION"]))

    @app.get("/healthz")
    def health() -> Response:
        return jsonify(status="ok", trust_anchors=len(engine.policy.anchors) if engine else 0)

    @app.post("/api/v1/verify")
    def verify() -> tuple[Response, int]:
        report = verify_document(request.get_data(cache=False), engine, path="request-body")
        return jsonify({"documents": [report.to_json()]}), 200

    return app
