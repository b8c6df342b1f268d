"""Small blobs in the database: one store for readers, written with the record that names them."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.blobs import BlobNotFound, FolderBlobStore, blob_store_for
from gateway.db import Database
from gateway.model import EvidenceType
from gateway.small_blobs import TieredBlobStore, keep_small
from gateway.store import MessageIdTaken, MessageStore
from gateway.store_records import EvidenceRecord
from tests.test_store import make_store, row_counts, submission


@pytest.fixture()
def tiered(db: Database, tmp_path: Path) -> TieredBlobStore:
    store = blob_store_for(db, tmp_path / "data")
    assert isinstance(store, TieredBlobStore)
    return store


def small_rows(db: Database) -> dict[str, bytes]:
    with db.begin_read() as connection:
        rows = connection.execute(sa.text("SELECT sha256, data FROM small_blobs")).all()
    return {sha256: bytes(data) for sha256, data in rows}


def test_small_bytes_go_to_the_database_and_large_ones_to_the_large_store(
    tiered: TieredBlobStore, db: Database
) -> None:
    small, large = b"<Envelope/>" * 100, b"%PDF" + bytes(300 * 1024)
    small_ref, large_ref = tiered.put(small), tiered.put(large)
    assert small_rows(db) == {small_ref.sha256: small}
    assert not tiered.large.exists(small_ref.sha256)
    assert tiered.large.exists(large_ref.sha256) and large_ref.sha256 not in small_rows(db)
    for ref, data in ((small_ref, small), (large_ref, large)):
        assert tiered.exists(ref.sha256) and tiered.size(ref.sha256) == len(data)
        assert tiered.read(ref.sha256) == data
        assert b"".join(tiered.open_chunks(ref.sha256, chunk_size=1000)) == data
    streamed = tiered.put_stream([b"part one, ", b"part two"])  # streams are never held
    assert tiered.large.exists(streamed.sha256)


def test_an_unknown_digest_is_not_found_in_either_tier(tiered: TieredBlobStore) -> None:
    unknown = "ab" * 32
    assert not tiered.exists(unknown)
    for read in (tiered.read, tiered.size, tiered.open_chunks):
        with pytest.raises(BlobNotFound):
            read(unknown)


def test_the_same_bytes_twice_keep_one_row(tiered: TieredBlobStore, db: Database) -> None:
    first, second = tiered.put(b"evidence"), tiered.put(b"evidence")
    assert first == second and list(small_rows(db)) == [first.sha256]


def test_bytes_are_never_kept_under_another_digest(db: Database) -> None:
    with pytest.raises(ValueError, match="another digest"), db.begin_write() as connection:
        keep_small(connection, {hashlib.sha256(b"one").hexdigest(): b"two"})
    assert small_rows(db) == {}


def test_staged_bytes_commit_with_the_record_that_names_them(db: Database, tmp_path: Path) -> None:
    store = make_store(db, tmp_path / "data")
    envelope = b"<Envelope id='ES-2026-0100'/> signed"
    evidence = b"<Evidence SubmissionAcceptance/>"
    staged = {hashlib.sha256(b).hexdigest(): b for b in (envelope, evidence)}
    record = submission(store.blobs, "ES-2026-0100")
    record = replace(
        record,
        envelope_sha256=hashlib.sha256(envelope).hexdigest(),
        message=replace(record.message, envelope_sha256=hashlib.sha256(envelope).hexdigest()),
        evidences=(
            EvidenceRecord(
                "ev-staged", EvidenceType.SUBMISSION_ACCEPTANCE, datetime.now(UTC),
                hashlib.sha256(evidence).hexdigest(), hashlib.sha256(envelope).hexdigest(),
            ),
        ),
        blobs=staged,
    )  # fmt: skip
    store.record_submission(record)
    assert {d: small_rows(db)[d] for d in staged} == staged
    message = store.message("ES-2026-0100")
    assert message is not None and store.blobs.read(message.envelope_sha256) == envelope
    assert not isinstance(store.blobs, FolderBlobStore)


def test_staged_bytes_vanish_with_a_refused_record(db: Database, tmp_path: Path) -> None:
    store: MessageStore = make_store(db, tmp_path / "data")
    store.record_submission(submission(store.blobs, "ES-2026-0101"))
    before = row_counts(db)
    taken = submission(store.blobs, "ES-2026-0101", sender="BR-MJ")
    staged = {hashlib.sha256(b"not kept").hexdigest(): b"not kept"}
    with pytest.raises(MessageIdTaken):
        store.record_submission(replace(taken, blobs=staged))
    assert row_counts(db) == before
    assert not store.blobs.exists(next(iter(staged)))
