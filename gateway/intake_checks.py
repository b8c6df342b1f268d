"""The intake's checks as plain functions: reading the body within bounds, the manifest, PDFs.

Each check either passes or raises ``Refused``, which carries the HTTP status,
a title, and every ``Issue`` found (a code, a sentence, and the element path
where there is one). ``gateway.intake`` turns a refusal into a signed
SubmissionRejection and a problem+json answer.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from gateway.blobs import BlobRef, BlobStore
from gateway.envelope import AttachmentRef
from signing.errors import RogatoryError
from signing.trust import TrustEngine
from signing.verdict import DocumentReport, Indication, SubIndication

READ_CHUNK = 64 * 1024
# A PDF is verified in memory (pyHanko reads it whole); above this size it is refused
# rather than let one upload take the worker's memory.
MAX_PDF_VERIFY_BYTES = 32 * 1024 * 1024
PROBLEM_TYPE = "urn:rogatory:problem:"
# How long a sender waits before posting again what could not be checked now (a 503).
RETRY_AFTER_SECONDS = "60"


MAX_DETAIL = 1000


@dataclass(frozen=True)
class Issue:
    """One problem with a submission: a stable code, a sentence, and where (if known)."""

    code: str
    detail: str
    path: str | None = None

    def __post_init__(self) -> None:
        # Details quote what the sender sent (content ids, media types): bounded, so
        # a long one cannot push the signed rejection past the evidence schema.
        for name, limit in (("detail", MAX_DETAIL), ("path", MAX_DETAIL // 2)):
            value = getattr(self, name)
            if value is not None and len(value) > limit:
                object.__setattr__(self, name, value[: limit - 1] + "…")

    @property
    def text(self) -> str:
        """The issue as one sentence, prefixed with its element path where known."""
        return f"{self.path}: {self.detail}" if self.path else self.detail

    def to_json(self) -> dict[str, str]:
        out = {"code": self.code, "detail": self.detail}
        if self.path is not None:
            out["path"] = self.path
        return out


class Refused(RogatoryError):
    """A submission refused at one step of the intake.

    ``final`` says whether the refusal is the answer to this message id for
    good (anything about its content), or not (an upload cut short, a
    revocation source that was unreachable): those may be posted again.
    """

    def __init__(
        self, status: int, title: str, issues: Sequence[Issue], *, final: bool = True
    ) -> None:
        super().__init__(f"{title}: " + "; ".join(i.text for i in issues))
        self.status = status
        self.title = title
        self.issues = tuple(issues)
        self.final = final

    @classmethod
    def one(
        cls,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        path: str | None = None,
        final: bool = True,
    ) -> Refused:
        return cls(status, title, [Issue(code, detail, path)], final=final)

    @property
    def code(self) -> str:
        return self.issues[0].code


# ---- the body ---------------------------------------------------------------


def body_chunks(
    body: Iterable[bytes] | BinaryIO, content_length: int | None, max_body_bytes: int
) -> Iterator[bytes]:
    """The request body in pieces, refused as soon as it passes the limit or its Content-Length.

    A body shorter than its Content-Length is an upload cut short (not final).
    """
    if content_length is not None and content_length > max_body_bytes:
        raise _too_large("body-too-large", "request body", content_length, max_body_bytes)
    total = 0
    for chunk in _pieces(body, content_length):
        total += len(chunk)
        if total > max_body_bytes:
            raise _too_large("body-too-large", "request body", total, max_body_bytes)
        if content_length is not None and total > content_length:
            raise Refused.one(
                400,
                "body-longer-than-declared",
                "Malformed request",
                f"the body is longer than its Content-Length of {content_length} bytes",
            )
        yield chunk
    if content_length is not None and total < content_length:
        raise cut_short(f"{total} of the {content_length} bytes announced arrived")


def _pieces(body: Iterable[bytes] | BinaryIO, content_length: int | None) -> Iterator[bytes]:
    read = getattr(body, "read", None)
    if read is None:
        yield from (bytes(c) for c in body if c)
        return
    remaining = content_length
    while remaining is None or remaining > 0:
        size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
        chunk = read(size)
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield bytes(chunk)


def read_bounded(chunks: Iterable[bytes], limit: int, what: str, code: str) -> bytes:
    """All of ``chunks`` in memory, refused (413) as soon as they pass ``limit`` bytes."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise _too_large(code, what, len(data), limit, at_least=True)
    return bytes(data)


def _too_large(code: str, what: str, size: int, limit: int, *, at_least: bool = False) -> Refused:
    amount = f"at least {size}" if at_least else str(size)
    return Refused.one(
        413, code, "Too large", f"the {what} is {amount} bytes, more than the limit of {limit}"
    )


def cut_short(why: str) -> Refused:
    return Refused.one(
        400,
        "upload-cut-short",
        "Upload cut short",
        f"the upload ended early ({why}); nothing was accepted, post it again",
        final=False,
    )


# ---- the envelope's verdict -------------------------------------------------


def verdict_issues(report: DocumentReport, problems: Sequence[object]) -> Refused:
    """The refusal for an envelope whose verification did not pass."""
    verdict = report.verdict
    sub = verdict.subindication
    if problems:
        issues = [
            Issue(
                "profile-rule" if getattr(p, "rule", "") not in ("xsd", "read") else "schema",
                str(getattr(p, "message", p)),
                getattr(p, "path", None),
            )
            for p in problems
        ]
        return Refused(422, "The envelope is not valid", issues)
    label = f"{verdict.indication.value}" + (f"/{sub.value}" if sub else "")
    if sub is SubIndication.TRY_LATER:
        return Refused.one(
            503,
            "revocation-unavailable",
            "Signature cannot be checked now",
            f"{label}: {verdict.reason}; post the same envelope again later",
            final=False,
        )
    if verdict.indication is Indication.INDETERMINATE:
        return Refused.one(
            422,
            "signature-indeterminate",
            "The envelope's signature is not trusted",
            f"{label}: {verdict.reason}",
        )
    code = "malformed-envelope" if sub is SubIndication.FORMAT_FAILURE else "signature-invalid"
    return Refused.one(
        422, code, "The envelope's signature is not valid", f"{label}: {verdict.reason}"
    )


