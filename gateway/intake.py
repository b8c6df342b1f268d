"""Intake: an authority posts an envelope (alone or with attachments) and gets a signed answer.

The pipeline follows DESIGN.md, The flow: size limits -> hardened parse ->
idempotency (the same message id answers as it did the first time) -> XSD,
profile rules and XAdES verification -> the sender and signer bound to the
authenticated authority -> attachments against the signed manifest, PDFs
verified -> a signed SubmissionAcceptance, recorded before it is returned;
or, at any step, a signed SubmissionRejection in a problem+json body.

Memory stays bounded: the envelope (at most ``max_envelope_bytes``) is held
in memory, attachments are streamed to the blob store and hashed on the way,
and only PDFs up to ``MAX_PDF_VERIFY_BYTES`` are read back to be verified.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from gateway.audit import JSON, AuditEvent
from gateway.authorities import Authority, AuthorityDirectory
from gateway.blobs import BlobRef, BlobStore, BlobTooLarge
from gateway.envelope import Envelope
from gateway.evidence import (
    EvidenceReason,
    GatewayRef,
    MessageRef,
    build_evidence,
    sign_evidence,
)
from gateway.intake_checks import (
    MAX_PDF_VERIFY_BYTES,
    Refused,
    body_chunks,
    check_attachments,
    check_pdfs,
    cut_short,
    manifest_key,
    problem_json,
    read_bounded,
    verdict_issues,
)
from gateway.model import Direction, EvidenceType, Status
from gateway.multipart import (
    MultipartCutShort,
    MultipartError,
    TooManyParts,
    iter_parts,
    parse_content_type,
)
from gateway.settings import Settings
from gateway.store import MessageStore
from gateway.store_records import Answer as StoredAnswer
from gateway.store_records import (
    AttachmentRecord,
    EvidenceRecord,
    FirstAnswer,
    MessageIdTaken,
    MessageRecord,
    SubmissionRecord,
)
from gateway.verification import verify_envelope_for_intake
from schemas import ENVELOPE_NS
from signing.errors import XMLInputError
from signing.keys import Signer
from signing.timestamp import TimeStamper
from signing.trust import TrustEngine
from signing.xmlparse import parse_xml

log = logging.getLogger("rogatory.intake")

__all__ = ["Answer", "IntakeService", "message_location"]

XML_TYPES = frozenset({"application/xml", "text/xml"})
PROBLEM_JSON = "application/problem+json"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_AUTHORITY_ID = re.compile(r"^[A-Z]{2}-[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$")
_MESSAGE_ID = f"{{{ENVELOPE_NS}}}Header/{{{ENVELOPE_NS}}}MessageId"


@dataclass(frozen=True)
class Answer:
    """What the HTTP layer sends back: status, media type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def message_location(message_id: str) -> str:
    return f"/api/v1/messages/{message_id}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Submission:
    """What is known of one submission so far, filled in as the pipeline goes."""

    authority: Authority
    submission_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    envelope_bytes: bytes | None = None
    envelope_sha256: str | None = None
    message_id: str | None = None  # peeked from the unsigned envelope
    envelope: Envelope | None = None  # read from the signed envelope, once verified
    verdict: dict[str, JSON] | None = None
    received: dict[str, BlobRef] = field(default_factory=dict)


