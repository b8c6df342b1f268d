"""The Flask application factory: ``create_app(settings)``; gunicorn runs ``wsgi:app``.

Nothing is built at import time. In development mode the first run creates
what a demo gateway needs (data folder, development PKI, authority directory
with tokens); in production, missing or unsafe settings stop the start.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

from .settings import Settings, load_settings


def prepare_settings(settings: Settings | None = None) -> Settings:
    """Settings from the environment, completed in development mode, checked always."""
    settings = settings or load_settings()
    if settings.development:
        from .bootstrap import ensure_development_setup

        settings = ensure_development_setup(settings)
    settings.check()
    return settings


def create_app(settings: Settings | None = None) -> Flask:
    """The gateway's WSGI application over services built from ``settings``."""
    from .api import api
    from .openapi import docs
    from .services import build_services

    settings = prepare_settings(settings)
    services = build_services(settings)
    # Loaded now, not by the first submission (pyHanko's import takes about half a second).
    import signing.pades_verify  # noqa: F401

    app = Flask("rogatory", static_folder=None)
    # Attachments stream to the blob store; this bounds the whole request body.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["rogatory"] = services
    app.register_blueprint(api)
    app.register_blueprint(docs)

    @app.get("/healthz")
    def health() -> Response:
        return jsonify(status="ok", gateway=settings.gateway_id)

    return app
