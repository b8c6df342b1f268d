"""Notices from a peer gateway: taken only when the peer signed one about a message we sent it.

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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.audit import JSON, AuditEvent
from gateway.authorities import AuthorityDirectory
from gateway.channels import PeerGateway
from gateway.notice import Notice, NoticeError, read_notice
from gateway.notice_trail import DEFERRED, RECEIVED, REFUSED, received
from gateway.peer_evidence import sent_to_gateway, signer_refusal
from gateway.store import MessageStore
from gateway.store_records import Message
from signing.trust import TrustEngine

MAX_NOTICE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class NoticeTaken:
    notice: Notice
    new: bool  # False: the same notice was recorded before


class NoticeRefused(Exception):
    """A peer's notice that is not taken; ``status`` and ``code`` are the HTTP answer.

    503 (``revocation-unavailable``) is not final: the peer posts the notice again later.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


def accept_notice(
    store: MessageStore,
    engine: TrustEngine | None,
    directory: AuthorityDirectory,
    peer: PeerGateway,
    message_id: str,
    data: bytes,
) -> NoticeTaken:
    """Verify and record a peer's notice about our ``message_id``; NoticeRefused says why not."""
    refusal = _Refusal(store, peer, message_id, data)
    if len(data) > MAX_NOTICE_BYTES:
        raise refusal(413, "notice-too-large", f"a notice is at most {MAX_NOTICE_BYTES} bytes")
    message = store.message(message_id)
    if message is None or not sent_to_gateway(message, peer.id):
        raise refusal(
            404, "unknown-message", f"no message {message_id} was sent to gateway {peer.id}"
        )
    refusal.about = message_id
    try:
        notice = _verified(data, engine, directory, peer, message)
    except NoticeError as exc:
        if exc.try_later:
            raise refusal.deferred(str(exc)) from None
        # Bytes whose signature did not verify are not kept (nor any when nothing could check).
        verified = exc.verdict is None and engine is not None
        raise refusal(422, "notice-invalid", str(exc), keep=verified) from None
    sha256 = refusal.kept()
    actor = f"gateway:{peer.id}"
    conflict = None
    with store.db.begin_write() as connection, store.audit.batch(connection):
        earlier = received(connection, message_id, notice.notice_id)
        if earlier is None:
            details: dict[str, JSON] = {
                "notice_id": notice.notice_id, "gateway": peer.id, "sha256": sha256,
                "issued_at": notice.issue_time.isoformat(), "reply_id": notice.reply.message_id,
                "reply_sha256": notice.reply.sha256_hex, "reply_channel": str(notice.channel),
                "reason": notice.reason,
            }  # fmt: skip
            event = AuditEvent(RECEIVED, actor, message_id, details)
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


def _verified(
    data: bytes,
    engine: TrustEngine | None,
    directory: AuthorityDirectory,
    peer: PeerGateway,
    message: Message,
) -> Notice:
    if engine is None:
        raise NoticeError("no trust anchors are configured: a peer's notice cannot be checked")
    verified = read_notice(data, engine, expect_issuer=peer.id)
    refused = signer_refusal(verified.signing_cert, peer, "notice")
    if refused is not None:
        raise NoticeError(refused)
    notice = verified.notice
    sender = notice.reply.sender_authority
    if directory.served_by(peer.id, sender) is None:
        raise NoticeError(
            f"the notice's reply is from {sender}, which the authority directory does not "
            f"list as served by gateway {peer.id}"
        )
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
    return notice


class _Refusal:
    """Records a refused notice (a ``notice.refused`` entry) and makes the error."""

    def __init__(self, store: MessageStore, peer: PeerGateway, message_id: str, data: bytes):
        self.store = store
        self.peer = peer
        self.claimed = message_id[:255]
        self.about: str | None = None  # the message the entry goes on, once it is the peer's
        self.data = data
        self._sha256: str | None = None

    def kept(self) -> str:
        """The received bytes, kept as they came (once): only once their signature verified."""
        if self._sha256 is None:
            self._sha256 = self.store.blobs.put(self.data).sha256
        return self._sha256

    def event(
        self, status: int, code: str, reason: str, *, keep: bool, kind: str = REFUSED
    ) -> AuditEvent:
        # ``sha256`` and ``size`` of what was read (for a 413, its first bytes); ``kept``
        # says whether the blob store holds those bytes.
        details: dict[str, JSON] = {
            "gateway": self.peer.id, "message_id": self.claimed, "status": status,
            "code": code, "reason": reason[:2000], "size": len(self.data),
            "sha256": self.kept() if keep else hashlib.sha256(self.data).hexdigest(),
            "kept": keep,
        }  # fmt: skip
        return AuditEvent(kind, f"gateway:{self.peer.id}", self.about, details)

    def __call__(self, status: int, code: str, reason: str, *, keep: bool = False) -> NoticeRefused:
        self.store.audit.append(self.event(status, code, reason, keep=keep))
        return NoticeRefused(status, code, reason)

    def deferred(self, reason: str) -> NoticeRefused:
        """Its signature cannot be checked now: 503, recorded as deferred, not as refused."""
        reason = f"{reason}; post the same notice again later"
        event = self.event(503, "revocation-unavailable", reason, keep=False, kind=DEFERRED)
        self.store.audit.append(event)
        return NoticeRefused(503, "revocation-unavailable", reason)
