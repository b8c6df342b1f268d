"""Sending a channel-override notice: the dispatcher's work on an outbox row of kind "notice".

Intake queues the row with the reply it speaks of, for the channel the
conversation came by (``Route.notice_by``). The notice follows the reply:

- while the reply has not left yet (queued, sending, waiting for retry), the
  row waits until shortly after the reply's next attempt, without using up
  one of its own;
- once the reply has failed, the notice would announce a reply that never
  comes: the row goes, with ``notice.withdrawn`` and the reason;
- once the reply has left (relayed, delivered ...), each attempt finds that
  channel as the reply's recipient lists it in the directory now; builds the
  notice (gateway.notice), in the conversation of the message the reply
  answers (as the other side knows it), and, the first time, signs it with
  the gateway's evidence signer, keeps it in the blob store and writes
  ``notice.issued`` on the reply (every later attempt sends those same
  bytes); hands it to that channel's adapter (``send_notice``) and, once
  taken, writes ``notice.sent`` with the notice id, channel, digest and receipt.

Failures come back as the adapters' ``TransientError`` or ``PermanentError``;
the dispatcher retries or gives up on the notice alone (``notice.retry``,
``notice.undeliverable``), never on the reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from adapters.base import OutgoingNotice, PermanentError, TransientError
from gateway.authorities import AuthorityDirectory
from gateway.blobs import BlobStore
from gateway.channels import GatewayChannel, describe
from gateway.evidence import GatewayRef
from gateway.model import Status
from gateway.notice import (
    Notice,
    NoticeChannel,
    NoticeError,
    ReplyRef,
    build_notice,
    file_name,
    sign_notice,
)
from gateway.notice_trail import ISSUED, issued
from gateway.outbox import Backoff, Claim, Outbox
from gateway.routing import ChannelGone, channel_now
from gateway.store import MessageStore
from gateway.store_records import Message
from signing.errors import SigningError
from signing.keys import Signer
from signing.timestamp import TimeStamper

if TYPE_CHECKING:
    from gateway.dispatcher import Transports

# The reply has not left yet: the notice waits for it.
NOT_YET_LEFT = frozenset({Status.ACCEPTED, Status.QUEUED, Status.SENDING, Status.WAITING_FOR_RETRY})


class NoticeSender:
    def __init__(
        self,
        outbox: Outbox,
        blobs: BlobStore,
        directory: AuthorityDirectory,
        signer: Signer,
        issuer: GatewayRef,
        transports: Transports,
        *,
        timestamper: TimeStamper | None,
        clock: Callable[[], datetime],
        backoff: Backoff | None = None,
    ) -> None:
        self.outbox = outbox
        self.store: MessageStore = outbox.store
        self.blobs = blobs
        self.directory = directory
        self.signer = signer
        self.issuer = issuer
        self.transports = transports
        self.timestamper = timestamper
        self.clock = clock
        self.backoff = backoff or Backoff()

    def send(self, claim: Claim) -> str:
        """Send the claimed notice; what happened, as the dispatcher reports it."""
        message = self.store.message(claim.message_id)
        if message is None or message.in_reply_to is None or claim.evidence_id is None:
            raise PermanentError(
                f"notice {claim.evidence_id} speaks of no reply stored as {claim.message_id}"
            )
        if message.status is Status.FAILED:
            reason = f"reply {message.message_id} failed: it will not reach the other side"
            self.outbox.withdraw(claim, reason)
            return f"withdrawn: notice {claim.evidence_id}: {reason}"
        if message.status in NOT_YET_LEFT:
            return self._postponed(claim, message)
        try:
            channel = channel_now(self.directory, message.recipient_id, claim.channel)
        except ChannelGone as exc:
            raise PermanentError(str(exc)) from None
        notice = self._notice(claim.evidence_id, message)
        document, sha256 = self._signed(claim, notice)
        adapter = self.transports.adapter(channel)
        try:
            receipt = adapter.send_notice(
                OutgoingNotice(
                    notice.notice_id, notice.in_reply_to, message.message_id, document,
                    file_name(notice.notice_id), notice.summary(),
                )
            )  # fmt: skip
        finally:
            if not isinstance(channel, GatewayChannel):  # built for this send alone
                adapter.close()
        self.outbox.done(
            claim,
            details={
                "sha256": sha256, "reply_id": message.message_id,
                "reply_channel": str(notice.channel), "to": describe(channel),
                "reference": receipt.reference,
            },
        )  # fmt: skip
        return f"sent: notice {notice.notice_id} about {message.message_id} by {describe(channel)}"

    def _postponed(self, claim: Claim, message: Message) -> str:
        """Due again shortly after the reply's own next attempt."""
        now = self.clock()
        reply_due = self.outbox.due_at(message.message_id) or now
        until = max(now, reply_due) + self.backoff.delay(1)
        reason = f"waiting for reply {message.message_id} to leave ({message.status.value})"
        self.outbox.postpone(claim, reason, until)
        when = until.isoformat(timespec="seconds")
        return f"postponed: notice {claim.evidence_id} until {when}: {reason}"

    def _notice(self, notice_id: str, message: Message) -> Notice:
        assert message.in_reply_to is not None
        route = json.loads(message.route or "{}")
        went_by = route.get("channel") or {}
        kind = str(went_by.get("kind"))
        gateway = str(went_by["gateway"]) if kind == "gateway" else None
        reason = route.get("notice_reason") or f"of the reply's route: {route.get('why')}"
        # The conversation as the other side knows it: that of the message it sent.
        asked = self.store.message(message.in_reply_to)
        conversation = asked.conversation_id if asked is not None else message.conversation_id
        try:
            return build_notice(
                notice_id, self.issuer, message.in_reply_to,
                ReplyRef(message.message_id, message.sender_id, message.recipient_id,
                         message.envelope_sha256),
                NoticeChannel(kind, gateway), str(reason),
                conversation_id=conversation, clock=self.clock,
            )  # fmt: skip
        except NoticeError as exc:
            raise PermanentError(f"notice {notice_id} cannot be built: {exc}") from None

    def _signed(self, claim: Claim, notice: Notice) -> tuple[bytes, str]:
        """The signed notice: the one issued by an earlier attempt, or a new one, kept."""
        earlier = issued(self.store.audit, claim.message_id, notice.notice_id)
        if earlier is not None and self.blobs.exists(earlier):
            return self.blobs.read(earlier), earlier
        try:
            document = sign_notice(notice, self.signer, timestamper=self.timestamper)
        except NoticeError as exc:
            raise PermanentError(f"notice {notice.notice_id} is not valid: {exc}") from None
        except SigningError as exc:  # a time-stamping authority that is down, most likely
            raise TransientError(f"notice {notice.notice_id} could not be signed: {exc}") from None
        blob = self.blobs.put(document)
        self.outbox.note(
            claim, ISSUED,
            {"notice_id": notice.notice_id, "sha256": blob.sha256, "channel": claim.channel,
             "reply_channel": str(notice.channel), "reason": notice.reason},
        )  # fmt: skip
        return document, blob.sha256
