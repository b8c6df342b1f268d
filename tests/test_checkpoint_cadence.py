"""Signed audit checkpoints every ``audit_checkpoint_every`` entries, across workers."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from gateway.app import prepare_settings
from gateway.audit import AuditEvent
from gateway.services import Services, build_services
from gateway.settings import Settings

EVERY = 4


def services(data_dir: Path) -> Services:
    settings = Settings(mode="development", data_dir=data_dir, audit_checkpoint_every=EVERY)
    return build_services(prepare_settings(settings))


def log_events(s: Services, count: int) -> None:
    for n in range(count):
        s.audit.append(AuditEvent("test.event", "ES-MJ", None, {"n": n}))


def checkpoint_sizes(s: Services) -> list[int]:
    return [c.size for c in s.audit.checkpoints()]


def test_a_checkpoint_is_signed_each_time_enough_entries_have_passed(tmp_path: Path) -> None:
    s = services(tmp_path / "data")
    log_events(s, EVERY - 1)
    s.maybe_checkpoint()
    assert checkpoint_sizes(s) == []
    log_events(s, 1)
    s.maybe_checkpoint()
    s.maybe_checkpoint()  # nothing new: no second checkpoint of the same size
    assert checkpoint_sizes(s) == [EVERY]
    log_events(s, EVERY + 1)
    s.maybe_checkpoint()
    assert checkpoint_sizes(s) == [EVERY, 2 * EVERY + 1]


def test_a_checkpoint_another_worker_signed_counts(tmp_path: Path) -> None:
    one, other = services(tmp_path / "data"), services(tmp_path / "data")
    log_events(one, EVERY)
    one.maybe_checkpoint()
    log_events(one, EVERY)
    other.maybe_checkpoint()  # the other worker signs this one
    assert checkpoint_sizes(one) == [EVERY, 2 * EVERY]
    one.maybe_checkpoint()  # remembered EVERY, but reads the newest before signing again
    assert checkpoint_sizes(one) == [EVERY, 2 * EVERY]


def test_entries_another_worker_appended_count_at_this_workers_next_append(
    tmp_path: Path,
) -> None:
    one, other = services(tmp_path / "data"), services(tmp_path / "data")
    one.maybe_checkpoint()  # each has read the log once
    other.maybe_checkpoint()
    log_events(one, EVERY - 1)
    one.maybe_checkpoint()
    log_events(other, 1)  # an append reads the head: other now knows of one's entries
    other.maybe_checkpoint()
    assert checkpoint_sizes(one) == [EVERY]


def test_no_query_after_a_request_while_no_checkpoint_is_due(tmp_path: Path) -> None:
    s = services(tmp_path / "data")
    s.maybe_checkpoint()
    log_events(s, EVERY - 1)
    statements: list[str] = []
    sa.event.listen(s.db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    s.maybe_checkpoint()
    assert statements == []
    log_events(s, 1)
    statements.clear()
    s.maybe_checkpoint()
    assert statements and checkpoint_sizes(s) == [EVERY]
