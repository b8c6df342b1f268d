"""The one small interface every transport implements (DESIGN.md, Parts: adapters/).

An adapter maps a message to its transport's native format and back; it
never decides status, never writes to the store and never trusts what it
fetches. The dispatcher gives it an ``Outgoing`` (or an ``OutgoingNotice``)
and reads a ``Receipt`` or one of the two errors; the poller asks a pull
adapter for ``Incoming`` items and acknowledges each once intake has answered
it.

- ``send`` must be safe to call again for the same message after a crash:
  the far side recognises a repeated message id (a peer gateway answers with
  its first evidence, an SFTP drop already holds the final name, a mailbox
  dedupes on the envelope's message id at intake).
- ``TransientError``: worth trying again later (connection refused, 4xx SMTP
  reply, timeout). ``PermanentError``: it will never work (5xx reply, host
  key changed, the peer rejected the message); the message fails with the
  error's text as its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from signing.errors import RogatoryError


class AdapterError(RogatoryError):
    """A send or fetch that did not work; the text says why, for the operator."""


class TransientError(AdapterError):
    """Try again later."""


class PermanentError(AdapterError):
    """Never going to work for this message; fail it with this reason."""


@dataclass(frozen=True)
class OutgoingPart:
    """An attachment to send: opened on demand, so large files are streamed."""

    content_id: str
    media_type: str
    file_name: str | None
    size: int
    sha256: str  # hex of the bytes ``open()`` returns
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class Outgoing:
    """One message to carry: the signed envelope as received and its attachments."""

    message_id: str
    envelope: bytes  # the original bytes, XAdES-signed by the sending authority
    attachments: tuple[OutgoingPart, ...] = ()
    sender_id: str = ""
    recipient_id: str = ""


@dataclass(frozen=True)
class OutgoingNotice:
    """A gateway-signed notice (gateway.notice) that a reply went by another channel.

    It goes by the channel the conversation came by; each adapter maps it to
    its native form (a peer gateway's notices endpoint, a signed mail, a file
    in the drop). Every attempt carries the same signed bytes under the same
    notice id, but only a peer gateway records it once: a resend by e-mail is
    another mail (with the same Message-ID), and one to an SFTP drop leaves
    the file again once the far side has collected the first. A reader tells
    the copies apart by the notice id.
    """

    notice_id: str
    in_reply_to: str  # the message the reply answers, which the far side sent
    reply_id: str
    document: bytes  # the signed notice XML
    file_name: str  # what the document is called as a file: notice-<id>.xml
    summary: str  # one paragraph for a person who opens it


@dataclass(frozen=True)
class Receipt:
    """What the far side said. ``evidences`` are signed evidence documents (a peer's
    RelayAcceptance or Delivery), still to be verified by the dispatcher."""

    reference: str  # where it went: a URL, an SMTP queue id, a remote path
    evidences: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class IncomingPart:
    content_id: str
    media_type: str
    data: bytes


IncomingKind = Literal["message", "notice"]


@dataclass(frozen=True)
class Incoming:
    """One message (or notice) fetched from a pull channel, not yet verified.

    ``channel_sender`` is who the channel itself vouches for, if anyone: the
    authority whose S/MIME certificate signed the mail (already checked by the
    adapter), or the authority whose SFTP drop it came from. Intake still
    verifies the envelope's XAdES signature and binds it to that authority.

    ``kind`` "notice": a gateway-signed channel-override notice (gateway.notice)
    from a gateway on the channel's far side; ``envelope`` holds the notice
    document, and there are no attachments.
    """

    reference: str  # the adapter's handle for acknowledge(): an IMAP UID, a remote path
    envelope: bytes
    attachments: tuple[IncomingPart, ...] = ()
    channel_sender: str | None = None
    problem: str | None = None  # set when the channel-level check failed (bad S/MIME signature ...)
    details: dict[str, str] = field(default_factory=dict)
    kind: IncomingKind = "message"


Outcome = Literal["accepted", "rejected"]


@runtime_checkable
class Adapter(Protocol):
    """A push channel."""

    def send(self, outgoing: Outgoing) -> Receipt: ...

    def send_notice(self, notice: OutgoingNotice) -> Receipt: ...

    def close(self) -> None: ...


@runtime_checkable
class PullAdapter(Protocol):
    """A channel we poll: fetch what is waiting, acknowledge each once it is answered."""

    def fetch(self, limit: int = 100) -> Iterator[Incoming]: ...

    def acknowledge(self, incoming: Incoming, outcome: Outcome) -> None: ...

    def close(self) -> None: ...
