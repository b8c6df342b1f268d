"""Content-addressed blob storage: originals, attachments and evidences by their SHA-256.

Bytes are streamed and hashed on the way in, so memory stays bounded whatever
the size, and a blob appears whole under its digest or not at all: an upload
that is too large or breaks off leaves nothing behind. Two stores: a folder
(the embedded default, beside SQLite) and tables in PostgreSQL (so every
gateway node behind a load balancer sees the same blobs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from gateway.db import Database
from signing.errors import RogatoryError

CHUNK_SIZE = 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")
_INCOMING = ".incoming-"

_metadata = sa.MetaData()
blobs_table = sa.Table(
    "blobs",
    _metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)
chunks_table = sa.Table(
    "blob_chunks",
    _metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary),
)


class BlobError(RogatoryError):
    """A blob cannot be stored or read."""


class BlobTooLarge(BlobError):
    """The stream passed the size limit; nothing was stored."""

    def __init__(self, max_size: int) -> None:
        super().__init__(f"the content is larger than the limit of {max_size} bytes")
        self.max_size = max_size


class BlobNotFound(BlobError, KeyError):
    """No blob is stored under this digest."""

    def __str__(self) -> str:
        return f"no blob is stored under {self.args[0]}"


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: its SHA-256 (lowercase hex) and size in bytes."""

    sha256: str
    size: int


