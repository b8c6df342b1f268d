"""The outbox: the dispatcher's queue, claimed under a lease, each step audited.

A row is written in the transaction that accepts its message (with, for a
reply that leaves by another channel than its conversation's, a "notice" row;
or in the one that records the retrieval whose evidence goes back), so nothing
accepted is ever without its work. Workers ``claim`` due rows under a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the one writer lock on SQLite): the
claim moves the message to ``sending``. A worker that dies leaves a lease that
runs out; the next claim takes the row again, recording ``sending ->
waiting-for-retry -> sending`` with the reason, and sends again. Senders are
idempotent at the far side (a repeated message id is answered with the first
evidence and delivered once), so a resend never delivers twice.

``done``, ``retry`` and ``fail`` finish a claim only while its lease is held
by the same owner; a claim that lost its lease (another worker took over)
changes nothing and says so.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.audit import JSON, AuditEvent
from gateway.group_commit import GroupCommit
from gateway.model import Status, allowed_next
from gateway.small_blobs import keep_small
from gateway.store import MessageStore
from gateway.store_records import EvidenceRecord, Message, outbox_table


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claim:
    """One unit of work held by ``owner`` until ``lease_until``."""

    id: str
    message_id: str
    kind: str  # "message", "evidence" or "notice"
    evidence_id: str | None  # the evidence (or notice) a row of that kind carries
    channel: str  # gateway.routing.channel_key
    attempt: int  # 1 for the first try
    owner: str
    lease_until: datetime


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, capped, times 0.5..1."""

    base_seconds: float = 2.0
    cap_seconds: float = 3600.0
    max_attempts: int = 8

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> timedelta:
        doublings = min(max(0, attempt - 1), 1000)  # 2**1024 does not fit a float
        full = min(self.cap_seconds, self.base_seconds * 2**doublings)
        return timedelta(seconds=full * (0.5 + 0.5 * rand()))


class LeaseLost(Exception):
    """The claim's lease ran out and another worker took the row (or finished it)."""


@dataclass(frozen=True)
class _Done:
    """One finished send, as ``Outbox.done`` was given it."""

    claim: Claim
    statuses: tuple[Status, ...]
    evidences: tuple[EvidenceRecord, ...]
    reason: str | None
    details: dict[str, JSON] | None
    blobs: Mapping[str, bytes]


