"""Blob stores on a folder (beside SQLite) and in PostgreSQL: streaming, limits, dropped uploads."""

from __future__ import annotations

import hashlib
import threading
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.blobs import (
    BlobError,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    FolderBlobStore,
    PostgresBlobStore,
    blob_store_for,
    large_blob_store_for,
)
from gateway.db import Database
from gateway.small_blobs import TieredBlobStore

MiB = 1024 * 1024


@pytest.fixture()
def blobs(db: Database, tmp_path: Path) -> BlobStore:
    """The store for large blobs and streams (tests/test_small_blobs.py has the small tier)."""
    return large_blob_store_for(db, tmp_path / "data" / "blobs")


def stored_things(blobs: BlobStore) -> Sequence[object]:
    """Everything a store holds, blob or fragment: files in the folder, rows in the tables."""
    if isinstance(blobs, FolderBlobStore):
        if not blobs.root.exists():
            return []
        return sorted(p.name for p in blobs.root.rglob("*") if p.is_file())
    assert isinstance(blobs, PostgresBlobStore)
    with blobs.db.begin_read() as connection:
        chunks = connection.execute(sa.text("SELECT sha256, seq FROM blob_chunks")).all()
        rows = connection.execute(sa.text("SELECT sha256 FROM blobs")).all()
    return sorted(map(tuple, chunks)) + sorted(map(tuple, rows))


def generated(total: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes of varied content, produced piece by piece and never held whole."""
    block = hashlib.sha256(b"seed").digest() * (piece // 32)
    sent = 0
    n = 0
    while sent < total:
        size = min(piece, total - sent)
        yield n.to_bytes(8, "big") + block[: size - 8] if size >= 8 else block[:size]
        sent += size
        n += 1


def test_blob_store_for_matches_the_database(db: Database, tmp_path: Path) -> None:
    store = blob_store_for(db, tmp_path)
    expected = PostgresBlobStore if db.dialect == "postgresql" else FolderBlobStore
    assert isinstance(store, TieredBlobStore) and isinstance(store.large, expected)


@pytest.mark.parametrize("data", [b"", b"x", b"envelope" * 1000, bytes(range(256)) * 8193])
def test_put_and_read_back(blobs: BlobStore, data: bytes) -> None:
    ref = blobs.put(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert blobs.exists(ref.sha256) and blobs.size(ref.sha256) == len(data)
    assert blobs.read(ref.sha256) == data
    pieces = list(blobs.open_chunks(ref.sha256, chunk_size=1000))
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 1000 for p in pieces)


def test_chunk_boundaries_do_not_change_the_blob(blobs: BlobStore) -> None:
    data = bytes(range(256)) * (3 * MiB // 256 + 7)
    whole = blobs.put(data)
    pieces = [data[i : i + 777_777] for i in range(0, len(data), 777_777)]
    assert blobs.put_stream(iter([b"", *pieces, b""])) == whole
    assert b"".join(blobs.open_chunks(whole.sha256)) == data
    assert max(len(p) for p in blobs.open_chunks(whole.sha256)) == MiB


def test_same_content_is_stored_once(blobs: BlobStore) -> None:
    first = blobs.put(b"the same request" * 100)
    again = blobs.put_stream([b"the same request" * 50, b"the same request" * 50])
    assert first == again
    everything = stored_things(blobs)
    if isinstance(blobs, FolderBlobStore):
        assert everything == [first.sha256]
    else:
        assert everything == [(first.sha256, 0), (first.sha256,)]


def test_concurrent_puts_of_the_same_content_store_it_once(blobs: BlobStore) -> None:
    data = b"posted twice at once" * 100_000
    refs = []

    def put() -> None:
        refs.append(blobs.put_stream(data[i : i + 4096] for i in range(0, len(data), 4096)))

    threads = [threading.Thread(target=put) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(refs)) == 1 and len(refs) == 4
    assert blobs.read(refs[0].sha256) == data
    if isinstance(blobs, FolderBlobStore):
        assert stored_things(blobs) == [refs[0].sha256]
    else:
        assert len(stored_things(blobs)) == 2 + 1  # two chunks, one blob row


def test_a_200_mb_stream_stays_bounded_in_memory(blobs: BlobStore) -> None:
    total = 200 * MiB
    expected = hashlib.sha256()
    for piece in generated(total):
        expected.update(piece)
    tracemalloc.start()
    try:
        ref = blobs.put_stream(generated(total))
        read_back = hashlib.sha256()
        for chunk in blobs.open_chunks(ref.sha256):
            read_back.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.size == total and ref.sha256 == expected.hexdigest()
    assert read_back.hexdigest() == ref.sha256
    assert peak < 20 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_too_large_is_refused_at_once_and_leaves_nothing(blobs: BlobStore) -> None:
    produced = []

    def endless() -> Iterator[bytes]:
        while True:
            produced.append(1)
            yield b"z" * 65536

    with pytest.raises(BlobTooLarge) as refused:
        blobs.put_stream(endless(), max_size=5 * MiB)
    assert refused.value.max_size == 5 * MiB
    assert len(produced) == 5 * 16 + 1  # stopped at the first chunk past the limit
    assert stored_things(blobs) == []
    assert blobs.put_stream([b"z" * 10], max_size=10).size == 10  # the limit itself is allowed
    with pytest.raises(BlobTooLarge):
        blobs.put_stream([b"z" * 11], max_size=10)


def test_a_dropped_upload_leaves_nothing(blobs: BlobStore) -> None:
    class ClientWentAway(Exception):
        pass

    def dropped() -> Iterator[bytes]:
        yield from generated(3 * MiB + 5)
        raise ClientWentAway

    with pytest.raises(ClientWentAway):
        blobs.put_stream(dropped())
    assert stored_things(blobs) == []


def test_unknown_and_malformed_digests(blobs: BlobStore) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not blobs.exists(missing)
    with pytest.raises(BlobNotFound):
        blobs.read(missing)
    with pytest.raises(BlobNotFound):
        blobs.size(missing)
    with pytest.raises(BlobNotFound):
        blobs.open_chunks(missing)
    for bad in ["../../etc/passwd", "AB" * 32, "ab" * 31, "ab" * 32 + "\n"]:
        with pytest.raises(BlobError):
            blobs.exists(bad)


def test_folder_layout_and_sweep(tmp_path: Path) -> None:
    store = FolderBlobStore(tmp_path / "blobs")
    ref = store.put(b"layout")
    assert store.path(ref.sha256) == (tmp_path / "blobs" / ref.sha256[:2] / ref.sha256)
    leftover = tmp_path / "blobs" / ".incoming-killed"
    leftover.write_bytes(b"half an upload")
    assert store.sweep(older_than_seconds=3600) == 0
    assert store.sweep(older_than_seconds=-1) == 1
    assert not leftover.exists() and store.read(ref.sha256) == b"layout"
