"""Small blobs kept in the database, written by the transaction that names them.

An envelope or an evidence is a few kilobytes. Kept as a file, each costs a
file sync and a folder sync before the transaction that names it may commit;
three of them took more time than everything else an acceptance does. Kept as
a row of ``small_blobs``, a small blob is made durable by that transaction's
one commit, and it cannot outlive or be missing from the record that names it.

``TieredBlobStore`` is the blob store the gateway uses: bytes up to
``SMALL_BLOB_MAX`` live in ``small_blobs``, larger ones (attachments) and
every stream go to the large store (a folder, or PostgreSQL's chunk tables).
Readers see one store; a digest is found in either tier.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gateway.blobs import CHUNK_SIZE, BlobNotFound, BlobRef, BlobStore, check_digest, rechunk
from gateway.db import Database
from gateway.driver_sql import DriverStatement

SMALL_BLOB_MAX = 256 * 1024  # an envelope is usually 5 to 50 KB, an evidence about 5 KB

small_blobs_table = sa.Table(
    "small_blobs",
    sa.MetaData(),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

_SELECT = sa.select(small_blobs_table.c.data).where(
    small_blobs_table.c.sha256 == sa.bindparam("sha256")
)
_INSERT = {  # a digest already present keeps its row: same digest, same bytes
    name: DriverStatement(
        dialect.insert(small_blobs_table).on_conflict_do_nothing(), ["sha256", "data"]
    )
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def digest_of(data: bytes) -> BlobRef:
    return BlobRef(hashlib.sha256(data).hexdigest(), len(data))


def keep_small(connection: Connection, blobs: Mapping[str, bytes]) -> None:
    """Write ``blobs`` (digest -> bytes) in the caller's transaction; present ones stay as they are.

    Each digest is checked against its bytes: a row is never written under a
    digest that is not its own.
    """
    if not blobs:
        return
    for sha256, data in blobs.items():
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"the bytes given for blob {sha256} have another digest")
    _INSERT[connection.dialect.name].executemany(connection, blobs.items())


def stage(blobs: BlobStore, data: bytes, staged: dict[str, bytes]) -> str:
    """The digest under which ``data`` will be kept.

    Small bytes, when ``blobs`` keeps them in the database, go into ``staged``
    for the transaction that records what names them (``keep_small``); any
    other bytes are put in ``blobs`` now.
    """
    if isinstance(blobs, TieredBlobStore) and blobs.is_small(data):
        sha256 = hashlib.sha256(data).hexdigest()
        staged[sha256] = data
        return sha256
    return blobs.put(data).sha256


class TieredBlobStore:
    """Small blobs in the database, the rest in ``large``; see the module docstring."""

    def __init__(self, db: Database, large: BlobStore, *, small_max: int = SMALL_BLOB_MAX) -> None:
        self.db = db
        self.large = large
        self.small_max = small_max

    def is_small(self, data: bytes) -> bool:
        return len(data) <= self.small_max

    def put(self, data: bytes) -> BlobRef:
        if not self.is_small(data):
            return self.large.put(data)
        ref = digest_of(data)
        with self._writing() as connection:
            keep_small(connection, {ref.sha256: data})
        return ref

    def put_stream(self, chunks: Iterable[bytes], *, max_size: int | None = None) -> BlobRef:
        return self.large.put_stream(chunks, max_size=max_size)

    def read(self, sha256: str) -> bytes:
        data = self._small(sha256)
        return data if data is not None else self.large.read(sha256)

    def open_chunks(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        data = self._small(sha256)
        if data is None:
            return self.large.open_chunks(sha256, chunk_size)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        return rechunk([data], chunk_size)

    def exists(self, sha256: str) -> bool:
        return self._small(sha256) is not None or self.large.exists(sha256)

    def size(self, sha256: str) -> int:
        data = self._small(sha256)
        return len(data) if data is not None else self.large.size(sha256)

    def _small(self, sha256: str) -> bytes | None:
        check_digest(sha256)
        with self.db.begin_read() as connection:
            found = connection.execute(_SELECT, {"sha256": sha256}).scalar_one_or_none()
        return None if found is None else bytes(found)

    def _writing(self) -> AbstractContextManager[Connection]:
        # SQLite has one writer: queue in the writer gate. PostgreSQL rows need no
        # lock; a concurrent insert of the same digest does nothing.
        if self.db.dialect == "postgresql":
            return self.db.engine.begin()
        return self.db.begin_write()


__all__ = [
    "SMALL_BLOB_MAX",
    "BlobNotFound",
    "TieredBlobStore",
    "keep_small",
    "small_blobs_table",
    "stage",
]
