"""The gateway's schema migrations: append only; a migration, once released, never changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

Migration = tuple[str, Callable[[Connection], None]]


def _m0001_audit_log(connection: Connection) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "audit_entries",
        metadata,
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True, index=True),
    )
    sa.Table(
        "audit_nodes",
        metadata,
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    head = sa.Table(
        "audit_head",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "audit_checkpoints",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    metadata.create_all(connection)
    empty_root = hashlib.sha256(b"").digest()
    connection.execute(head.insert().values(id=1, size=0, root_hash=empty_root, frontier=b""))


def _m0002_messages(connection: Connection) -> None:
    """Messages, their first answers, history, attachments, evidences; blobs for PostgreSQL."""
    metadata = sa.MetaData()
    when = sa.DateTime(timezone=True)
    digest = sa.String(64)
    sa.Table(
        "blobs",
        metadata,
        sa.Column("sha256", digest, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", when, nullable=False),
    )
    sa.Table(
        "blob_chunks",
        metadata,
        # The digest, or a temporary key while the blob is being written.
        sa.Column("sha256", digest, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "submissions",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("authority_id", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("envelope_sha256", digest, nullable=False),
        sa.Column("http_status", sa.SmallInteger, nullable=False),
        sa.Column("response_body", sa.LargeBinary, nullable=False),
        sa.Column("response_type", sa.String(255), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.UniqueConstraint("authority_id", "message_id", name="uq_submissions_authority_message"),
    )
    sa.Table(
        "messages",
        metadata,
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("submission_id", sa.String(36), sa.ForeignKey("submissions.id"), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("sender_id", sa.String(255), nullable=False),
        sa.Column("recipient_id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("request_type", sa.String(64), nullable=True),
        sa.Column("legal_basis", sa.Text, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("envelope_sha256", digest, nullable=False),
        sa.Column("verdict_json", sa.Text, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.Index("ix_messages_inbox", "recipient_id", "status", "created_at", "message_id"),
        sa.Index("ix_messages_recipient", "recipient_id", "created_at", "message_id"),
        sa.Index("ix_messages_sender", "sender_id", "created_at", "message_id"),
        sa.Index("ix_messages_conversation", "conversation_id"),
    )
    sa.Table(
        "status_history",
        metadata,
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", when, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("audit_index", sa.BigInteger, nullable=False),
    )  # fmt: skip
    sa.Table(
        "attachments",
        metadata,
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  primary_key=True),
        sa.Column("content_id", sa.String(255), primary_key=True),
        sa.Column("file_name", sa.String(255), nullable=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", digest, nullable=False),
        sa.Column("verdict_json", sa.Text, nullable=True),
    )  # fmt: skip
    sa.Table(
        "evidences",
        metadata,
        sa.Column("evidence_id", sa.String(255), primary_key=True),
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  nullable=False, index=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("issued_at", when, nullable=False),
        sa.Column("sha256", digest, nullable=False),
        sa.Column("subject_sha256", digest, nullable=False),
    )  # fmt: skip
    metadata.create_all(connection)


def _m0003_outbox(connection: Connection) -> None:
    """Routing and delivery: how a message came and goes, and the dispatcher's queue."""
    for column in (
        sa.Column("in_reply_to", sa.String(255), nullable=True),
        sa.Column("arrived_via", sa.Text, nullable=True),  # inbound: the channel it came by
        sa.Column("route", sa.Text, nullable=True),  # outbound: the channel chosen for it
    ):
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f"ALTER TABLE messages ADD COLUMN {column.name} {kind}"))
    metadata = sa.MetaData()
    sa.Table("messages", metadata, autoload_with=connection)  # for the foreign key
    when = sa.DateTime(timezone=True)
    sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  nullable=False, index=True),
        # "message": send the message; "evidence": send one of our evidences about it back.
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("evidence_id", sa.String(255), nullable=True),
        sa.Column("channel", sa.Text, nullable=False),  # JSON, see gateway.routing
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", when, nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", when, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Index("ix_outbox_due", "next_attempt_at"),
    )  # fmt: skip
    metadata.tables["outbox"].create(connection)


def _m0004_small_blobs(connection: Connection) -> None:
    """Envelopes and evidences kept in the database, committed with what names them."""
    sa.Table(
        "small_blobs",
        sa.MetaData(),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    ).create(connection)


MIGRATIONS: tuple[Migration, ...] = (
    ("0001_audit_log", _m0001_audit_log),
    ("0002_messages", _m0002_messages),
    ("0003_outbox", _m0003_outbox),
    ("0004_small_blobs", _m0004_small_blobs),
)

_schema_migrations = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("applied_at", sa.String(40), nullable=False),
)


def migrate(engine: Engine, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply the migrations not yet recorded, in order, in one serialized transaction.

    Safe to run from several processes at once: the writer lock makes the
    second one find everything applied. Returns the ids it applied.
    """
    from gateway.db import write_transaction  # gateway.db imports this module

    applied: list[str] = []
    with write_transaction(engine) as connection:
        _schema_migrations.create(connection, checkfirst=True)
        done = set(connection.execute(sa.select(_schema_migrations.c.id)).scalars())
        for migration_id, apply in migrations:
            if migration_id in done:
                continue
            apply(connection)
            connection.execute(
                _schema_migrations.insert().values(
                    id=migration_id, applied_at=datetime.now(UTC).isoformat()
                )
            )
            applied.append(migration_id)
    return applied


def applied_migrations(engine: Engine) -> list[str]:
    """The ids recorded in ``schema_migrations``, oldest first."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("schema_migrations"):
            return []
        rows = connection.execute(
            sa.select(_schema_migrations.c.id).order_by(_schema_migrations.c.id)
        )
        return list(rows.scalars())
