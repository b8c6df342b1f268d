"""The message store on SQLite and PostgreSQL: submissions, replays, races, lifecycle, crashes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import AuditLog
from gateway.audit_verify import verify_store
from gateway.blobs import BlobStore, blob_store_for
from gateway.db import Database
from gateway.model import Direction, EvidenceType, IllegalTransition, Status
from gateway.store import (
    Answer,
    AttachmentRecord,
    EvidenceRecord,
    MessageIdTaken,
    MessageRecord,
    MessageStore,
    MissingBlob,
    NotRecipient,
    StoreError,
    SubmissionOutcome,
    SubmissionRecord,
    UnknownMessage,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_store(db: Database, data_dir: Path) -> MessageStore:
    blobs = blob_store_for(db, data_dir)
    return MessageStore(db, blobs, AuditLog(db, origin="test.rogatory/store"), gateway_id="ES-GW")


@pytest.fixture()
def store(db: Database, tmp_path: Path) -> MessageStore:
    return make_store(db, tmp_path / "data")


def submission(
    blobs: BlobStore,
    message_id: str | None,
    *,
    sender: str = "ES-MJ",
    recipient: str = "AR-MPF",
    authority: str | None = None,
    status: Status = Status.ACCEPTED,
    direction: Direction = Direction.OUTBOUND,
    content: bytes = b"",
    reason: str | None = None,
) -> SubmissionRecord:
    """A submission with its envelope, two attachments and its evidence already in ``blobs``."""
    envelope = blobs.put(b"<Envelope id='%s'/>" % str(message_id).encode() + content)
    if message_id is None:
        answer = Answer(400, b'{"title":"unreadable"}', "application/problem+json")
        return SubmissionRecord(sender, envelope.sha256, answer, reason=reason)
    attachments = tuple(
        AttachmentRecord(
            f"part-{n}@{message_id}",
            "application/pdf",
            ref.size,
            ref.sha256,
            f"annex-{n}.pdf",
            {"indication": "TOTAL-PASSED"},
        )
        for n, ref in enumerate([blobs.put(b"%PDF annex 1" + content), blobs.put(b"%PDF 2")])
    )
    rejected = status is Status.REJECTED
    kind = EvidenceType.SUBMISSION_REJECTION if rejected else EvidenceType.SUBMISSION_ACCEPTANCE
    evidence_xml = blobs.put(
        b"<Evidence %s for %s/>" % (kind.value.encode(), envelope.sha256.encode())
    )
    evidence = EvidenceRecord(
        f"ev-{message_id}", kind, datetime.now(UTC), evidence_xml.sha256, envelope.sha256
    )
    message = MessageRecord(
        message_id,
        direction,
        sender,
        recipient,
        "request",
        envelope.sha256,
        conversation_id=f"case-{message_id}",
        request_type="mutual-legal-assistance",
        legal_basis="UNTOC art. 18",
        verdict={"indication": "TOTAL-PASSED", "reasons": []},
    )
    answer = Answer(422 if rejected else 202, blobs.read(evidence_xml.sha256), "application/xml")
    return SubmissionRecord(
        authority or sender,
        envelope.sha256,
        answer,
        message_id,
        message,
        status,
        reason,
        attachments,
        (evidence,),
    )


def audit_kinds(store: MessageStore, message_id: str) -> list[str]:
    return [entry.kind for entry in store.audit.entries_for(message_id)]


def row_counts(db: Database) -> dict[str, int]:
    tables = ["submissions", "messages", "status_history", "attachments", "evidences"]
    tables += ["audit_entries"]
    with db.begin_read() as connection:
        return {
            table: connection.execute(
                sa.select(sa.func.count()).select_from(sa.table(table))
            ).scalar_one()
            for table in tables
        }


def test_an_accepted_submission_is_recorded_with_history_and_audit(
    store: MessageStore, key: ec.EllipticCurvePrivateKey
) -> None:
    record = submission(store.blobs, "ES-2026-0001")
    outcome = store.record_submission(record)
    assert not outcome.replayed and outcome.same_envelope and not outcome.conflicting
    assert outcome.first.answer == record.answer and outcome.first.message_id == "ES-2026-0001"
    message = store.message("ES-2026-0001")
    assert message is not None and message.status is Status.ACCEPTED
    assert message.submission_id == outcome.first.submission_id
    assert (message.sender_id, message.recipient_id, message.legal_basis) == (
        "ES-MJ",
        "AR-MPF",
        "UNTOC art. 18",
    )
    assert message.verdict == {"indication": "TOTAL-PASSED", "reasons": []}
    assert message.created_at.tzinfo is UTC and message.updated_at >= message.created_at
    history = store.history("ES-2026-0001")
    assert [c.status for c in history] == [Status.RECEIVED, Status.ACCEPTED]
    for change, kind in zip(history, ["message.received", "message.accepted"], strict=True):
        assert change.audit_index is not None and change.at.tzinfo is UTC
        entry = store.audit.entry(change.audit_index)
        assert (entry.kind, entry.message_id) == (kind, "ES-2026-0001")
    assert store.audit.entry(history[0].audit_index or 0).actor == "ES-MJ"
    assert audit_kinds(store, "ES-2026-0001") == [
        "message.received",
        "message.accepted",
        "evidence.issued",
    ]
    assert store.attachments("ES-2026-0001") == list(record.attachments)
    [evidence] = store.evidences("ES-2026-0001")
    assert evidence == record.evidences[0]
    assert store.first_answer("ES-MJ", "ES-2026-0001") == outcome.first
    store.audit.checkpoint(key)
    report = verify_store(store.db, key.public_key())
    assert report.ok and report.entries == 3, report.summary()


def test_a_rejected_submission_keeps_its_reason(store: MessageStore) -> None:
    record = submission(store.blobs, "ES-2026-0002", status=Status.REJECTED, reason="bad seal")
    store.record_submission(record)
    history = store.history("ES-2026-0002")
    assert [(c.status, c.reason) for c in history] == [
        (Status.RECEIVED, None),
        (Status.REJECTED, "bad seal"),
    ]
    assert store.audit.entries_for("ES-2026-0002")[1].details["reason"] == "bad seal"
    assert store.evidences("ES-2026-0002")[0].type is EvidenceType.SUBMISSION_REJECTION
    with pytest.raises(IllegalTransition):
        store.transition("ES-2026-0002", Status.QUEUED, actor="ES-GW")


def test_an_inbound_message_is_delivered_at_once(store: MessageStore) -> None:
    inbound = submission(
        store.blobs,
        "AR-2026-0001",
        sender="AR-MPF",
        recipient="ES-MJ",
        authority="AR-GW",
        status=Status.DELIVERED,
        direction=Direction.INBOUND,
    )
    store.record_submission(inbound)
    assert [c.status for c in store.history("AR-2026-0001")] == [Status.RECEIVED, Status.DELIVERED]
    assert [m.message_id for m in store.inbox("ES-MJ")] == ["AR-2026-0001"]
    before = row_counts(store.db)
    accepted_inbound = submission(
        store.blobs, "AR-2026-0002", direction=Direction.INBOUND, status=Status.ACCEPTED
    )
    with pytest.raises(IllegalTransition):
        store.record_submission(accepted_inbound)
    assert row_counts(store.db) == before


def test_a_submission_without_a_readable_id_keeps_only_its_answer(store: MessageStore) -> None:
    first = store.record_submission(submission(store.blobs, None, reason="not XML"))
    second = store.record_submission(submission(store.blobs, None, content=b"other"))
    assert not first.replayed and not second.replayed
    assert first.first.submission_id != second.first.submission_id
    counts = row_counts(store.db)
    assert (counts["submissions"], counts["messages"], counts["audit_entries"]) == (2, 0, 2)
    entry = store.audit.entry(0)
    assert (entry.kind, entry.actor, entry.details["reason"]) == (
        "submission.refused",
        "ES-MJ",
        "not XML",
    )
    with pytest.raises(StoreError):
        store.record_submission(
            SubmissionRecord(
                "ES-MJ",
                first.first.envelope_sha256,
                first.first.answer,
                evidences=submission(store.blobs, "x").evidences,
            )
        )


def test_a_replay_returns_the_first_answer_and_stores_nothing(store: MessageStore) -> None:
    record = submission(store.blobs, "ES-2026-0003")
    first = store.record_submission(record)
    before = row_counts(store.db)
    later_answer = Answer(202, b"<Evidence issued later/>", "application/xml")
    again = store.record_submission(replace(record, answer=later_answer))
    assert again.replayed and again.same_envelope and not again.conflicting
    assert again.first == first.first and again.first.answer == record.answer
    assert row_counts(store.db) == before


def test_a_replay_with_different_content_is_reported(store: MessageStore) -> None:
    store.record_submission(submission(store.blobs, "ES-2026-0004"))
    before = row_counts(store.db)
    changed = store.record_submission(submission(store.blobs, "ES-2026-0004", content=b"edited"))
    assert changed.replayed and not changed.same_envelope and changed.conflicting
    assert changed.first.answer.http_status == 202
    assert row_counts(store.db) == before
    assert len(store.attachments("ES-2026-0004")) == 2


def test_a_message_id_taken_by_another_authority_is_refused(store: MessageStore) -> None:
    store.record_submission(submission(store.blobs, "ES-2026-0005"))
    before = row_counts(store.db)
    with pytest.raises(MessageIdTaken):
        store.record_submission(submission(store.blobs, "ES-2026-0005", sender="BR-MJ"))
    assert row_counts(store.db) == before
    assert store.first_answer("BR-MJ", "ES-2026-0005") is None


def test_bytes_must_be_stored_before_the_record(store: MessageStore) -> None:
    record = submission(store.blobs, "ES-2026-0006")
    missing = EvidenceRecord(
        "ev-x",
        EvidenceType.SUBMISSION_ACCEPTANCE,
        datetime.now(UTC),
        "0" * 64,
        record.envelope_sha256,
    )
    with pytest.raises(MissingBlob):
        store.record_submission(replace(record, evidences=(missing,)))
    assert row_counts(store.db)["submissions"] == 0


def test_concurrent_submissions_with_the_same_id_make_one_message(store: MessageStore) -> None:
    records = [submission(store.blobs, "ES-2026-0007", content=b"%d" % (n % 2)) for n in range(6)]
    outcomes: list[SubmissionOutcome] = []
    posted: list[SubmissionRecord] = []
    barrier = threading.Barrier(len(records))
    lock = threading.Lock()

    def post(record: SubmissionRecord) -> None:
        barrier.wait()
        outcome = store.record_submission(record)
        with lock:
            outcomes.append(outcome)
            posted.append(record)

    threads = [threading.Thread(target=post, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 6
    assert sum(not o.replayed for o in outcomes) == 1
    assert len({o.first for o in outcomes}) == 1
    winner = next(o.first for o in outcomes if not o.replayed)
    for record, outcome in zip(posted, outcomes, strict=True):
        assert outcome.same_envelope == (record.envelope_sha256 == winner.envelope_sha256)
    counts = row_counts(store.db)
    assert (counts["submissions"], counts["messages"], counts["status_history"]) == (1, 1, 2)


def test_transitions_follow_the_lifecycle(store: MessageStore) -> None:
    store.record_submission(submission(store.blobs, "ES-2026-0009"))
    path = [
        Status.QUEUED,
        Status.SENDING,
        Status.WAITING_FOR_RETRY,
        Status.SENDING,
        Status.RELAYED,
        Status.DELIVERED,
    ]
    for status in path:
        reason = "timeout" if status is Status.WAITING_FOR_RETRY else None
        change = store.transition("ES-2026-0009", status, actor="dispatcher", reason=reason)
        assert change.status is status and change.audit_index is not None
    history = store.history("ES-2026-0009")
    assert [c.status for c in history] == [Status.RECEIVED, Status.ACCEPTED, *path]
    assert history[4].reason == "timeout"
    kinds = audit_kinds(store, "ES-2026-0009")
    assert kinds[-2:] == ["message.relayed", "message.delivered"]
    assert "message.waiting-for-retry" in kinds
    assert [store.audit.entry(c.audit_index or 0).kind for c in history] == [
        f"message.{c.status.value}" for c in history
    ]
    message = store.message("ES-2026-0009")
    assert message is not None and message.status is Status.DELIVERED


@pytest.mark.parametrize(
    "to", [Status.RETRIEVED, Status.DELIVERED, Status.RECEIVED, Status.REJECTED, Status.SENDING]
)
def test_illegal_transitions_are_refused_and_write_nothing(store: MessageStore, to: Status) -> None:
    store.record_submission(submission(store.blobs, "ES-2026-0010"))
    before = row_counts(store.db)
    with pytest.raises(IllegalTransition):
        store.transition("ES-2026-0010", to, actor="dispatcher")
    assert row_counts(store.db) == before
    message = store.message("ES-2026-0010")
    assert message is not None and message.status is Status.ACCEPTED
    with pytest.raises(UnknownMessage):
        store.transition("nope", Status.QUEUED, actor="dispatcher")


def deliver(store: MessageStore, message_id: str, sender: str, recipient: str) -> None:
    store.record_submission(submission(store.blobs, message_id, sender=sender, recipient=recipient))
    for status in (Status.QUEUED, Status.SENDING, Status.DELIVERED):
        store.transition(message_id, status, actor="dispatcher")


def test_inbox_and_visibility_per_authority(store: MessageStore) -> None:
    deliver(store, "m1", "ES-MJ", "AR-MPF")
    deliver(store, "m2", "BR-MJ", "AR-MPF")
    store.record_submission(submission(store.blobs, "m3", sender="CL-MJ", recipient="AR-MPF"))
    deliver(store, "m4", "AR-MPF", "ES-MJ")
    deliver(store, "m5", "ES-MJ", "AR-MPF")
    assert [m.message_id for m in store.inbox("AR-MPF")] == ["m1", "m2", "m5"]
    assert [m.message_id for m in store.inbox("AR-MPF", status=Status.ACCEPTED)] == ["m3"]
    assert [m.message_id for m in store.inbox("AR-MPF", status=None)] == ["m1", "m2", "m3", "m5"]
    assert [m.message_id for m in store.inbox("AR-MPF", limit=2)] == ["m1", "m2"]
    assert [m.message_id for m in store.inbox("AR-MPF", limit=2, after="m2")] == ["m5"]
    assert store.inbox("AR-MPF", after="m5") == []
    assert [m.message_id for m in store.inbox("ES-MJ")] == ["m4"]
    assert [m.message_id for m in store.messages_of("ES-MJ")] == ["m1", "m4", "m5"]
    assert [m.message_id for m in store.messages_of("BR-MJ")] == ["m2"]
    assert store.messages_of("XX-NONE") == []
    assert store.visible_to("m1", "ES-MJ") and store.visible_to("m1", "AR-MPF")
    assert not store.visible_to("m1", "BR-MJ") and not store.visible_to("nope", "ES-MJ")
    with pytest.raises(StoreError):
        store.inbox("AR-MPF", limit=0)


def test_retrieval_moves_to_retrieved_with_its_evidence(store: MessageStore) -> None:
    deliver(store, "m6", "ES-MJ", "AR-MPF")
    xml = store.blobs.put(b"<Evidence Retrieval m6/>")
    message = store.message("m6")
    assert message is not None
    retrieval = EvidenceRecord(
        "ev-r-m6",
        EvidenceType.RETRIEVAL,
        datetime.now(UTC) + timedelta(1),
        xml.sha256,
        message.envelope_sha256,
    )
    before = row_counts(store.db)
    with pytest.raises(NotRecipient):
        store.record_retrieval("m6", "ES-MJ", retrieval)
    wrong = replace(retrieval, type=EvidenceType.DELIVERY)
    with pytest.raises(StoreError):
        store.record_retrieval("m6", "AR-MPF", wrong)
    assert row_counts(store.db) == before
    change = store.record_retrieval("m6", "AR-MPF", retrieval)
    assert change.status is Status.RETRIEVED
    assert store.evidences("m6")[-1] == retrieval
    assert audit_kinds(store, "m6")[-2:] == ["message.retrieved", "evidence.issued"]
    assert store.audit.entry(change.audit_index or 0).actor == "AR-MPF"
    with pytest.raises(IllegalTransition):
        store.record_retrieval("m6", "AR-MPF", replace(retrieval, evidence_id="ev-r2"))
    assert store.inbox("AR-MPF") == []


def test_add_evidence_is_audited(store: MessageStore) -> None:
    store.record_submission(submission(store.blobs, "m7"))
    xml = store.blobs.put(b"<Evidence RelayAcceptance/>")
    relay = EvidenceRecord(
        "ev-relay", EvidenceType.RELAY_ACCEPTANCE, datetime.now(UTC), xml.sha256, "ab" * 32
    )
    index = store.add_evidence("m7", relay, actor="AR-GW")
    entry = store.audit.entry(index)
    assert (entry.kind, entry.actor, entry.details["type"]) == (
        "evidence.issued",
        "AR-GW",
        "RelayAcceptance",
    )
    with pytest.raises(UnknownMessage):
        store.add_evidence("nope", relay, actor="AR-GW")


RECORDER = """
import sys
from pathlib import Path
from gateway.db import Database
from tests.test_store import make_store, submission
url, data_dir, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
db = Database.from_url(url)
store = make_store(db, data_dir)
i = 0
while True:
    message_id = f"{name}-{i}"
    store.record_submission(submission(store.blobs, message_id, content=b"%d" % i))
    print(message_id, flush=True)
    i += 1
