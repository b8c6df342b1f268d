"""Notices from another gateway: taken only when it signed one about a message we sent its way.

A peer posts ``POST /api/v1/messages/{id}/notices`` when its reply to our
message ``{id}`` went by another channel than the one our message came by
(gateway.notice). The notice is kept (its bytes in the blob store, a
``notice.received`` entry on that message, so the message's notices and its
written record show it) only if:

- ``{id}`` is an outbound message of ours that was routed to that peer
  (``peer_evidence.sent_to_gateway``, as for the peer's evidences);
- its XAdES signature is TOTAL-PASSED through the trust engine, its signing
  certificate is one of the peer's ``evidence_signers``, and the issuer named
  inside is that peer;
- it is about ``{id}`` (``InReplyTo``), in its conversation, the reply it
  names is addressed to our message's sender, and the directory lists the
  reply's sender as an authority that peer serves.

The same notice posted again is answered as the first time and recorded once;
the same notice id with other bytes is a conflict. Whatever is refused is
recorded too (``notice.refused``: the reason, the status answered, and the
SHA-256 and size of what came), on the message when the peer has business
with it, else on none. The bytes themselves are kept only once their
signature verified: a refusal before that (unknown message, too large, bad
signature) holds no unverified bytes. A signature that cannot be checked now
(revocation data unavailable, INDETERMINATE/TRY_LATER) is no refusal: the
answer is 503 and a ``notice.deferred`` entry, and the peer posts it again.

The far side of an e-mail or SFTP channel may be a Rogatory gateway too: the
poller hands what such a channel brings as a notice to ``accept_channel_notice``,
with the channel's kind and the authority whose channel it came through (the
owner of the SFTP drop; for e-mail, the authority the S/MIME signer maps to).
The same checks apply, bound to that channel instead of a peer's TLS identity:
the issuer named inside is a ``[[gateway]]`` of the directory and one of its
``evidence_signers`` signed it; the message it answers went by that kind of
channel to that authority, and the reply is from that authority. Refusals
there hold only the digest and size of what came, never the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.audit import JSON, AuditEvent
from gateway.authorities import AuthorityDirectory
from gateway.channels import PeerGateway
from gateway.model import Direction
from gateway.notice import Notice, NoticeError, VerifiedNotice, read_notice
from gateway.notice_trail import RECEIVED, received
from gateway.peer_evidence import sent_to_gateway, signer_refusal
from gateway.post_refusals import PostRefused, RefusalTrail
from gateway.store import MessageStore
from gateway.store_records import Message
from signing.trust import TrustEngine

MAX_NOTICE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class NoticeTaken:
    notice: Notice
    new: bool  # False: the same notice was recorded before


class NoticeRefused(PostRefused):
    """A notice that is not taken; ``status`` and ``code`` are the HTTP answer (503: later)."""


def accept_notice(
    store: MessageStore,
    engine: TrustEngine | None,
    directory: AuthorityDirectory,
    peer: PeerGateway,
    message_id: str,
    data: bytes,
) -> NoticeTaken:
    """Verify and record a peer's notice about our ``message_id``; NoticeRefused says why not."""
    refusal = _Refusal(store, f"gateway:{peer.id}", {"gateway": peer.id}, message_id, data)
    refusal.check_size()
    message = store.message(message_id)
    if message is None or not sent_to_gateway(message, peer.id):
        raise refusal.refuse(
            404, "unknown-message", f"no message {message_id} was sent to gateway {peer.id}"
        )
    refusal.about = message_id
    with refusal.judging(keep_verified=engine is not None):
        notice = _signed_by(_read(data, engine, peer.id), peer)
        sender = notice.reply.sender_authority
        if directory.served_by(peer.id, sender) is None:
            raise NoticeError(
                f"the notice's reply is from {sender}, which the authority directory does not "
                f"list as served by gateway {peer.id}"
            )
        _answers(notice, message)
    return _record(store, refusal, notice, message_id, {"gateway": peer.id})


def accept_channel_notice(
    store: MessageStore,
    engine: TrustEngine | None,
    directory: AuthorityDirectory,
    kind: str,
    authority_id: str,
    data: bytes,
    *,
    deferred_before: bool = False,
) -> NoticeTaken:
    """Verify and record a notice that came by ``authority_id``'s ``kind`` channel (e-mail,
    SFTP) from a gateway on its far side; NoticeRefused says why not (503: try again later).

    ``deferred_before``: the poller read these bytes before and they were deferred; if
    they are deferred again, no second ``notice.deferred`` entry is written.
    """
    channel: dict[str, JSON] = {"channel": kind, "authority": authority_id}
    refusal = _Refusal(store, f"{kind}:{authority_id}", channel, "", data)
    refusal.record_deferral = not deferred_before
    refusal.check_size()
    with refusal.judging(keep_verified=False):
        verified = _read(data, engine, None)
        issuer = verified.notice.issuer.id
        gateway = directory.gateway(issuer)
        if gateway is None:
            raise NoticeError(
                f"the notice is issued by {issuer}, which is not a gateway the authority "
                "directory lists"
            )
        notice = _signed_by(verified, gateway)
    refusal.claimed = notice.in_reply_to[:255]
    message = store.message(notice.in_reply_to)
    if message is None or not sent_by_channel(message, kind, authority_id):
        raise refusal.refuse(
            404, "unknown-message",
            f"no message {notice.in_reply_to} was sent by {kind} to {authority_id}",
        )  # fmt: skip
    refusal.about = message.message_id
    with refusal.judging(keep_verified=False):
        if notice.reply.sender_authority != authority_id:
            raise NoticeError(
                f"the notice's reply is from {notice.reply.sender_authority}, but the notice "
                f"came by the {kind} channel of {authority_id}"
            )
        _answers(notice, message)
    return _record(store, refusal, notice, message.message_id, {"gateway": gateway.id, **channel})


