"""Verifying many documents in one call: each path once, in order, with an outcome each."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from signing.trust import TrustEngine
from signing.verdict import DocumentReport, Indication

from .verification import Unreadable, expand_paths, verify_document

EXIT_OK, EXIT_FAILED, EXIT_INDETERMINATE, EXIT_UNREADABLE = 0, 1, 3, 4


@dataclass(frozen=True)
class Outcome:
    """A path and either its report or why it could not be read."""

    path: str
    report: DocumentReport | None = None
    unreadable: str | None = None


def verify_paths(
    paths: Iterable[Path],
    engine: TrustEngine | None,
    *,
    at: datetime | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Iterator[Outcome]:
    """Verify every document the paths name (folders recursively); ``on_start(total)`` once."""
    items = list(expand_paths(paths))
    if on_start is not None:
        on_start(len(items))
    for item in items:
        if isinstance(item, Unreadable):
            yield Outcome(item.path, unreadable=item.reason)
            continue
        try:
            data = sys.stdin.buffer.read() if str(item) == "-" else item.read_bytes()
        except OSError as exc:
            yield Outcome(str(item), unreadable=exc.strerror or str(exc))
            continue
        yield Outcome(str(item), report=verify_document(data, engine, path=str(item), at=at))


def exit_code(outcomes: Iterable[Outcome]) -> int:
    """1 if any failed; else 4 if a path was unreadable; else 3 if any indeterminate; else 0."""
    outcomes = list(outcomes)
    indications = {o.report.verdict.indication for o in outcomes if o.report is not None}
    if Indication.TOTAL_FAILED in indications:
        return EXIT_FAILED
    if any(o.unreadable for o in outcomes):
        return EXIT_UNREADABLE
    if Indication.INDETERMINATE in indications:
        return EXIT_INDETERMINATE
    return EXIT_OK
