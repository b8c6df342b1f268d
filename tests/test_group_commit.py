"""Group commit: writers that arrive together share a transaction; each gets its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.audit_verify import verify_store
from gateway.db import Database
from gateway.group_commit import GroupCommit
from gateway.store import MessageIdTaken, MessageStore, SubmissionOutcome
from tests.test_store import make_store, row_counts, submission

THREADS = 12


def run_together(count: int, work: object) -> list[object]:
    """``work(n)`` on ``count`` threads released at once; what each returned or raised."""
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def one(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)  # type: ignore[operator]
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a writer was left waiting"
    return results


class Recorder:
    """A fake database: records the groups it was given, slow enough for writers to queue."""

    def __init__(self, refuse: int | None = None) -> None:
        self.groups: list[list[int]] = []
        self.singles: list[int] = []
        self.refuse = refuse

    def write_all(self, items: Sequence[int]) -> list[str]:
        time.sleep(0.01)
        if self.refuse in items:
            raise ValueError("the group is rolled back")
        self.groups.append(list(items))
        return [f"wrote {i}" for i in items]

    def write_one(self, item: int) -> str:
        time.sleep(0.002)
        if item == self.refuse:
            raise ValueError(f"item {item} is refused")
        self.singles.append(item)
        return f"wrote {item}"


def test_writers_that_arrive_together_share_a_write_and_each_gets_its_own_outcome() -> None:
    db = Recorder()
    group = GroupCommit(db.write_all, db.write_one)
    results = run_together(THREADS, group.write)
    assert results == [f"wrote {n}" for n in range(THREADS)]
    written = sorted(db.singles + [i for g in db.groups for i in g])
    assert written == list(range(THREADS))  # each exactly once
    assert db.groups and max(len(g) for g in db.groups) > 1


def test_a_writer_alone_writes_on_its_own_at_once() -> None:
    db = Recorder()
    group = GroupCommit(db.write_all, db.write_one)
    assert [group.write(n) for n in range(3)] == ["wrote 0", "wrote 1", "wrote 2"]
    assert db.groups == [] and db.singles == [0, 1, 2]


def test_one_refused_item_fails_only_its_own_writer() -> None:
    db = Recorder(refuse=5)
    group = GroupCommit(db.write_all, db.write_one)
    results = run_together(THREADS, group.write)
    assert isinstance(results[5], ValueError) and "item 5 is refused" in str(results[5])
    assert [r for n, r in enumerate(results) if n != 5] == [
        f"wrote {n}" for n in range(THREADS) if n != 5
    ]
    written = sorted(db.singles + [i for g in db.groups for i in g])
    assert written == [n for n in range(THREADS) if n != 5]


def test_groups_are_bounded() -> None:
    db = Recorder()
    group = GroupCommit(db.write_all, db.write_one, max_group=3)
    run_together(THREADS, group.write)
    assert all(len(g) <= 3 for g in db.groups)
    with pytest.raises(ValueError):
        GroupCommit(db.write_all, db.write_one, max_group=0)


# ---- on the real store, SQLite and PostgreSQL ---------------------------------


def test_concurrent_acceptances_are_all_recorded_and_the_log_verifies(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared: list[int] = []
    real = MessageStore._record_submissions

    def counting(self: MessageStore, items: Sequence[object]) -> list[SubmissionOutcome]:
        shared.append(len(items))
        return real(self, items)  # type: ignore[arg-type]

    monkeypatch.setattr(MessageStore, "_record_submissions", counting)
    store = make_store(db, tmp_path / "data")
    records = [submission(store.blobs, f"ES-2026-1{n:03d}") for n in range(THREADS)]
    results = run_together(THREADS, lambda n: store.record_submission(records[n]))
    assert all(isinstance(r, SubmissionOutcome) and not r.replayed for r in results)
    for record in records:
        assert store.message(record.message_id or "") is not None
    counts = row_counts(db)
    assert (counts["submissions"], counts["messages"]) == (THREADS, THREADS)
    assert verify_store(db, None).first_bad_entry is None
    assert store.audit.size() == THREADS * 3  # received, accepted, evidence issued
    assert shared, "no two acceptances shared a transaction"


def test_a_taken_id_in_a_group_refuses_only_that_submission(db: Database, tmp_path: Path) -> None:
    store = make_store(db, tmp_path / "data")
    store.record_submission(submission(store.blobs, "ES-2026-2000"))
    records = [submission(store.blobs, f"ES-2026-2{n:03d}") for n in range(1, THREADS)]
    records.insert(4, submission(store.blobs, "ES-2026-2000", sender="BR-MJ"))
    results = run_together(THREADS, lambda n: store.record_submission(records[n]))
    assert isinstance(results[4], MessageIdTaken)
    assert all(isinstance(r, SubmissionOutcome) for n, r in enumerate(results) if n != 4)
    assert row_counts(db)["messages"] == THREADS  # the first 2000 and eleven new ones
    assert verify_store(db, None).first_bad_entry is None


def test_a_replay_in_a_group_gets_the_first_answer_and_the_others_are_recorded(
    db: Database, tmp_path: Path
) -> None:
    store = make_store(db, tmp_path / "data")
    first = store.record_submission(submission(store.blobs, "ES-2026-3000"))
    records = [submission(store.blobs, f"ES-2026-3{n:03d}") for n in range(1, THREADS)]
    records.insert(4, submission(store.blobs, "ES-2026-3000", content=b"edited"))
    results = run_together(THREADS, lambda n: store.record_submission(records[n]))
    replayed = results[4]
    assert isinstance(replayed, SubmissionOutcome) and replayed.conflicting
    assert replayed.first == first.first
    assert all(isinstance(r, SubmissionOutcome) and not r.replayed for r in results[:4])
    assert row_counts(db)["messages"] == THREADS
    assert verify_store(db, None).first_bad_entry is None
