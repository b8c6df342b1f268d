"""The dispatcher: takes due work from the outbox, sends it through adapters, records the outcome.

One ``run_once`` claims up to ``batch`` rows under a lease and sends them on
``concurrency`` threads. For each message:

- the channel is looked up in the directory as it is now (credentials, pins);
- the adapter sends the original envelope bytes and attachments;
- a peer gateway's answer counts only once ``gateway.peer_evidence`` has
  recognised its signed evidence (Delivery -> delivered); an e-mail or SFTP
  hand-over is proven by our own signed RelayAcceptance (-> relayed);
- a transient error waits (exponential backoff with jitter) and is tried
  again, until ``max_attempts``; a permanent error, or the last attempt,
  fails the message with the reason and our signed RelayFailure evidence.

Rows of kind "evidence" carry one of our evidences (a Retrieval) back to the
peer gateway a message came from; rows of kind "notice" carry a signed
channel-override notice to the channel a reply's conversation came by
(gateway.notice_sender). Either, given up, is recorded on its own and never
fails the message it is about. Nothing here raises for what a peer or a
server answers: every outcome is written to the store and the audit log.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, Protocol

from adapters.base import (
    Adapter,
    Outgoing,
    OutgoingPart,
    PermanentError,
    Receipt,
    TransientError,
)
from gateway.authorities import AuthorityDirectory
from gateway.blobs import BlobStore
from gateway.channels import Channel, GatewayChannel, PeerGateway, describe
from gateway.evidence import (
    EvidenceError,
    EvidenceReason,
    GatewayRef,
    MessageRef,
    build_evidence,
    sign_evidence,
)
from gateway.model import EvidenceType, Status
from gateway.notice_sender import NoticeSender
from gateway.outbox import Backoff, Claim, LeaseLost, Outbox
from gateway.peer_evidence import ADVANCES, recognise
from gateway.routing import ChannelGone, channel_now
from gateway.store import MessageStore
from gateway.store_records import EvidenceRecord, Message
from signing.keys import Signer
from signing.timestamp import TimeStamper
from signing.trust import TrustEngine

log = logging.getLogger("rogatory.dispatcher")


class Transports(Protocol):
    """Where adapters come from (gateway.transports builds the real ones)."""

    def adapter(self, channel: Channel) -> Adapter: ...

    def send_evidence(self, peer: PeerGateway, message_id: str, evidence: bytes) -> Receipt: ...


@dataclass
class DispatchStats:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    postponed: int = 0  # notices waiting for their reply to leave
    withdrawn: int = 0  # notices about a reply that failed
    outcomes: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        """Count one outcome line of ``Dispatcher.handle`` ("sent: ...", "retry: ..." ...)."""
        self.outcomes.append(outcome)
        kind = outcome.split(":", 1)[0]
        if kind == "sent":
            self.sent += 1
        elif kind == "retry":
            self.retried += 1
        elif kind == "failed":
            self.failed += 1
        elif kind == "postponed":
            self.postponed += 1
        elif kind == "withdrawn":
            self.withdrawn += 1
        else:
            self.lost += 1


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(
        self,
        store: MessageStore,
        blobs: BlobStore,
        directory: AuthorityDirectory,
        engine: TrustEngine | None,
        signer: Signer,
        issuer: GatewayRef,
        transports: Transports,
        *,
        backoff: Backoff | None = None,
        batch: int = 32,
        concurrency: int = 8,
        lease: timedelta = timedelta(minutes=5),
        owner: str | None = None,
        timestamper: TimeStamper | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.outbox = Outbox(store, clock=clock)
        self.blobs = blobs
        self.directory = directory
        self.engine = engine
        self.signer = signer
        self.issuer = issuer
        self.transports = transports
        self.backoff = backoff or Backoff()
        self.batch = batch
        self.concurrency = concurrency
        self.lease = lease
        self.owner = owner or default_owner()
        self.timestamper = timestamper
        self.clock = clock
        self.notices = NoticeSender(
            self.outbox, blobs, directory, signer, issuer, transports,
            timestamper=timestamper, clock=clock, backoff=self.backoff,
        )  # fmt: skip
        self._pool: ThreadPoolExecutor | None = None

    def run_once(self) -> DispatchStats:
        """Claim one batch of due work and finish all of it; what happened, counted.

        ``rogatory worker`` does not wait for a whole batch: gateway.worker keeps
        ``concurrency`` claims in flight and claims more as each one ends.
        """
        stats = DispatchStats()
        claims = self.claim(self.batch)
        stats.claimed = len(claims)
        if not claims:
            return stats
        # Notices last: one claimed with its reply then sees how the reply's send went.
        outcomes = self._handle_all([c for c in claims if c.kind != "notice"])
        outcomes += self._handle_all([c for c in claims if c.kind == "notice"])
        for outcome in outcomes:
            stats.count(outcome)
        return stats

    def claim(self, limit: int) -> list[Claim]:
        """Up to ``limit`` rows of due work, leased to this dispatcher."""
        return self.outbox.claim(self.owner, limit, self.lease)

    def _handle_all(self, claims: list[Claim]) -> list[str]:
        if self.concurrency <= 1 or len(claims) <= 1:
            return [self.handle(c) for c in claims]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, "rogatory-dispatch")
        return list(self._pool.map(self.handle, claims))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        close = getattr(self.transports, "close", None)
        if close is not None:
            close()

    # --- one claim ---

    def handle(self, claim: Claim) -> str:
        """Send one claimed row and record the outcome; a line saying what happened."""
        try:
            if claim.kind == "evidence":
                return self._send_evidence(claim)
            if claim.kind == "notice":
                return self._send_notice(claim)
            return self._send_message(claim)
        except LeaseLost as exc:
            log.warning("%s", exc)
            return f"lost: {exc}"
        except Exception as exc:  # a bug or an unexpected failure: never lose the message
            log.exception("dispatching %s failed", claim.message_id)
            return self._transient(claim, f"internal error: {exc.__class__.__name__}: {exc}")

    def _send_message(self, claim: Claim) -> str:
        message = self.store.message(claim.message_id)
        assert message is not None  # the outbox row's foreign key
        try:
            channel = channel_now(self.directory, message.recipient_id, claim.channel)
        except ChannelGone as exc:
            return self._permanent(claim, message, str(exc))
        try:
            adapter = self.transports.adapter(channel)
            receipt = adapter.send(self._outgoing(message))
        except TransientError as exc:
            return self._transient(claim, str(exc), message)
        except PermanentError as exc:
            return self._permanent(claim, message, str(exc))
        if isinstance(channel, GatewayChannel):
            return self._peer_answered(claim, message, channel, receipt)
        relay = self._our_evidence(
            EvidenceType.RELAY_ACCEPTANCE, message,
            details=f"handed to {describe(channel)}: {receipt.reference}",
        )  # fmt: skip
        self.outbox.done(
            claim, (Status.RELAYED,), (relay,), reason=f"handed to {describe(channel)}"
        )
        return f"sent: {message.message_id} relayed by {describe(channel)}"

    def _peer_answered(
        self, claim: Claim, message: Message, channel: GatewayChannel, receipt: Receipt
    ) -> str:
        peer = self.directory.gateway(channel.gateway)
        if peer is None:
            return self._permanent(claim, message, f"gateway {channel.gateway} is not listed")
        problems: list[str] = []
        for data in receipt.evidences:
            staged: dict[str, bytes] = {}  # written with the outcome, in its transaction
            try:
                found = recognise(data, peer, message, self.engine, self.blobs, staged)
            except EvidenceError as exc:
                problems.append(str(exc))
                continue
            evidence = found.evidence
            if evidence.type.negative:
                reasons = "; ".join(f"{r.code}: {r.text}" for r in evidence.reasons)
                self.outbox.fail(
                    claim, f"gateway {peer.id} issued {evidence.type.value}: {reasons}",
                    (found.record,), blobs=staged,
                )  # fmt: skip
                return f"failed: {message.message_id} {evidence.type.value}"
            advance = ADVANCES.get(evidence.type)
            if advance is None or Status.SENDING not in advance[0]:
                problems.append(f"a {evidence.type.value} evidence does not answer a send")
                continue
            self.outbox.done(
                claim, advance[1], (found.record,),
                reason=f"{evidence.type.value} from gateway {peer.id}", blobs=staged,
            )  # fmt: skip
            return f"sent: {message.message_id} {advance[1][-1].value} by gateway {peer.id}"
        detail = "; ".join(problems) or "no evidence in the answer"
        return self._transient(
            claim, f"gateway {peer.id} answered without a valid evidence: {detail}", message
        )

    def _send_evidence(self, claim: Claim) -> str:
        key = json.loads(claim.channel)
        peer = self.directory.gateway(str(key.get("gateway")))
        record = next(
            (e for e in self.store.evidences(claim.message_id)
             if e.evidence_id == claim.evidence_id),
            None,
        )  # fmt: skip
        if peer is None or record is None:
            reason = (
                f"gateway {key.get('gateway')} is no longer listed"
                if peer is None
                else f"evidence {claim.evidence_id} is not stored"
            )
            self.outbox.fail(claim, reason)
            return f"failed: {reason}"
        try:
            self.transports.send_evidence(peer, claim.message_id, self.blobs.read(record.sha256))
        except TransientError as exc:
            return self._transient(claim, str(exc))
        except PermanentError as exc:
            self.outbox.fail(claim, str(exc))
            return f"failed: {exc}"
        self.outbox.done(claim, details={"to": peer.id})
        return f"sent: {record.type.value} of {claim.message_id} to gateway {peer.id}"

    def _send_notice(self, claim: Claim) -> str:
        """A channel-override notice (gateway.notice_sender); its failure is its own alone."""
        try:
            return self.notices.send(claim)
        except TransientError as exc:
            return self._transient(claim, str(exc))
        except PermanentError as exc:
            self.outbox.fail(claim, str(exc))
            return f"failed: notice {claim.evidence_id} about {claim.message_id}: {exc}"

    # --- outcomes ---

    def _transient(self, claim: Claim, reason: str, message: Message | None = None) -> str:
        if claim.attempt >= self.backoff.max_attempts:
            if message is None and claim.kind == "message":
                message = self.store.message(claim.message_id)
            text = f"gave up after {claim.attempt} attempts: {reason}"
            if message is None:
                self.outbox.fail(claim, text)
                return f"failed: {text}"
            return self._permanent(claim, message, text)
        when = self.outbox.retry(claim, reason, self.backoff.delay(claim.attempt))
        return f"retry: {claim.message_id} at {when.isoformat(timespec='seconds')}: {reason}"

    def _permanent(self, claim: Claim, message: Message, reason: str) -> str:
        failure = self._our_evidence(
            EvidenceType.RELAY_FAILURE, message,
            reasons=(EvidenceReason("relay-failed", reason[:1000]),),
        )  # fmt: skip
        self.outbox.fail(claim, reason, (failure,))
        return f"failed: {message.message_id}: {reason}"

    def _our_evidence(
        self,
        kind: EvidenceType,
        message: Message,
        *,
        reasons: tuple[EvidenceReason, ...] = (),
        details: str | None = None,
    ) -> EvidenceRecord:
        ref = MessageRef.of_stored(message)
        evidence = build_evidence(
            kind, ref, self.issuer, reasons=reasons, details=details, clock=self.clock
        )
        signed = sign_evidence(evidence, self.signer, timestamper=self.timestamper)
        blob = self.blobs.put(signed)
        return EvidenceRecord(
            evidence.evidence_id, kind, evidence.event_time, blob.sha256, message.envelope_sha256
        )

    def _outgoing(self, message: Message) -> Outgoing:
        parts = tuple(
            OutgoingPart(
                content_id=a.content_id,
                media_type=a.media_type,
                file_name=a.file_name,
                size=a.size,
                sha256=a.sha256,
                open=self._opener(a.sha256),
            )
            for a in self.store.attachments(message.message_id)
        )
        return Outgoing(
            message_id=message.message_id,
            envelope=self.blobs.read(message.envelope_sha256),
            attachments=parts,
            sender_id=message.sender_id,
            recipient_id=message.recipient_id,
        )

    def _opener(self, sha256: str) -> Callable[[], BinaryIO]:
        def open_blob() -> BinaryIO:
            return io.BufferedReader(_ChunkReader(self.blobs.open_chunks(sha256)))

        return open_blob


class _ChunkReader(io.RawIOBase):
    """A blob's chunks as a readable stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
