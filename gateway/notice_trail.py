"""Notices in the audit trail: what this gateway queued, issued, sent and received, read back.

Notices have no table of their own: each step is an audit entry on the
message it is about, naming the notice id and the SHA-256 of the signed
notice, whose bytes are in the blob store.

On our reply (the message that went by another channel):

- ``notice.issued``: the signed notice was built and kept; every attempt sends these bytes;
- ``notice.sent``: the far side took it, by the conversation's channel;
- ``notice.retry``, ``notice.undeliverable``: an attempt failed; given up, with the reason;
- ``notice.withdrawn``: the reply failed, so the notice was not sent, with the reason.

While a notice of ours is still to be sent its outbox row says so (``pending``).

On our message that a peer's reply answers:

- ``notice.received``: the peer's notice, verified;
- ``notice.refused``: a notice from that peer not taken, and why (on no message when
  it named one the peer has no business with);
- ``notice.deferred``: its signature could not be checked now (revocation data
  unavailable); the peer was asked to post it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.audit import JSON, AuditLog, decode_entry, entries_table
from gateway.store_records import outbox_table

ISSUED = "notice.issued"
SENT = "notice.sent"
RECEIVED = "notice.received"
REFUSED = "notice.refused"
DEFERRED = "notice.deferred"


UNDELIVERABLE = "notice.undeliverable"
WITHDRAWN = "notice.withdrawn"
RETRY = "notice.retry"

# What an entry on our reply says of the notice's state.
_STATES = {SENT: "sent", UNDELIVERABLE: "undeliverable", WITHDRAWN: "withdrawn", RETRY: "pending"}


@dataclass(frozen=True)
class NoticeRecord:
    """A notice about one of our replies (ours, in any state), or received about our message."""

    notice_id: str
    direction: str  # "sent": ours, about our reply; "received": a peer's, about our message
    state: str  # "pending", "sent", "undeliverable", "withdrawn"; or "received"
    at: str  # the latest entry's time (a pending notice with none: when it was queued)
    sha256: str | None  # the signed notice in the blob store, once issued (or as received)
    reply_channel: str | None  # the channel the reply went by, as the notice names it
    reply_id: str
    audit_index: int | None  # the latest entry's index
    reason: str | None = None  # why it was given up or withdrawn, or what a pending one awaits


def notices_of(audit: AuditLog, message_id: str) -> list[NoticeRecord]:
    """The notices about ``message_id``, each in its present state, in the order they began.

    Ours come from the audit trail and, while one is still to be sent, its outbox row.
    """
    found: dict[str, NoticeRecord] = {}  # ours, by notice id
    began: dict[str, float] = {}  # the index of each one's first entry
    for entry in audit.entries_for(message_id):
        d = entry.details
        notice_id = str(d.get("notice_id"))
        if entry.kind == RECEIVED:
            notice_id = f"received:{entry.index}"  # each one received is listed
            found[notice_id] = NoticeRecord(
                str(d.get("notice_id")), "received", "received", entry.time,
                str(d.get("sha256")), str(d.get("reply_channel")), str(d.get("reply_id")),
                entry.index,
            )  # fmt: skip
            began[notice_id] = entry.index
            continue
        if entry.kind != ISSUED and entry.kind not in _STATES:
            continue
        earlier = found.get(notice_id) or NoticeRecord(
            notice_id, "sent", "pending", entry.time, None, None, message_id, entry.index
        )
        began.setdefault(notice_id, entry.index)
        reason = d.get("reason") if entry.kind != ISSUED else None
        found[notice_id] = replace(
            earlier,
            state=_STATES.get(entry.kind, earlier.state),
            at=entry.time,
            sha256=str(d["sha256"]) if "sha256" in d else earlier.sha256,
            reply_channel=str(d["reply_channel"])
            if "reply_channel" in d
            else earlier.reply_channel,
            audit_index=entry.index,
            reason=str(reason) if reason is not None else earlier.reason,
        )
    for row in _pending_rows(audit, message_id):
        notice_id = str(row.evidence_id)
        earlier = found.get(notice_id) or NoticeRecord(
            notice_id, "sent", "pending", row.created_at.isoformat(), None, None, message_id, None
        )
        began.setdefault(notice_id, math.inf)  # queued, nothing done yet: listed last
        found[notice_id] = replace(earlier, state="pending", reason=row.last_error)
    return [found[key] for key in sorted(found, key=lambda key: began[key])]


def _pending_rows(audit: AuditLog, message_id: str) -> list[Any]:
    query = (
        sa.select(outbox_table.c.evidence_id, outbox_table.c.created_at, outbox_table.c.last_error)
        .where(outbox_table.c.message_id == message_id, outbox_table.c.kind == "notice")
        .order_by(outbox_table.c.created_at, outbox_table.c.id)
    )
    with audit.db.begin_read() as connection:
        return list(connection.execute(query).all())


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
