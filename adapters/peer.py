"""The peer-gateway channel: HTTPS with mutual TLS to another gateway's intake.

A message goes as the ``multipart/related`` body the peer's
``POST /api/v1/messages`` takes (the signed envelope first, then each
attachment by Content-ID), streamed with an exact Content-Length. The peer
answers ``202`` with its signed Delivery evidence (returned in the
``Receipt`` for the dispatcher to verify: this module trusts nothing it
reads), or a problem+json refusal carrying a signed rejection.

Our evidences about a message the peer sent us (the Retrieval once our
authority collects it) go back by ``POST /api/v1/messages/{id}/evidences``;
a notice that our reply to such a message went by another channel goes by
``POST /api/v1/messages/{id}/notices`` (gateway.notice).

The peer's server certificate must chain to its ``tls_ca`` and match its
host name; when the directory pins certificates, it must be one of them.
A repeated send of the same message id is answered by the peer with its
first evidence, so a resend after a crash never delivers twice.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

from adapters.base import Outgoing, OutgoingNotice, PermanentError, Receipt, TransientError
from gateway.channels import PeerGateway

CHUNK = 256 * 1024
# Answers worth trying again: the peer is busy, restarting or cannot check revocation now.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class PeerAdapter:
    """Sends to one peer gateway; a keep-alive connection per thread (safe to share)."""

    def __init__(
        self,
        peer: PeerGateway,
        *,
        client_cert: Path,
        client_key: Path,
        timeout: float = 60,
    ) -> None:
        self.peer = peer
        parts = urlsplit(peer.url)
        if parts.scheme != "https" or not parts.hostname:
            raise PermanentError(f"gateway {peer.id}: url {peer.url!r} is not an https URL")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        context = ssl.create_default_context(
            cafile=str(peer.tls_ca) if peer.tls_ca is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(client_cert), str(client_key))
        self._context = context
        self._local = threading.local()
        self._open: set[http.client.HTTPSConnection] = set()
        self._lock = threading.Lock()

    # --- the interface ---

    def send(self, outgoing: Outgoing) -> Receipt:
        boundary = "rogatory-" + secrets.token_hex(16)
        heads, tail = _framing(outgoing, boundary)
        length = sum(len(h) for h in heads) + len(tail)
        length += len(outgoing.envelope) + sum(p.size + 2 for p in outgoing.attachments) + 2
        content_type = (
            f'multipart/related; type="application/xml"; start="<envelope>"; boundary="{boundary}"'
        )
        body = _body(outgoing, heads, tail)
        status, media_type, data, location = self._post(
            "/api/v1/messages", body, content_type, length
        )
        where = f"{self.peer.url}{location or '/api/v1/messages'}"
        if status == 202:
            return Receipt(reference=where, evidences=(data,))
        raise self._refusal(status, media_type, data, f"message {outgoing.message_id}")

    def send_evidence(self, message_id: str, evidence: bytes) -> Receipt:
        """One of our signed evidences about a message the peer sent us."""
        path = f"/api/v1/messages/{quote(message_id, safe='')}/evidences"
        status, media_type, data, _ = self._post(
            path, iter((evidence,)), "application/xml", len(evidence)
        )
        if status in (200, 201):
            return Receipt(reference=f"{self.peer.url}{path}")
        raise self._refusal(status, media_type, data, f"an evidence about {message_id}")

    def send_notice(self, notice: OutgoingNotice) -> Receipt:
        """Our signed notice that a reply to a message the peer sent went by another channel."""
        path = f"/api/v1/messages/{quote(notice.in_reply_to, safe='')}/notices"
        status, media_type, data, _ = self._post(
            path, iter((notice.document,)), "application/xml", len(notice.document)
        )
        if status in (200, 201):  # 200: the peer had it already, from an earlier attempt
            return Receipt(reference=f"{self.peer.url}{path}")
        raise self._refusal(status, media_type, data, f"notice {notice.notice_id}")

    def close(self) -> None:
        """Close every kept-alive connection, whichever thread opened it."""
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()

    # --- HTTP ---

    def _post(
        self, path: str, body: Iterator[bytes], content_type: str, length: int
    ) -> tuple[int, str, bytes, str | None]:
        connection = self._connection()
        keep = False
        try:
            headers = {"Content-Type": content_type, "Content-Length": str(length)}
            try:
                connection.request("POST", self.base_path + path, body=body, headers=headers)
            except (ConnectionError, http.client.HTTPException):
                # A kept-alive connection the peer closed meanwhile: once more on a new one.
                if not getattr(self._local, "reused", False):
                    raise
                connection.close()
                with self._lock:
                    self._open.discard(connection)
                connection = self._connection(fresh=True)
                connection.request("POST", self.base_path + path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read(16 * 1024 * 1024 + 1)
            if len(data) > 16 * 1024 * 1024:
                raise TransientError(f"gateway {self.peer.id}: answer larger than 16 MiB")
            keep = not response.will_close
            return (
                response.status,
                response.getheader("Content-Type", "") or "",
                data,
                response.getheader("Location"),
            )
        except (http.client.HTTPException, OSError) as exc:  # refused, reset, timed out, TLS
            raise TransientError(
                f"gateway {self.peer.id} at {self.host}:{self.port} could not be reached: "
                f"{exc.__class__.__name__}: {exc}"
            ) from None
        finally:
            if not keep:
                connection.close()
                self._local.connection = None
                with self._lock:
                    self._open.discard(connection)

    def _connection(self, *, fresh: bool = False) -> http.client.HTTPSConnection:
        """This thread's connection, opened (and its certificate checked) if need be."""
        connection: http.client.HTTPSConnection | None = getattr(self._local, "connection", None)
        if connection is not None and not fresh:
            self._local.reused = True
            return connection
        self._local.reused = False
        connection = http.client.HTTPSConnection(
            self.host, self.port, context=self._context, timeout=self.timeout
        )
        try:
            connection.connect()
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"gateway {self.peer.id} at {self.host}:{self.port}: its TLS certificate "
                f"is not trusted: {exc.verify_message or exc}"
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            raise TransientError(
                f"gateway {self.peer.id} at {self.host}:{self.port} could not be reached: "
                f"{exc.__class__.__name__}: {exc}"
            ) from None
        self._check_pin(connection)
        self._local.connection = connection
        with self._lock:
            self._open.add(connection)
        return connection

    def _check_pin(self, connection: http.client.HTTPSConnection) -> None:
        if not self.peer.tls_certificates:
            return
        sock = connection.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        found = "sha256:" + hashlib.sha256(der or b"").hexdigest()
        if found not in self.peer.tls_certificates:
            raise PermanentError(
                f"gateway {self.peer.id} at {self.host}:{self.port} presented TLS certificate "
                f"{found}, which is not among the pinned ones"
            )

    def _refusal(self, status: int, media_type: str, data: bytes, what: str) -> Exception:
        detail = _problem_detail(media_type, data)
        text = f"gateway {self.peer.id} answered {status} to {what}: {detail}"
        if status in _TRANSIENT_STATUS:
            return TransientError(text)
        return PermanentError(text)


