"""Statements run on the driver's cursor store and read what SQLAlchemy would, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.db import Database
from gateway.driver_sql import DriverStatement
from gateway.store_records import submissions_table

COLUMNS = [c.key for c in submissions_table.c]
INSERT = DriverStatement(submissions_table.insert(), COLUMNS)
SELECT = DriverStatement(
    sa.select(submissions_table)
    .where(submissions_table.c.message_id == sa.bindparam("message_id"))
    .where(submissions_table.c.http_status == 202)  # a value the statement carries
    .order_by(submissions_table.c.id),
    ["message_id"],
)


def row(submission_id: str, at: datetime) -> tuple[object, ...]:
    authority = f"ES-{submission_id}"  # (authority_id, message_id) is unique
    return (submission_id, authority, "ES-1", "ab" * 32, 202, b"\x00<xml/>", "application/xml", at)


def raw(db: Database, index: int) -> tuple[object, ...]:
    """The row as the database holds it, read past every SQLAlchemy type."""
    with db.begin_read() as connection:
        found = connection.exec_driver_sql(
            "SELECT message_id, envelope_sha256, http_status, response_body, response_type,"
            " created_at FROM submissions ORDER BY id"
        ).all()[index]
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in found)


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC),  # no microseconds
        datetime(2026, 11, 22, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_a_row_is_stored_exactly_as_sqlalchemy_stores_it(db: Database, at: datetime) -> None:
    with db.begin_write() as connection:
        by_sqlalchemy = dict(zip(COLUMNS, row("a", at), strict=True))
        connection.execute(submissions_table.insert(), by_sqlalchemy)
        INSERT.execute(connection, row("b", at))
    assert raw(db, 1) == raw(db, 0)
    with db.begin_read() as connection:
        [first, second] = SELECT.rows(connection, ["ES-1"])
    assert first == row("a", at) and second == row("b", at)
    assert second[-1].tzinfo is UTC


def test_sqlite_keeps_times_as_utc_text_with_microseconds(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path}/gateway.db")  # PostgreSQL keeps a timestamptz
    at = datetime(2026, 11, 22, 11, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    with db.begin_write() as connection:
        connection.execute(
            submissions_table.insert(), dict(zip(COLUMNS, row("a", at), strict=True))
        )
        INSERT.execute(connection, row("b", at))
    assert raw(db, 0)[-1] == raw(db, 1)[-1] == "2026-11-22 10:00:00.000000"
    db.dispose()


def test_rows_written_in_one_call_read_back(db: Database) -> None:
    at = datetime(2026, 11, 22, 10, 0, 0, 1, tzinfo=UTC)
    with db.begin_write() as connection:
        INSERT.executemany(connection, [row("a", at), row("b", at)])
        INSERT.executemany(connection, [])
    with db.begin_read() as connection:
        assert SELECT.rows(connection, ["ES-1"]) == [row("a", at), row("b", at)]
        assert SELECT.rows(connection, ["ES-2"]) == []
    # The same query as a read of its own, on a pooled connection.
    assert SELECT.read(db.engine, ["ES-1"]) == [row("a", at), row("b", at)]
    assert SELECT.read(db.engine, ["ES-2"]) == []


def test_a_unique_violation_is_sqlalchemys_integrity_error(db: Database) -> None:
    at = datetime.now(UTC)
    with db.begin_write() as connection:
        INSERT.execute(connection, row("a", at))
    for write in (INSERT.execute, lambda c, r: INSERT.executemany(c, [r])):
        with pytest.raises(sa.exc.IntegrityError), db.begin_write() as connection:
            write(connection, row("a", at))
    with db.begin_read() as connection:
        assert len(SELECT.rows(connection, ["ES-1"])) == 1


def test_params_must_name_the_statements_binds(db: Database) -> None:
    with db.begin_read() as connection:
        with pytest.raises(ValueError, match="binds"):
            DriverStatement(SELECT.statement, ["message"]).rows(connection, ["ES-1"])
        with pytest.raises(ValueError, match="binds"):
            DriverStatement(SELECT.statement).rows(connection)
