"""Notices in the audit trail: what this gateway issued, sent and received, read back.

Notices have no table of their own: each step is an audit entry on the
message it is about, naming the notice id and the SHA-256 of the signed
notice, whose bytes are in the blob store.

On our reply (the message that went by another channel):

- ``notice.issued``: the signed notice was built and kept; every attempt sends these bytes;
- ``notice.sent``: the far side took it, by the conversation's channel;
- ``notice.retry``, ``notice.undeliverable``: an attempt failed; given up, with the reason.

On our message that a peer's reply answers:

- ``notice.received``: the peer's notice, verified;
- ``notice.refused``: a notice from that peer not taken, and why (on no message when
  it named one the peer has no business with);
- ``notice.deferred``: its signature could not be checked now (revocation data
  unavailable); the peer was asked to post it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.audit import JSON, AuditLog, decode_entry, entries_table

ISSUED = "notice.issued"
SENT = "notice.sent"
RECEIVED = "notice.received"
REFUSED = "notice.refused"
DEFERRED = "notice.deferred"


@dataclass(frozen=True)
class NoticeRecord:
    """A notice sent about one of our replies, or received about one of our messages."""

    notice_id: str
    direction: str  # "sent" or "received"
    at: str  # the audit entry's time
    sha256: str  # the signed notice in the blob store
    reply_channel: str  # the channel the reply went by, as the notice names it
    reply_id: str
    audit_index: int


def notices_of(audit: AuditLog, message_id: str) -> list[NoticeRecord]:
    """The notices sent or received about ``message_id``, oldest first."""
    found: list[NoticeRecord] = []
    for entry in audit.entries_for(message_id):
        if entry.kind not in (SENT, RECEIVED):
            continue
        d = entry.details
        found.append(
            NoticeRecord(
                notice_id=str(d.get("notice_id")),
                direction="sent" if entry.kind == SENT else "received",
                at=entry.time,
                sha256=str(d.get("sha256")),
                reply_channel=str(d.get("reply_channel")),
                reply_id=str(d.get("reply_id")),
                audit_index=entry.index,
            )
        )
    return found


def issued(audit: AuditLog, message_id: str, notice_id: str) -> str | None:
    """The SHA-256 of the notice ``notice_id`` issued about our reply ``message_id``, if any."""
    for entry in audit.entries_for(message_id):
        if entry.kind == ISSUED and entry.details.get("notice_id") == notice_id:
            return str(entry.details.get("sha256"))
    return None


def received(connection: Connection, message_id: str, notice_id: str) -> dict[str, JSON] | None:
    """The details of ``notice.received`` for this notice, read in the caller's transaction."""
    query = (
        sa.select(entries_table.c.entry)
        .where(entries_table.c.message_id == message_id, entries_table.c.kind == RECEIVED)
        .order_by(entries_table.c.idx)
    )
    for encoded in connection.execute(query).scalars():
        entry = decode_entry(bytes(encoded))
        if entry.details.get("notice_id") == notice_id:
            return entry.details
    return None
