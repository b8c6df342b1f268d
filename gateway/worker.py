"""``rogatory worker``: the dispatcher's loop, and the polls of the pull channels.

Each turn sends one batch from the outbox (see gateway.dispatcher) and, every
``poll_seconds``, fetches what waits on the pull channels (gateway.poller).
When there was nothing to do it sleeps ``poll_seconds``. SIGTERM or SIGINT
stops it after the batch in hand; a SIGKILL loses nothing (the outbox lease
runs out and the next worker sends again, which the far side answers with
its first evidence).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.dispatcher import Dispatcher, DispatchStats
from gateway.poller import Poller

log = logging.getLogger("rogatory.worker")


@dataclass
class Totals:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    received: int = 0
    refused: int = 0
    turns: int = 0
    outcomes: list[str] = field(default_factory=list)


class Worker:
    def __init__(
        self,
        dispatcher: Dispatcher,
        poller: Poller | None,
        *,
        poll_seconds: float = 1.0,
        report: Callable[[str], None] | None = None,
        after_turn: Callable[[], None] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.poller = poller
        self.poll_seconds = poll_seconds
        self.report = report or (lambda line: log.info("%s", line))
        self.after_turn = after_turn
        self.totals = Totals()
        self._last_poll = 0.0

    def turn(self) -> bool:
        """One batch (and a poll when due); whether there was anything to do."""
        stats: DispatchStats = self.dispatcher.run_once()
        busy = stats.claimed > 0
        self.totals.turns += 1
        self.totals.sent += stats.sent
        self.totals.retried += stats.retried
        self.totals.failed += stats.failed
        for outcome in stats.outcomes:
            self.report(outcome)
        now = time.monotonic()
        if self.poller is not None and now - self._last_poll >= self.poll_seconds:
            self._last_poll = now
            for line in self.poller.poll():
                busy = True
                self.report(line)
                if line.startswith("received"):
                    self.totals.received += 1
                else:
                    self.totals.refused += 1
        if self.after_turn is not None:
            self.after_turn()
        return busy

    def run(self, stop: threading.Event, *, once: bool = False) -> Totals:
        """Turn until ``stop`` is set (or, with ``once``, until the outbox is drained)."""
        while not stop.is_set():
            busy = self.turn()
            if once and not busy:
                break
            if not busy:
                stop.wait(self.poll_seconds)
        self.dispatcher.close()
        return self.totals
