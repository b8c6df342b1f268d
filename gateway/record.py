"""The written record of a message: a signed PDF to hand to a court, with the originals inside.

UNTOC art. 18(14) and the Second Additional Protocol, art. 4(9): the sender
must be able to produce at any time a written record of a transmission and
its original. ``written_record`` sets out what the gateway holds about one
message (metadata, digests, verdicts, status history, evidences, and every
audit entry with its inclusion proof against the latest signed checkpoint),
embeds the original envelope, the evidences, the attachments and any
channel-override notices byte for byte as PDF embedded files, and signs the
whole with PAdES (B-B, or B-T with a time-stamping authority).

Memory: a PDF embeds its files and pyHanko signs a document held in memory,
so the originals are streamed from the blob store chunk by chunk (hashed on
the way and checked against the digests on record) into one buffer each, and
at most ``max_embedded`` bytes of originals go into one record (256 MiB by
default). An original over that budget, or one purged from the blob store,
is listed with its digest and marked as not embedded, never left out
silently. Peak memory is about three times the embedded bytes (the files,
the written PDF and its signed copy).
"""

# pyHanko's PDF writer is untyped; every call into it is one of these.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO

from pyhanko.pdf_utils import embed, generic
from pyhanko.pdf_utils.writer import PdfFileWriter

from gateway import merkle
from gateway.audit import AuditEntry, AuditLog
from gateway.blobs import BlobStore
from gateway.checkpoint import Checkpoint, format_time
from gateway.notice_trail import notices_of
from gateway.record_layout import Line, add_text_pages, fields, heading, verdict_lines
from gateway.store_queries import MessageReader
from gateway.store_records import EvidenceRecord, StoreError
from schemas import EVIDENCE_NS
from signing.errors import XMLInputError
from signing.keys import Signer
from signing.pades_sign import PadesLevel, sign_pdf
from signing.timestamp import TimeStamper
from signing.xmlparse import parse_xml

__all__ = ["DEFAULT_MAX_EMBEDDED", "RecordError", "written_record"]

DEFAULT_MAX_EMBEDDED = 256 << 20
_COMPRESS_BELOW = 16 << 20  # deflate small originals; large ones are mostly compressed already


class RecordError(StoreError):
    """No written record can be produced for this message, and why."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Original:
    """One original to embed: what it is, its digest and the file name it gets."""

    role: str
    sha256: str
    file_name: str
    media_type: str


@dataclass(frozen=True)
class _Proofs:
    """The inclusion proofs of a message's entries, all against one tree head."""

    tree_size: int
    root: bytes
    checkpoint: Checkpoint | None
    consistency: merkle.ConsistencyProof | None
    entries: tuple[tuple[AuditEntry, merkle.InclusionProof], ...]


