"""``rogatory worker``: the dispatcher's loop, and the polls of the pull channels.

The worker keeps up to ``concurrency`` claims of the outbox in flight (see
gateway.dispatcher for what each send does) and claims more as each one
ends, so one slow send never holds up the rest. A notice claimed while its
reply is being sent waits for that send to end, then sees how it went. Every
``poll_seconds`` it fetches what waits on the pull channels
(gateway.poller); with nothing to do it sleeps that long. SIGTERM or SIGINT
stops it after the sends in hand; a SIGKILL loses nothing (the outbox lease
runs out and the next worker sends again, which the far side answers with
its first evidence).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from gateway.dispatcher import Dispatcher, DispatchStats
from gateway.outbox import Claim
from gateway.poller import Poller

log = logging.getLogger("rogatory.worker")


@dataclass
class Totals:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    received: int = 0
    refused: int = 0


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

    def run(self, stop: threading.Event, *, once: bool = False) -> Totals:
        """Send and poll until ``stop`` is set (or, with ``once``, until the outbox is drained)."""
        dispatcher = self.dispatcher
        slots = max(1, dispatcher.concurrency)
        pool = ThreadPoolExecutor(slots, "rogatory-dispatch")
        running: dict[Future[str], Claim] = {}
        held: list[Claim] = []  # notices whose reply is being sent
        try:
            while True:
                claimed = 0
                free = slots - len(running) - len(held)
                if free > 0 and not stop.is_set():
                    claims = dispatcher.claim(min(free, dispatcher.batch))
                    claimed = len(claims)
                    held += [c for c in claims if c.kind == "notice"]
                    for claim in claims:
                        if claim.kind != "notice":
                            running[pool.submit(dispatcher.handle, claim)] = claim
                sending = {c.message_id for c in running.values() if c.kind == "message"}
                for claim in [c for c in held if c.message_id not in sending]:
                    held.remove(claim)
                    running[pool.submit(dispatcher.handle, claim)] = claim
                # Free slots and nothing new: look again soon, new work may come in meanwhile.
                patience = self.poll_seconds if free <= claimed else min(self.poll_seconds, 0.2)
                ended = self._collect(running, wait_seconds=0 if claimed else patience)
                polled = self._poll_when_due()
                if (claimed or ended or polled) and self.after_turn is not None:
                    self.after_turn()
                if running or held:
                    continue
                if stop.is_set() or (once and not (claimed or ended or polled)):
                    break
                if not (claimed or ended or polled):
                    stop.wait(self.poll_seconds)
        finally:
            pool.shutdown(wait=True)
            dispatcher.close()
        return self.totals

    def _collect(self, running: dict[Future[str], Claim], *, wait_seconds: float) -> int:
        """Count the sends that ended, waiting up to ``wait_seconds`` for the first one."""
        if not running:
            return 0
        ended, _ = wait(running, timeout=wait_seconds, return_when=FIRST_COMPLETED)
        stats = DispatchStats()
        for future in ended:
            claim = running.pop(future)
            try:
                stats.count(future.result())
            except Exception as exc:  # the outcome could not even be recorded (database down)
                log.exception("dispatching %s failed", claim.message_id)
                # Its lease runs out and it is claimed again: nothing is lost.
                stats.count(f"lost: {claim.message_id}: {exc.__class__.__name__}: {exc}")
        self.totals.sent += stats.sent
        self.totals.retried += stats.retried
        self.totals.failed += stats.failed
        for outcome in stats.outcomes:
            self.report(outcome)
        return len(ended)

    def _poll_when_due(self) -> bool:
        """Poll the pull channels if ``poll_seconds`` have passed; whether anything came."""
        now = time.monotonic()
        if self.poller is None or now - self._last_poll < self.poll_seconds:
            return False
        self._last_poll = now
        busy = False
        for line in self.poller.poll():
            busy = True
            self.report(line)
            if line.startswith("received"):
                self.totals.received += 1
            else:
                self.totals.refused += 1
        return busy
