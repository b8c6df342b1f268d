"""The written record: signed, readable, with the originals inside and proofs that check."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import merkle
from gateway.audit import AuditLog
from gateway.blobs import BlobStore, blob_store_for
from gateway.db import Database
from gateway.evidence import GatewayRef, MessageRef, build_evidence, sign_evidence
from gateway.model import Direction, EvidenceType, Status
from gateway.pki import DevPKI, create_dev_pki
from gateway.record import RecordError, written_record
from gateway.record_layout import COLUMNS, ROWS, Line, escape_text, paginate, wrap
from gateway.store import (
    Answer,
    AttachmentRecord,
    EvidenceRecord,
    MessageRecord,
    MessageStore,
    SubmissionRecord,
)
from schemas import examples_dir
from signing.keys import Signer
from signing.pades_verify import verify_pdf
from signing.timestamp import HttpTimeStamper
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from signing.xades_sign import sign_xml
from tests.conftest import signer_for
from tests.pdf_samples import make_pdf
from tests.servers import revocation_server, tsa_server

POPPLER = all(shutil.which(tool) for tool in ("pdfsig", "pdftotext", "pdfdetach"))
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils not installed")
GATEWAY = GatewayRef("gw-es", "Pasarela Rogatory de España", "ES")
MESSAGE_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@dataclass(frozen=True)
class Live:
    pki: DevPKI
    gateway: Signer
    sender: Signer
    engine: TrustEngine
    tsa: HttpTimeStamper


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("record") / "pki"
    with revocation_server(folder) as url:
        pki = create_dev_pki(folder, crl_url=f"{url}/crl", ocsp_url=f"{url}/ocsp")
        with tsa_server(pki.cert("tsa"), pki.key("tsa")) as tsa_url:
            engine = TrustEngine(
                TrustPolicy(anchors=(pki.root(),), revocation=RevocationPolicy.HARD)
            )
            yield Live(
                pki,
                signer_for(pki, "gw-es"),
                signer_for(pki, "ES-MJ"),
                engine,
                HttpTimeStamper(tsa_url, timeout=5),
            )


@dataclass(frozen=True)
class Recorded:
    store: MessageStore
    originals: dict[str, bytes]  # sha256 -> bytes of the envelope, attachments and evidences
    envelope_sha256: str
    attachments: tuple[AttachmentRecord, ...]


def _evidence(blobs: BlobStore, live: Live, kind: EvidenceType, envelope: bytes) -> EvidenceRecord:
    ref = MessageRef.of_bytes(envelope, sender_authority="ES-MJ")
    ref = MessageRef(ref.sha256_hex, MESSAGE_ID, None, "ES-MJ", "AR-MPF")
    evidence = build_evidence(kind, ref, GATEWAY)
    xml = sign_evidence(evidence, live.gateway)
    stored = blobs.put(xml)
    return EvidenceRecord(
        evidence.evidence_id, kind, evidence.event_time, stored.sha256, ref.sha256_hex
    )


def record_message(
    db: Database, data_dir: Path, live: Live, *, checkpoint_midway: bool = True
) -> Recorded:
    """A message as intake stores it: signed envelope, two attachments, signed evidences."""
    blobs = blob_store_for(db, data_dir)
    store = MessageStore(db, blobs, AuditLog(db, origin="test.rogatory/record"), gateway_id="gw-es")
    envelope = sign_xml((examples_dir() / "mla-request.xml").read_bytes(), live.sender)
    env = blobs.put(envelope)
    annexes = [
        ("annex-1.pdf", "application/pdf", make_pdf(2)),
        ("../../etc/Anexo ñ.bin", "application/octet-stream", bytes(range(256)) * 40),
    ]
    attachments = tuple(
        AttachmentRecord(
            f"part-{n}@{MESSAGE_ID}",
            media,
            len(data),
            blobs.put(data).sha256,
            name,
            {"indication": "TOTAL-PASSED", "subindication": None, "reason": "signature valid"},
        )
        for n, (name, media, data) in enumerate(annexes)
    )
    acceptance = _evidence(blobs, live, EvidenceType.SUBMISSION_ACCEPTANCE, envelope)
    message = MessageRecord(
        MESSAGE_ID, Direction.OUTBOUND, "ES-MJ", "AR-MPF", "request", env.sha256,
        conversation_id="case-1", request_type="mutual-legal-assistance",
        legal_basis="UNTOC art. 18", verdict={"indication": "TOTAL-PASSED", "reasons": []},
    )  # fmt: skip
    answer = Answer(202, blobs.read(acceptance.sha256), "application/xml")
    store.record_submission(
        SubmissionRecord(
            "ES-MJ",
            env.sha256,
            answer,
            MESSAGE_ID,
            message,
            attachments=attachments,
            evidences=(acceptance,),
        )
    )
    if checkpoint_midway:
        store.audit.checkpoint(live.gateway)
    store.transition(MESSAGE_ID, Status.QUEUED, actor="gw-es")
    store.transition(MESSAGE_ID, Status.SENDING, actor="gw-es")
    store.transition(MESSAGE_ID, Status.WAITING_FOR_RETRY, reason="peer timed out", actor="gw-es")
    store.transition(MESSAGE_ID, Status.SENDING, actor="gw-es")
    store.transition(MESSAGE_ID, Status.RELAYED, actor="gw-es")
    relay = _evidence(blobs, live, EvidenceType.RELAY_ACCEPTANCE, envelope)
    store.add_evidence(MESSAGE_ID, relay, actor="gw-es")
    originals = {hashlib.sha256(b).hexdigest(): b for b in [envelope, *(a[2] for a in annexes)]}
    for evidence in (acceptance, relay):
        originals[evidence.sha256] = blobs.read(evidence.sha256)
    return Recorded(store, originals, env.sha256, attachments)


def make_record(recorded: Recorded, live: Live, **options: object) -> bytes:
    store = recorded.store
    return written_record(
        MESSAGE_ID, store=store, blobs=store.blobs, audit=store.audit, signer=live.gateway,
        gateway_name="Pasarela Rogatory de España",
        clock=lambda: datetime(2026, 11, 22, 10, 0, tzinfo=UTC), **options,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture()
def recorded(db: Database, tmp_path: Path, live: Live) -> Recorded:
    return record_message(db, tmp_path / "data", live)


@pytest.fixture()
def record(recorded: Recorded, live: Live) -> bytes:
    return make_record(recorded, live)


def pdftotext(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "record.pdf"
    path.write_bytes(data)
    done = subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def detach_all(data: bytes, tmp_path: Path) -> dict[str, bytes]:
    folder = tmp_path / "detached"
    folder.mkdir()
    path = tmp_path / "record.pdf"
    path.write_bytes(data)
    subprocess.run(["pdfdetach", "-saveall", "-o", str(folder), str(path)], check=True, timeout=60)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# ---- signature ----------------------------------------------------------------------


def test_the_record_verifies_with_rogatory(record: bytes, live: Live) -> None:
    report = verify_pdf(record, live.engine, path="record.pdf")
    assert report.verdict.indication == "TOTAL-PASSED", report.verdict.reason
    assert [s.level for s in report.signatures] == ["PAdES-B-B"]
    assert any("gw-es" in (s.signer or "") for s in report.signatures)


@needs_poppler
def test_the_record_verifies_with_pdfsig(record: bytes, tmp_path: Path) -> None:
    path = tmp_path / "record.pdf"
    path.write_bytes(record)
    done = subprocess.run(
        ["pdfsig", "-nocert", str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Signature is Valid" in done.stdout
    assert "Total document signed" in done.stdout


def test_with_a_timestamper_the_record_is_b_t(recorded: Recorded, live: Live) -> None:
    report = verify_pdf(make_record(recorded, live, timestamper=live.tsa), live.engine)
    assert report.verdict.indication == "TOTAL-PASSED", report.verdict.reason
    assert [s.level for s in report.signatures] == ["PAdES-B-T"]


# ---- what it says ---------------------------------------------------------------------


@needs_poppler
def test_the_text_sets_out_ids_digests_statuses_and_evidences(
    record: bytes, recorded: Recorded, tmp_path: Path
) -> None:
    text = pdftotext(record, tmp_path)
    assert MESSAGE_ID in text
    for digest in recorded.originals:
        assert digest in text
    history = recorded.store.history(MESSAGE_ID)
    for change in history:
        assert re.search(
            rf"{re.escape(change.status.value)}\s+\(audit entry {change.audit_index}\)", text
        )
    assert "reason: peer timed out" in text
    for evidence in recorded.store.evidences(MESSAGE_ID):
        assert f"{evidence.type.value} {evidence.evidence_id}" in text
    assert "Pasarela Rogatory de España (gw-es, ES)" in text
    assert "../../etc/Anexo ñ.bin" in text  # the manifest name, as the sender wrote it
    for needle in ("ES-MJ", "AR-MPF", "mutual-legal-assistance", "UNTOC art. 18", "TOTAL-PASSED"):
        assert needle in text
    assert "rogatory audit verify" in text and "rogatory verify" in text


@needs_poppler
def test_the_originals_come_back_byte_for_byte(
    record: bytes, recorded: Recorded, tmp_path: Path
) -> None:
    files = detach_all(record, tmp_path)
    digests = {hashlib.sha256(data).hexdigest() for data in files.values()}
    assert digests == set(recorded.originals)
    assert f"envelope-{MESSAGE_ID}.xml" in files
    assert "annex-1.pdf" in files
    # a hostile manifest name loses its path, not its bytes
    assert "_.._etc_Anexo ñ.bin" in files


@needs_poppler
def test_every_printed_inclusion_proof_verifies(
    record: bytes, recorded: Recorded, tmp_path: Path
) -> None:
    text = pdftotext(record, tmp_path).replace("\f", "")
    text = re.sub(r"^Record of .* - page \d+ of \d+$", "", text, flags=re.M)  # page footers
    proofs = re.findall(
        r"leaf hash: ([0-9a-f]{64})\s+inclusion proof: index (\d+), tree size (\d+)\s+"
        r"root: ([0-9a-f]{64})\s+path \((\d+) hashes\):\s+((?:[0-9a-f]{64}\s+)*)",
        text,
    )
    entries = recorded.store.audit.entries_for(MESSAGE_ID)
    assert [int(p[1]) for p in proofs] == [e.index for e in entries]
    checkpoint = recorded.store.audit.checkpoints()[-1]
    for (leaf, index, size, root, count, path), entry in zip(proofs, entries, strict=True):
        hashes = tuple(bytes.fromhex(h) for h in path.split())
        assert len(hashes) == int(count)
        assert bytes.fromhex(leaf) == entry.leaf_hash
        assert merkle.verify_inclusion(
            int(index), int(size), bytes.fromhex(leaf), hashes, bytes.fromhex(root)
        )
        assert bytes.fromhex(root) == recorded.store.audit.root(int(size))
    # later entries than the checkpoint: proven against the head, which extends the checkpoint
    assert checkpoint.to_note().split("\n")[0] in text
    assert f"consistency proof {checkpoint.size} -> {recorded.store.audit.size()}" in text


def test_with_every_entry_checkpointed_proofs_are_against_the_checkpoint(
    db: Database, tmp_path: Path, live: Live
) -> None:
    recorded = record_message(db, tmp_path / "data", live, checkpoint_midway=False)
    checkpoint = recorded.store.audit.checkpoint(live.gateway)
    text = pdftotext(make_record(recorded, live), tmp_path)
    sizes = set(re.findall(r"inclusion proof: index \d+, tree size (\d+)", text))
    assert sizes == {str(checkpoint.size)}
    assert "consistency proof" not in text


# ---- limits and errors ----------------------------------------------------------------


@needs_poppler
def test_an_original_over_the_budget_is_listed_not_embedded(
    recorded: Recorded, live: Live, tmp_path: Path
) -> None:
    big = recorded.attachments[1]
    budget = sum(len(b) for b in recorded.originals.values()) - big.size
    record = make_record(recorded, live, max_embedded=budget)
    assert verify_pdf(record, live.engine).verdict.indication == "TOTAL-PASSED"
    files = detach_all(record, tmp_path)
    assert big.sha256 not in {hashlib.sha256(d).hexdigest() for d in files.values()}
    assert len(files) == len(recorded.originals) - 1
    text = pdftotext(record, tmp_path)
    assert "NOT EMBEDDED" in text and big.sha256 in text


def test_an_unknown_message_is_a_clear_error(recorded: Recorded, live: Live) -> None:
    store = recorded.store
    with pytest.raises(RecordError, match="no message 'nope' is stored"):
        written_record(
            "nope", store=store, blobs=store.blobs, audit=store.audit, signer=live.gateway,
            gateway_name="gw",
        )  # fmt: skip


# ---- layout ---------------------------------------------------------------------------


def test_a_block_that_fits_on_a_page_is_not_split() -> None:
    lines = [Line(f"filler {n}") for n in range(ROWS - 3)]
    lines += [Line("Entry 1", heading=True), *(Line(f"hash {n}") for n in range(5))]
    pages = paginate(lines)
    assert [line.text for line in pages[1][:2]] == ["Entry 1", "hash 0"]
    assert all(len(page) <= ROWS for page in paginate([Line("x")] * (3 * ROWS)))


def test_text_outside_winansi_is_escaped_not_lost() -> None:
    assert escape_text("Ἀθῆναι ñ") == "\\u{1F08}\\u{03B8}\\u{1FC6}\\u{03BD}\\u{03B1}\\u{03B9} ñ"
    pieces = list(wrap(Line("x" * (COLUMNS + 10))))
    assert [len(p.text) for p in pieces] == [COLUMNS, 4 + 10]