class Outbox:
    def __init__(self, store: MessageStore, *, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.db = store.db
        self.audit = store.audit
        self._clock = clock
        self._finished: GroupCommit[_Done, None] = GroupCommit(self._done_all, self._done_one)

    # --- reading ---

    def pending(self) -> int:
        with self.db.begin_read() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count()).select_from(outbox_table)
                ).scalar_one()
            )

    def due_at(self, message_id: str, kind: str = "message") -> datetime | None:
        """When the row of ``kind`` for ``message_id`` is next due, if there is one."""
        query = sa.select(outbox_table.c.next_attempt_at).where(
            outbox_table.c.message_id == message_id, outbox_table.c.kind == kind
        )
        with self.db.begin_read() as connection:
            found: datetime | None = connection.execute(query).scalars().first()
        return found

    # --- claiming ---

    def claim(self, owner: str, limit: int, lease: timedelta) -> list[Claim]:
        """Up to ``limit`` due rows, leased to ``owner``; their messages move to sending."""
        now = self._clock()
        until = now + lease
        due = (
            sa.select(outbox_table)
            .where(
                outbox_table.c.next_attempt_at <= now,
                sa.or_(outbox_table.c.lease_until.is_(None), outbox_table.c.lease_until < now),
            )
            .order_by(outbox_table.c.next_attempt_at, outbox_table.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claims: list[Claim] = []
        with self.db.begin_write() as connection, self.audit.batch(connection):
            for row in connection.execute(due).all():
                attempt = int(row.attempts) + 1
                connection.execute(
                    outbox_table.update()
                    .where(outbox_table.c.id == row.id)
                    .values(attempts=attempt, lease_owner=owner, lease_until=until)
                )
                claim = Claim(
                    row.id, row.message_id, row.kind, row.evidence_id, row.channel,
                    attempt, owner, until,
                )  # fmt: skip
                if claim.kind == "message" and not self._to_sending(connection, claim):
                    continue
                claims.append(claim)
        return claims

    def _to_sending(self, connection: Connection, claim: Claim) -> bool:
        """Move the claimed message to sending; False (and the row dropped) if it moved on."""
        message = self.store.message_in(connection, claim.message_id)
        actor = self.store.gateway_id
        if message.status not in (Status.QUEUED, Status.WAITING_FOR_RETRY, Status.SENDING):
            # Its fate was settled meanwhile (a peer's Delivery arrived on its own): nothing
            # to send. The row goes, so it never blocks the queue.
            connection.execute(outbox_table.delete().where(outbox_table.c.id == claim.id))
            self.audit.append(
                AuditEvent("outbox.dropped", actor, claim.message_id,
                           {"outbox_id": claim.id, "status": message.status.value}),
                connection=connection,
            )  # fmt: skip
            return False
        if message.status is Status.SENDING:
            # A worker died (or stalled past its lease) while sending this message.
            reason = f"attempt {claim.attempt - 1} did not finish (worker stopped); sending again"
            message = self._moved(connection, message, Status.WAITING_FOR_RETRY, reason, actor)
        self._moved(connection, message, Status.SENDING, f"attempt {claim.attempt}", actor)
        return True

    def _moved(
        self,
        connection: Connection,
        message: Message,
        status: Status,
        reason: str | None,
        actor: str,
    ) -> Message:
        from dataclasses import replace

        if status not in allowed_next(message.direction, message.status):
            return message  # settled meanwhile (a peer's evidence came on its own): keep it
        self.store.move_in(connection, message, status, reason, actor)
        return replace(message, status=status)

    # --- finishing ---

    def done(
        self,
        claim: Claim,
        statuses: Sequence[Status] = (),
        evidences: Sequence[EvidenceRecord] = (),
        *,
        reason: str | None = None,
        details: dict[str, JSON] | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> None:
        """The send worked: the row goes, the message moves through ``statuses``.

        ``blobs`` are small evidence bytes (digest -> bytes) written in the same
        transaction (gateway.small_blobs.stage). Sends finishing at the same moment
        on other threads share the transaction and its commit (gateway.group_commit);
        LeaseLost still reaches only the claim that lost its lease.
        """
        blobs = blobs or {}
        self.store.require_blobs((e.sha256 for e in evidences), staged=blobs)
        self._finished.write(
            _Done(claim, tuple(statuses), tuple(evidences), reason, details, blobs)
        )

    def _done_all(self, items: Sequence[_Done]) -> list[None]:
        with self.db.begin_write() as connection, self.audit.batch(connection):
            for item in items:
                self._done(connection, item)
        return [None] * len(items)

    def _done_one(self, item: _Done) -> None:
        self._done_all([item])

    def _done(self, connection: Connection, item: _Done) -> None:
        claim = item.claim
        self._hold(connection, claim)
        keep_small(connection, item.blobs)
        connection.execute(outbox_table.delete().where(outbox_table.c.id == claim.id))
        message = self.store.message_in(connection, claim.message_id)
        for evidence in item.evidences:
            self.store.insert_evidence(
                connection, claim.message_id, evidence, self.store.gateway_id
            )
        for status in item.statuses:
            message = self._moved(connection, message, status, item.reason, self.store.gateway_id)
        if claim.kind != "message":
            details = {"channel": claim.channel, **(item.details or {})}
            self._item_event(connection, claim, "sent", details)

    def retry(self, claim: Claim, reason: str, delay: timedelta) -> datetime:
        """A transient failure: try again after ``delay``; returns when."""
        at = self._clock() + delay
        with self.db.begin_write() as connection, self.audit.batch(connection):
            self._hold(connection, claim)
            connection.execute(
                outbox_table.update()
                .where(outbox_table.c.id == claim.id)
                .values(next_attempt_at=at, lease_owner=None, lease_until=None,
                        last_error=reason[:2000])
            )  # fmt: skip
            text = f"{reason} (attempt {claim.attempt}; next at {at.isoformat(timespec='seconds')})"
            if claim.kind == "message":
                message = self.store.message_in(connection, claim.message_id)
                self._moved(
                    connection, message, Status.WAITING_FOR_RETRY, text[:2000],
                    self.store.gateway_id,
                )  # fmt: skip
            else:
                self._item_event(connection, claim, "retry", {"reason": text[:2000]})
        return at

    def fail(
        self,
        claim: Claim,
        reason: str,
        evidences: Sequence[EvidenceRecord] = (),
        *,
        blobs: Mapping[str, bytes] | None = None,
    ) -> None:
        """A permanent failure, or attempts used up: the message fails with ``reason``.

        For a row carrying an evidence or a notice, only that item is given up
        (an ``<kind>.undeliverable`` entry with the reason); its message stays as it is.
        ``blobs`` as for ``done``.
        """
        blobs = blobs or {}
        self.store.require_blobs((e.sha256 for e in evidences), staged=blobs)
        with self.db.begin_write() as connection, self.audit.batch(connection):
            self._hold(connection, claim)
            keep_small(connection, blobs)
            connection.execute(outbox_table.delete().where(outbox_table.c.id == claim.id))
            for evidence in evidences:
                self.store.insert_evidence(
                    connection, claim.message_id, evidence, self.store.gateway_id
                )
            if claim.kind == "message":
                message = self.store.message_in(connection, claim.message_id)
                self._moved(
                    connection, message, Status.FAILED, reason[:2000], self.store.gateway_id
                )
            else:
                self._item_event(connection, claim, "undeliverable", {"reason": reason[:2000]})

    def postpone(self, claim: Claim, reason: str, until: datetime) -> None:
        """Not yet (what it waits for has not happened): due again at ``until``.

        The attempt is given back, so waiting never uses up a row's attempts;
        ``reason`` is kept as the row's last error, with no audit entry.
        """
        with self.db.begin_write() as connection:
            self._hold(connection, claim)
            connection.execute(
                outbox_table.update()
                .where(outbox_table.c.id == claim.id)
                .values(next_attempt_at=until, lease_owner=None, lease_until=None,
                        attempts=claim.attempt - 1, last_error=reason[:2000])
            )  # fmt: skip

    def withdraw(self, claim: Claim, reason: str) -> None:
        """A row that is no longer true to send (a notice about a reply that failed): it goes,
        with a ``<kind>.withdrawn`` entry and the reason; its message stays as it is."""
        assert claim.kind != "message"
        with self.db.begin_write() as connection, self.audit.batch(connection):
            self._hold(connection, claim)
            connection.execute(outbox_table.delete().where(outbox_table.c.id == claim.id))
            self._item_event(connection, claim, "withdrawn", {"reason": reason[:2000]})

    def note(self, claim: Claim, kind: str, details: dict[str, JSON]) -> None:
        """An audit entry on the claim's message, written only while the lease is held."""
        with self.db.begin_write() as connection:
            self._hold(connection, claim)
            event = AuditEvent(kind, self.store.gateway_id, claim.message_id, details)
            self.audit.append(event, connection=connection)

    def _item_event(
        self, connection: Connection, claim: Claim, what: str, details: dict[str, JSON]
    ) -> None:
        """``<kind>.<what>`` about the evidence or notice a row carries, on its message."""
        if claim.kind == "notice":
            kind, carried = "notice", {"notice_id": claim.evidence_id}
        else:
            kind, carried = "evidence", {"evidence_id": claim.evidence_id}
        event = AuditEvent(
            f"{kind}.{what}", self.store.gateway_id, claim.message_id, {**carried, **details}
        )
        self.audit.append(event, connection=connection)

    def _hold(self, connection: Connection, claim: Claim) -> None:
        row = connection.execute(
            sa.select(outbox_table.c.lease_owner, outbox_table.c.attempts).where(
                outbox_table.c.id == claim.id
            )
        ).first()
        if row is None or row.lease_owner != claim.owner or int(row.attempts) != claim.attempt:
            raise LeaseLost(
                f"outbox row {claim.id} (message {claim.message_id}) is no longer held by "
                f"{claim.owner}"
            )
