"""Group commit: writes that arrive together share one transaction and one sync.

A durable commit costs a disk sync and the writer lock, whatever it holds; on
SQLite that was a third of an acceptance. Threads that want to write while
another is writing queue up, and the next of them writes the whole queue in
one transaction for everyone: under load each commit carries several
acceptances, and alone a writer waits for no one (nothing is delayed to fill
a group).

Every caller still gets its own outcome. If the shared transaction fails, it
is rolled back and each item is written again on its own, so one bad item
never takes another down with it, and the error reaches only its caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("rogatory.group_commit")

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class _Slot(Generic[Item, Outcome]):
    __slots__ = ("error", "finished", "item", "outcome", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.wake = threading.Event()  # set when finished, or when made the next writer
        self.finished = False
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None

    def finish(self, outcome: Outcome | None, error: BaseException | None) -> None:
        self.outcome, self.error, self.finished = outcome, error, True
        self.wake.set()


class GroupCommit(Generic[Item, Outcome]):
    """Runs ``write_all`` over the items queued together; ``write_one`` if that fails.

    ``write_all(items)`` returns one outcome per item, in order, from one
    transaction. ``write_one(item)`` writes one item in its own transaction
    and returns its outcome or raises for it alone.
    """

    def __init__(
        self,
        write_all: Callable[[Sequence[Item]], Sequence[Outcome]],
        write_one: Callable[[Item], Outcome],
        *,
        max_group: int = 64,
    ) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self._write_all = write_all
        self._write_one = write_one
        self.max_group = max_group
        self._lock = threading.Lock()
        self._queue: list[_Slot[Item, Outcome]] = []
        self._writing = False  # invariant: a non-empty queue has a writer, running or woken

    def write(self, item: Item) -> Outcome:
        """Write ``item`` (with whatever else is queued); its outcome, or its error raised."""
        slot: _Slot[Item, Outcome] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            leads = not self._writing
            self._writing = True
        if not leads:
            slot.wake.wait()
        if not slot.finished:  # this thread writes the next group, its own item first
            self._write_group()
        if slot.error is not None:
            raise slot.error
        return slot.outcome  # type: ignore[return-value]  # set whenever error is None

    def _write_group(self) -> None:
        with self._lock:
            group = self._queue[: self.max_group]
            del self._queue[: self.max_group]
        try:
            self._run(group)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()  # the oldest waiter writes the next group
                else:
                    self._writing = False

    def _run(self, group: list[_Slot[Item, Outcome]]) -> None:
        try:
            try:
                outcomes = (
                    self._write_all([slot.item for slot in group]) if len(group) > 1 else None
                )
            except Exception as exc:  # rolled back: each one again on its own, below
                log.info("a group of %d writes failed (%s); writing each alone", len(group), exc)
                outcomes = None
            if outcomes is not None:
                if len(outcomes) != len(group):
                    raise RuntimeError("write_all returned a different number of outcomes")
                for slot, outcome in zip(group, outcomes, strict=True):
                    slot.finish(outcome, None)
                return
            for slot in group:
                try:
                    slot.finish(self._write_one(slot.item), None)
                except Exception as exc:
                    slot.finish(None, exc)
        finally:
            for slot in group:  # never leave a caller waiting, whatever happened
                if not slot.finished:
                    slot.finish(None, RuntimeError("the group write was interrupted"))
