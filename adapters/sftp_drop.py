"""One inbound SFTP drop: the folder a counterpart fills for us, read into an ``Incoming``.

A drop is one directory of regular files: ``envelope.xml`` and one file per
attachment, named by its content id (the layout adapters.sftp writes, too).
A drop that is anything else (a symbolic link, a stray or special file, an
unsafe name, too many entries or bytes, a file that cannot be read) comes
back as an ``Incoming`` with ``problem`` set and no content, so one bad drop
never stops the poll. A failure of the connection itself is raised, never
taken for a bad drop.

A regular file ``notice-<uuid>.xml`` beside the drops is no drop but the
channel-override notice of a gateway on the far side (what adapters.sftp
sends): it comes back whole as an ``Incoming`` of kind "notice", to be judged
by the gateway.
"""

from __future__ import annotations

import errno
import posixpath
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.base import Incoming, IncomingPart
from adapters.sftp_connect import REMOTE_ERRORS, reason

ENVELOPE = "envelope.xml"
MAX_NAME_BYTES = 255
# A gateway's channel-override notice (gateway.notice.file_name): one file, not a drop.
NOTICE_NAME = re.compile(r"notice-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.xml")
MAX_NOTICE_BYTES = 1024 * 1024


def unsafe_name(name: str) -> str | None:
    """Why ``name`` cannot be a file name in a drop, or None if it can."""
    if not name:
        return "it is empty"
    if "/" in name:
        return "it contains '/'"
    if name.startswith("."):
        return "it starts with '.'"
    if not name.isprintable():
        return "it contains characters that are not printable"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid Unicode"
    if size > MAX_NAME_BYTES:
        return f"it is {size} bytes long in UTF-8, more than {MAX_NAME_BYTES}"
    return None


@dataclass(frozen=True)
class DropReader:
    """Reads the drops of one counterpart (``authority_id``) within the adapter's limits."""

    where: str
    authority_id: str
    max_incoming_bytes: int
    max_incoming_files: int
    alive: Callable[[], bool]  # whether the connection still stands

    def read(self, sftp: Any, path: str, mode: int) -> Incoming | None:
        """The drop at ``path`` (of file ``mode``), or None if it went away since the listing."""
        if stat.S_ISREG(mode) and NOTICE_NAME.fullmatch(posixpath.basename(path)):
            return self._notice(sftp, path)
        if stat.S_ISLNK(mode):
            return self._refused(path, "it is a symbolic link, not a folder")
        if not stat.S_ISDIR(mode):
            return self._refused(path, "it is not a folder")
        try:
            entries = sftp.listdir_attr(path)
        except OSError as error:
            if not self.alive():
                raise
            if error.errno == errno.ENOENT:
                return None  # taken away since the listing
            return self._refused(path, f"it cannot be listed: {reason(error)}")
        if len(entries) > self.max_incoming_files:
            return self._refused(
                path, f"it holds {len(entries)} entries, more than {self.max_incoming_files}"
            )
        problems: list[str] = []
        files: list[str] = []
        total = 0
        for entry in sorted(entries, key=lambda e: str(e.filename)):
            name, kind = entry.filename, entry.st_mode or 0
            why = unsafe_name(name)
            if stat.S_ISLNK(kind):
                problems.append(f"{name!r} is a symbolic link")
            elif not stat.S_ISREG(kind):
                problems.append(f"{name!r} is not a regular file")
            elif why:
                problems.append(f"{name!r} is not an acceptable file name: {why}")
            else:
                files.append(name)
                total += entry.st_size or 0
        if ENVELOPE not in files:
            problems.append(f"it holds no {ENVELOPE}")
        if total > self.max_incoming_bytes:
            problems.append(
                f"it holds {total} bytes, more than the limit of {self.max_incoming_bytes}"
            )
        if problems:
            return self._refused(path, "; ".join(problems))

        envelope = b""
        parts: list[IncomingPart] = []
        left = self.max_incoming_bytes
        for name in files:
            try:
                data = self._read_file(sftp, posixpath.join(path, name), left)
            except REMOTE_ERRORS as error:
                if not self.alive():
                    raise
                return self._refused(path, f"{name!r} could not be read: {reason(error)}")
            if data is None:
                return self._refused(path, f"it grew past {self.max_incoming_bytes} bytes")
            left -= len(data)
            if name == ENVELOPE:
                envelope = data
            else:
                media_type = "application/pdf" if data.startswith(b"%PDF-") else None
                parts.append(IncomingPart(name, media_type or "application/octet-stream", data))
        return Incoming(
            reference=path,
            envelope=envelope,
            attachments=tuple(parts),
            channel_sender=self.authority_id,
            details={"sftp": f"{self.where}{path}"},
        )

    def _notice(self, sftp: Any, path: str) -> Incoming | None:
        """A notice file, read whole (the gateway judges it), or None if it went away."""
        problem = None
        try:
            data = self._read_file(sftp, path, MAX_NOTICE_BYTES)
        except REMOTE_ERRORS as error:
            if not self.alive():
                raise
            if isinstance(error, OSError) and error.errno == errno.ENOENT:
                return None  # taken away since the listing
            data, problem = b"", f"it could not be read: {reason(error)}"
        if data is None:
            data, problem = b"", f"it holds more than {MAX_NOTICE_BYTES} bytes"
        return Incoming(
            reference=path,
            envelope=data,
            channel_sender=self.authority_id,
            problem=f"the notice {path} on {self.where} was not read: {problem}"
            if problem
            else None,
            details={"sftp": f"{self.where}{path}"},
            kind="notice",
        )

    def _read_file(self, sftp: Any, path: str, limit: int) -> bytes | None:
        """The file's bytes, or None if it holds more than ``limit``."""
        with sftp.open(path, "rb") as source:
            size = source.stat().st_size or 0
            if size > limit:
                return None
            if size:
                source.prefetch(size, 64)
            data = source.read(limit + 1)
        return None if len(data) > limit else bytes(data)

    def _refused(self, path: str, problem: str) -> Incoming:
        return Incoming(
            reference=path,
            envelope=b"",
            channel_sender=self.authority_id,
            problem=f"the drop {path} on {self.where} was not read: {problem}",
            details={"sftp": f"{self.where}{path}"},
        )