def _framing(outgoing: Outgoing, boundary: str) -> tuple[list[bytes], bytes]:
    def head(content_id: str, media_type: str) -> bytes:
        return (
            f"--{boundary}\r\nContent-Type: {media_type}\r\nContent-ID: <{content_id}>\r\n\r\n"
        ).encode()

    heads = [head("envelope", "application/xml")]
    heads += [head(p.content_id, p.media_type) for p in outgoing.attachments]
    return heads, f"--{boundary}--\r\n".encode()


def _body(outgoing: Outgoing, heads: list[bytes], tail: bytes) -> Iterator[bytes]:
    yield heads[0] + outgoing.envelope + b"\r\n"
    for head, part in zip(heads[1:], outgoing.attachments, strict=True):
        yield head
        with part.open() as stream:
            sent = 0
            while chunk := stream.read(CHUNK):
                sent += len(chunk)
                yield chunk
        if sent != part.size:
            raise PermanentError(
                f"attachment <{part.content_id}> has {sent} bytes in the store, not {part.size}"
            )
        yield b"\r\n"
    yield tail


def _problem_detail(media_type: str, data: bytes) -> str:
    if media_type.startswith("application/problem+json"):
        try:
            problem = json.loads(data)
            return f"{problem.get('title', '')}: {problem.get('detail', '')}"[:1000]
        except ValueError:
            pass
    return data[:300].decode("utf-8", "replace") or "(no body)"
