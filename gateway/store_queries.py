"""Reading the message store: a message, its history, attachments, evidences, inboxes.

Reads never wait for writers. ``MessageStore`` writes and inherits these;
the parts that only read (the written record, the CLI) can use a
``MessageReader`` alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.db import Database
from gateway.driver_sql import DriverStatement
from gateway.model import Status, StatusChange
from gateway.store_records import (
    AttachmentRecord,
    EvidenceRecord,
    FirstAnswer,
    Message,
    StoreError,
    UnknownMessage,
    attachment_from,
    attachments_table,
    evidence_from,
    evidences_table,
    first_answer_from,
    history_table,
    message_from,
    messages_table,
    submissions_table,
)

DEFAULT_PAGE = 100
MAX_PAGE = 1000

# The lookups of every submission, built once (a reused statement keeps its compiled form);
# the first answer's runs on the driver's cursor (gateway.driver_sql).
_FIRST_ANSWER = DriverStatement(
    sa.select(submissions_table).where(
        submissions_table.c.authority_id == sa.bindparam("authority_id"),
        submissions_table.c.message_id == sa.bindparam("message_id"),
    ),
    ["authority_id", "message_id"],
)
_MESSAGE = sa.select(messages_table).where(
    messages_table.c.message_id == sa.bindparam("message_id")
)


class MessageReader:
    """Queries over the stored messages."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def first_answer(self, authority_id: str, message_id: str) -> FirstAnswer | None:
        # Looked up before every submission is verified: one statement, no transaction around it.
        rows = _FIRST_ANSWER.read(self.db.engine, (authority_id, message_id))
        return first_answer_from(rows[0]) if rows else None

    def message(self, message_id: str) -> Message | None:
        with self.db.begin_read() as connection:
            row = connection.execute(_MESSAGE, {"message_id": message_id}).one_or_none()
        return None if row is None else message_from(row)

    def visible_to(self, message_id: str, authority_id: str) -> bool:
        """An authority sees only the messages it sent or that are addressed to it.

        A rejected message was never handed on: only its sender sees it.
        """
        mine = sa.or_(
            messages_table.c.sender_id == authority_id,
            sa.and_(
                messages_table.c.recipient_id == authority_id,
                messages_table.c.status != Status.REJECTED.value,
            ),
        )
        query = sa.select(messages_table.c.message_id).where(
            messages_table.c.message_id == message_id, mine
        )
        with self.db.begin_read() as connection:
            return connection.execute(query).first() is not None

    def history(self, message_id: str) -> list[StatusChange]:
        query = (
            sa.select(history_table)
            .where(history_table.c.message_id == message_id)
            .order_by(history_table.c.seq)
        )
        with self.db.begin_read() as connection:
            rows = connection.execute(query).all()
        return [StatusChange(Status(r.status), r.at, r.reason, int(r.audit_index)) for r in rows]

    def attachments(self, message_id: str) -> list[AttachmentRecord]:
        query = (
            sa.select(attachments_table)
            .where(attachments_table.c.message_id == message_id)
            .order_by(attachments_table.c.content_id)
        )
        with self.db.begin_read() as connection:
            return [attachment_from(row) for row in connection.execute(query)]

    def evidences(self, message_id: str) -> list[EvidenceRecord]:
        query = (
            sa.select(evidences_table)
            .where(evidences_table.c.message_id == message_id)
            .order_by(evidences_table.c.issued_at, evidences_table.c.evidence_id)
        )
        with self.db.begin_read() as connection:
            return [evidence_from(row) for row in connection.execute(query)]

    def inbox(
        self,
        recipient_id: str,
        *,
        status: Status | None = Status.DELIVERED,
        limit: int = DEFAULT_PAGE,
        after: str | None = None,
    ) -> list[Message]:
        """Messages addressed to ``recipient_id`` (in ``status``; any if None), oldest first.

        ``after`` is the last message id of the previous page.
        """
        where = [messages_table.c.recipient_id == recipient_id]
        if status is not None:
            where.append(messages_table.c.status == status.value)
        return self._page(sa.and_(*where), limit, after)

    def messages_of(
        self, authority_id: str, *, limit: int = DEFAULT_PAGE, after: str | None = None
    ) -> list[Message]:
        """Every message ``authority_id`` sent or receives, oldest first."""
        mine = sa.or_(
            messages_table.c.sender_id == authority_id,
            messages_table.c.recipient_id == authority_id,
        )
        return self._page(mine, limit, after)

    @staticmethod
    def _first_answer(
        connection: Connection, authority_id: str, message_id: str
    ) -> FirstAnswer | None:
        rows = _FIRST_ANSWER.rows(connection, (authority_id, message_id))
        return first_answer_from(rows[0]) if rows else None

    @staticmethod
    def message_in(connection: Connection, message_id: str) -> Message:
        """The message as this transaction sees it; UnknownMessage if there is none."""
        row = connection.execute(_MESSAGE, {"message_id": message_id}).one_or_none()
        if row is None:
            raise UnknownMessage(message_id)
        return message_from(row)

    def _page(self, where: sa.ColumnElement[bool], limit: int, after: str | None) -> list[Message]:
        if not 0 < limit <= MAX_PAGE:
            raise StoreError(f"a page holds 1 to {MAX_PAGE} messages, not {limit}")
        order = (messages_table.c.created_at, messages_table.c.message_id)
        query = sa.select(messages_table).where(where)
        if after is not None:
            # Within the same selection: a page never reveals another's message.
            last = (
                sa.select(messages_table.c.created_at)
                .where(messages_table.c.message_id == after, where)
                .scalar_subquery()
            )
            query = query.where(sa.tuple_(*order) > sa.tuple_(last, sa.literal(after)))
        query = query.order_by(*order).limit(limit)
        with self.db.begin_read() as connection:
            return [message_from(row) for row in connection.execute(query)]