def sent_by_channel(message: Message, kind: str, authority_id: str) -> bool:
    """Whether ``message`` is one of ours that left by a ``kind`` channel to ``authority_id``."""
    if message.direction is not Direction.OUTBOUND or message.route is None:
        return False
    channel = json.loads(message.route).get("channel", {})
    return bool(channel.get("kind") == kind and message.recipient_id == authority_id)


def _read(data: bytes, engine: TrustEngine | None, issuer: str | None) -> VerifiedNotice:
    if engine is None:
        raise NoticeError("no trust anchors are configured: a gateway's notice cannot be checked")
    return read_notice(data, engine, expect_issuer=issuer)


def _signed_by(verified: VerifiedNotice, gateway: PeerGateway) -> Notice:
    """The notice, once its signing certificate is one of ``gateway``'s evidence signers."""
    refused = signer_refusal(verified.signing_cert, gateway, "notice")
    if refused is not None:
        raise NoticeError(refused)
    return verified.notice


def _answers(notice: Notice, message: Message) -> None:
    """NoticeError unless ``notice`` speaks of a reply to our ``message``, to its sender."""
    if notice.in_reply_to != message.message_id:
        raise NoticeError(
            f"the notice is about a reply to message {notice.in_reply_to}, "
            f"not to {message.message_id}"
        )
    if notice.reply.recipient_authority != message.sender_id:
        raise NoticeError(
            f"the notice's reply is addressed to {notice.reply.recipient_authority}, "
            f"not to {message.sender_id}, who sent message {message.message_id}"
        )
    if message.conversation_id is not None and notice.conversation_id != message.conversation_id:
        raise NoticeError(
            f"the notice names conversation {notice.conversation_id}, not {message.conversation_id}"
        )


def _record(
    store: MessageStore,
    refusal: _Refusal,
    notice: Notice,
    message_id: str,
    source: dict[str, JSON],
) -> NoticeTaken:
    """``notice.received`` on ``message_id``, once; the same id with other bytes is a conflict."""
    sha256 = refusal.kept()
    conflict = None
    with store.db.begin_write() as connection, store.audit.batch(connection):
        earlier = received(connection, message_id, notice.notice_id)
        if earlier is None:
            details: dict[str, JSON] = {
                "notice_id": notice.notice_id, **source, "sha256": sha256,
                "issued_at": notice.issue_time.isoformat(), "reply_id": notice.reply.message_id,
                "reply_sha256": notice.reply.sha256_hex, "reply_channel": str(notice.channel),
                "reason": notice.reason,
            }  # fmt: skip
            event = AuditEvent(RECEIVED, refusal.actor, message_id, details)
            store.audit.append(event, connection=connection)
        elif earlier.get("sha256") != sha256:
            conflict = (
                f"notice {notice.notice_id} was recorded before with other content "
                f"(SHA-256 {earlier.get('sha256')})"
            )
            event = refusal.event(409, "notice-conflict", conflict, keep=True)
            store.audit.append(event, connection=connection)
    if conflict is not None:
        raise NoticeRefused(409, "notice-conflict", conflict)
    return NoticeTaken(notice, new=earlier is None)


class _Refusal(RefusalTrail[NoticeRefused]):
    """Records a refused notice (a ``notice.refused`` entry) and makes the error."""

    def __init__(
        self, store: MessageStore, actor: str, source: dict[str, JSON], message_id: str, data: bytes
    ) -> None:
        super().__init__(store, "notice", actor, source, message_id, data, NoticeRefused)
        self.record_deferral = True

    def check_size(self) -> None:
        if len(self.data) > MAX_NOTICE_BYTES:
            raise self.refuse(
                413, "notice-too-large", f"a notice is at most {MAX_NOTICE_BYTES} bytes"
            )

    @contextmanager
    def judging(self, *, keep_verified: bool) -> Iterator[None]:
        """A NoticeError raised within becomes the refusal (or, for TRY_LATER, the deferral)."""
        try:
            yield
        except NoticeError as exc:
            if exc.try_later:
                raise self.defer(str(exc), record=self.record_deferral) from None
            # Bytes whose signature did not verify are not kept (nor any when nothing checked).
            keep = keep_verified and exc.verdict is None
            raise self.refuse(422, "notice-invalid", str(exc), keep=keep) from None