"""


def test_a_process_killed_while_recording_leaves_no_half_written_message(
    db_url: str, store: MessageStore, tmp_path: Path, key: ec.EllipticCurvePrivateKey
) -> None:
    rng = random.Random(402)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    committed: list[str] = []
    for round_ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", RECORDER, db_url, str(tmp_path / "data"), f"doomed{round_}"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        time.sleep(rng.uniform(1.5, 2.5))  # start-up, then somewhere in the recording loop
        os.kill(process.pid, signal.SIGKILL)
        out, _ = process.communicate(timeout=30)
        committed += out.split()
        store.record_submission(submission(store.blobs, f"after-{round_}"))
    assert committed, "the recorder never got to record"
    with store.db.begin_read() as connection:
        ids = list(connection.execute(sa.text("SELECT message_id FROM messages")).scalars())
        orphans = connection.execute(
            sa.text(
                "SELECT count(*) FROM submissions s LEFT JOIN messages m ON m.submission_id = s.id "
                "WHERE m.message_id IS NULL"
            )
        ).scalar_one()
    assert set(committed) <= set(ids) and orphans == 0
    for message_id in ids:
        assert [c.status for c in store.history(message_id)] == [Status.RECEIVED, Status.ACCEPTED]
        assert audit_kinds(store, message_id) == [
            "message.received",
            "message.accepted",
            "evidence.issued",
        ]
        assert len(store.attachments(message_id)) == 2 and len(store.evidences(message_id)) == 1
    store.audit.checkpoint(key)
    report = verify_store(store.db, key.public_key())
    assert report.ok and report.entries == 3 * len(ids), report.summary()
