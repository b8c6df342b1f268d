"""The HTTP API: authentication, then a service call, then the answer rendered.

No business rule lives here. Every caller is an authority, authenticated by a
bearer token or a TLS client certificate; an authority sees only messages it
sent or received (others answer 404, so that ids do not leak).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from cryptography import x509
from flask import Blueprint, Response, current_app, g, request, stream_with_context
from werkzeug.exceptions import HTTPException

from .audit import AuditError
from .authorities import Authority
from .channels import PeerGateway
from .intake_checks import RETRY_AFTER_SECONDS
from .intake_records import Origin
from .model import EvidenceType, IllegalTransition, Status
from .notice_trail import notices_of
from .post_refusals import PostRefused
from .services import Services
from .store import NotRecipient, StoreError

api = Blueprint("api", __name__, url_prefix="/api/v1")

CLIENT_CERT_ENVIRON = "rogatory.client_cert_der"
CHUNK = 64 * 1024


def services() -> Services:
    found: Services = current_app.extensions["rogatory"]
    return found


def problem(
    status: int, title: str, detail: str, *, code: str | None = None, **extra: Any
) -> Response:
    """An RFC 9457 problem details answer; ``code`` names it as the intake's problems are named."""
    kind = f"urn:rogatory:problem:{code}" if code else "about:blank"
    body = {"type": kind, "title": title, "status": status, "detail": detail, **extra}
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


@api.app_errorhandler(HTTPException)
def http_problem(error: HTTPException) -> Response:
    """Flask's own refusals (404, 405, 413 ...) as problem+json, like every other answer."""
    status = error.code or 500
    return problem(status, error.name, error.description or error.name, code=f"http-{status}")


def _client_certificate() -> x509.Certificate | None:
    der = request.environ.get(CLIENT_CERT_ENVIRON)
    sock = request.environ.get("gunicorn.socket")
    if der is None and sock is not None and hasattr(sock, "getpeercert"):
        der = sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def _authenticate() -> Authority | PeerGateway | None:
    directory = services().directory
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return directory.authenticate_token(header.removeprefix("Bearer ").strip())
    cert = _client_certificate()
    if cert is None:
        return None
    return directory.authenticate_client_certificate(cert) or directory.authenticate_peer(cert)


# What a peer gateway may call: its intake, the evidences it sends back, its notices.
PEER_ENDPOINTS = frozenset({"api.submit", "api.peer_evidence", "api.peer_notice"})


@api.before_request
def require_authority() -> Response | None:
    authority = _authenticate()
    if isinstance(authority, PeerGateway):
        if request.endpoint not in PEER_ENDPOINTS:
            return problem(
                403,
                "Forbidden",
                f"gateway {authority.id} may only post messages, evidences and notices",
            )
        g.peer, g.authority = authority, None
        return None
    g.peer = None
    if authority is None:
        answer = problem(
            401, "Unauthorized", "give a valid bearer token or a TLS client certificate"
        )
        answer.headers["WWW-Authenticate"] = 'Bearer realm="rogatory"'
        return answer
    g.authority = authority
    return None


def _visible(message_id: str) -> bool:
    authority: Authority = g.authority
    return services().store.visible_to(message_id, authority.id)


def _not_found(message_id: str) -> Response:
    return problem(404, "Not Found", f"no message {message_id} for this authority")


@api.post("/messages")
def submit() -> Response:
    s = services()
    body = iter(lambda: request.stream.read(CHUNK), b"")
    content_type, length = request.content_type or "", request.content_length
    peer: PeerGateway | None = g.peer
    if peer is not None:
        origin = Origin(principal=f"gateway:{peer.id}", kind="gateway", gateway=peer.id)
        answer = s.intake.receive(origin, content_type, body, length)
    else:
        channel = request.args.get("channel") or None
        answer = s.intake.submit(g.authority, content_type, body, length, channel=channel)
    s.maybe_checkpoint()
    response = Response(answer.body, status=answer.status, content_type=answer.content_type)
    response.headers.update(answer.headers)
    return response


