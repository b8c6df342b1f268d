"""Intake at service level: real store (SQLite and PostgreSQL), the dev PKI, every bad input."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from gateway import intake as intake_module
from gateway.audit import AuditLog
from gateway.authorities import Authority, AuthorityDirectory, fingerprint
from gateway.blobs import blob_store_for
from gateway.db import Database
from gateway.evidence import Evidence, GatewayRef, read_evidence
from gateway.intake import Answer, IntakeService
from gateway.model import EvidenceType, Status
from gateway.pki import DevPKI
from gateway.settings import Settings
from gateway.store import MessageStore
from gateway.verification import verify_envelope_for_intake
from schemas import ENVELOPE_NS
from signing.keys import Signer
from signing.trust import TrustEngine
from signing.xades_sign import sign_xml
from signing.xmldsig import DS
from tests import pdf_attacks
from tests.conftest import signer_for

NS = {"e": ENVELOPE_NS, "ds": DS}
BOUNDARY = "rogatory-test-boundary"
GATEWAY = GatewayRef("gw-es", "Rogatory test gateway", "ES")
LIMITS = {
    "max_envelope_bytes": 64 * 1024,
    "max_attachment_bytes": 32 * 1024,
    "max_attachments": 4,
    "max_body_bytes": 256 * 1024,
}


# ---- fixtures ---------------------------------------------------------------


def authority(pki: DevPKI, authority_id: str, country: str) -> Authority:
    return Authority(
        authority_id, country, f"Authority {authority_id}",
        signing_certificates=frozenset({fingerprint(pki.cert(authority_id))}),
    )  # fmt: skip


@pytest.fixture(scope="session")
def directory(pki: DevPKI) -> AuthorityDirectory:
    # AR-MJ is local (delivered at once); CO-FGN is not in the directory (left accepted).
    return AuthorityDirectory(
        [
            authority(pki, "ES-MJ", "ES"),
            authority(pki, "AR-MJ", "AR"),
            authority(pki, "PT-PGR", "PT"),
        ]
    )


@pytest.fixture(scope="session")
def gateway_signer(pki: DevPKI) -> Signer:
    return signer_for(pki, "MX-FGR")  # any certificate of the dev PKI serves as the gateway's


@pytest.fixture()
def store(db: Database, tmp_path: Path) -> MessageStore:
    blobs = blob_store_for(db, tmp_path / "data")
    return MessageStore(db, blobs, AuditLog(db, origin="test.rogatory/intake"), gateway_id="gw-es")


def make_service(
    store: MessageStore,
    engine: TrustEngine,
    directory: AuthorityDirectory,
    gateway_signer: Signer,
    tmp_path: Path,
    **kwargs: Any,
) -> IntakeService:
    settings = Settings(mode="development", data_dir=tmp_path / "data", **LIMITS)
    return IntakeService(
        store, store.blobs, engine, directory, gateway_signer, settings, issuer=GATEWAY, **kwargs
    )


@pytest.fixture()
def service(
    store: MessageStore,
    engine: TrustEngine,
    directory: AuthorityDirectory,
    gateway_signer: Signer,
    tmp_path: Path,
) -> IntakeService:
    return make_service(store, engine, directory, gateway_signer, tmp_path)


@pytest.fixture()
def es(directory: AuthorityDirectory) -> Authority:
    found = directory.get("ES-MJ")
    assert found is not None
    return found


# ---- building requests ------------------------------------------------------


def make_envelope(
    base: bytes,
    signer: Signer | None,
    *,
    message_id: str | None = None,
    sender: str | None = None,
    recipient: str = "CO-FGN",
    attachments: Sequence[tuple[str, str, bytes]] = (),
    edit: Callable[[Any], object] | None = None,
) -> bytes:
    """The example request with a fresh id, these attachments (cid, media type, bytes), signed."""
    root = etree.fromstring(base)
    root.find("e:Header/e:MessageId", NS).text = message_id or str(uuid.uuid4())
    root.find("e:Header/e:Recipient/e:AuthorityId", NS).text = recipient
    if sender is not None:
        root.find("e:Header/e:Sender/e:AuthorityId", NS).text = sender
    manifest = root.find("e:Attachments", NS)
    root.remove(manifest)
    if attachments:
        manifest = etree.SubElement(root, f"{{{ENVELOPE_NS}}}Attachments")
        for n, (cid, media_type, data) in enumerate(attachments, 1):
            entry = etree.SubElement(
                manifest, f"{{{ENVELOPE_NS}}}Attachment", Id=f"att-{n}", ContentId=cid
            )
            for tag, text in (
                ("FileName", f"annex-{n}{'.pdf' if media_type == 'application/pdf' else '.txt'}"),
                ("MediaType", media_type),
                ("Size", str(len(data))),
            ):
                etree.SubElement(entry, f"{{{ENVELOPE_NS}}}{tag}").text = text
            digest = etree.SubElement(
                entry,
                f"{{{ENVELOPE_NS}}}Digest",
                Algorithm="http://www.w3.org/2001/04/xmlenc#sha256",
            )
            digest.text = hashlib.sha256(data).hexdigest()
    if edit is not None:
        edit(root)
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return data if signer is None else sign_xml(data, signer)


def multipart(
    envelope: bytes,
    parts: Sequence[tuple[str, bytes]],
    *,
    envelope_cid: str = "envelope@es-mj",
    close: bool = True,
    start: bool = False,
    envelope_last: bool = False,
) -> tuple[str, bytes]:
    def one(cid: str, media_type: str, data: bytes) -> bytes:
        head = f"--{BOUNDARY}\r\nContent-Type: {media_type}\r\nContent-ID: <{cid}>\r\n\r\n"
        return head.encode() + data + b"\r\n"

    pieces = [one(cid, "application/octet-stream", data) for cid, data in parts]
    root = one(envelope_cid, "application/xml", envelope)
    pieces = [*pieces, root] if envelope_last else [root, *pieces]
    body = b"".join(pieces) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")
    content_type = f'multipart/related; type="application/xml"; boundary="{BOUNDARY}"'
    if start:
        content_type += f'; start="<{envelope_cid}>"'
    return content_type, body


def post_xml(service: IntakeService, who: Authority, data: bytes) -> Answer:
    return service.submit(who, "application/xml", iter([data]), len(data))


def post_multipart(
    service: IntakeService, who: Authority, content_type: str, body: bytes, chunk: int = 1000
) -> Answer:
    chunks = (body[i : i + chunk] for i in range(0, len(body), chunk))
    return service.submit(who, content_type, chunks, len(body))


def message_id_of(envelope: bytes) -> str:
    root = etree.fromstring(envelope)
    return str(root.findtext("e:Header/e:MessageId", namespaces=NS))


def accepted(answer: Answer, engine: TrustEngine) -> Evidence:
    assert answer.status == 202, answer.body.decode()
    assert answer.content_type == "application/xml"
    evidence = read_evidence(answer.body, engine, expect_issuer="gw-es").evidence
    assert evidence.type is EvidenceType.SUBMISSION_ACCEPTANCE
    assert answer.headers["Location"] == f"/api/v1/messages/{evidence.message.message_id}"
    return evidence


def refused(
    answer: Answer, status: int, code: str, engine: TrustEngine
) -> tuple[dict[str, Any], Evidence]:
    """The problem+json body and its verified SubmissionRejection, which names ``code``."""
    assert answer.content_type == "application/problem+json"
    problem = json.loads(answer.body)
    assert answer.status == status == problem["status"], problem
    assert problem["type"] == f"urn:rogatory:problem:{code}"
    assert {"title", "detail", "errors", "evidence"} <= set(problem)
    assert code in [e["code"] for e in problem["errors"]]
    evidence = read_evidence(problem["evidence"].encode(), engine, expect_issuer="gw-es").evidence
    assert evidence.type is EvidenceType.SUBMISSION_REJECTION
    assert code in [r.code for r in evidence.reasons]
    return problem, evidence


def audit_kinds(store: MessageStore) -> list[str]:
    return [store.audit.entry(i).kind for i in range(store.audit.size())]


TEXT_A = b"Auto del Juzgado Central de Instruccion n. 4.\n" * 20
TEXT_B = b"Cuestionario para la testigo.\n" * 10


# ---- accepted ---------------------------------------------------------------


def test_envelope_alone_is_accepted_recorded_and_answered_with_a_signed_evidence(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(envelope, es_signer)
    evidence = accepted(post_xml(service, es, data), engine)
    message_id = message_id_of(data)
    assert evidence.message.message_id == message_id
    assert evidence.message.sha256_hex == hashlib.sha256(data).hexdigest()
    message = store.message(message_id)
    # CO-FGN is in no directory here: accepted, then failed visibly for want of a route.
    assert message is not None and message.status is Status.FAILED
    history = store.history(message_id)
    assert [c.status for c in history] == [Status.RECEIVED, Status.ACCEPTED, Status.FAILED]
    assert history[-1].reason == (
        "no route: the recipient CO-FGN is not in the authority directory"
    )
    assert store.blobs.read(message.envelope_sha256) == data
    [stored] = store.evidences(message_id)
    assert stored.type is EvidenceType.SUBMISSION_ACCEPTANCE
    assert "message.accepted" in audit_kinds(store)


def test_binary_input_and_unknown_length_are_read_alike(
    service: IntakeService, es: Authority, envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    data = make_envelope(envelope, es_signer)
    accepted(
        service.submit(es, "application/xml; charset=utf-8", io.BytesIO(data), len(data)), engine
    )
    other = make_envelope(envelope, es_signer)
    accepted(service.submit(es, "text/xml", io.BytesIO(other), None), engine)


def test_local_recipient_is_delivered_with_a_delivery_evidence(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(envelope, es_signer, recipient="AR-MJ")
    accepted(post_xml(service, es, data), engine)
    message_id = message_id_of(data)
    assert [c.status for c in store.history(message_id)] == [
        Status.RECEIVED, Status.ACCEPTED, Status.QUEUED, Status.SENDING, Status.DELIVERED,
    ]  # fmt: skip
    kinds = [e.type for e in store.evidences(message_id)]
    assert kinds == [EvidenceType.SUBMISSION_ACCEPTANCE, EvidenceType.DELIVERY]
    delivery = next(e for e in store.evidences(message_id) if e.type is EvidenceType.DELIVERY)
    assert read_evidence(store.blobs.read(delivery.sha256), engine).evidence.message.message_id == (
        message_id
    )
    assert [m.message_id for m in store.inbox("AR-MJ")] == [message_id]


@pytest.mark.parametrize("layout", ["envelope-first", "start-parameter-last"])
def test_envelope_with_attachments_is_accepted(
    layout: str, service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(
        envelope,
        es_signer,
        attachments=[("a@es", "text/plain", TEXT_A), ("b@es", "text/plain", TEXT_B)],
    )
    last = layout != "envelope-first"
    content_type, body = multipart(
        data, [("a@es", TEXT_A), ("b@es", TEXT_B)], start=last, envelope_last=last
    )
    evidence = accepted(post_multipart(service, es, content_type, body, chunk=777), engine)
    assert [a.sha256_hex for a in evidence.message.attachments] == [
        hashlib.sha256(TEXT_A).hexdigest(), hashlib.sha256(TEXT_B).hexdigest(),
    ]  # fmt: skip
    stored = store.attachments(message_id_of(data))
    assert [(a.content_id, a.size) for a in stored] == [
        ("a@es", len(TEXT_A)),
        ("b@es", len(TEXT_B)),
    ]
    assert store.blobs.read(stored[0].sha256) == TEXT_A


def test_the_example_request_with_its_own_attachments_is_accepted(
    service: IntakeService, es: Authority, signed_envelope: bytes, engine: TrustEngine
) -> None:
    folder = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "attachments"
    parts = [
        ("auto-jci4@es-mj.rogatory.example", (folder / "auto-juzgado-central-4.txt").read_bytes()),
        ("cuestionario@es-mj.rogatory.example", (folder / "cuestionario-testigo.txt").read_bytes()),
    ]
    content_type, body = multipart(signed_envelope, parts)
    # AR-MJ is local in this directory: accepted, then delivered.
    accepted(post_multipart(service, es, content_type, body), engine)


@pytest.fixture(scope="module")
def signed_pdf(pki: DevPKI) -> bytes:
    return pdf_attacks.sign(pdf_attacks.base_pdf(pages=1), pdf_attacks.pdf_signer(pki))


def test_signed_pdf_attachment_is_verified_and_accepted(
    service: IntakeService, es: Authority, envelope: bytes, es_signer: Signer,
    engine: TrustEngine, signed_pdf: bytes,
) -> None:  # fmt: skip
    data = make_envelope(
        envelope, es_signer, attachments=[("pdf@es", "application/pdf", signed_pdf)]
    )
    content_type, body = multipart(data, [("pdf@es", signed_pdf)])
    accepted(post_multipart(service, es, content_type, body), engine)


def test_unsigned_or_unverifiable_pdf_attachment_is_refused(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    plain = pdf_attacks.base_pdf(pages=1)
    data = make_envelope(envelope, es_signer, attachments=[("pdf@es", "application/pdf", plain)])
    content_type, body = multipart(data, [("pdf@es", plain)])
    problem, _ = refused(
        post_multipart(service, es, content_type, body), 422, "pdf-signature", engine
    )
    assert problem["errors"][0]["path"] == "/Envelope/Attachments/Attachment[@Id='att-1']"
    message = store.message(message_id_of(data))
    assert message is not None and message.status is Status.REJECTED


def test_pdf_above_the_verification_limit_is_refused_with_the_limit(
    store: MessageStore, engine: TrustEngine, directory: AuthorityDirectory,
    gateway_signer: Signer, tmp_path: Path, es: Authority, envelope: bytes,
    es_signer: Signer, signed_pdf: bytes,
) -> None:  # fmt: skip
    small = make_service(
        store, engine, directory, gateway_signer, tmp_path, max_pdf_verify_bytes=1000
    )
    data = make_envelope(
        envelope, es_signer, attachments=[("pdf@es", "application/pdf", signed_pdf)]
    )
    content_type, body = multipart(data, [("pdf@es", signed_pdf)])
    problem, _ = refused(
        post_multipart(small, es, content_type, body), 422, "pdf-too-large-to-verify", engine
    )
    assert "verified up to 1000 bytes" in problem["detail"]


# ---- sizes and uploads ------------------------------------------------------


def test_body_larger_than_the_limit_by_content_length_is_refused_unread(
    service: IntakeService, store: MessageStore, es: Authority, engine: TrustEngine
) -> None:
    def never() -> Iterator[bytes]:
        raise AssertionError("the body must not be read")
        yield b""

    answer = service.submit(es, "multipart/related; boundary=x", never(), 10**9)
    _, evidence = refused(answer, 413, "body-too-large", engine)
    assert evidence.message.message_id is None
    assert "no-message-id" in [r.code for r in evidence.reasons]


def test_body_larger_than_the_limit_as_counted_is_refused(
    service: IntakeService, es: Authority, envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    data = make_envelope(envelope, es_signer, attachments=[("a@es", "text/plain", TEXT_A)])
    content_type, body = multipart(data, [("a@es", TEXT_A)])
    body += b"epilogue" * 40 * 1024  # every part within its limit, the whole body not
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
    refused(service.submit(es, content_type, chunks, None), 413, "body-too-large", engine)


def test_envelope_larger_than_its_limit_is_refused(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    padding = "x" * (70 * 1024)

    def pad(root: Any) -> None:
        root.find("e:Body/e:SummaryOfFacts", NS).text += padding

    data = make_envelope(envelope, es_signer, edit=pad)
    refused(post_xml(service, es, data), 413, "envelope-too-large", engine)
    refused(
        service.submit(es, "application/xml", iter([data]), None), 413, "envelope-too-large", engine
    )
    content_type, body = multipart(data, [])
    refused(post_multipart(service, es, content_type, body), 413, "envelope-too-large", engine)
    assert store.message(message_id_of(data)) is None


def test_attachment_larger_than_its_limit_is_refused_and_not_stored(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    big = b"z" * (33 * 1024)
    data = make_envelope(envelope, es_signer, attachments=[("big@es", "text/plain", big)])
    content_type, body = multipart(data, [("big@es", big)])
    problem, _ = refused(
        post_multipart(service, es, content_type, body), 413, "attachment-too-large", engine
    )
    assert "<big@es>" in problem["detail"]
    assert not store.blobs.exists(hashlib.sha256(big).hexdigest())
    message = store.message(message_id_of(data))
    assert message is not None and message.status is Status.REJECTED
    assert store.blobs.read(message.envelope_sha256) == data  # the refused bytes are kept


def test_too_many_attachments_are_refused(
    service: IntakeService, es: Authority, envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    parts = [(f"p{n}@es", b"%d" % n) for n in range(5)]
    data = make_envelope(envelope, es_signer, attachments=[(c, "text/plain", b) for c, b in parts])
    content_type, body = multipart(data, parts)
    refused(post_multipart(service, es, content_type, body), 413, "too-many-attachments", engine)


def test_dropped_upload_stores_nothing_half_and_the_message_can_be_posted_again(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(
        envelope,
        es_signer,
        attachments=[("a@es", "text/plain", TEXT_A), ("b@es", "text/plain", TEXT_B)],
    )
    content_type, body = multipart(data, [("a@es", TEXT_A), ("b@es", TEXT_B)])
    cut = body[: len(body) - 200]  # inside the second attachment: no closing boundary
    for length in (None, len(body)):
        answer = service.submit(es, content_type, iter([cut]), length)
        problem, _ = refused(answer, 400, "upload-cut-short", engine)
        assert "post it again" in problem["detail"]
    message_id = message_id_of(data)
    assert store.message(message_id) is None
    assert store.first_answer("ES-MJ", message_id) is None
    assert "message.accepted" not in audit_kinds(store)
    assert not store.blobs.exists(hashlib.sha256(TEXT_B).hexdigest())
    accepted(post_multipart(service, es, content_type, body), engine)


def test_envelope_alone_shorter_than_its_content_length_is_cut_short(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(envelope, es_signer)
    answer = service.submit(es, "application/xml", iter([data[:1000]]), len(data))
    refused(answer, 400, "upload-cut-short", engine)
    assert store.message(message_id_of(data)) is None
    accepted(post_xml(service, es, data), engine)


# ---- who posts and who signed -----------------------------------------------


def test_authority_posting_as_another_is_refused_and_costs_the_owner_nothing(
    service: IntakeService, store: MessageStore, directory: AuthorityDirectory, es: Authority,
    envelope: bytes, es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(envelope, es_signer)
    portugal = directory.get("PT-PGR")
    assert portugal is not None
    problem, _ = refused(post_xml(service, portugal, data), 403, "sender-not-authority", engine)
    assert problem["errors"][0]["path"] == "/Envelope/Header/Sender/AuthorityId"
    assert store.message(message_id_of(data)) is None
    accepted(post_xml(service, es, data), engine)


def test_signer_that_does_not_belong_to_the_authority_is_refused(
    service: IntakeService, store: MessageStore, pki: DevPKI, es: Authority, envelope: bytes,
    engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(envelope, signer_for(pki, "AR-MJ"))  # sender ES-MJ, signed by AR-MJ
    problem, _ = refused(post_xml(service, es, data), 403, "signer-not-of-authority", engine)
    assert "AR-MJ" in problem["detail"]
    assert store.message(message_id_of(data)) is None


# ---- attachments against the manifest --------------------------------------


@pytest.mark.parametrize(
    ("parts", "code", "path"),
    [
        ([("a@es", TEXT_A)], "attachment-missing", "/Envelope/Attachments/Attachment[@Id='att-2']"),
        ([("a@es", TEXT_A), ("b@es", TEXT_B.upper())], "attachment-digest",
         "/Envelope/Attachments/Attachment[@Id='att-2']/Digest"),
        ([("a@es", TEXT_A), ("b@es", TEXT_B + b"!")], "attachment-size",
         "/Envelope/Attachments/Attachment[@Id='att-2']/Size"),
        ([("a@es", TEXT_A), ("b@es", TEXT_B), ("c@es", b"extra")], "attachment-unlisted", None),
    ],
    ids=["missing", "different-digest", "different-size", "extra"],
)  # fmt: skip
def test_attachments_must_match_the_signed_manifest(
    parts: list[tuple[str, bytes]], code: str, path: str | None,
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(
        envelope,
        es_signer,
        attachments=[("a@es", "text/plain", TEXT_A), ("b@es", "text/plain", TEXT_B)],
    )
    content_type, body = multipart(data, parts)
    problem, _ = refused(post_multipart(service, es, content_type, body), 422, code, engine)
    assert problem["errors"][0].get("path") == path
    message = store.message(message_id_of(data))
    assert message is not None and message.status is Status.REJECTED
    assert "message.rejected" in audit_kinds(store)


def test_manifest_without_parts_posted_as_envelope_alone_is_refused(
    service: IntakeService, es: Authority, envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    data = make_envelope(envelope, es_signer, attachments=[("a@es", "text/plain", TEXT_A)])
    refused(post_xml(service, es, data), 422, "attachment-missing", engine)


# ---- replays ----------------------------------------------------------------


def test_replay_with_the_same_content_gets_the_first_answer_and_no_second_message(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(envelope, es_signer, attachments=[("a@es", "text/plain", TEXT_A)])
    content_type, body = multipart(data, [("a@es", TEXT_A)])
    first = post_multipart(service, es, content_type, body)
    accepted(first, engine)
    entries = store.audit.size()
    again = post_multipart(service, es, content_type, body, chunk=50)
    assert again == first
    assert store.audit.size() == entries
    assert len(store.history(message_id_of(data))) == 3  # received, accepted, failed (no route)
    assert len(store.evidences(message_id_of(data))) == 1


def test_replay_of_a_refused_message_gets_the_same_refusal(
    service: IntakeService, es: Authority, envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    data = make_envelope(envelope, es_signer, attachments=[("a@es", "text/plain", TEXT_A)])
    first = post_xml(service, es, data)
    refused(first, 422, "attachment-missing", engine)
    assert post_xml(service, es, data) == first
    # The submission id the answer names is the one the store keeps.
    stored = service.store.first_answer(es.id, message_id_of(data))
    assert stored is not None
    assert stored.submission_id == json.loads(first.body)["submission_id"]


def test_replay_with_different_content_is_a_conflict_and_audited(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    message_id = str(uuid.uuid4())
    accepted(
        post_xml(service, es, make_envelope(envelope, es_signer, message_id=message_id)), engine
    )
    other = make_envelope(envelope, es_signer, message_id=message_id, recipient="PT-PGR")
    problem, _ = refused(post_xml(service, es, other), 409, "message-id-reused", engine)
    assert "message id already used with different content" in problem["detail"]
    assert "submission.conflict" in audit_kinds(store)
    message = store.message(message_id)
    assert message is not None and message.recipient_id == "CO-FGN"


def test_another_authority_reusing_a_taken_message_id_gets_a_conflict(
    service: IntakeService, store: MessageStore, pki: DevPKI, directory: AuthorityDirectory,
    es: Authority, envelope: bytes, es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    message_id = str(uuid.uuid4())
    accepted(
        post_xml(service, es, make_envelope(envelope, es_signer, message_id=message_id)), engine
    )
    portugal = directory.get("PT-PGR")
    assert portugal is not None
    theirs = make_envelope(
        envelope, signer_for(pki, "PT-PGR"), message_id=message_id, sender="PT-PGR"
    )
    refused(post_xml(service, portugal, theirs), 409, "message-id-reused", engine)


# ---- malformed multipart ----------------------------------------------------


def _malformed_bodies(data: bytes) -> list[tuple[str, str, bytes]]:
    ok_type, ok_body = multipart(data, [("a@es", TEXT_A)])
    no_cid = ok_body.replace(b"Content-ID: <a@es>\r\n", b"")
    twice = ok_body.replace(b"Content-ID: <a@es>", b"Content-ID: <envelope@es-mj>")
    base64 = ok_body.replace(
        b"Content-ID: <a@es>", b"Content-ID: <a@es>\r\nContent-Transfer-Encoding: base64"
    )
    return [
        ("multipart/related", "no-boundary", ok_body),
        (ok_type, "garbage", b"\x00\x01garbage" * 3000),
        (ok_type, "no-content-id", no_cid),
        (ok_type, "duplicate-content-id", twice),
        (ok_type, "base64", base64),
        (ok_type.replace(BOUNDARY, "other-boundary"), "wrong-boundary", ok_body),
        (ok_type + '; start="<nowhere@x>"', "no-root", ok_body),
    ]


@pytest.mark.parametrize("case", range(7))
def test_malformed_multipart_is_refused_with_a_rejection_evidence(
    case: int, service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    data = make_envelope(envelope, es_signer, attachments=[("a@es", "text/plain", TEXT_A)])
    content_type, _, body = _malformed_bodies(data)[case]
    answer = service.submit(es, content_type, iter([body]), len(body))
    refused(answer, 400, "malformed-multipart", engine)
    assert "message.accepted" not in audit_kinds(store)


def test_unsupported_media_type_is_refused(
    service: IntakeService, es: Authority, engine: TrustEngine
) -> None:
    refused(
        service.submit(es, "application/json", iter([b"{}"]), 2),
        415,
        "unsupported-media-type",
        engine,
    )
    refused(service.submit(es, "", iter([b"{}"]), 2), 415, "unsupported-media-type", engine)


# ---- every envelope failure of the foundation issue ------------------------


def _tamper(signed: bytes) -> bytes:
    return signed.replace(b"<Language>es", b"<Language>pt", 1)


def _wrap(signed: bytes) -> bytes:
    root = etree.fromstring(signed)
    root.append(etree.fromstring(etree.tostring(root.find("ds:Signature", NS))))
    return etree.tostring(root)


def _untrusted(unsigned: bytes) -> bytes:
    from gateway.pki_issue import Profile, build_cert, name

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = build_cert(
        subject=name(cn="Ministerio de Justicia (ES-MJ)", o="Ministerio de Justicia", c="ES"),
        public_key=key.public_key(), issuer_cert=None, issuer_key=key,
        not_before=now - timedelta(hours=1), not_after=now + timedelta(days=30),
        profile=Profile(key_usage=frozenset({"digitalSignature"}), ca_path_length=0),
    )  # fmt: skip
    return sign_xml(unsigned, Signer(key, cert))


def _no_summary(root: Any) -> None:
    facts = root.find("e:Body/e:SummaryOfFacts", NS)
    facts.getparent().remove(facts)


def _bad_schema(root: Any) -> None:
    root.find("e:Header/e:RequestType", NS).text = "not-a-request-type"


HOSTILE = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Envelope xmlns="urn:rogatory:envelope:1"><Header><MessageId>&lol2;</MessageId></Header>
</Envelope>"""


