"""``rogatory worker``'s loop (gateway.worker): sends keep flowing past a slow one.

gw-es's store and intake as in tests.test_notice; messages go by e-mail through
a fake channel whose send of one chosen message blocks until the test lets it go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Receipt
from gateway import demo_messages
from gateway.db import Database
from gateway.dispatcher import Dispatcher
from gateway.intake import IntakeService
from gateway.model import Status
from gateway.outbox import Backoff
from gateway.pki import DevPKI
from gateway.store import MessageStore
from gateway.worker import Worker
from signing.trust import TrustEngine
from tests.test_notice import GW_ES, FakeChannels, conversation, es_intake, kinds, post


@pytest.fixture()
def intake(db: Database, pki: DevPKI, engine: TrustEngine, tmp_path: Path) -> IntakeService:
    return es_intake(db, pki, engine, tmp_path)


@dataclass
class SlowChannels(FakeChannels):
    """A message send blocks while its id is in ``slow`` and ``release`` is not set."""

    slow: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    started: list[str] = field(default_factory=list)

    def send(self, outgoing: Any) -> Receipt:
        self.started.append(outgoing.message_id)
        if outgoing.message_id in self.slow:
            assert self.release.wait(30), "the test never released the slow send"
        return super().send(outgoing)


def sent_by_email(intake: IntakeService, pki: DevPKI, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        example = demo_messages.request(with_attachments=False)
        post(intake, pki, example, channel="email")
        ids.append(example.message_id)
    return ids


def status(store: MessageStore, message_id: str) -> Status:
    message = store.message(message_id)
    assert message is not None
    return message.status


def eventually(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@contextmanager
def worker_running(
    intake: IntakeService, channels: SlowChannels, engine: TrustEngine, concurrency: int
) -> Iterator[tuple[threading.Event, list[Any]]]:
    """``Worker.run`` in a thread; yields its stop event and (once it returned) its totals."""
    dispatcher = Dispatcher(
        intake.store, intake.blobs, intake.directory, engine, intake.signer, GW_ES, channels,
        backoff=Backoff(0.001, 0.001), batch=concurrency, concurrency=concurrency,
    )  # fmt: skip
    worker = Worker(dispatcher, None, poll_seconds=0.05, report=lambda line: None)
    stop, result = threading.Event(), list[Any]()
    thread = threading.Thread(target=lambda: result.append(worker.run(stop)))
    thread.start()
    try:
        yield stop, result
    finally:
        channels.release.set()
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


def test_a_slow_send_does_not_hold_up_the_others(
    intake: IntakeService, pki: DevPKI, engine: TrustEngine
) -> None:
    store = intake.store
    slow, *others = sent_by_email(intake, pki, 6)
    channels = SlowChannels(slow={slow})
    with worker_running(intake, channels, engine, concurrency=2):
        # The slow send holds one slot; the other five pass through the other slot.
        assert eventually(lambda: all(status(store, m) is Status.RELAYED for m in others)), [
            status(store, m) for m in others
        ]
        assert status(store, slow) is Status.SENDING
        channels.release.set()
        assert eventually(lambda: status(store, slow) is Status.RELAYED)
    assert channels.messages.count(slow) == 1 and sorted(channels.messages) == sorted(
        [slow, *others]
    )


def test_stop_finishes_the_sends_in_hand_and_claims_no_more(
    intake: IntakeService, pki: DevPKI, engine: TrustEngine
) -> None:
    store = intake.store
    first, second = sent_by_email(intake, pki, 2)
    channels = SlowChannels(slow={first, second})
    with worker_running(intake, channels, engine, concurrency=1) as (stop, result):
        assert eventually(lambda: len(channels.started) == 1)
        stop.set()
        time.sleep(0.2)
        channels.release.set()
        assert eventually(lambda: bool(result))
    [held] = channels.started
    assert status(store, held) is Status.RELAYED  # finished, not abandoned
    untouched = second if held == first else first
    assert status(store, untouched) is Status.QUEUED  # never claimed
    assert result[0].sent == 1


def test_a_notice_claimed_with_its_reply_waits_for_the_reply_to_leave(
    intake: IntakeService, pki: DevPKI, engine: TrustEngine
) -> None:
    store = intake.store
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer, channel="email")  # the reply and its notice, both due
    reply = talk.answer.message_id
    channels = SlowChannels(slow={reply})
    with worker_running(intake, channels, engine, concurrency=4):
        assert eventually(lambda: channels.started == [reply])
        time.sleep(0.3)
        assert channels.notices == []  # not sent, and not postponed either, while it is sent
        assert "notice.retry" not in kinds(store, reply)
        channels.release.set()
        assert eventually(lambda: len(channels.notices) == 1)
        assert eventually(lambda: "notice.sent" in kinds(store, reply))
    assert status(store, reply) is Status.RELAYED
    assert kinds(store, reply) == ["notice.issued", "notice.sent"]