def _message_json(message_id: str) -> dict[str, Any]:
    store = services().store
    message = store.message(message_id)
    assert message is not None
    return {
        "message_id": message.message_id,
        "direction": message.direction.value,
        "sender": message.sender_id,
        "recipient": message.recipient_id,
        "conversation_id": message.conversation_id,
        "kind": message.kind,
        "request_type": message.request_type,
        "status": message.status.value,
        "envelope_sha256": message.envelope_sha256,
        "created_at": message.created_at.isoformat(),
        "history": [
            {
                "status": change.status.value,
                "at": change.at.isoformat(),
                "reason": change.reason,
                "audit_index": change.audit_index,
            }
            for change in store.history(message_id)
        ],
        "attachments": [
            {
                "content_id": a.content_id,
                "file_name": a.file_name,
                "media_type": a.media_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in store.attachments(message_id)
        ],
        "evidences": [
            {
                "evidence_id": e.evidence_id,
                "type": e.type.value,
                "issued_at": e.issued_at.isoformat(),
                "sha256": e.sha256,
            }
            for e in store.evidences(message_id)
        ],
        "notices": [
            {
                "notice_id": n.notice_id,
                "direction": n.direction,
                "state": n.state,
                "at": n.at,
                "sha256": n.sha256,
                "reply_id": n.reply_id,
                "reply_channel": n.reply_channel,
                "reason": n.reason,
            }
            for n in notices_of(store.audit, message_id)
        ],
    }


@api.get("/messages/<message_id>")
def message_status(message_id: str) -> Response:
    if not _visible(message_id):
        return _not_found(message_id)
    return Response(json.dumps(_message_json(message_id)), mimetype="application/json")


@api.get("/messages/<message_id>/evidences/<evidence_id>")
def evidence(message_id: str, evidence_id: str) -> Response:
    if not _visible(message_id):
        return _not_found(message_id)
    s = services()
    for record in s.store.evidences(message_id):
        if record.evidence_id == evidence_id:
            return Response(s.blobs.read(record.sha256), mimetype="application/xml")
    return problem(404, "Not Found", f"no evidence {evidence_id} for message {message_id}")


def _stream_blob(sha256: str, media_type: str) -> Response:
    blobs = services().blobs
    chunks: Iterator[bytes] = blobs.open_chunks(sha256)
    response = Response(stream_with_context(chunks), mimetype=media_type)
    response.headers["Content-Length"] = str(blobs.size(sha256))
    # RFC 9530: the digest of the bytes as stored, base64 between colons.
    response.headers["Repr-Digest"] = (
        f"sha-256=:{base64.b64encode(bytes.fromhex(sha256)).decode()}:"
    )
    return response


@api.get("/messages/<message_id>/envelope")
def original_envelope(message_id: str) -> Response:
    if not _visible(message_id):
        return _not_found(message_id)
    message = services().store.message(message_id)
    assert message is not None
    return _stream_blob(message.envelope_sha256, "application/xml")


@api.get("/messages/<message_id>/attachments/<path:content_id>")
def attachment(message_id: str, content_id: str) -> Response:
    if not _visible(message_id):
        return _not_found(message_id)
    for record in services().store.attachments(message_id):
        if record.content_id == content_id:
            return _stream_blob(record.sha256, record.media_type)
    return problem(404, "Not Found", f"no attachment {content_id} in message {message_id}")


@api.get("/messages/<message_id>/record")
def written_record(message_id: str) -> Response:
    """The signed PDF record of the message, with its originals embedded."""
    if not _visible(message_id):
        return _not_found(message_id)
    response = Response(services().written_record(message_id), mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="record-{message_id}.pdf"'
    return response


@api.get("/inbox")
def inbox() -> Response:
    authority: Authority = g.authority
    after = request.args.get("after")
    try:
        limit = int(request.args.get("limit", "100"))
        messages = services().store.inbox(authority.id, limit=limit, after=after)
    except (ValueError, StoreError) as exc:
        return problem(400, "Bad Request", str(exc), code="bad-query")
    listed = [
        {
            "message_id": m.message_id,
            "sender": m.sender_id,
            "kind": m.kind,
            "request_type": m.request_type,
            "status": m.status.value,
            "created_at": m.created_at.isoformat(),
        }
        for m in messages
    ]
    page: dict[str, Any] = {"messages": listed}
    if len(listed) == limit:  # there may be more: the next page starts after the last one
        page["next"] = f"/api/v1/inbox?limit={limit}&after={listed[-1]['message_id']}"
    return Response(json.dumps(page), mimetype="application/json")


@api.post("/messages/<message_id>/retrieval")
def retrieve(message_id: str) -> Response:
    """The recipient collects the message: a Retrieval evidence, status retrieved."""
    if not _visible(message_id):
        return _not_found(message_id)
    s = services()
    try:
        evidence_xml = s.collect(message_id, g.authority)
    except NotRecipient as exc:
        return problem(403, "Forbidden", str(exc))
    except IllegalTransition as exc:
        return problem(409, "Conflict", f"the message cannot be collected now: {exc}")
    s.maybe_checkpoint()
    return Response(evidence_xml, status=200, mimetype="application/xml")


@api.post("/messages/<message_id>/evidences")
def peer_evidence(message_id: str) -> Response:
    """A peer gateway's signed evidence about a message we sent it (its Retrieval)."""
    from .peer_evidence import MAX_EVIDENCE_BYTES, PeerEvidenceRefused, accept_from_peer

    peer: PeerGateway | None = g.peer
    if peer is None:
        return problem(403, "Forbidden", "only a peer gateway posts evidences")
    data = request.stream.read(MAX_EVIDENCE_BYTES + 1)
    s = services()
    try:
        found, new = accept_from_peer(s.store, s.engine, peer, message_id, data)
    except PeerEvidenceRefused as exc:
        s.maybe_checkpoint()
        return _refused("Evidence refused", exc)
    s.maybe_checkpoint()
    body = {"evidence_id": found.evidence.evidence_id, "type": found.evidence.type.value}
    return Response(json.dumps(body), status=201 if new else 200, mimetype="application/json")


def _refused(title: str, refusal: PostRefused) -> Response:
    """A peer's refused post as problem+json; a 503 (a signature that cannot be checked
    now) says when to post again, as intake does."""
    answer = problem(refusal.status, title, str(refusal), code=refusal.code)
    if refusal.try_later:
        answer.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return answer


@api.post("/messages/<message_id>/notices")
def peer_notice(message_id: str) -> Response:
    """A peer gateway's signed notice that its reply to our message went by another channel."""
    from .peer_notice import MAX_NOTICE_BYTES, NoticeRefused, accept_notice

    peer: PeerGateway | None = g.peer
    if peer is None:
        return problem(403, "Forbidden", "only a peer gateway posts notices")
    data = request.stream.read(MAX_NOTICE_BYTES + 1)
    s = services()
    try:
        taken = accept_notice(s.store, s.engine, s.directory, peer, message_id, data)
    except NoticeRefused as exc:
        s.maybe_checkpoint()
        return _refused("Notice refused", exc)
    s.maybe_checkpoint()
    body = {"notice_id": taken.notice.notice_id, "message_id": message_id}
    return Response(json.dumps(body), status=201 if taken.new else 200, mimetype="application/json")


@api.post("/verify")
def verify() -> Response:
    """Verify a posted document (XML or PDF) as ``rogatory verify`` would."""
    from .verification import verify_document

    limit = services().settings.max_envelope_bytes * 8
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        return problem(413, "Content Too Large", f"documents to verify are at most {limit} bytes")
    report = verify_document(data, services().engine, path="request-body")
    return Response(json.dumps({"documents": [report.to_json()]}), mimetype="application/json")


@api.get("/audit/checkpoint")
def latest_checkpoint() -> Response:
    latest = services().audit.latest_checkpoint()
    if latest is None:
        return problem(404, "Not Found", "no checkpoint has been signed yet")
    return Response(latest.to_note(), mimetype="text/plain")


@api.get("/audit/entries/<int:index>/proof")
def inclusion(index: int) -> Response:
    audit = services().audit
    size = request.args.get("size", type=int)
    try:
        proof = audit.inclusion_proof(index, size)
    except (ValueError, LookupError, AuditError) as exc:
        return problem(400, "Bad Request", str(exc), code="bad-query")
    return Response(json.dumps(proof.to_json()), mimetype="application/json")


@api.get("/audit/consistency")
def consistency() -> Response:
    audit = services().audit
    old = request.args.get("old", type=int)
    new = request.args.get("new", type=int)
    if old is None:
        return problem(400, "Bad Request", "give ?old=SIZE (and optionally &new=SIZE)")
    try:
        proof = audit.consistency_proof(old, new)
    except (ValueError, LookupError, AuditError) as exc:
        return problem(400, "Bad Request", str(exc), code="bad-query")
    return Response(json.dumps(proof.to_json()), mimetype="application/json")


__all__ = ["CLIENT_CERT_ENVIRON", "EvidenceType", "Status", "api", "problem"]
