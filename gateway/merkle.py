"""Merkle tree hashing of RFC 9162 §2.1: tree heads, inclusion and consistency proofs.

Pure functions over hashes; no I/O. Proof generation takes a ``SubtreeHash``
callable, MTH(D[start:end]), so that a store can answer it from hashes it keeps
for complete subtrees instead of rehashing every leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""MTH(D[start:end]) for 0 <= start < end: the hash of leaves start..end-1."""


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 9162 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes, in one pass with a compact frontier."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def subtree_over(leaves: Sequence[bytes]) -> SubtreeHash:
    """A ``SubtreeHash`` over leaf hashes held in memory (for tests and small logs)."""

    def subtree(start: int, end: int) -> bytes:
        return root_hash(leaves[start:end])

    return subtree


def subtree_split(start: int, end: int, complete: SubtreeHash) -> bytes:
    """MTH(D[start:end]) from hashes of aligned complete subtrees only.

    ``complete`` is asked only for ranges whose length is a power of two and
    whose start is a multiple of that length, i.e. nodes a log stores once
    they are full; at most two lookups per level.
    """
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return complete(start, end)
    k = split_point(n)
    return node_hash(
        subtree_split(start, start + k, complete), subtree_split(start + k, end, complete)
    )


def inclusion_path(index: int, size: int, subtree: SubtreeHash) -> tuple[bytes, ...]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    # Walk down from the root, then reverse: the proof lists siblings bottom-up.
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start = start + k
    return tuple(reversed(path))


def consistency_path(old_size: int, new_size: int, subtree: SubtreeHash) -> tuple[bytes, ...]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    path: list[bytes] = []
    m, start, end, whole = old_size, 0, new_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            m -= k
            start = start + k
            whole = False
    if not whole:
        path.append(subtree(start, end))
    return tuple(reversed(path))


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove leaf ``index`` in the tree ``root`` of ``size``."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``old_root`` of ``old_size`` a prefix of ``new_root``."""
    if old_size == new_size:
        return len(path) == 0 and old_root == new_root
    if not 0 < old_size < new_size or not path:
        return False
    proof = list(path)
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    root_hash: bytes
    path: tuple[bytes, ...]

    def verify(self) -> bool:
        return verify_inclusion(self.index, self.size, self.leaf_hash, self.path, self.root_hash)

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "size": self.size,
            "leaf_hash": self.leaf_hash.hex(),
            "root_hash": self.root_hash.hex(),
            "path": [h.hex() for h in self.path],
        }


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    path: tuple[bytes, ...]

    def verify(self) -> bool:
        return verify_consistency(
            self.old_size, self.new_size, self.old_root, self.new_root, self.path
        )

    def to_json(self) -> dict[str, object]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": self.old_root.hex(),
            "new_root": self.new_root.hex(),
            "path": [h.hex() for h in self.path],
        }


class Frontier:
    """The compact range of a log: the roots of its complete subtrees, largest first.

    Appending a leaf costs O(1) hashes on average and names every subtree it
    completes, so a store can keep exactly the nodes proofs need.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} hashes")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the (level, index, hash) of each subtree it completes."""
        completed: list[tuple[int, int, bytes]] = []
        h, level, n = leaf, 0, self.size
        while (n >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            completed.append((level, n >> level, h))
        self.hashes.append(h)
        self.size = n + 1
        return completed

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, blob: bytes) -> Frontier:
        hashes = [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
        return cls(size, hashes)