def written_record(
    message_id: str,
    *,
    store: MessageReader,
    blobs: BlobStore,
    audit: AuditLog,
    signer: Signer,
    gateway_name: str,
    timestamper: TimeStamper | None = None,
    clock: Callable[[], datetime] = _now,
    max_embedded: int = DEFAULT_MAX_EMBEDDED,
) -> bytes:
    """The PAdES-signed written record of ``message_id`` (RecordError if there is none)."""
    message = store.message(message_id)
    if message is None:
        raise RecordError(f"no message {message_id!r} is stored: there is no record to write")
    proofs = _proofs(audit, message_id)
    history = store.history(message_id)
    attachments = store.attachments(message_id)
    evidences = store.evidences(message_id)
    names = _FileNames()
    envelope = _Original("original envelope", message.envelope_sha256, names.take(
        f"envelope-{message_id}.xml", "envelope.xml"), "application/xml")  # fmt: skip
    ev_files = [
        _Original(f"{e.type.value} evidence {e.evidence_id}", e.sha256,
                  names.take(f"evidence-{e.type.value}-{e.evidence_id}.xml", "evidence.xml"),
                  "application/xml")
        for e in evidences
    ]  # fmt: skip
    att_files = [
        _Original(f"attachment {a.content_id}", a.sha256,
                  names.take(a.file_name or a.content_id, "attachment"), a.media_type)
        for a in attachments
    ]  # fmt: skip
    # Channel-override notices sent about it, or received about it (gateway.notice_trail).
    notice_files = [
        _Original(f"notice {n.notice_id} ({n.direction})", n.sha256,
                  names.take(f"notice-{n.notice_id}.xml", "notice.xml"), "application/xml")
        for n in notices_of(audit, message_id)
        if n.state in ("sent", "received") and n.sha256 is not None
    ]  # fmt: skip
    originals = [envelope, *ev_files, *att_files, *notice_files]
    embedded = _Embedder(blobs, max_embedded)
    writer = PdfFileWriter()
    for original in originals:
        embedded.add(writer, original)

    now = clock()
    lines: list[Line] = [
        Line(f"WRITTEN RECORD OF MESSAGE {message.message_id}", heading=True),
        Line(f"produced by {gateway_name} at {format_time(now)}"),
        Line("under UNTOC art. 18(14) and the Second Additional Protocol to the European"),
        Line("Convention on Mutual Assistance in Criminal Matters, art. 4(9)."),
        *heading("1. Message"),
        *fields(
            [
                ("Message id", message.message_id),
                ("Conversation id", message.conversation_id),
                ("Kind", message.kind),
                ("Direction", message.direction.value),
                ("Sender", message.sender_id),
                ("Recipient", message.recipient_id),
                ("Request type", message.request_type),
                ("Legal basis", message.legal_basis),
                ("Created", format_time(message.created_at)),
                ("Received", format_time(history[0].at) if history else None),
                ("Current status", message.status.value),
                ("Last change", format_time(message.updated_at)),
            ]
        ),
        *heading("2. Originals and their SHA-256 digests"),
        *_original_lines(envelope, embedded),
    ]
    for attachment, original in zip(attachments, att_files, strict=True):
        lines += _original_lines(original, embedded)
        lines += fields([("  content id", attachment.content_id),
                         ("  name in the manifest", attachment.file_name),
                         ("  media type", attachment.media_type),
                         ("  size", f"{attachment.size} bytes")])  # fmt: skip
    for original in notice_files:
        lines += _original_lines(original, embedded)
    lines += heading("3. Verification verdicts recorded at intake")
    lines += [Line("Envelope:"), *verdict_lines(message.verdict)]
    for attachment in attachments:
        lines += [Line(f"Attachment {attachment.content_id}:"), *verdict_lines(attachment.verdict)]
    lines += heading("4. Status history")
    for n, change in enumerate(history, start=1):
        reason = f" - reason: {change.reason}" if change.reason else ""
        lines.append(
            Line(f"{n:>3}. {format_time(change.at)}  {change.status.value}"
                 f"  (audit entry {change.audit_index}){reason}")
        )  # fmt: skip
    lines += heading("5. Evidences")
    if not evidences:
        lines.append(Line("(none)"))
    for evidence, original in zip(evidences, ev_files, strict=True):
        lines += _evidence_lines(evidence, original, embedded, blobs)
    lines += heading("6. Audit entries and inclusion proofs")
    lines += _proof_lines(proofs, audit.origin)
    lines += heading("7. How to verify this record")
    lines += _how_to_verify(message_id)

    add_text_pages(writer, lines, f"Record of {message.message_id} - {gateway_name}")
    writer.set_info(_info(message_id, gateway_name, now))
    out = BytesIO()
    writer.write(out)
    level = PadesLevel.B_B if timestamper is None else PadesLevel.B_T
    return sign_pdf(
        out.getvalue(), signer, level=level, timestamper=timestamper,
        reason=f"Written record of message {message_id}", location=gateway_name,
    )  # fmt: skip


# ---- the audit trail ------------------------------------------------------------


def _proofs(audit: AuditLog, message_id: str) -> _Proofs:
    """Prove every entry of the message against the latest checkpoint, or the head after it.

    Entries newer than the latest signed checkpoint are proven against the
    current tree head, which this record's own signature then attests, with a
    consistency proof from the checkpoint to that head.
    """
    size = audit.size()
    checkpoints = audit.checkpoints()
    latest = checkpoints[-1] if checkpoints else None
    if latest is not None and audit.root(latest.size) != latest.root_hash:
        raise RecordError(
            f"the audit log does not match its latest signed checkpoint (size {latest.size}): "
            "run `rogatory audit verify` before producing any record"
        )
    entries = [e for e in audit.entries_for(message_id) if e.index < size]
    covered = latest is not None and all(e.index < latest.size for e in entries)
    tree_size = latest.size if covered and latest is not None else size
    consistency = None
    if latest is not None and 0 < latest.size < tree_size:
        consistency = audit.consistency_proof(latest.size, tree_size)
    root = audit.root(tree_size)
    proven = []
    for entry in entries:
        proof = audit.inclusion_proof(entry.index, tree_size)
        if proof.leaf_hash != entry.leaf_hash or proof.root_hash != root or not proof.verify():
            raise RecordError(
                f"audit entry {entry.index} of {message_id} does not prove into the log: "
                "run `rogatory audit verify`"
            )
        proven.append((entry, proof))
    if consistency is not None and not consistency.verify():
        raise RecordError("the audit log is not consistent with its latest signed checkpoint")
    return _Proofs(tree_size, root, latest, consistency, tuple(proven))