# ---- attachments ------------------------------------------------------------


def manifest_path(ref: AttachmentRef) -> str:
    return f"/Envelope/Attachments/Attachment[@Id='{ref.id}']"


def manifest_key(ref: AttachmentRef) -> str:
    """The Content-ID a part must carry for this manifest entry (its ContentId, else its Id)."""
    return ref.content_id or ref.id


def check_attachments(
    manifest: Sequence[AttachmentRef], received: Mapping[str, BlobRef]
) -> list[Issue]:
    """Every manifest entry has its part, of the same size and SHA-256; no part beyond them."""
    issues: list[Issue] = []
    listed = set()
    for ref in manifest:
        key = manifest_key(ref)
        listed.add(key)
        blob = received.get(key)
        path = manifest_path(ref)
        if blob is None:
            issues.append(
                Issue(
                    "attachment-missing",
                    f"no part has the Content-ID <{key}> ({ref.file_name})",
                    path,
                )
            )
        elif blob.size != ref.size:
            issues.append(
                Issue(
                    "attachment-size",
                    f"the part <{key}> has {blob.size} bytes, the manifest says {ref.size}",
                    path + "/Size",
                )
            )
        elif not hmac.compare_digest(blob.sha256, ref.sha256_hex.strip().lower()):
            issues.append(
                Issue(
                    "attachment-digest",
                    f"the part <{key}> has SHA-256 {blob.sha256}, the manifest says "
                    f"{ref.sha256_hex}",
                    path + "/Digest",
                )
            )
    for key in received:
        if key not in listed:
            issues.append(
                Issue("attachment-unlisted", f"the part <{key}> is not in the signed manifest")
            )
    return issues


def _looks_like_pdf(blobs: BlobStore, blob: BlobRef) -> bool:
    """A PDF header in the first KiB, where readers look for it."""
    chunks = blobs.open_chunks(blob.sha256, chunk_size=1024)
    try:
        return b"%PDF-" in next(chunks, b"")
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # a generator over an open file: close it now
            close()


def check_pdfs(
    manifest: Sequence[AttachmentRef],
    received: Mapping[str, BlobRef],
    blobs: BlobStore,
    engine: TrustEngine | None,
    *,
    at: datetime | None = None,
    max_pdf_bytes: int = MAX_PDF_VERIFY_BYTES,
) -> list[Issue]:
    """Each attached PDF must verify TOTAL-PASSED.

    A PDF is known by its bytes as well as by its label: an unsigned PDF
    declared ``application/octet-stream`` is still a PDF a clerk will open.
    """
    from signing.pades_verify import verify_pdf

    issues: list[Issue] = []
    for ref in manifest:
        blob = received[manifest_key(ref)]
        labelled = ref.media_type.strip().lower() == "application/pdf"
        if not labelled and not _looks_like_pdf(blobs, blob):
            continue
        path = manifest_path(ref)
        if blob.size > max_pdf_bytes:
            issues.append(
                Issue(
                    "pdf-too-large-to-verify",
                    f"{ref.file_name} is {blob.size} bytes; PDFs are verified up to "
                    f"{max_pdf_bytes} bytes",
                    path,
                )
            )
            continue
        try:
            report = verify_pdf(blobs.read(blob.sha256), engine, path=ref.file_name, at=at)
        except Exception as exc:  # fail closed, with the library's reason
            issues.append(
                Issue("pdf-unverifiable", f"{ref.file_name} could not be verified: {exc}", path)
            )
            continue
        verdict = report.verdict
        if not verdict.ok:
            sub = f"/{verdict.subindication.value}" if verdict.subindication else ""
            issues.append(
                Issue(
                    "pdf-signature",
                    f"{ref.file_name}: {verdict.indication.value}{sub}: {verdict.reason}",
                    path,
                )
            )
    return issues


# ---- rendering --------------------------------------------------------------


def problem_json(
    refusal: Refused, evidence: bytes | None, *, message_id: str | None, submission_id: str
) -> bytes:
    """RFC 9457 problem details, with every issue and the signed rejection evidence."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE + refusal.code,
        "title": refusal.title,
        "status": refusal.status,
        "detail": "; ".join(i.text for i in refusal.issues),
        "errors": [i.to_json() for i in refusal.issues],
        "message_id": message_id,
        "submission_id": submission_id,
    }
    if evidence is not None:
        body["evidence"] = evidence.decode("utf-8")
    return json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8")


# ---- refusals used by more than one step -----------------------------------


def unsupported(detail: str) -> Refused:
    return Refused.one(415, "unsupported-media-type", "Unsupported media type", detail)


def malformed_multipart(detail: str) -> Refused:
    return Refused.one(400, "malformed-multipart", "Malformed multipart body", detail)


def envelope_too_large(size: int, limit: int) -> Refused:
    return _too_large("envelope-too-large", "envelope", size, limit)


def id_taken(message_id: str, why: str) -> Refused:
    return Refused.one(
        409, "message-id-reused", "Message id already used",
        f"message id already used with different content: {message_id} was first posted "
        "with another envelope" + (f" ({why})" if why else ""),
        path="/Envelope/Header/MessageId",
    )  # fmt: skip