class IntakeService:
    """Takes submissions from authenticated authorities; see the module docstring."""

    def __init__(
        self,
        store: MessageStore,
        blobs: BlobStore,
        engine: TrustEngine | None,
        directory: AuthorityDirectory,
        signer: Signer,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = _now,
        issuer: GatewayRef | None = None,
        timestamper: TimeStamper | None = None,
        max_pdf_verify_bytes: int = MAX_PDF_VERIFY_BYTES,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.engine = engine
        self.directory = directory
        self.signer = signer
        self.settings = settings
        self.clock = clock
        self.issuer = issuer or _issuer_from(settings)
        self.timestamper = timestamper
        self.max_pdf_verify_bytes = max_pdf_verify_bytes

    # ---- the pipeline -------------------------------------------------------

    def submit(
        self,
        authority: Authority,
        content_type: str,
        body: Iterable[bytes] | BinaryIO,
        content_length: int | None,
    ) -> Answer:
        """The answer to one submission; never raises for what the request contains."""
        submission = _Submission(authority)
        try:
            try:
                return self._submit(submission, content_type, body, content_length)
            except Refused as refusal:
                return self._refuse(submission, refusal)
        except Exception:
            log.exception("intake failed on submission %s", submission.submission_id)
            failure = Refused.one(
                500, "internal-error", "Internal error",
                f"the gateway could not process submission {submission.submission_id}; "
                "nothing was accepted, post it again",
                final=False,
            )  # fmt: skip
            try:
                return self._refuse(submission, failure)
            except Exception:
                log.exception("could not record the refusal of %s", submission.submission_id)
                return _bare_problem(failure, submission)

    def _submit(
        self,
        submission: _Submission,
        content_type: str,
        body: Iterable[bytes] | BinaryIO,
        content_length: int | None,
    ) -> Answer:
        try:
            media_type, params = parse_content_type(content_type or "")
        except MultipartError as exc:
            raise _unsupported(str(exc)) from None
        limits = self.settings
        chunks = body_chunks(body, content_length, limits.max_body_bytes)
        if media_type in XML_TYPES:
            if content_length is not None and content_length > limits.max_envelope_bytes:
                raise _envelope_too_large(content_length, limits.max_envelope_bytes)
            data = read_bounded(chunks, limits.max_envelope_bytes, "envelope", "envelope-too-large")
            replay = self._take_envelope(submission, data)
            if replay is not None:
                return replay
        elif media_type == "multipart/related":
            replay = self._take_parts(submission, params, chunks)
            if replay is not None:
                return replay
        else:
            raise _unsupported(f"{media_type} is neither application/xml nor multipart/related")
        self._check_attachments(submission)
        return self._accept(submission)

    def _take_parts(
        self, submission: _Submission, params: dict[str, str], chunks: Iterator[bytes]
    ) -> Answer | None:
        boundary = params.get("boundary")
        if not boundary:
            raise _malformed_multipart("the multipart/related Content-Type has no boundary")
        start = params.get("start", "").strip().removeprefix("<").removesuffix(">") or None
        limits = self.settings
        try:
            for part in iter_parts(boundary, chunks, max_parts=limits.max_attachments + 1):
                is_root = part.content_id == start if start else part.index == 0
                if is_root:
                    data = read_bounded(
                        part.body, limits.max_envelope_bytes, "envelope", "envelope-too-large"
                    )
                    replay = self._take_envelope(submission, data)
                    if replay is not None:
                        return replay
                    continue
                if len(submission.received) >= limits.max_attachments:
                    raise Refused.one(
                        413, "too-many-attachments", "Too large",
                        f"more than {limits.max_attachments} attachments",
                    )  # fmt: skip
                try:
                    blob = self.blobs.put_stream(part.body, max_size=limits.max_attachment_bytes)
                except BlobTooLarge:
                    raise Refused.one(
                        413, "attachment-too-large", "Too large",
                        f"the attachment <{part.content_id}> is larger than the limit of "
                        f"{limits.max_attachment_bytes} bytes",
                    ) from None  # fmt: skip
                submission.received[part.content_id] = blob
        except MultipartCutShort as exc:
            raise cut_short(str(exc)) from None
        except TooManyParts as exc:
            raise Refused.one(413, "too-many-attachments", "Too large", str(exc)) from None
        except MultipartError as exc:
            raise _malformed_multipart(str(exc)) from None
        if submission.envelope_bytes is None:
            where = f"Content-ID <{start}>" if start else "the first part"
            raise _malformed_multipart(f"no envelope: {where} is missing")
        return None

    def _take_envelope(self, submission: _Submission, data: bytes) -> Answer | None:
        """Keep the envelope, answer a replay, and verify it (refusing early if it fails)."""
        ref = self.blobs.put(data)  # the original bytes, kept whatever the verdict
        submission.envelope_bytes = data
        submission.envelope_sha256 = ref.sha256
        try:
            unsigned = parse_xml(data)
        except XMLInputError as exc:
            raise Refused.one(400, "malformed-xml", "Malformed XML", str(exc)) from None
        message_id = (unsigned.findtext(_MESSAGE_ID) or "").strip()
        submission.message_id = message_id if _UUID.match(message_id) else None
        if submission.message_id is not None:
            first = self.store.first_answer(submission.authority.id, submission.message_id)
            if first is not None:
                return self._replay(submission, first)
        self._verify(submission, data)
        return None

    def _verify(self, submission: _Submission, data: bytes) -> None:
        verified = verify_envelope_for_intake(data, self.engine, path="envelope", at=self.clock())
        report = verified.report
        submission.verdict = report.verdict.to_json() | {
            "signer": report.signatures[0].signer if report.signatures else None
        }
        if not report.verdict.ok or verified.envelope is None:
            raise verdict_issues(report, verified.problems)
        envelope = verified.envelope
        authority = submission.authority
        if envelope.sender.id != authority.id:
            raise Refused.one(
                403, "sender-not-authority", "Posting as another authority",
                f"the envelope's sender is {envelope.sender.id}, but the request was "
                f"authenticated as {authority.id}",
                path="/Envelope/Header/Sender/AuthorityId",
            )  # fmt: skip
        cert = verified.signing_cert
        if cert is None or not self.directory.signer_belongs(authority, cert):
            signer = report.signatures[0].signer if report.signatures else "unknown"
            raise Refused.one(
                403, "signer-not-of-authority", "Signer not bound to the authority",
                f"the envelope is signed by {signer}, which the authority directory does not "
                f"list as a signer for {authority.id}",
                path="/Envelope/Signature",
            )  # fmt: skip
        submission.envelope = envelope

    def _check_attachments(self, submission: _Submission) -> None:
        envelope = submission.envelope
        assert envelope is not None  # _verify set it or raised
        issues = check_attachments(envelope.attachments, submission.received)
        if not issues:
            pdf_issues = check_pdfs(
                envelope.attachments, submission.received, self.blobs, self.engine,
                at=self.clock(), max_pdf_bytes=self.max_pdf_verify_bytes,
            )  # fmt: skip
            issues += pdf_issues
        if issues:
            raise Refused(422, "The attachments do not match the signed manifest", issues)

    # ---- answers ------------------------------------------------------------

    def _accept(self, submission: _Submission) -> Answer:
        envelope = submission.envelope
        assert envelope is not None and submission.envelope_bytes is not None
        message_ref = MessageRef.of_envelope(envelope, submission.envelope_bytes)
        evidence = build_evidence(
            EvidenceType.SUBMISSION_ACCEPTANCE, message_ref, self.issuer, clock=self.clock
        )
        signed = sign_evidence(evidence, self.signer, timestamper=self.timestamper)
        evidence_blob = self.blobs.put(signed)
        record = SubmissionRecord(
            authority_id=submission.authority.id,
            envelope_sha256=message_ref.sha256_hex,
            answer=StoredAnswer(202, signed, "application/xml"),
            message_id=envelope.message_id,
            message=self._message_record(submission, envelope),
            status=Status.ACCEPTED,
            attachments=self._attachment_records(submission, envelope),
            evidences=(
                EvidenceRecord(
                    evidence.evidence_id, evidence.type, evidence.event_time,
                    evidence_blob.sha256, message_ref.sha256_hex,
                ),
            ),
        )  # fmt: skip
        try:
            outcome = self.store.record_submission(record)
        except MessageIdTaken as exc:
            raise _id_taken(envelope.message_id, str(exc)) from None
        if outcome.replayed:  # a concurrent post of the same id got there first
            return self._replay(submission, outcome.first)
        if self.directory.get(envelope.recipient.id) is not None:
            self._deliver_locally(envelope, message_ref)
        return _from_stored(outcome.first.answer, envelope.message_id)

    def _deliver_locally(self, envelope: Envelope, message_ref: MessageRef) -> None:
        """The recipient is one of ours: queued, sending, delivered, with a Delivery evidence.

        The acceptance is durable already; a failure here leaves the message in
        a state an operator sees, and the submitter still gets its acceptance.
        """
        actor = self.store.gateway_id
        try:
            for status in (Status.QUEUED, Status.SENDING, Status.DELIVERED):
                self.store.transition(envelope.message_id, status, actor=actor)
            evidence = build_evidence(
                EvidenceType.DELIVERY, message_ref, self.issuer, clock=self.clock
            )
            signed = self.blobs.put(sign_evidence(evidence, self.signer))
            record = EvidenceRecord(
                evidence.evidence_id, evidence.type, evidence.event_time, signed.sha256,
                message_ref.sha256_hex,
            )  # fmt: skip
            self.store.add_evidence(envelope.message_id, record, actor=actor)
        except Exception:
            log.exception("local delivery of %s stopped part way", envelope.message_id)

    def _replay(self, submission: _Submission, first: FirstAnswer) -> Answer:
        if first.envelope_sha256 == submission.envelope_sha256:
            return _from_stored(first.answer, first.message_id)
        assert submission.message_id is not None
        self.store.audit.append(
            _conflict_event(submission, first.envelope_sha256, first.submission_id)
        )
        raise _id_taken(submission.message_id, "")

    def _refuse(self, submission: _Submission, refusal: Refused) -> Answer:
        """Sign a SubmissionRejection, record it (if final, under the message id), answer."""
        reasons = [EvidenceReason(i.code, i.text) for i in refusal.issues]
        final = refusal.final and refusal.code != "message-id-reused"
        message_id = submission.message_id
        if message_id is None:
            reasons.append(
                EvidenceReason(
                    "no-message-id",
                    f"no message id could be read; this evidence speaks of submission "
                    f"{submission.submission_id}",
                )
            )
        evidence = build_evidence(
            EvidenceType.SUBMISSION_REJECTION,
            self._rejected_ref(submission),
            self.issuer,
            reasons=reasons,
            details=f"submission {submission.submission_id}",
            clock=self.clock,
        )
        signed = sign_evidence(evidence, self.signer, timestamper=self.timestamper)
        evidence_blob = self.blobs.put(signed)
        body = problem_json(
            refusal, signed, message_id=message_id, submission_id=submission.submission_id
        )
        answer = Answer(refusal.status, PROBLEM_JSON, body)
        if refusal.code == "message-id-reused":
            return answer  # the id belongs to the first submission; audited in _replay
        envelope_sha256 = submission.envelope_sha256 or self.blobs.put(b"").sha256
        # A message row exists only for an envelope whose signed content named this
        # authority as sender and signer; before that, only the submission is kept.
        envelope = submission.envelope if final else None
        record = SubmissionRecord(
            authority_id=submission.authority.id,
            envelope_sha256=envelope_sha256,
            answer=StoredAnswer(refusal.status, body, PROBLEM_JSON),
            message_id=message_id if final else None,
            message=None if envelope is None else self._message_record(submission, envelope),
            status=Status.REJECTED,
            reason=f"submission {submission.submission_id}: {refusal}"[:2000],
            attachments=() if envelope is None else self._attachment_records(submission, envelope),
            evidences=()
            if envelope is None
            else (
                EvidenceRecord(
                    evidence.evidence_id, evidence.type, evidence.event_time,
                    evidence_blob.sha256, envelope_sha256,
                ),
            ),
        )  # fmt: skip
        try:
            outcome = self.store.record_submission(record)
        except MessageIdTaken as exc:
            return self._refuse(submission, _id_taken(message_id or "", str(exc)))
        if outcome.replayed:  # a concurrent post of the same id got there first
            first = outcome.first
            if outcome.same_envelope:
                return _from_stored(first.answer, first.message_id)
            self.store.audit.append(
                _conflict_event(submission, first.envelope_sha256, first.submission_id)
            )
            return self._refuse(submission, _id_taken(message_id or "", ""))
        return answer

    def _rejected_ref(self, submission: _Submission) -> MessageRef:
        data = submission.envelope_bytes or b""
        if submission.envelope is not None:
            return MessageRef.of_envelope(submission.envelope, data)
        sender = submission.authority.id
        ref = MessageRef.of_bytes(
            data, sender_authority=sender if _AUTHORITY_ID.match(sender) else None
        )
        if submission.message_id is None:
            return ref
        return MessageRef(ref.sha256_hex, submission.message_id, None, ref.sender_authority)

    def _message_record(self, submission: _Submission, envelope: Envelope) -> MessageRecord:
        assert submission.envelope_sha256 is not None
        return MessageRecord(
            message_id=envelope.message_id,
            direction=Direction.OUTBOUND,
            sender_id=envelope.sender.id,
            recipient_id=envelope.recipient.id,
            kind=envelope.kind.value,
            envelope_sha256=submission.envelope_sha256,
            conversation_id=envelope.conversation_id,
            request_type=envelope.request_type.value,
            legal_basis="; ".join(
                b.instrument + (f" art. {b.article}" if b.article else "")
                for b in envelope.legal_basis
            ),
            verdict=submission.verdict,
        )

    def _attachment_records(
        self, submission: _Submission, envelope: Envelope
    ) -> tuple[AttachmentRecord, ...]:
        """The parts that arrived, described by the manifest where it lists them."""
        listed = {manifest_key(ref): ref for ref in envelope.attachments}
        records = []
        for content_id, blob in submission.received.items():
            ref = listed.get(content_id)
            records.append(
                AttachmentRecord(
                    content_id=content_id,
                    media_type=ref.media_type if ref else "application/octet-stream",
                    size=blob.size,
                    sha256=blob.sha256,
                    file_name=ref.file_name if ref else None,
                )
            )
        return tuple(records)


# ---- helpers ----------------------------------------------------------------


def _issuer_from(settings: Settings) -> GatewayRef:
    gateway_id = settings.gateway_id or "rogatory"
    return GatewayRef(
        id=gateway_id,
        name=settings.gateway_name or gateway_id,
        country=settings.gateway_country or "ZZ",
    )


def _from_stored(stored: StoredAnswer, message_id: str | None) -> Answer:
    headers = {}
    if stored.http_status == 202 and message_id is not None:
        headers["Location"] = message_location(message_id)
    return Answer(stored.http_status, stored.media_type, stored.body, headers)


def _unsupported(detail: str) -> Refused:
    return Refused.one(415, "unsupported-media-type", "Unsupported media type", detail)


def _malformed_multipart(detail: str) -> Refused:
    return Refused.one(400, "malformed-multipart", "Malformed multipart body", detail)


def _envelope_too_large(size: int, limit: int) -> Refused:
    return Refused.one(
        413, "envelope-too-large", "Too large",
        f"the envelope is {size} bytes, more than the limit of {limit}",
    )  # fmt: skip


def _id_taken(message_id: str, why: str) -> Refused:
    return Refused.one(
        409, "message-id-reused", "Message id already used",
        f"message id already used with different content: {message_id} was first posted "
        "with another envelope" + (f" ({why})" if why else ""),
        path="/Envelope/Header/MessageId",
    )  # fmt: skip


def _conflict_event(
    submission: _Submission, first_sha256: str, first_submission: str
) -> AuditEvent:
    return AuditEvent(
        "submission.conflict",
        submission.authority.id,
        submission.message_id,
        {
            "submission_id": submission.submission_id,
            "envelope_sha256": submission.envelope_sha256,
            "first_submission_id": first_submission,
            "first_envelope_sha256": first_sha256,
            "reason": "message id already used with different content",
        },
    )


def _bare_problem(refusal: Refused, submission: _Submission) -> Answer:
    body = problem_json(
        refusal, None, message_id=submission.message_id, submission_id=submission.submission_id
    )
    return Answer(refusal.status, PROBLEM_JSON, body)