def _proof_lines(proofs: _Proofs, origin: str) -> list[Line]:
    lines = [Line(f"Audit log {origin}; every proof below is against the tree of"),
             Line(f"size {proofs.tree_size} with root (SHA-256, hex):"),
             Line(f"  {proofs.root.hex()}")]  # fmt: skip
    checkpoint = proofs.checkpoint
    if checkpoint is None:
        lines.append(
            Line("No signed checkpoint exists yet: this record's signature attests the root.")
        )
    else:
        lines.append(Line(f"Latest signed checkpoint: size {checkpoint.size}, root"))
        lines.append(Line(f"  {checkpoint.root_hash.hex()}"))
        lines.append(Line("The checkpoint note, as signed:"))
        lines += [Line(f"  | {text}") for text in checkpoint.to_note().rstrip("\n").split("\n")]
        if proofs.consistency is not None:
            c = proofs.consistency
            lines.append(
                Line(f"The entries after it are proven against the head of size {c.new_size},")
            )
            lines.append(Line(f"which extends the checkpoint (consistency proof {c.old_size} -> "
                              f"{c.new_size}, path):"))  # fmt: skip
            lines += [Line(f"    {h.hex()}") for h in c.path]
    for entry, proof in proofs.entries:
        lines += [
            Line(),
            Line(f"Entry {entry.index}: {entry.kind} by {entry.actor} at {entry.time}", True),
            Line(f"  entry (canonical JSON): {entry.encoded.decode('utf-8')}"),
            Line(f"  leaf hash: {proof.leaf_hash.hex()}"),
            Line(f"  inclusion proof: index {proof.index}, tree size {proof.size}"),
            Line(f"  root: {proof.root_hash.hex()}"),
            Line(f"  path ({len(proof.path)} hashes):"),
            *[Line(f"    {h.hex()}") for h in proof.path],
        ]  # fmt: skip
    return lines


# ---- originals and evidences ------------------------------------------------------


