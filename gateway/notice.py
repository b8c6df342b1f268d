"""The channel-override notice: the document that tells the other side a reply went elsewhere.

Issue 5; Medellín Treaty: once a request has arrived by the platform, later
communications about it go back by the same means, unless that is
inadvisable, in which case the sender is told. When a reply leaves by another
channel than the one its conversation came by (``gateway.routing``,
``Route.notice_by``), the gateway issues a ``Notice`` and sends it by that
original channel.

A notice is plain data; ``sign_notice`` writes it as XML valid against
``schemas/notice-1.xsd`` with an enveloped XAdES signature over the whole
document (the gateway's evidence signer, as for evidences), and
``read_notice`` verifies one and reads it back from the signed octets only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from lxml import etree

from gateway.channels import CHANNEL_KINDS
from gateway.evidence import GatewayRef
from gateway.signed_document import (
    DocumentKind,
    SignedDocumentError,
    read_signed,
    sign_document,
    xml_time,
)
from schemas import NOTICE_NS, notice_schema_path
from signing.keys import Signer
from signing.timestamp import TimeStamper
from signing.trust import TrustEngine
from signing.verdict import DocumentReport
from signing.xmldsig import Digest

__all__ = [
    "Notice",
    "NoticeChannel",
    "NoticeError",
    "ReplyRef",
    "VerifiedNotice",
    "build_notice",
    "file_name",
    "new_notice_id",
    "notice_xml",
    "read_notice",
    "sign_notice",
]

SHA256 = Digest.SHA256.value
_CHANNEL_NAMES = {"gateway": "the peer gateway", "email": "e-mail", "sftp": "SFTP"}


class NoticeError(SignedDocumentError):
    """A notice that cannot be built, or one received that Rogatory refuses, and why."""


@dataclass(frozen=True)
class ReplyRef:
    """The reply that went by another channel: its id, authorities and envelope digest."""

    message_id: str
    sender_authority: str
    recipient_authority: str
    sha256_hex: str


@dataclass(frozen=True)
class NoticeChannel:
    """The channel the reply goes by: its kind and, for a peer gateway, its id."""

    kind: str
    gateway: str | None = None

    def __str__(self) -> str:
        name = _CHANNEL_NAMES.get(self.kind, self.kind)
        return f"{name} {self.gateway}" if self.gateway else name


@dataclass(frozen=True)
class Notice:
    notice_id: str
    issue_time: datetime
    issuer: GatewayRef
    in_reply_to: str  # the message the reply answers, which the notified side sent
    reply: ReplyRef
    channel: NoticeChannel
    reason: str  # "the sender chose the email channel"
    conversation_id: str | None = None

    def __post_init__(self) -> None:
        if self.issue_time.utcoffset() is None:
            raise NoticeError("a notice needs an issue time with a time zone")
        if self.channel.kind not in CHANNEL_KINDS:
            raise NoticeError(f"a notice names a channel of kind {self.channel.kind!r}")
        if (self.channel.kind == "gateway") != (self.channel.gateway is not None):
            raise NoticeError("a notice names a gateway exactly when the channel is a gateway")

    def summary(self) -> str:
        """What a person reads first: which reply went where, and why."""
        conversation = f" (conversation {self.conversation_id})" if self.conversation_id else ""
        return (
            f"Notice {self.notice_id} from gateway {self.issuer.id} ({self.issuer.name}, "
            f"{self.issuer.country}): message {self.reply.message_id} from "
            f"{self.reply.sender_authority} to {self.reply.recipient_authority}, which answers "
            f"message {self.in_reply_to}{conversation}, is sent by {self.channel} rather than "
            f"by the channel that message came by, because {self.reason}."
        )


@dataclass(frozen=True)
class VerifiedNotice:
    notice: Notice
    report: DocumentReport
    signing_cert: x509.Certificate | None = None  # whose key signed it (chain validated)


def new_notice_id() -> str:
    return str(uuid.uuid4())


def file_name(notice_id: str) -> str:
    """The name a notice's XML travels under (e-mail attachment, SFTP file)."""
    return f"notice-{notice_id}.xml"


