"""A small client of the gateway's HTTP API, over HTTPS with a token or a client certificate.

For scripts, the demo, benchmarks and peers; a central authority's own system
would speak the same HTTP contract (gateway/openapi.yaml).
"""

from __future__ import annotations

import http.client
import json
import secrets
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def related_body(
    envelope: bytes, attachments: Iterable[tuple[str, str, bytes]], *, boundary: str | None = None
) -> tuple[str, bytes]:
    """A ``multipart/related`` body: the envelope first, then (content_id, media_type, data)."""
    boundary = boundary or "rogatory-" + secrets.token_hex(12)

    def part(content_id: str, media_type: str, data: bytes) -> bytes:
        head = f"--{boundary}\r\nContent-Type: {media_type}\r\nContent-ID: <{content_id}>\r\n\r\n"
        return head.encode() + data + b"\r\n"

    pieces = [part("envelope", "application/xml", envelope)]
    pieces += [part(cid, media_type, data) for cid, media_type, data in attachments]
    body = b"".join(pieces) + f"--{boundary}--\r\n".encode()
    content_type = (
        f'multipart/related; type="application/xml"; start="<envelope>"; boundary="{boundary}"'
    )
    return content_type, body


class GatewayClient:
    """One keep-alive HTTPS connection to a gateway."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ca_file: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
        timeout: float = 60,
    ) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port
        self.token = token
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if client_cert is not None:
                context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
            self._connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, context=context, timeout=timeout
            )
        else:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        self._connection.request(method, path, body=body, headers=all_headers)
        response = self._connection.getresponse()
        data = response.read()
        return Reply(
            response.status,
            response.getheader("Content-Type", ""),
            data,
            {k.lower(): v for k, v in response.getheaders()},
        )

    def submit(
        self,
        envelope: bytes,
        attachments: Iterable[tuple[str, str, bytes]] = (),
        *,
        channel: str | None = None,
    ) -> Reply:
        """Post a signed envelope; ``channel`` asks for a channel kind instead of the route."""
        path = "/api/v1/messages" + (f"?channel={quote(channel)}" if channel else "")
        items = list(attachments)
        if not items:
            return self.request("POST", path, envelope, {"Content-Type": "application/xml"})
        content_type, body = related_body(envelope, items)
        return self.request("POST", path, body, {"Content-Type": content_type})

    def message(self, message_id: str) -> Reply:
        return self.request("GET", f"/api/v1/messages/{message_id}")

    def inbox(self) -> Reply:
        return self.request("GET", "/api/v1/inbox")

    def collect(self, message_id: str) -> Reply:
        return self.request("POST", f"/api/v1/messages/{message_id}/retrieval")

    def close(self) -> None:
        self._connection.close()
