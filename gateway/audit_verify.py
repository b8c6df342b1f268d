"""Offline verification of the audit log: an export file or a live store.

Every leaf hash and root is recomputed from the entry bytes; every checkpoint
is checked against the given key and against the recomputed tree. The report
names the first entry that was edited, removed or reordered. Bad data is a
finding in the report, never an exception.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO

from gateway import merkle
from gateway.audit import EXPORT_FORMAT, AuditLog, decode_entry
from gateway.checkpoint import Checkpoint, CheckpointError, PublicKey, parse_checkpoint
from gateway.db import Database

MAX_LINE_BYTES = 128 * 1024


class Problem(StrEnum):
    EDITED = "edited"
    REMOVED = "removed"
    REORDERED = "reordered"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    UNSIGNED = "unsigned"


@dataclass(frozen=True)
class AuditFinding:
    """One thing wrong; ``index`` is the entry it names, if it names one."""

    problem: Problem
    index: int | None
    message: str


@dataclass(frozen=True)
class AuditReport:
    entries: int
    root_hash: bytes
    checkpoints: int
    signed_size: int
    findings: tuple[AuditFinding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_entry(self) -> AuditFinding | None:
        named = [f for f in self.findings if f.index is not None]
        return min(named, key=lambda f: f.index or 0) if named else None

    def summary(self) -> str:
        lines = [
            f"{self.entries} entries, root {self.root_hash.hex()}",
            f"{self.checkpoints} checkpoints; entries 0..{self.signed_size - 1} covered by a"
            " valid signature"
            if self.signed_size
            else f"{self.checkpoints} checkpoints; no entry covered by a valid signature",
        ]
        if self.ok:
            lines.append("the audit log verifies")
            if self.signed_size < self.entries:
                lines.append(
                    f"note: the last {self.entries - self.signed_size} entries are not yet signed"
                )
        first = self.first_bad_entry
        if first is not None:
            lines.append(f"FIRST BAD ENTRY: {first.index} ({first.problem}): {first.message}")
        lines += [f"{f.problem}: {f.message}" for f in self.findings if f is not first]
        return "\n".join(lines)


def verify_log(
    entries: Iterable[bytes | tuple[bytes, bytes]],
    notes: Iterable[str],
    key: PublicKey,
    *,
    origin: str | None = None,
    announced_size: int | None = None,
) -> AuditReport:
    """Check entry bytes (optionally with their stored leaf hashes) against signed checkpoints."""
    findings: list[AuditFinding] = []
    signed: dict[int, list[Checkpoint]] = {}
    count = 0
    for count, note in enumerate(notes, 1):
        try:
            checkpoint = parse_checkpoint(note)
        except CheckpointError as exc:
            findings.append(AuditFinding(Problem.MALFORMED, None, f"checkpoint {count}: {exc}"))
            continue
        if origin is not None and checkpoint.origin != origin:
            text = f"checkpoint {count} is for log {checkpoint.origin!r}, not {origin!r}"
            findings.append(AuditFinding(Problem.BAD_SIGNATURE, None, text))
        elif not checkpoint.signed_by(key):
            text = f"checkpoint {count} (size {checkpoint.size}) is not signed by the given key"
            findings.append(AuditFinding(Problem.BAD_SIGNATURE, None, text))
        else:
            signed.setdefault(checkpoint.size, []).append(checkpoint)

    walk = _Walk(signed)
    for item in entries:
        walk.add(*item) if isinstance(item, tuple) else walk.add(item, None)
    findings += walk.finish(announced_size)
    covered = [s for s in signed if s <= walk.frontier.size and s not in walk.bad_sizes]
    return AuditReport(
        entries=walk.frontier.size,
        root_hash=walk.frontier.root(),
        checkpoints=count,
        signed_size=max(covered, default=0),
        findings=tuple(findings),
    )


class _Walk:
    """One pass over the entries: leaf hashes, the chain of roots, roots at checkpoints."""

    def __init__(self, signed: dict[int, list[Checkpoint]]) -> None:
        self.signed = signed
        self.frontier = merkle.Frontier()
        self.findings: list[AuditFinding] = []
        self.bad_sizes: set[int] = set()
        self.missing: int | None = None  # the index first found out of place
        self.missing_at: int | None = None  # where it turned up later, if it did
        self.good_size = 0  # the largest checkpoint size whose root matched

    def add(self, encoded: bytes, stored_leaf: bytes | None) -> None:
        position = self.frontier.size
        root_before = self.frontier.root()
        leaf = merkle.leaf_hash(encoded)
        self._check(position, encoded, root_before, leaf, stored_leaf)
        self.frontier.append(leaf)
        size = self.frontier.size
        for checkpoint in self.signed.get(size, ()):
            if checkpoint.root_hash != self.frontier.root():
                self.bad_sizes.add(size)
        if size in self.signed and size not in self.bad_sizes:
            self.good_size = size

    def _check(
        self, position: int, encoded: bytes, root_before: bytes, leaf: bytes, stored: bytes | None
    ) -> None:
        try:
            entry = decode_entry(encoded)
        except (ValueError, UnicodeDecodeError) as exc:
            self._entry_finding(
                Problem.MALFORMED, position, f"entry {position} is unreadable: {exc}"
            )
            return
        if self.missing is not None:
            if entry.index == self.missing and self.missing_at is None:
                self.missing_at = position
            return
        if entry.index != position:
            self.missing = position
            return
        if stored is not None and stored != leaf:
            text = f"entry {position} no longer hashes to the leaf hash stored beside it"
            self._entry_finding(Problem.EDITED, position, text)
        elif entry.previous_root != root_before and not self.findings:
            edited = max(position - 1, 0)
            text = (
                f"entry {edited} was changed: entry {position} records a different root"
                f" for entries 0..{position - 1}"
                if position
                else "entry 0 was changed: it records a previous root for an empty log"
            )
            self._entry_finding(Problem.EDITED, edited, text)

    def _entry_finding(self, problem: Problem, index: int, message: str) -> None:
        if not any(f.index is not None for f in self.findings):
            self.findings.append(AuditFinding(problem, index, message))

    def finish(self, announced_size: int | None) -> list[AuditFinding]:
        size = self.frontier.size
        if self.missing is not None:
            if self.missing_at is None:
                text = f"entry {self.missing} was removed: the entry at its place has another index"
                self.findings.insert(0, AuditFinding(Problem.REMOVED, self.missing, text))
            else:
                text = f"entry {self.missing} was moved: it is at position {self.missing_at}"
                self.findings.insert(0, AuditFinding(Problem.REORDERED, self.missing, text))
        named = [f.index for f in self.findings if f.index is not None]
        beyond = [s for s in self.signed if s > size]
        if beyond and not named:
            text = (
                f"entries {size}..{max(beyond) - 1} were removed: a signed checkpoint covers them"
            )
            self.findings.append(AuditFinding(Problem.REMOVED, size, text))
        elif announced_size is not None and announced_size > size and not named:
            text = f"entries {size}..{announced_size - 1} were removed: the header announces them"
            self.findings.append(AuditFinding(Problem.REMOVED, size, text))
        for bad in sorted(self.bad_sizes):
            lower = max((s for s in self.signed if s < bad and s not in self.bad_sizes), default=0)
            if any(lower <= i < bad for i in named):
                continue  # an entry finding already explains this checkpoint
            text = (
                f"entry {lower} was changed: it does not hash to the signed root of size {bad}"
                if bad - lower == 1
                else f"one of entries {lower}..{bad - 1} was changed: they do not hash to the"
                f" signed root of size {bad} (their chain of roots was rewritten too)"
            )
            self.findings.append(AuditFinding(Problem.EDITED, lower, text))
            named.append(lower)
        if size and not self.signed:
            text = "no checkpoint signed by the given key covers any entry"
            self.findings.append(AuditFinding(Problem.UNSIGNED, None, text))
        return self.findings


def verify_store(db: Database, key: PublicKey, *, origin: str | None = None) -> AuditReport:
    """Verify the log as stored, reading every entry once."""
    log = AuditLog(db, origin=origin or "rogatory")
    with db.begin_read() as connection:
        size = AuditLog.current_size(connection, None)
        notes = log.notes(size, connection)
        entries = AuditLog.stream_entries(connection, size, with_leaves=True)
        return verify_log(entries, notes, key, origin=origin)


def verify_export(source: Path | str | IO[bytes], key: PublicKey) -> AuditReport:
    """Verify a JSON Lines export: header, entries, then checkpoints."""
    if isinstance(source, Path | str):
        with open(source, "rb") as stream:
            return _verify_stream(stream, key)
    if source.seekable():
        return _verify_stream(source, key)
    # Checkpoints come last but are needed first: spool a pipe to a file.
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(source, spool)
        spool.seek(0)
        return _verify_stream(spool, key)


def _verify_stream(stream: IO[bytes], key: PublicKey) -> AuditReport:
    start = stream.tell()
    header, header_problem = _header(stream.readline(MAX_LINE_BYTES + 1))
    notes: list[str] = []
    bad_lines: list[AuditFinding] = []
    for number, line in enumerate(_lines(stream), 2):
        if line.startswith(b'{"checkpoint":'):
            try:
                note = json.loads(line)["checkpoint"]
                notes.append(note if isinstance(note, str) else "")
            except (ValueError, TypeError, KeyError):
                bad_lines.append(
                    AuditFinding(Problem.MALFORMED, None, f"line {number} is unreadable")
                )
    stream.seek(start)
    stream.readline(MAX_LINE_BYTES + 1)
    entries = (line for line in _lines(stream) if not line.startswith(b'{"checkpoint":'))
    origin = header.get("origin") if isinstance(header.get("origin"), str) else None
    size = header.get("size")
    report = verify_log(
        entries,
        notes,
        key,
        origin=origin if isinstance(origin, str) else None,
        announced_size=size if isinstance(size, int) else None,
    )
    extra = [*([header_problem] if header_problem else []), *bad_lines]
    if not extra:
        return report
    return AuditReport(
        report.entries,
        report.root_hash,
        report.checkpoints,
        report.signed_size,
        (*extra, *report.findings),
    )


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    # Bounded reads: a hostile export cannot make one line eat the memory.
    while line := stream.readline(MAX_LINE_BYTES + 1):
        yield line.rstrip(b"\n")


def _header(line: bytes) -> tuple[dict[str, object], AuditFinding | None]:
    try:
        header = json.loads(line)
        if isinstance(header, dict) and header.get("format") == EXPORT_FORMAT:
            return header, None
    except ValueError:
        pass
    return {}, AuditFinding(Problem.MALFORMED, None, "the first line is not an audit export header")
