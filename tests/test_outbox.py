"""The outbox on SQLite and PostgreSQL: claims under a lease, finishing them, backoff."""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import AuditLog
from gateway.audit_verify import verify_store
from gateway.blobs import blob_store_for
from gateway.db import Database
from gateway.model import Direction, EvidenceType, Status
from gateway.outbox import Backoff, Claim, LeaseLost, Outbox
from gateway.store import EvidenceRecord, MessageStore, MissingBlob
from gateway.store_records import OutboxEntry, outbox_table
from tests.test_store import submission

CHANNEL = '{"gateway":"gw-ar","kind":"gateway"}'
LEASE = timedelta(seconds=60)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store(db: Database, tmp_path: Path, clock: Clock) -> MessageStore:
    blobs = blob_store_for(db, tmp_path / "data")
    audit = AuditLog(db, origin="test.rogatory/outbox")
    return MessageStore(db, blobs, audit, gateway_id="ES-GW", clock=clock)


@pytest.fixture()
def outbox(store: MessageStore, clock: Clock) -> Outbox:
    return Outbox(store, clock=clock)


def queue(store: MessageStore, message_id: str, channel: str = CHANNEL) -> None:
    """An accepted outbound message, queued for ``channel`` in the same transaction."""
    record = submission(store.blobs, message_id)
    store.record_submission(replace(record, then=(Status.QUEUED,), outbox=OutboxEntry(channel)))


def evidence(store: MessageStore, message_id: str, kind: EvidenceType) -> EvidenceRecord:
    xml = store.blobs.put(b"<Evidence %s of %s/>" % (kind.value.encode(), message_id.encode()))
    message = store.message(message_id)
    assert message is not None
    return EvidenceRecord(
        f"ev-{kind.value}-{message_id}", kind, datetime.now(UTC), xml.sha256,
        message.envelope_sha256,
    )  # fmt: skip


def status(store: MessageStore, message_id: str) -> Status:
    message = store.message(message_id)
    assert message is not None
    return message.status


def steps(store: MessageStore, message_id: str) -> list[tuple[Status, str | None]]:
    return [(c.status, c.reason) for c in store.history(message_id)]


def outbox_rows(db: Database) -> list[Any]:
    with db.begin_read() as connection:
        query = sa.select(outbox_table).order_by(outbox_table.c.id)
        return list(connection.execute(query).all())


def snapshot(store: MessageStore, message_id: str) -> tuple[object, ...]:
    """Everything a finishing step could change."""
    return (
        outbox_rows(store.db),
        store.message(message_id),
        store.history(message_id),
        store.evidences(message_id),
        store.audit.size(),
    )


def assert_audit_verifies(store: MessageStore, key: ec.EllipticCurvePrivateKey) -> None:
    store.audit.checkpoint(key)
    report = verify_store(store.db, key.public_key())
    assert report.ok and report.entries == store.audit.size(), report.summary()
    # Each status change in history points at its own audit entry.
    with store.db.begin_read() as connection:
        ids = connection.execute(sa.text("SELECT message_id FROM messages")).scalars().all()
    for message_id in ids:
        for change in store.history(message_id):
            assert change.audit_index is not None
            entry = store.audit.entry(change.audit_index)
            assert (entry.kind, entry.message_id) == (f"message.{change.status.value}", message_id)
            assert entry.details.get("reason") == change.reason


# --- claiming