@pytest.mark.parametrize(
    ("case", "status", "code", "words"),
    [
        ("tampered", 422, "signature-invalid", "HASH_FAILURE"),
        ("unsigned", 422, "malformed-envelope", "not signed"),
        ("untrusted-signer", 422, "signature-indeterminate", "NO_CERTIFICATE_CHAIN_FOUND"),
        ("wrapped-signature", 422, "malformed-envelope", "exactly one signature"),
        ("profile-rule", 422, "profile-rule", "SummaryOfFacts"),
        ("schema", 422, "schema", "not-a-request-type"),
        ("hostile-xml", 400, "malformed-xml", "DTD"),
        ("not-xml", 400, "malformed-xml", ""),
    ],
)
def test_every_envelope_failure_is_answered_with_a_rejection_naming_it(
    case: str, status: int, code: str, words: str,
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine,
) -> None:  # fmt: skip
    unsigned = make_envelope(envelope, None)
    data = {
        "tampered": lambda: _tamper(sign_xml(unsigned, es_signer)),
        "unsigned": lambda: unsigned,
        "untrusted-signer": lambda: _untrusted(unsigned),
        "wrapped-signature": lambda: _wrap(sign_xml(unsigned, es_signer)),
        "profile-rule": lambda: make_envelope(envelope, es_signer, edit=_no_summary),
        "schema": lambda: make_envelope(envelope, es_signer, edit=_bad_schema),
        "hostile-xml": lambda: HOSTILE,
        "not-xml": lambda: b"\x89PNG not an envelope",
    }[case]()
    answer = post_xml(service, es, data)
    problem, evidence = refused(answer, status, code, engine)
    reasons = " ".join(r.text for r in evidence.reasons)
    assert words in reasons and words in problem["detail"]
    if case == "profile-rule":
        assert problem["errors"][0]["path"].endswith("/SummaryOfFacts")
    if case in ("hostile-xml", "not-xml"):
        assert evidence.message.message_id is None
        assert problem["submission_id"] in reasons  # the fresh submission id, said so
    else:
        message_id = message_id_of(data)
        assert evidence.message.message_id == message_id
        assert store.message(message_id) is None  # no message for an unverified envelope
        assert post_xml(service, es, data) == answer  # the same message id, the same answer
    assert "message.accepted" not in audit_kinds(store)