class _FileNames:
    """Unique, path-free file names for the embedded files (a name from outside is hostile)."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def take(self, wanted: str, fallback: str) -> str:
        clean = "".join("_" if c in "/\\:\0" or not c.isprintable() else c for c in wanted)
        clean = clean.strip(" .") or fallback
        stem, dot, ext = clean.rpartition(".")
        if not dot:
            stem, ext = clean, ""
        name, n = clean, 1
        while name.lower() in self._taken:
            n += 1
            name = f"{stem}-{n}.{ext}" if ext else f"{stem}-{n}"
        self._taken.add(name.lower())
        return name


class _Embedder:
    """Streams originals from the blob store into the PDF, within a byte budget."""

    def __init__(self, blobs: BlobStore, budget: int) -> None:
        self.blobs = blobs
        self.budget = budget
        self.why_not: dict[str, str] = {}  # file name -> why it is not embedded

    def add(self, writer: PdfFileWriter, original: _Original) -> None:
        if not self.blobs.exists(original.sha256):
            self.why_not[original.file_name] = "not held by the blob store (purged?)"
            return
        size = self.blobs.size(original.sha256)
        if size > self.budget:
            self.why_not[original.file_name] = (
                f"{size} bytes, over what one record embeds; fetch it from the gateway"
            )
            return
        data = bytearray()
        digest = hashlib.sha256()
        for chunk in self.blobs.open_chunks(original.sha256):
            digest.update(chunk)
            data += chunk
        if digest.hexdigest() != original.sha256:
            raise RecordError(f"the blob store's bytes for the {original.role} do not match "
                              f"their digest {original.sha256}")  # fmt: skip
        self.budget -= size
        stream = embed.EmbeddedFileObject.from_file_data(
            writer, bytes(data), compress=size < _COMPRESS_BELOW,
            params=embed.EmbeddedFileParams(), mime_type=original.media_type,
        )  # fmt: skip
        description = f"{original.role}, SHA-256 {original.sha256}"
        spec = embed.FileSpec(
            file_spec_string=original.file_name.encode("ascii", "replace").decode("ascii"),
            file_name=original.file_name, embedded_data=stream, description=description,
        )  # fmt: skip
        embed.embed_file(writer, spec)

    def where(self, original: _Original) -> str:
        why = self.why_not.get(original.file_name)
        if why is None:
            return f"embedded as {original.file_name!r}"
        return f"NOT EMBEDDED ({original.file_name!r}): {why}"


def _original_lines(original: _Original, embedded: _Embedder) -> list[Line]:
    return [Line(), Line(original.role.capitalize() + ":"), Line(f"  SHA-256 {original.sha256}"),
            Line(f"  {embedded.where(original)}")]  # fmt: skip


def _evidence_lines(
    evidence: EvidenceRecord, original: _Original, embedded: _Embedder, blobs: BlobStore
) -> list[Line]:
    lines = [
        Line(),
        Line(f"{evidence.type.value} {evidence.evidence_id}", heading=True),
        *fields([("  issued at", format_time(evidence.issued_at)),
                  ("  SHA-256", evidence.sha256),
                  ("  about (SHA-256)", evidence.subject_sha256)]),
    ]  # fmt: skip
    issuer, reasons = _evidence_issuer(blobs, evidence.sha256)
    lines += fields([("  issuer", issuer)])
    lines += [Line(f"  reason: {reason}") for reason in reasons]
    lines.append(Line(f"  {embedded.where(original)}"))
    return lines


def _evidence_issuer(blobs: BlobStore, sha256: str) -> tuple[str, list[str]]:
    """The issuer and reasons as the evidence XML states them (its signature is checked apart)."""
    if not blobs.exists(sha256):
        return "unknown: the evidence is no longer held", []
    try:
        root = parse_xml(blobs.read(sha256))
    except XMLInputError as exc:
        return f"unreadable evidence: {exc}", []

    def text(parent: object, path: str) -> str:
        found = parent.findtext("/".join(f"{{{EVIDENCE_NS}}}{p}" for p in path.split("/")))  # type: ignore[attr-defined]
        return "?" if found is None else str(found)

    issuer = (f"{text(root, 'Issuer/Name')} ({text(root, 'Issuer/GatewayId')}, "
              f"{text(root, 'Issuer/Country')})")  # fmt: skip
    reasons = [
        f"{text(r, 'Code')}: {text(r, 'Text')}" for r in root.iterfind(f"{{{EVIDENCE_NS}}}Reason")
    ]
    return issuer, reasons


# ---- text --------------------------------------------------------------------------


def _how_to_verify(message_id: str) -> list[Line]:
    return [
        Line("1. This record: `rogatory verify record.pdf` (or `pdfsig record.pdf`) checks its"),
        Line("   PAdES signature; the signed bytes cover every page and every embedded file."),
        Line("2. The originals: extract them (`pdfdetach -saveall record.pdf`) and compare"),
        Line("   `sha256sum` of each file with the digests in sections 2 and 5; then"),
        Line("   `rogatory verify <envelope file>` checks the sender's XAdES signature and"),
        Line("   `rogatory verify <evidence file>` the gateway's signature on each evidence."),
        Line("3. The audit trail: `rogatory audit export log.jsonl` at the gateway, then"),
        Line("   `rogatory audit verify log.jsonl` checks the whole log and its signed"),
        Line("   checkpoints offline. Each proof in section 6 can be recomputed by hand"),
        Line("   (RFC 9162, 2.1.3.2): leaf hash = SHA-256(0x00 || entry), node ="),
        Line("   SHA-256(0x01 || left || right); folding the path from the leaf gives the root."),
        Line(
            f"   `rogatory audit proof INDEX` prints the same proof for an entry of {message_id}."
        ),
    ]


def _info(message_id: str, gateway_name: str, now: datetime) -> generic.DictionaryObject:
    return generic.DictionaryObject({
        generic.pdf_name("/Title"): generic.TextStringObject(f"Written record of {message_id}"),
        generic.pdf_name("/Author"): generic.TextStringObject(gateway_name),
        generic.pdf_name("/Producer"): generic.TextStringObject("Rogatory"),
        generic.pdf_name("/CreationDate"): generic.pdf_date(now),
    })  # fmt: skip
