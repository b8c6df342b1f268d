"""SFTP channel: upload into a counterpart's drop folder, poll the folder it fills for us.

A message on the server is one directory named by its message id::

    <folder>/<message_id>/envelope.xml      the signed envelope, byte for byte
    <folder>/<message_id>/<content id>      one file per attachment, named by its content id

Sending writes everything into a hidden ``<folder>/.<message_id>.<random>.part/``,
streaming each attachment in chunks, checks the size of every file on the
server, then renames the directory to ``<folder>/<message_id>``: a rename is
atomic on the server, so nothing ever appears under the final name half
written. A final name that already exists means an earlier attempt got
through (a resend after a crash): the new attempt's directory is removed and
the same receipt returned, never a second copy. A hidden ``.part`` directory
that a dropped connection left behind is ignored by readers and removed the
next time this adapter connects, if it can. Each attachment is hashed as
it streams: one that differs from its manifest entry is not sent. (A resend
finds the final name only while the recipient leaves it there; once moved
away, its intake dedupes on the message id.)

Polling reads each directory of ``inbound_folder`` that is not hidden and not
``processed`` or ``rejected`` as one message in the same layout, so the
counterpart must write under a hidden name and rename too. Anything else
there (a symbolic link, a stray file, a special file, more than
``max_incoming_bytes``) comes back as an ``Incoming`` with ``problem`` set
and no content (adapters.sftp_drop), so one bad drop never stops the poll. ``acknowledge`` moves a
drop into ``processed/`` or ``rejected/``, as ``<name>.1``, ``<name>.2`` ...
when the name is taken there, never over it. A file ``notice-<uuid>.xml``
there is a notice from a gateway on the far side (kind "notice"), read and
moved aside the same way.

A channel-override notice (gateway.notice) is one file,
``<folder>/notice-<notice id>.xml``, written as a hidden
``.notice-<id>.xml.<random>.part`` and renamed the same way; a resend that
finds the final name returns its receipt.

The server must present the host key pinned in the channel before we even
authenticate (adapters.sftp_connect). One adapter holds one connection,
reopened after an error; it is not meant to be shared between threads.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import posixpath
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import paramiko

from adapters.base import (
    AdapterError,
    Incoming,
    Outcome,
    Outgoing,
    OutgoingNotice,
    OutgoingPart,
    PermanentError,
    Receipt,
    TransientError,
)
from adapters.sftp_connect import REMOTE_ERRORS, PinnedServer, reason, where
from adapters.sftp_drop import ENVELOPE, DropReader, unsafe_name
from gateway.channels import SftpChannel

log = logging.getLogger(__name__)

ANSWERED = {"accepted": "processed", "rejected": "rejected"}
CHUNK = 256 * 1024  # read from the local attachment, written in 32 KiB SFTP requests
MAX_SUFFIX = 1000  # names tried in processed/ or rejected/ before giving up


class SftpAdapter:
    """Sends to, and polls, one authority's SFTP drop (see the module docstring)."""

    def __init__(
        self,
        channel: SftpChannel,
        *,
        client_key: Path,
        authority_id: str,
        timeout: float = 30,
        max_incoming_bytes: int = 256 * 1024 * 1024,
        max_incoming_files: int = 101,
    ) -> None:
        self.channel = channel
        self.client_key = client_key
        self.authority_id = authority_id
        self.timeout = timeout
        self.max_incoming_bytes = max_incoming_bytes
        self.max_incoming_files = max_incoming_files
        self._transport: Any = None
        self._sftp: Any = None
        self._leftovers: set[str] = set()  # .part directories a dropped connection left behind

    @property
    def where(self) -> str:
        return where(self.channel)

    # -- sending ---------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> Receipt:
        names = self._file_names(outgoing)
        folder = self.channel.folder
        final = posixpath.join(folder, outgoing.message_id)
        with self._remote(f"delivering message {outgoing.message_id} into {folder}"):
            sftp = self._session()
            if self._exists(sftp, final):
                return Receipt(reference=final)
            self._require_folder(sftp, folder)
            temp = posixpath.join(folder, f".{outgoing.message_id}.{secrets.token_hex(8)}.part")
            sftp.mkdir(temp)
            try:
                self._put_bytes(sftp, posixpath.join(temp, ENVELOPE), outgoing.envelope)
                for part, name in zip(outgoing.attachments, names, strict=True):
                    self._put_part(sftp, posixpath.join(temp, name), part)
                try:
                    sftp.rename(temp, final)
                except OSError:
                    if not self._exists(sftp, final):
                        raise
                    self._discard(sftp, temp)  # another attempt got there first
            except BaseException:
                self._discard(sftp, temp)
                raise
        return Receipt(reference=final)

    def send_notice(self, notice: OutgoingNotice) -> Receipt:
        """The signed notice as one file, ``<folder>/notice-<id>.xml``, renamed into place whole."""
        why = unsafe_name(notice.file_name)
        if why:
            raise PermanentError(f"{notice.file_name!r} cannot name a file on {self.where}: {why}")
        folder = self.channel.folder
        final = posixpath.join(folder, notice.file_name)
        with self._remote(f"delivering notice {notice.notice_id} into {folder}"):
            sftp = self._session()
            if self._exists(sftp, final):
                return Receipt(reference=final)  # an earlier attempt got through
            self._require_folder(sftp, folder)
            temp = posixpath.join(folder, f".{notice.file_name}.{secrets.token_hex(8)}.part")
            try:
                self._put_bytes(sftp, temp, notice.document)
                try:
                    sftp.rename(temp, final)
                except OSError:
                    if not self._exists(sftp, final):
                        raise
                    self._discard(sftp, temp)
            except BaseException:
                self._discard(sftp, temp)
                raise
        return Receipt(reference=final)

    def _file_names(self, outgoing: Outgoing) -> list[str]:
        """The attachments' file names, refused before anything is uploaded if unsafe."""
        why = unsafe_name(outgoing.message_id)
        if why:
            raise PermanentError(f"message id {outgoing.message_id!r} cannot name a folder: {why}")
        names: list[str] = []
        for part in outgoing.attachments:
            name = part.content_id
            why = unsafe_name(name) or (
                "it is the envelope's name"
                if name == ENVELOPE
                else "another attachment has it"
                if name in names
                else None
            )
            if why:
                raise PermanentError(
                    f"attachment content id {name!r} cannot be a file name on {self.where}: {why}"
                )
            names.append(name)
        return names

    def _require_folder(self, sftp: Any, folder: str) -> None:
        try:
            mode = sftp.stat(folder).st_mode
        except OSError as error:
            if error.errno == errno.ENOENT and self._alive():
                raise PermanentError(f"{self.where}: the folder {folder} does not exist") from error
            raise
        if not stat.S_ISDIR(mode or 0):
            raise PermanentError(f"{self.where}: {folder} is not a folder")

    def _put_bytes(self, sftp: Any, path: str, data: bytes) -> None:
        with sftp.open(path, "wb") as target:
            target.set_pipelined(True)
            target.write(data)
        self._check_size(sftp, path, len(data))

    def _put_part(self, sftp: Any, path: str, part: OutgoingPart) -> None:
        digest = hashlib.sha256()
        written = 0
        try:
            source = part.open()
        except OSError as error:
            raise self._unreadable(part, error) from error
        with source, sftp.open(path, "wb") as target:
            target.set_pipelined(True)
            while True:
                try:
                    chunk = source.read(CHUNK)
                except OSError as error:
                    raise self._unreadable(part, error) from error
                if not chunk:
                    break
                written += len(chunk)
                if written > part.size:
                    break
                digest.update(chunk)
                target.write(chunk)
        if written != part.size or digest.hexdigest() != part.sha256.lower():
            raise PermanentError(
                f"attachment {part.content_id!r}: the stored copy does not match its manifest "
                f"entry ({part.size} bytes, sha256 {part.sha256}); it was not sent"
            )
        self._check_size(sftp, path, written)

    def _unreadable(self, part: OutgoingPart, error: OSError) -> TransientError:
        return TransientError(f"attachment {part.content_id!r} could not be read: {reason(error)}")

    def _check_size(self, sftp: Any, path: str, size: int) -> None:
        held = sftp.stat(path).st_size
        if held != size:
            raise TransientError(
                f"{self.where}: {path} holds {held} bytes after {size} were written; will retry"
            )

    def _discard(self, sftp: Any, temp: str) -> None:
        """Remove one of our .part directories (or a notice's .part file), best effort: it
        never raises."""
        if not self._alive():
            self._leftovers.add(temp)
            return
        try:
            if not stat.S_ISDIR(sftp.lstat(temp).st_mode or 0):
                sftp.remove(temp)
            else:
                for entry in sftp.listdir_attr(temp):
                    sftp.remove(posixpath.join(temp, entry.filename))
                sftp.rmdir(temp)
        except OSError as error:
            if error.errno != errno.ENOENT:
                if not self._alive():
                    self._leftovers.add(temp)
                    return
                log.warning("%s: could not remove %s: %s", self.where, temp, reason(error))
        except (EOFError, paramiko.SSHException, paramiko.SFTPError):
            self._leftovers.add(temp)
            return
        self._leftovers.discard(temp)

    # -- polling ---------------------------------------------------------------

    def fetch(self, limit: int = 100) -> Iterator[Incoming]:
        """The drops waiting, oldest first: at most ``limit`` of them, and no more drops
        once ``max_incoming_bytes`` have been read in this call (the rest wait for the next)."""
        inbound = self.channel.inbound_folder
        if inbound is None:
            return
        with self._remote(f"listing {inbound}"):
            entries = self._session().listdir_attr(inbound)
        entries.sort(key=lambda e: (e.st_mtime or 0, e.filename))
        count = held = 0
        for entry in entries:
            name = entry.filename
            if count >= limit or held >= self.max_incoming_bytes:
                return
            if name.startswith(".") or name in ANSWERED.values():
                continue
            path = posixpath.join(inbound, name)
            drops = DropReader(
                self.where,
                self.authority_id,
                self.max_incoming_bytes,
                self.max_incoming_files,
                self._alive,
            )
            with self._remote(f"reading {path}"):
                incoming = drops.read(self._session(), path, entry.st_mode or 0)
            if incoming is not None:
                count += 1
                held += len(incoming.envelope) + sum(len(p.data) for p in incoming.attachments)
                yield incoming

    def acknowledge(self, incoming: Incoming, outcome: Outcome) -> None:
        inbound = self.channel.inbound_folder
        if outcome not in ANSWERED:
            raise ValueError(f"unknown outcome {outcome!r}")
        name = posixpath.basename(incoming.reference)
        if inbound is None or incoming.reference != posixpath.join(inbound, name):
            raise PermanentError(f"{incoming.reference} is not a drop in {inbound} on {self.where}")
        aside = posixpath.join(inbound, ANSWERED[outcome])
        with self._remote(f"moving {incoming.reference} into {aside}"):
            sftp = self._session()
            if not self._exists(sftp, incoming.reference):
                return  # moved already, by an acknowledgement that crashed before it returned
            if not self._exists(sftp, aside):
                try:
                    sftp.mkdir(aside)
                except OSError:
                    if not self._exists(sftp, aside):
                        raise
            for n in range(MAX_SUFFIX):
                target = posixpath.join(aside, name if n == 0 else f"{name}.{n}")
                if self._exists(sftp, target):
                    continue
                try:
                    # OpenSSH's plain rename never replaces an existing name.
                    sftp.rename(incoming.reference, target)
                    return
                except OSError:
                    if not self._exists(sftp, target):
                        raise
        raise PermanentError(f"{self.where}: {aside} holds {MAX_SUFFIX} entries named {name}")

    # -- the connection ----------------------------------------------------------

    def close(self) -> None:
        sftp, transport = self._sftp, self._transport
        self._sftp = self._transport = None
        if sftp is not None:
            with suppress(*REMOTE_ERRORS):  # saying goodbye on a dead connection fails
                sftp.close()
        if transport is not None:
            transport.close()

    def _alive(self) -> bool:
        return self._transport is not None and bool(self._transport.is_active())

    @contextmanager
    def _remote(self, doing: str) -> Iterator[None]:
        """Turn what paramiko and the socket raise into the adapter's two errors."""
        try:
            yield
        except AdapterError as error:
            if isinstance(error, TransientError):
                self.close()
            raise
        except REMOTE_ERRORS as error:
            alive = self._alive()
            self.close()  # the next call starts on a fresh connection
            where = f"{self.where} ({doing})"
            if isinstance(error, TimeoutError):
                raise TransientError(f"{where}: no answer within {self.timeout:g} s") from error
            if alive and isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM):
                raise PermanentError(f"{where}: permission denied") from error
            if not alive:
                raise TransientError(
                    f"{where}: the connection was lost: {reason(error)}"
                ) from error
            raise TransientError(f"{where}: the server answered: {reason(error)}") from error

    def _session(self) -> Any:
        if self._sftp is not None and self._alive():
            return self._sftp
        self.close()
        transport = PinnedServer(self.channel, self.client_key, self.timeout).connect()
        try:
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise TransientError(f"{self.where}: the server opened no SFTP session")
            sftp.get_channel().settimeout(self.timeout)
        except BaseException:
            transport.close()
            raise
        self._transport, self._sftp = transport, sftp
        for temp in sorted(self._leftovers):
            self._discard(sftp, temp)
        return sftp

    def _exists(self, sftp: Any, path: str) -> bool:
        try:
            sftp.lstat(path)
        except OSError as error:
            if error.errno == errno.ENOENT and self._alive():
                return False
            raise
        return True