# ---- failures inside libraries ---------------------------------------------


def test_a_library_failure_is_a_500_with_a_reason_and_costs_no_other_message(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    data = make_envelope(envelope, es_signer)
    with monkeypatch.context() as patch:
        patch.setattr(intake_module, "verify_envelope_for_intake", explode)
        problem, _ = refused(post_xml(service, es, data), 500, "internal-error", engine)
    assert "post it again" in problem["detail"]
    assert store.message(message_id_of(data)) is None
    accepted(post_xml(service, es, data), engine)  # not held against the message id


def test_revocation_source_down_is_a_503_not_held_against_the_message_id(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, engine: TrustEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from signing.verdict import DocumentReport, SubIndication, Verdict

    real = verify_envelope_for_intake

    def unreachable(data: bytes, engine: TrustEngine | None, **kwargs: Any) -> Any:
        verified = real(data, engine, **kwargs)
        down = Verdict.indeterminate(SubIndication.TRY_LATER, "the OCSP responder did not answer")
        report = DocumentReport.from_signatures("envelope", "xml", [], document_failure=down)
        return type(verified)(report, None, None, verified.signing_cert)

    data = make_envelope(envelope, es_signer)
    with monkeypatch.context() as patch:
        patch.setattr(intake_module, "verify_envelope_for_intake", unreachable)
        later = post_xml(service, es, data)
        refused(later, 503, "revocation-unavailable", engine)
        assert later.headers["Retry-After"] == "60"
    accepted(post_xml(service, es, data), engine)


# ---- the verification the intake relies on ---------------------------------


def test_verify_envelope_for_intake_reads_the_signed_envelope_and_its_signer(
    pki: DevPKI, signed_envelope: bytes, engine: TrustEngine
) -> None:
    verified = verify_envelope_for_intake(signed_envelope, engine)
    assert verified.report.verdict.ok
    assert verified.envelope is not None and verified.envelope.sender.id == "ES-MJ"
    assert verified.signing_cert == pki.cert("ES-MJ")
    assert verified.signed_root is not None and verified.problems == ()
    tampered = verify_envelope_for_intake(_tamper(signed_envelope), engine)
    assert tampered.envelope is None and not tampered.report.verdict.ok


def test_a_store_that_fails_is_a_500_problem_never_an_exception(
    service: IntakeService, store: MessageStore, es: Authority, envelope: bytes,
    es_signer: Signer, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def down(*args: object, **kwargs: object) -> None:
        raise OSError("the database is gone")

    monkeypatch.setattr(store, "record_submission", down)
    answer = post_xml(service, es, make_envelope(envelope, es_signer))
    problem = json.loads(answer.body)
    assert (answer.status, answer.content_type) == (500, "application/problem+json")
    assert problem["type"] == "urn:rogatory:problem:internal-error"
    assert "post it again" in problem["detail"]


# ---- memory -----------------------------------------------------------------


def test_memory_stays_bounded_whatever_the_attachment_size(
    store: MessageStore, engine: TrustEngine, directory: AuthorityDirectory,
    gateway_signer: Signer, tmp_path: Path, es: Authority, envelope: bytes, es_signer: Signer,
) -> None:  # fmt: skip
    import tracemalloc

    size, piece = 24 * 1024 * 1024, bytes(range(256)) * 256  # 64 KiB pieces
    digest = hashlib.sha256()
    for _ in range(size // len(piece)):
        digest.update(piece)
    data = make_envelope(
        envelope, es_signer,
        attachments=[("big@es", "text/plain", b"")],
        edit=lambda root: (
            root.find("e:Attachments/e:Attachment/e:Size", NS).__setattr__("text", str(size)),
            root.find("e:Attachments/e:Attachment/e:Digest", NS).__setattr__(
                "text", digest.hexdigest()
            ),
        ),
    )  # fmt: skip
    head, tail = multipart(data, [("big@es", b"\x00")])[1].split(b"\x00\r\n--" + BOUNDARY.encode())
    content_type = multipart(data, [])[0]

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield b"\r\n--" + BOUNDARY.encode() + tail

    settings = Settings(
        mode="development", data_dir=tmp_path / "data", **(LIMITS | {
            "max_attachment_bytes": 32 * 1024 * 1024, "max_body_bytes": 64 * 1024 * 1024,
        }),
    )  # fmt: skip
    service = IntakeService(
        store, store.blobs, engine, directory, gateway_signer, settings, issuer=GATEWAY
    )
    tracemalloc.start()
    try:
        answer = service.submit(es, content_type, body(), None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    accepted(answer, engine)
    print(f"intake peak: {peak} bytes for a {size}-byte attachment")
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte attachment"