def _now() -> datetime:
    return datetime.now(UTC)


def build_notice(
    notice_id: str,
    issuer: GatewayRef,
    in_reply_to: str,
    reply: ReplyRef,
    channel: NoticeChannel,
    reason: str,
    *,
    conversation_id: str | None = None,
    clock: Callable[[], datetime] = _now,
) -> Notice:
    return Notice(notice_id, clock(), issuer, in_reply_to, reply, channel, reason, conversation_id)


# ---- writing ----------------------------------------------------------------

_KIND = DocumentKind("notice", NOTICE_NS, "Notice", notice_schema_path, NoticeError)
_el = _KIND.element
_text = _KIND.text
_required = _KIND.required
_NSMAP: Any = {None: NOTICE_NS}  # lxml-stubs do not allow a None prefix


def _tree(notice: Notice) -> Any:
    root = etree.Element(f"{{{NOTICE_NS}}}Notice", {"version": "1.0"}, nsmap=_NSMAP)
    _el(root, "NoticeId", notice.notice_id)
    _el(root, "IssueTime", xml_time(notice.issue_time))
    issuer = _el(root, "Issuer")
    _el(issuer, "GatewayId", notice.issuer.id)
    _el(issuer, "Name", notice.issuer.name)
    _el(issuer, "Country", notice.issuer.country)
    if notice.conversation_id is not None:
        _el(root, "ConversationId", notice.conversation_id)
    _el(root, "InReplyTo", notice.in_reply_to)
    reply = _el(root, "Reply")
    _el(reply, "MessageId", notice.reply.message_id)
    _el(reply, "SenderAuthority", notice.reply.sender_authority)
    _el(reply, "RecipientAuthority", notice.reply.recipient_authority)
    _el(reply, "Digest", notice.reply.sha256_hex, Algorithm=SHA256)
    channel = _el(root, "Channel")
    _el(channel, "Kind", notice.channel.kind)
    if notice.channel.gateway is not None:
        _el(channel, "GatewayId", notice.channel.gateway)
    _el(root, "Reason", notice.reason)
    return root


def notice_xml(notice: Notice) -> bytes:
    """The unsigned notice document (UTF-8), valid against the notice XSD."""
    return _KIND.serialized(_tree(notice))


def sign_notice(notice: Notice, signer: Signer, *, timestamper: TimeStamper | None = None) -> bytes:
    """The notice document with the gateway's XAdES signature: B-B, or B-T with a TSA."""
    return sign_document(notice_xml(notice), signer, timestamper=timestamper)


# ---- reading ----------------------------------------------------------------


def read_notice(
    data: bytes, engine: TrustEngine, *, expect_issuer: str | None = None
) -> VerifiedNotice:
    """Verify a signed notice and read it from what the signature covers.

    NoticeError unless the signature is TOTAL-PASSED under the envelope
    policy (one signature, over the whole document), the signed document is a
    valid notice, and (if given) ``expect_issuer`` is its issuing gateway.
    """
    root, verified = read_signed(data, engine, _KIND, expect_issuer=expect_issuer)
    notice = _from_xml(root)
    return VerifiedNotice(notice, verified.report, verified.signing_cert)


def _from_xml(root: Any) -> Notice:
    return Notice(
        notice_id=_required(root, "NoticeId"),
        issue_time=datetime.fromisoformat(_required(root, "IssueTime")),
        issuer=GatewayRef(
            _required(root, "Issuer/GatewayId"),
            _required(root, "Issuer/Name"),
            _required(root, "Issuer/Country"),
        ),
        in_reply_to=_required(root, "InReplyTo"),
        reply=ReplyRef(
            _required(root, "Reply/MessageId"),
            _required(root, "Reply/SenderAuthority"),
            _required(root, "Reply/RecipientAuthority"),
            _required(root, "Reply/Digest"),
        ),
        channel=NoticeChannel(_required(root, "Channel/Kind"), _text(root, "Channel/GatewayId")),
        reason=_required(root, "Reason"),
        conversation_id=_text(root, "ConversationId"),
    )