class BlobStore(Protocol):
    def put_stream(self, chunks: Iterable[bytes], *, max_size: int | None = None) -> BlobRef:
        """Store the concatenated chunks; ``BlobTooLarge`` as soon as ``max_size`` is passed."""
        ...

    def put(self, data: bytes) -> BlobRef: ...

    def open_chunks(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most ``chunk_size``; ``BlobNotFound`` if absent."""
        ...

    def read(self, sha256: str) -> bytes:
        """The whole blob in memory: for evidences and envelopes, not for attachments."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...


def check_digest(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits (it names a file or a row); else BlobError."""
    if not isinstance(sha256, str) or not _DIGEST.fullmatch(sha256):
        raise BlobError(f"{sha256!r} is not a SHA-256 digest in lowercase hex")
    return sha256


def _limited(chunks: Iterable[bytes], max_size: int | None) -> Iterator[bytes]:
    """The non-empty chunks, refusing the stream as soon as it passes ``max_size``."""
    total = 0
    for chunk in chunks:
        if not chunk:
            continue
        total += len(chunk)
        if max_size is not None and total > max_size:
            raise BlobTooLarge(max_size)
        yield bytes(chunk)


def rechunk(pieces: Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    for piece in pieces:
        for start in range(0, len(piece), chunk_size):
            yield piece[start : start + chunk_size]


class FolderBlobStore:
    """Blobs as files ``root/ab/<sha256>``, written to a temporary file and linked.

    One level of 256 folders: a second level (65,536 folders) made almost every
    new blob create and sync two folders, a third of the cost of a small put.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        check_digest(sha256)
        return self.root / sha256[:2] / sha256

    def put_stream(self, chunks: Iterable[bytes], *, max_size: int | None = None) -> BlobRef:
        self.root.mkdir(parents=True, exist_ok=True)
        # Same folder as the blobs, so the final rename never crosses file systems.
        tmp = self.root / f"{_INCOMING}{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        try:
            with tmp.open("xb") as out:
                for chunk in _limited(chunks, max_size):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            ref = BlobRef(digest.hexdigest(), size)
            target = self.path(ref.sha256)
            self._make_folders(target.parent)
            try:
                # A hard link never replaces: an existing blob is not rewritten.
                os.link(tmp, target)
            except FileExistsError:
                return ref
            except OSError:  # a file system without hard links
                if target.exists():
                    return ref
                os.replace(tmp, target)
            _fsync_dir(target.parent)
            return ref
        finally:
            tmp.unlink(missing_ok=True)

    def _make_folders(self, folder: Path) -> None:
        """Create ``ab`` as needed, the new entry made durable in its parent."""
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            _fsync_dir(folder.parent)

    def put(self, data: bytes) -> BlobRef:
        return self.put_stream([data])

    def open_chunks(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        try:
            stream = self.path(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        return _read_file(stream, chunk_size)

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def sweep(self, older_than_seconds: float = 3600.0) -> int:
        """Remove temporary files a killed process left behind; return how many."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for leftover in self.root.glob(f"{_INCOMING}*"):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed


def _read_file(stream: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(chunk_size):
            yield chunk


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PostgresBlobStore:
    """Blobs as 1 MiB rows of ``blob_chunks`` plus one ``blobs`` row, in the database.

    A blob is written in one transaction under a temporary key and renamed to
    its digest at the end, so a reader sees it whole or not at all. It does
    not take the writer lock: a long upload never holds up other writes.
    """

    def __init__(self, db: Database, *, chunk_size: int = CHUNK_SIZE) -> None:
        self.db = db
        self.chunk_size = chunk_size

    def put_stream(self, chunks: Iterable[bytes], *, max_size: int | None = None) -> BlobRef:
        staging = f"tmp-{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        with self.db.engine.begin() as connection:
            seq = 0
            pending = bytearray()
            for chunk in _limited(chunks, max_size):
                digest.update(chunk)
                size += len(chunk)
                pending += chunk
                while len(pending) >= self.chunk_size:
                    self._insert(connection, staging, seq, bytes(pending[: self.chunk_size]))
                    del pending[: self.chunk_size]
                    seq += 1
            if pending or seq == 0:
                self._insert(connection, staging, seq, bytes(pending))
            ref = BlobRef(digest.hexdigest(), size)
            self._publish(connection, staging, ref)
        return ref

    @staticmethod
    def _insert(connection: Connection, key: str, seq: int, data: bytes) -> None:
        connection.execute(chunks_table.insert().values(sha256=key, seq=seq, data=data))

    @staticmethod
    def _publish(connection: Connection, staging: str, ref: BlobRef) -> None:
        created = connection.execute(
            _insert_blob_if_absent(connection)
            .values(sha256=ref.sha256, size=ref.size, created_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["sha256"])
            .returning(blobs_table.c.sha256)
        ).scalar_one_or_none()
        staged = chunks_table.c.sha256 == staging
        if created is not None:
            connection.execute(chunks_table.update().where(staged).values(sha256=ref.sha256))
        else:  # stored before, or by a concurrent upload that committed first
            connection.execute(chunks_table.delete().where(staged))

    def put(self, data: bytes) -> BlobRef:
        return self.put_stream([data])

    def open_chunks(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.size(sha256)  # BlobNotFound now, not on the first next()
        return rechunk(self._stored_chunks(sha256), chunk_size)

    def _stored_chunks(self, sha256: str) -> Iterator[bytes]:
        # One stored chunk in memory at a time; blobs never change once written.
        seq = 0
        while True:
            query = sa.select(chunks_table.c.data).where(
                chunks_table.c.sha256 == sha256, chunks_table.c.seq == seq
            )
            with self.db.begin_read() as connection:
                data = connection.execute(query).scalar_one_or_none()
            if data is None:
                return
            yield bytes(data)
            seq += 1

    def read(self, sha256: str) -> bytes:
        return b"".join(self.open_chunks(sha256))

    def exists(self, sha256: str) -> bool:
        try:
            self.size(sha256)
        except BlobNotFound:
            return False
        return True

    def size(self, sha256: str) -> int:
        query = sa.select(blobs_table.c.size).where(blobs_table.c.sha256 == check_digest(sha256))
        with self.db.begin_read() as connection:
            found = connection.execute(query).scalar_one_or_none()
        if found is None:
            raise BlobNotFound(sha256)
        return int(found)


def _insert_blob_if_absent(connection: Connection) -> postgresql.Insert:
    if connection.dialect.name != "postgresql":
        raise BlobError("PostgresBlobStore needs a PostgreSQL database")
    return postgresql.insert(blobs_table)


def large_blob_store_for(db: Database, blob_dir: Path | str) -> BlobStore:
    """Where large blobs go with ``db``: a folder beside SQLite, chunk tables in PostgreSQL."""
    if db.dialect == "postgresql":
        return PostgresBlobStore(db)
    return FolderBlobStore(blob_dir)


def blob_store_for(db: Database, data_dir: Path | str) -> BlobStore:
    """The gateway's blob store for ``db``: small blobs in the database, large ones beside it."""
    from gateway.small_blobs import TieredBlobStore  # it builds on this module

    return TieredBlobStore(db, large_blob_store_for(db, Path(data_dir) / "blobs"))