def test_a_claim_moves_the_message_to_sending_and_counts_the_attempt(
    store: MessageStore, outbox: Outbox, clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    queue(store, "m1")
    assert status(store, "m1") is Status.QUEUED and outbox.pending() == 1
    [claim] = outbox.claim("worker-1", 10, LEASE)
    assert claim == Claim(
        claim.id, "m1", "message", None, CHANNEL, 1, "worker-1", clock.now + LEASE
    )
    assert status(store, "m1") is Status.SENDING
    assert steps(store, "m1")[-2:] == [(Status.QUEUED, None), (Status.SENDING, "attempt 1")]
    assert store.audit.entries_for("m1")[-1].actor == "ES-GW"
    # The row stays until the claim is finished, with its lease recorded.
    [row] = outbox_rows(store.db)
    assert outbox.pending() == 1
    assert (row.attempts, row.lease_owner, row.lease_until) == (1, "worker-1", clock.now + LEASE)
    assert_audit_verifies(store, key)


def test_claims_take_due_rows_oldest_first_up_to_the_limit(
    store: MessageStore, outbox: Outbox, clock: Clock
) -> None:
    for n in range(3):
        queue(store, f"m{n}")
        clock.advance(1)
    first = outbox.claim("worker-1", 2, LEASE)
    assert [c.message_id for c in first] == ["m0", "m1"]
    assert [c.message_id for c in outbox.claim("worker-2", 2, LEASE)] == ["m2"]
    assert outbox.claim("worker-3", 2, LEASE) == []
    assert {status(store, f"m{n}") for n in range(3)} == {Status.SENDING}


def test_a_held_row_is_not_claimed_again_while_its_lease_holds(
    store: MessageStore, outbox: Outbox, clock: Clock
) -> None:
    queue(store, "m1")
    [claim] = outbox.claim("worker-1", 10, LEASE)
    before = snapshot(store, "m1")
    assert outbox.claim("worker-2", 10, LEASE) == []
    clock.advance(30)
    assert outbox.claim("worker-2", 10, LEASE) == []
    assert outbox.claim("worker-1", 10, LEASE) == []  # not even by its holder
    clock.advance(30)  # the lease ends now, and still holds
    assert outbox.claim("worker-2", 10, LEASE) == []
    assert snapshot(store, "m1") == before
    outbox.done(claim, (Status.RELAYED,))
    assert status(store, "m1") is Status.RELAYED


def test_a_lease_that_ran_out_is_taken_over_and_the_history_says_why(
    store: MessageStore, outbox: Outbox, clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    queue(store, "m1")
    [dead] = outbox.claim("worker-1", 10, LEASE)
    clock.advance(61)
    [taken] = outbox.claim("worker-2", 10, LEASE)
    assert (taken.id, taken.attempt, taken.owner) == (dead.id, 2, "worker-2")
    assert taken.lease_until == clock.now + LEASE
    assert steps(store, "m1")[-3:] == [
        (Status.SENDING, "attempt 1"),
        (Status.WAITING_FOR_RETRY, "attempt 1 did not finish (worker stopped); sending again"),
        (Status.SENDING, "attempt 2"),
    ]
    assert [e.kind for e in store.audit.entries_for("m1")][-3:] == [
        "message.sending",
        "message.waiting-for-retry",
        "message.sending",
    ]
    # The worker that lost its lease cannot finish: nothing changes.
    before = snapshot(store, "m1")
    relay = evidence(store, "m1", EvidenceType.RELAY_ACCEPTANCE)
    with pytest.raises(LeaseLost, match="no longer held by worker-1"):
        outbox.done(dead, (Status.RELAYED,), (relay,))
    assert snapshot(store, "m1") == before
    # The new holder can.
    outbox.done(taken, (Status.RELAYED,), (relay,))
    assert status(store, "m1") is Status.RELAYED and outbox.pending() == 0
    assert_audit_verifies(store, key)


def test_the_same_owner_reclaiming_after_its_lease_ran_out_loses_the_old_claim(
    store: MessageStore, outbox: Outbox, clock: Clock
) -> None:
    queue(store, "m1")
    [old] = outbox.claim("worker-1", 10, LEASE)
    clock.advance(61)
    [new] = outbox.claim("worker-1", 10, LEASE)
    assert new.attempt == 2
    before = snapshot(store, "m1")
    with pytest.raises(LeaseLost):
        outbox.fail(old, "stale")
    assert snapshot(store, "m1") == before
    outbox.fail(new, "refused")
    assert status(store, "m1") is Status.FAILED


# --- finishing


def test_done_removes_the_row_and_moves_the_message_with_its_evidences(
    store: MessageStore, outbox: Outbox, key: ec.EllipticCurvePrivateKey
) -> None:
    queue(store, "m1")
    [claim] = outbox.claim("worker-1", 10, LEASE)
    relay = evidence(store, "m1", EvidenceType.RELAY_ACCEPTANCE)
    delivery = evidence(store, "m1", EvidenceType.DELIVERY)
    audit_before = store.audit.size()
    outbox.done(
        claim, (Status.RELAYED, Status.DELIVERED), (relay, delivery), reason="Delivery from gw-ar"
    )
    assert outbox.pending() == 0 and outbox_rows(store.db) == []
    assert status(store, "m1") is Status.DELIVERED
    assert steps(store, "m1")[-3:] == [
        (Status.SENDING, "attempt 1"),
        (Status.RELAYED, "Delivery from gw-ar"),
        (Status.DELIVERED, "Delivery from gw-ar"),
    ]
    assert store.evidences("m1")[-2:] == [relay, delivery]
    new = store.audit.entries_for("m1")[-4:]
    assert [e.index for e in new] == list(range(audit_before, audit_before + 4))
    assert [(e.kind, e.details.get("evidence_id")) for e in new] == [
        ("evidence.issued", relay.evidence_id),
        ("evidence.issued", delivery.evidence_id),
        ("message.relayed", None),
        ("message.delivered", None),
    ]
    assert new[0].details["sha256"] == relay.sha256
    # Finished work is gone: never claimed again, and not finished twice.
    assert outbox.claim("worker-2", 10, LEASE) == []
    before = snapshot(store, "m1")
    with pytest.raises(LeaseLost):
        outbox.done(claim, (Status.DELIVERED,))
    assert snapshot(store, "m1") == before
    assert_audit_verifies(store, key)


def test_done_with_an_evidence_whose_bytes_are_missing_changes_nothing(
    store: MessageStore, outbox: Outbox
) -> None:
    queue(store, "m1")
    [claim] = outbox.claim("worker-1", 10, LEASE)
    before = snapshot(store, "m1")
    missing = replace(evidence(store, "m1", EvidenceType.DELIVERY), sha256="0" * 64)
    with pytest.raises(MissingBlob):
        outbox.done(claim, (Status.DELIVERED,), (missing,))
    assert snapshot(store, "m1") == before


def test_retry_waits_until_the_next_attempt_with_the_reason(
    store: MessageStore, outbox: Outbox, clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    queue(store, "m1")
    [claim] = outbox.claim("worker-1", 10, LEASE)
    at = outbox.retry(claim, "connection refused", timedelta(seconds=30))
    assert at == clock.now + timedelta(seconds=30)
    assert status(store, "m1") is Status.WAITING_FOR_RETRY
    reason = f"connection refused (attempt 1; next at {at.isoformat(timespec='seconds')})"
    assert steps(store, "m1")[-1] == (Status.WAITING_FOR_RETRY, reason)
    [row] = outbox_rows(store.db)
    assert (row.next_attempt_at, row.lease_owner, row.lease_until) == (at, None, None)
    assert row.last_error == "connection refused"
    # Finishing the same claim again is refused: it gave its row back.
    with pytest.raises(LeaseLost):
        outbox.done(claim, (Status.RELAYED,))
    clock.advance(29)
    assert outbox.claim("worker-2", 10, LEASE) == []
    clock.advance(1)
    [again] = outbox.claim("worker-2", 10, LEASE)
    assert (again.id, again.attempt) == (claim.id, 2)
    # From waiting-for-retry straight to sending: no "did not finish" step.
    assert steps(store, "m1")[-2:] == [
        (Status.WAITING_FOR_RETRY, reason),
        (Status.SENDING, "attempt 2"),
    ]
    assert_audit_verifies(store, key)


def test_fail_ends_the_message_in_failed_with_the_reason(
    store: MessageStore, outbox: Outbox, clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    queue(store, "m1")
    [claim] = outbox.claim("worker-1", 10, LEASE)
    failure = evidence(store, "m1", EvidenceType.RELAY_FAILURE)
    outbox.fail(claim, "gave up after 8 attempts: connection refused", (failure,))
    assert outbox.pending() == 0
    assert status(store, "m1") is Status.FAILED
    assert steps(store, "m1")[-1] == (
        Status.FAILED,
        "gave up after 8 attempts: connection refused",
    )
    assert store.evidences("m1")[-1] == failure
    clock.advance(3600)
    assert outbox.claim("worker-2", 10, LEASE) == []
    assert_audit_verifies(store, key)


@pytest.mark.parametrize("finish", ["done", "retry", "fail"])
def test_finishing_with_a_lost_lease_changes_nothing(
    store: MessageStore, outbox: Outbox, clock: Clock, finish: str
) -> None:
    queue(store, "m1")
    [stale] = outbox.claim("worker-1", 10, LEASE)
    clock.advance(120)
    [current] = outbox.claim("worker-2", 10, LEASE)
    before = snapshot(store, "m1")
    with pytest.raises(LeaseLost):
        if finish == "done":
            outbox.done(stale, (Status.DELIVERED,))
        elif finish == "retry":
            outbox.retry(stale, "timeout", timedelta(seconds=5))
        else:
            outbox.fail(stale, "refused")
    assert snapshot(store, "m1") == before
    [row] = outbox_rows(store.db)
    assert (row.lease_owner, row.attempts) == ("worker-2", current.attempt)


# --- our evidences sent back (outbox rows of kind "evidence")


def retrieved_inbound(store: MessageStore, message_id: str) -> EvidenceRecord:
    """An inbound message collected here, its Retrieval queued to go back to gw-ar."""
    record = submission(
        store.blobs,
        message_id,
        sender="AR-MPF",
        recipient="ES-MJ",
        authority="gw-ar",
        status=Status.DELIVERED,
        direction=Direction.INBOUND,
    )
    store.record_submission(record)
    retrieval = evidence(store, message_id, EvidenceType.RETRIEVAL)
    store.record_retrieval(message_id, "ES-MJ", retrieval, send_back=CHANNEL)
    return retrieval


def test_an_evidence_row_is_retried_then_sent_and_the_message_stays_put(
    store: MessageStore, outbox: Outbox, clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    retrieval = retrieved_inbound(store, "in1")
    history = store.history("in1")
    [claim] = outbox.claim("worker-1", 10, LEASE)
    assert (claim.kind, claim.evidence_id, claim.channel) == (
        "evidence",
        retrieval.evidence_id,
        CHANNEL,
    )
    assert store.history("in1") == history and status(store, "in1") is Status.RETRIEVED
    outbox.retry(claim, "peer down", timedelta(seconds=10))
    entry = store.audit.entries_for("in1")[-1]
    assert entry.kind == "evidence.retry"
    assert entry.details["evidence_id"] == retrieval.evidence_id
    assert str(entry.details["reason"]).startswith("peer down (attempt 1; next at ")
    assert outbox.claim("worker-1", 10, LEASE) == []
    clock.advance(10)
    [again] = outbox.claim("worker-1", 10, LEASE)
    assert again.attempt == 2
    outbox.done(again, details={"to": "gw-ar"})
    entry = store.audit.entries_for("in1")[-1]
    assert (entry.kind, dict(entry.details)) == (
        "evidence.sent",
        {"evidence_id": retrieval.evidence_id, "channel": CHANNEL, "to": "gw-ar"},
    )
    assert outbox.pending() == 0
    assert store.history("in1") == history and status(store, "in1") is Status.RETRIEVED
    assert_audit_verifies(store, key)


def test_an_undeliverable_evidence_is_audited_and_the_message_stays_put(
    store: MessageStore, outbox: Outbox
) -> None:
    retrieval = retrieved_inbound(store, "in1")
    [claim] = outbox.claim("worker-1", 10, LEASE)
    outbox.fail(claim, "gateway gw-ar is no longer listed")
    entry = store.audit.entries_for("in1")[-1]
    assert (entry.kind, dict(entry.details)) == (
        "evidence.undeliverable",
        {"evidence_id": retrieval.evidence_id, "reason": "gateway gw-ar is no longer listed"},
    )
    assert outbox.pending() == 0 and status(store, "in1") is Status.RETRIEVED


# --- concurrency


def test_concurrent_claims_never_hand_out_the_same_row(store: MessageStore, outbox: Outbox) -> None:
    messages = [f"m{n:02d}" for n in range(12)]
    for message_id in messages:
        queue(store, message_id)
    workers = 4
    barrier = threading.Barrier(workers)
    claimed: dict[str, list[Claim]] = {f"worker-{n}": [] for n in range(workers)}
    errors: list[BaseException] = []

    def work(owner: str) -> None:
        try:
            barrier.wait()
            while batch := outbox.claim(owner, 2, LEASE):
                claimed[owner].extend(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(owner,)) for owner in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    every = [c for batch in claimed.values() for c in batch]
    assert sorted(c.message_id for c in every) == messages  # each exactly once
    assert len({c.id for c in every}) == len(messages)
    assert all(c.attempt == 1 for c in every)
    for owner, batch in claimed.items():
        assert all(c.owner == owner for c in batch)
    rows = outbox_rows(store.db)
    owners = {c.id: c.owner for c in every}
    assert all(row.lease_owner == owners[row.id] and row.attempts == 1 for row in rows)
    for message_id in messages:
        sending = [s for s, _ in steps(store, message_id) if s is Status.SENDING]
        assert sending == [Status.SENDING]


# --- backoff


def test_backoff_doubles_from_its_base() -> None:
    backoff = Backoff(base_seconds=2.0, cap_seconds=3600.0)
    full = [backoff.delay(n, rand=lambda: 1.0).total_seconds() for n in range(1, 8)]
    assert full == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    assert backoff.delay(0, rand=lambda: 1.0) == timedelta(seconds=2)


def test_backoff_is_capped_even_after_very_many_attempts() -> None:
    backoff = Backoff(base_seconds=2.0, cap_seconds=300.0)
    assert backoff.delay(8, rand=lambda: 1.0) == timedelta(seconds=256)
    assert backoff.delay(9, rand=lambda: 1.0) == timedelta(seconds=300)
    for attempt in (10, 64, 1025, 5000):  # a large dispatch_max_attempts is allowed
        assert backoff.delay(attempt, rand=lambda: 1.0) == timedelta(seconds=300)
        assert backoff.delay(attempt, rand=lambda: 0.0) == timedelta(seconds=150)


def test_backoff_jitter_stays_within_half_and_all_of_the_delay() -> None:
    backoff = Backoff(base_seconds=2.0, cap_seconds=3600.0)
    assert backoff.delay(4, rand=lambda: 0.0) == timedelta(seconds=8)
    assert backoff.delay(4, rand=lambda: 0.5) == timedelta(seconds=12)
    rng = random.Random(7)
    for attempt in (1, 3, 6, 20):
        full = min(3600.0, 2.0 * 2 ** (attempt - 1))
        seen = [backoff.delay(attempt, rand=rng.random).total_seconds() for _ in range(200)]
        assert all(full / 2 <= s <= full for s in seen)
        assert max(seen) - min(seen) > full / 4  # it does vary
    # With the default source of randomness, too.
    spread = {backoff.delay(5).total_seconds() for _ in range(50)}
    assert all(16.0 <= s <= 32.0 for s in spread) and len(spread) > 1


def test_a_delivery_that_arrived_on_its_own_is_neither_repeated_nor_blocks_the_queue(
    store: MessageStore, outbox: Outbox, clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    # The peer posted its Delivery by itself while we were sending m1.
    queue(store, "m1")
    queue(store, "m2")
    claims = {c.message_id: c for c in outbox.claim("worker-1", 10, LEASE)}
    claim = claims["m1"]
    delivery = evidence(store, "m1", EvidenceType.DELIVERY)
    store.record_peer_evidence("m1", delivery, (Status.DELIVERED,), actor="gateway:gw-ar")
    # Our answer says the same: no second "delivered" step, no illegal history.
    outbox.done(claim, (Status.DELIVERED,))
    assert [s for s, _ in steps(store, "m1")].count(Status.DELIVERED) == 1
    # Had the worker died instead, the row is dropped at the next claim, not stuck in front.
    queue(store, "m3")
    [stale] = outbox.claim("worker-1", 1, LEASE)
    assert stale.message_id == "m3"
    store.record_peer_evidence(
        "m3", evidence(store, "m3", EvidenceType.DELIVERY), (Status.DELIVERED,), actor="gw-ar"
    )
    clock.advance(LEASE.total_seconds() * 2)
    claimed = outbox.claim("worker-2", 10, LEASE)
    assert [c.message_id for c in claimed] == ["m2"]  # m3's row dropped, m2 still sent
    assert status(store, "m3") is Status.DELIVERED
    assert any(e.kind == "outbox.dropped" for e in store.audit.entries_for("m3"))
    assert_audit_verifies(store, key)


# --- sends finishing together (group commit) -----------------------------------


def test_sends_finishing_together_share_a_commit_and_a_lost_lease_stays_its_own(
    store: MessageStore,
    outbox: Outbox,
    clock: Clock,
    key: ec.EllipticCurvePrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [f"g{n}" for n in range(8)]
    for message_id in ids:
        queue(store, message_id)
    claims = outbox.claim("worker-1", 10, LEASE)
    clock.advance(120)
    [taken] = outbox.claim("worker-2", 1, LEASE)  # the oldest row changed hands
    lost = next(c for c in claims if c.message_id == taken.message_id)
    groups: list[int] = []
    real = Outbox._done_all

    def counting(self: Outbox, items: Any) -> list[None]:
        groups.append(len(items))
        return real(self, items)

    monkeypatch.setattr(Outbox, "_done_all", counting)
    together = Outbox(store, clock=clock)  # built after the patch, so it groups through it
    staged = {c.message_id: b"<Evidence Delivery of %s/>" % c.message_id.encode() for c in claims}
    outcomes: dict[str, object] = {}
    start = threading.Barrier(len(claims))

    def finish(claim: Claim) -> None:
        data = staged[claim.message_id]
        sha256 = hashlib.sha256(data).hexdigest()
        message = store.message(claim.message_id)
        assert message is not None
        delivery = EvidenceRecord(
            f"ev-delivery-{claim.message_id}", EvidenceType.DELIVERY, datetime.now(UTC), sha256,
            message.envelope_sha256,
        )  # fmt: skip
        start.wait()
        try:
            together.done(claim, (Status.DELIVERED,), (delivery,), blobs={sha256: data})
            outcomes[claim.message_id] = "done"
        except LeaseLost as exc:
            outcomes[claim.message_id] = exc

    threads = [threading.Thread(target=finish, args=(c,)) for c in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert isinstance(outcomes.pop(lost.message_id), LeaseLost)
    assert outcomes == {m: "done" for m in ids if m != lost.message_id}
    for message_id in outcomes:
        assert status(store, message_id) is Status.DELIVERED
        [kept] = [e for e in store.evidences(message_id) if e.type is EvidenceType.DELIVERY]
        assert store.blobs.read(kept.sha256) == staged[message_id]  # written with the outcome
    assert status(store, lost.message_id) is Status.SENDING  # worker-2's to finish
    assert any(size > 1 for size in groups), groups
    assert_audit_verifies(store, key)
