"""Intake: an authority posts an envelope (alone or with attachments) and gets a signed answer.

The pipeline follows DESIGN.md, The flow: size limits -> hardened parse ->
idempotency (the same message id answers as it did the first time) -> XSD,
profile rules and XAdES verification -> the sender and signer bound to the
authenticated authority -> attachments against the signed manifest, PDFs
verified -> a signed SubmissionAcceptance, recorded before it is returned;
or, at any step, a signed SubmissionRejection in a problem+json body.

The checks of the parties live in gateway.intake_parties, the route an
accepted message takes in gateway.intake_route.

Memory stays bounded: the envelope (at most ``max_envelope_bytes``) is held
in memory, attachments are streamed to the blob store and hashed on the way,
and only PDFs up to ``MAX_PDF_VERIFY_BYTES`` are read back to be verified.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from gateway.authorities import Authority, AuthorityDirectory
from gateway.blobs import BlobStore, BlobTooLarge
from gateway.evidence import EvidenceReason, GatewayRef, MessageRef, build_evidence, sign_evidence
from gateway.intake_checks import (
    MAX_PDF_VERIFY_BYTES,
    RETRY_AFTER_SECONDS,
    Refused,
    body_chunks,
    check_attachments,
    check_pdfs,
    cut_short,
    envelope_too_large,
    id_taken,
    malformed_multipart,
    problem_json,
    read_bounded,
    unsupported,
    verdict_issues,
)
from gateway.intake_parties import check_inbound, check_sender
from gateway.intake_records import (
    PROBLEM_JSON,
    Answer,
    Origin,
    Submission,
    attachment_records,
    bare_problem,
    conflict_event,
    from_stored,
    issuer_from,
    message_location,
    message_record,
    received_records,
    rejected_ref,
)
from gateway.intake_route import plan_route
from gateway.model import EvidenceType, Status
from gateway.multipart import (
    BOUNDARY_SYNTAX,
    MultipartCutShort,
    MultipartError,
    TooManyParts,
    iter_parts,
    parse_content_type,
)
from gateway.settings import Settings
from gateway.small_blobs import stage
from gateway.store import MessageStore
from gateway.store_records import Answer as StoredAnswer
from gateway.store_records import (
    EvidenceRecord,
    FirstAnswer,
    MessageIdTaken,
    SubmissionRecord,
)
from gateway.verification import verify_envelope_for_intake
from schemas import ENVELOPE_NS
from signing.errors import XMLInputError
from signing.keys import Signer
from signing.timestamp import TimeStamper
from signing.trust import TrustEngine
from signing.xmlparse import ParsedXml, parse_document

log = logging.getLogger("rogatory.intake")

__all__ = ["Answer", "IntakeService", "Origin", "message_location"]

XML_TYPES = frozenset({"application/xml", "text/xml"})
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MESSAGE_ID = f"{{{ENVELOPE_NS}}}Header/{{{ENVELOPE_NS}}}MessageId"


def _now() -> datetime:
    return datetime.now(UTC)


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
        self.issuer = issuer or issuer_from(settings)
        self.timestamper = timestamper
        self.max_pdf_verify_bytes = max_pdf_verify_bytes

    # ---- the pipeline -------------------------------------------------------

    def submit(
        self,
        authority: Authority,
        content_type: str,
        body: Iterable[bytes] | BinaryIO,
        content_length: int | None,
        *,
        channel: str | None = None,
    ) -> Answer:
        """The answer to one submission; never raises for what the request contains.

        ``channel`` is a channel kind the sender asks for instead of the usual
        route. A reply then leaves by it, and when that moves it off the
        channel its conversation came by (the route's ``notice_by``), the same
        transaction also queues a gateway-signed notice (gateway.notice) for
        that original channel: the other side is told which channel the reply
        took and why. The notice never holds the reply back, and a notice that
        cannot be sent does not fail it.
        """
        submission = Submission(authority, override=channel)
        return self._run(submission, content_type, body, content_length)

    def receive(
        self,
        origin: Origin,
        content_type: str,
        body: Iterable[bytes] | BinaryIO,
        content_length: int | None,
    ) -> Answer:
        """A message from outside (a peer gateway, a polled channel) for one of our authorities.

        The same checks as ``submit``; the sender must be an authority the
        origin may speak for, the recipient one this gateway serves. Accepted,
        it is delivered at once and the answer is a signed Delivery evidence.
        """
        submission = Submission(origin.stand_in(), origin=origin)
        return self._run(submission, content_type, body, content_length)

    def _run(
        self,
        submission: Submission,
        content_type: str,
        body: Iterable[bytes] | BinaryIO,
        content_length: int | None,
    ) -> Answer:
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
                return bare_problem(failure, submission)

    def _submit(
        self,
        submission: Submission,
        content_type: str,
        body: Iterable[bytes] | BinaryIO,
        content_length: int | None,
    ) -> Answer:
        try:
            media_type, params = parse_content_type(content_type or "")
        except MultipartError as exc:
            raise unsupported(str(exc)) from None
        limits = self.settings
        chunks = body_chunks(body, content_length, limits.max_body_bytes)
        if media_type in XML_TYPES:
            if content_length is not None and content_length > limits.max_envelope_bytes:
                raise envelope_too_large(content_length, limits.max_envelope_bytes)
            data = read_bounded(chunks, limits.max_envelope_bytes, "envelope", "envelope-too-large")
            replay = self._take_envelope(submission, data)
            if replay is not None:
                return replay
        elif media_type == "multipart/related":
            replay = self._take_parts(submission, params, chunks)
            if replay is not None:
                return replay
        else:
            raise unsupported(f"{media_type} is neither application/xml nor multipart/related")
        self._check_attachments(submission)
        return self._accept(submission)

    def _take_parts(
        self, submission: Submission, params: dict[str, str], chunks: Iterator[bytes]
    ) -> Answer | None:
        boundary = params.get("boundary")
        if not boundary:
            raise malformed_multipart("the multipart/related Content-Type has no boundary")
        if not BOUNDARY_SYNTAX.match(boundary):
            raise malformed_multipart(
                "the multipart boundary must be 1 to 70 letters, digits or '()+_,-./:=? "
                "and must not end with a space (RFC 2046)"
            )
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
            raise malformed_multipart(str(exc)) from None
        if submission.envelope_bytes is None:
            where = f"Content-ID <{start}>" if start else "the first part"
            raise malformed_multipart(f"no envelope: {where} is missing")
        return None

    def _take_envelope(self, submission: Submission, data: bytes) -> Answer | None:
        """Keep the envelope, answer a replay, and verify it (refusing early if it fails)."""
        submission.envelope_bytes = data  # the original bytes, kept whatever the verdict
        submission.envelope_sha256 = self._keep(submission, data)
        try:
            received = parse_document(data)  # the one parse; the verifier reads this tree
        except XMLInputError as exc:
            raise Refused.one(400, "malformed-xml", "Malformed XML", str(exc)) from None
        # Unsigned until verified: only to answer a replay as it was answered the first time.
        # The whole text of the element: a comment inside it does not hide the id.
        element = received.root.find(_MESSAGE_ID)
        message_id = "".join(map(str, element.itertext())).strip() if element is not None else ""
        submission.message_id = message_id if _UUID.match(message_id) else None
        if submission.message_id is not None:
            first = self.store.first_answer(submission.authority.id, submission.message_id)
            if first is not None:
                return self._replay(submission, first)
        self._verify(submission, received)
        return None

    def _verify(self, submission: Submission, received: ParsedXml) -> None:
        # Validation at "now" (at=None): revocation data may be fetched, and the
        # trust engine may reuse a fresh chain result; a fixed time allows neither.
        verified = verify_envelope_for_intake(received, self.engine, path="envelope")
        report = verified.report
        submission.verdict = report.verdict.to_json() | {
            "signer": report.signatures[0].signer if report.signatures else None
        }
        if not report.verdict.ok or verified.envelope is None:
            raise verdict_issues(report, verified.problems)
        envelope = verified.envelope
        # From here on the message id is the signed one, not the peeked one.
        submission.message_id = envelope.message_id
        if submission.origin is not None:
            submission.envelope = envelope
            try:
                submission.arrived_via = check_inbound(
                    self.directory, envelope, submission.origin, verified.signing_cert, report
                )
            except Refused:
                submission.envelope = None
                raise
            return
        check_sender(self.directory, submission.authority, envelope, verified.signing_cert, report)
        submission.envelope = envelope

    def _check_attachments(self, submission: Submission) -> None:
        envelope = submission.envelope
        assert envelope is not None  # _verify set it or raised
        issues = check_attachments(envelope.attachments, submission.received)
        if not issues:
            pdf_issues = check_pdfs(
                envelope.attachments, submission.received, self.blobs, self.engine,
                at=None, max_pdf_bytes=self.max_pdf_verify_bytes,
            )  # fmt: skip
            issues += pdf_issues
        if issues:
            raise Refused(422, "The attachments do not match the signed manifest", issues)

    # ---- answers ------------------------------------------------------------

    def _accept(self, submission: Submission) -> Answer:
        envelope = submission.envelope
        assert envelope is not None and submission.envelope_bytes is not None
        message_ref = MessageRef.of_envelope(envelope, submission.envelope_bytes)
        then: tuple[Status, ...] = ()
        then_reason = None
        outbox = notice = None
        if submission.origin is not None:
            # From outside, for one of ours: delivered here, answered with the Delivery.
            delivery, signed = self._evidence(submission, EvidenceType.DELIVERY, message_ref)
            evidences = [delivery]
            status = Status.DELIVERED
        else:
            acceptance, signed = self._evidence(
                submission, EvidenceType.SUBMISSION_ACCEPTANCE, message_ref
            )
            evidences = [acceptance]
            status = Status.ACCEPTED
            if self.directory.local(envelope.recipient.id) is not None:
                # The recipient is one of ours: it is delivered in the same transaction
                # (queued, sending, delivered, with a Delivery evidence), so one commit
                # makes the acceptance and the delivery durable together.
                delivery, _ = self._evidence(submission, EvidenceType.DELIVERY, message_ref)
                evidences.append(delivery)
                then = (Status.QUEUED, Status.SENDING, Status.DELIVERED)
            else:
                plan = plan_route(self.store, self.directory, envelope, submission.override)
                then, then_reason = plan.then, plan.then_reason
                outbox, notice, submission.route = plan.outbox, plan.notice, plan.route
        record = SubmissionRecord(
            authority_id=submission.authority.id,
            envelope_sha256=message_ref.sha256_hex,
            answer=StoredAnswer(202, signed, "application/xml"),
            message_id=envelope.message_id,
            message=message_record(submission, envelope),
            status=status,
            attachments=attachment_records(submission, envelope),
            evidences=tuple(evidences),
            then=then,
            then_reason=then_reason,
            submission_id=submission.submission_id,
            outbox=outbox,
            notice=notice,
            blobs=submission.staged,
        )
        try:
            outcome = self.store.record_submission(record)
        except MessageIdTaken as exc:
            raise id_taken(envelope.message_id, str(exc)) from None
        if outcome.replayed:  # a concurrent post of the same id got there first
            return self._replay(submission, outcome.first)
        return from_stored(outcome.first.answer, envelope.message_id)

    def _evidence(
        self, submission: Submission, kind: EvidenceType, message_ref: MessageRef
    ) -> tuple[EvidenceRecord, bytes]:
        """A signed evidence of ``kind``, stored as a blob; its record and its bytes."""
        evidence = build_evidence(kind, message_ref, self.issuer, clock=self.clock)
        signed = sign_evidence(evidence, self.signer, timestamper=self.timestamper)
        record = EvidenceRecord(
            evidence.evidence_id, evidence.type, evidence.event_time,
            self._keep(submission, signed), message_ref.sha256_hex,
        )  # fmt: skip
        return record, signed

    def _keep(self, submission: Submission, data: bytes) -> str:
        """The digest of bytes to keep: small ones are written with the submission's
        record, in its one transaction; others go to the blob store now."""
        return stage(self.blobs, data, submission.staged)

    def _keep_now(self, submission: Submission) -> None:
        """Write what was staged, for an audit entry that names it outside a record."""
        for data in submission.staged.values():
            self.blobs.put(data)

    def _replay(self, submission: Submission, first: FirstAnswer) -> Answer:
        if first.envelope_sha256 == submission.envelope_sha256:
            return from_stored(first.answer, first.message_id)
        self._keep_now(submission)
        self.store.audit.append(
            conflict_event(submission, first.envelope_sha256, first.submission_id)
        )
        raise id_taken(submission.message_id or first.message_id or "", "")

    def _refuse(self, submission: Submission, refusal: Refused) -> Answer:
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
            rejected_ref(submission),
            self.issuer,
            reasons=reasons,
            details=f"submission {submission.submission_id}",
            clock=self.clock,
        )
        signed = sign_evidence(evidence, self.signer, timestamper=self.timestamper)
        evidence_sha256 = self._keep(submission, signed)
        body = problem_json(
            refusal, signed, message_id=message_id, submission_id=submission.submission_id
        )
        # A refusal that is not final (revocation data unreachable) invites a retry.
        retry = {} if refusal.final else {"Retry-After": RETRY_AFTER_SECONDS}
        answer = Answer(refusal.status, PROBLEM_JSON, body, retry)
        envelope_sha256 = submission.envelope_sha256 or self._keep(submission, b"")
        # A message row exists only for an envelope whose signed content named this
        # authority as sender and signer; before that, only the submission is kept
        # (so is a refusal of a message id that belongs to another submission).
        envelope = submission.envelope if final else None
        record = SubmissionRecord(
            authority_id=submission.authority.id,
            envelope_sha256=envelope_sha256,
            answer=StoredAnswer(refusal.status, body, PROBLEM_JSON),
            message_id=message_id if final else None,
            message=None if envelope is None else message_record(submission, envelope),
            status=Status.REJECTED,
            reason=f"submission {submission.submission_id}: {refusal}"[:2000],
            attachments=received_records(submission)
            if envelope is None
            else attachment_records(submission, envelope),
            evidences=()
            if envelope is None
            else (
                EvidenceRecord(
                    evidence.evidence_id, evidence.type, evidence.event_time,
                    evidence_sha256, envelope_sha256,
                ),
            ),
            submission_id=submission.submission_id,
            blobs=submission.staged,
        )  # fmt: skip
        try:
            outcome = self.store.record_submission(record)
        except MessageIdTaken as exc:
            return self._refuse(submission, id_taken(message_id or "", str(exc)))
        if outcome.replayed:  # a concurrent post of the same id got there first
            first = outcome.first
            if outcome.same_envelope:
                return from_stored(first.answer, first.message_id)
            self._keep_now(submission)
            self.store.audit.append(
                conflict_event(submission, first.envelope_sha256, first.submission_id)
            )
            return self._refuse(submission, id_taken(message_id or "", ""))
        return answer
