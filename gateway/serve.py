"""Running the gateway under gunicorn with TLS, from one Settings object.

``rogatory serve`` and ``gunicorn wsgi:app`` run the same application; this
module only adds what the command line owes an operator: TLS with optional
client certificates, a worker count, and a refusal to start on unsafe settings.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from gunicorn.app.base import BaseApplication

from .settings import Settings


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from ``Settings`` rather than from its own command line."""

    def __init__(self, settings: Settings, *, workers: int | None = None) -> None:
        self.settings = settings
        self.workers = workers or max(2, (os.cpu_count() or 1))
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            "workers": self.workers,
            "worker_class": "gthread",
            "threads": 4,
            "keepalive": 30,
            "timeout": 120,
            "accesslog": "-",
            "limit_request_line": 8190,
        }
        if not s.plain_http:
            options |= {"certfile": str(s.tls_cert), "keyfile": str(s.tls_key)}
            if s.tls_client_ca is not None:
                # Optional: an authority may use a token instead of a certificate.
                options |= {"ca_certs": str(s.tls_client_ca), "cert_reqs": ssl.CERT_OPTIONAL}
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app

        return create_app(self.settings)
