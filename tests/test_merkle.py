"""RFC 9162 Merkle trees: heads, inclusion and consistency proofs against a naive reference."""

from __future__ import annotations

import hashlib

import pytest

from gateway import merkle

# The Certificate Transparency test vector (RFC 6962 leaves and roots for sizes 1..8).
CT_LEAVES = [
    bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")
] + [bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (1, 8): CT_PATHS[(0, 8)],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def reference_mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) written straight from RFC 9162 §2.1.1, recursion and all."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(
        b"\x01" + reference_mth(entries[:k]) + reference_mth(entries[k:])
    ).digest()


def entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def test_ct_vector_roots() -> None:
    leaves = [merkle.leaf_hash(e) for e in CT_LEAVES]
    assert merkle.root_hash([]) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()
    for size in range(1, 9):
        assert merkle.root_hash(leaves[:size]).hex() == CT_ROOTS[size - 1]


def test_ct_vector_proofs() -> None:
    subtree = merkle.subtree_over([merkle.leaf_hash(e) for e in CT_LEAVES])
    for (index, size), path in CT_PATHS.items():
        assert [h.hex() for h in merkle.inclusion_path(index, size, subtree)] == path
    for (old, new), path in CT_CONSISTENCY.items():
        assert [h.hex() for h in merkle.consistency_path(old, new, subtree)] == path


@pytest.mark.parametrize("size", range(1, 70))
def test_tree_head_matches_reference(size: int) -> None:
    data = entries(size)
    assert merkle.root_hash([merkle.leaf_hash(e) for e in data]) == reference_mth(data)


def test_frontier_names_complete_subtrees() -> None:
    data = entries(37)
    leaves = [merkle.leaf_hash(e) for e in data]
    frontier = merkle.Frontier()
    for i, leaf in enumerate(leaves):
        for level, index, h in frontier.append(leaf):
            width = 1 << level
            assert (index + 1) * width == i + 1
            assert h == reference_mth(data[index * width : (index + 1) * width])
        assert frontier.root() == reference_mth(data[: i + 1])
        again = merkle.Frontier.from_bytes(frontier.size, frontier.to_bytes())
        assert again.root() == frontier.root()


def test_subtree_split_uses_only_complete_subtrees() -> None:
    data = entries(45)
    leaves = [merkle.leaf_hash(e) for e in data]

    def complete(start: int, end: int) -> bytes:
        n = end - start
        assert n & (n - 1) == 0 and start % n == 0
        return merkle.root_hash(leaves[start:end])

    for start in range(0, 45, 7):
        for end in range(start + 1, 46, 5):
            assert merkle.subtree_split(start, end, complete) == reference_mth(data[start:end])


@pytest.mark.parametrize("size", range(1, 34))
def test_every_inclusion_proof_verifies(size: int) -> None:
    leaves = [merkle.leaf_hash(e) for e in entries(size)]
    root = merkle.root_hash(leaves)
    subtree = merkle.subtree_over(leaves)
    for index in range(size):
        path = merkle.inclusion_path(index, size, subtree)
        assert merkle.verify_inclusion(index, size, leaves[index], path, root)
        assert not merkle.verify_inclusion(index, size, leaves[index], path, merkle.EMPTY_ROOT)
        other = (index + 1) % size
        if other != index:
            assert not merkle.verify_inclusion(other, size, leaves[index], path, root)
            assert not merkle.verify_inclusion(index, size, leaves[other], path, root)
        if path:
            bad = list(path)
            bad[-1] = bytes(32)
            assert not merkle.verify_inclusion(index, size, leaves[index], bad, root)
            assert not merkle.verify_inclusion(index, size, leaves[index], path[:-1], root)
        assert not merkle.verify_inclusion(index, size, leaves[index], [*path, root], root)


@pytest.mark.parametrize("new", range(1, 34))
def test_every_consistency_proof_verifies(new: int) -> None:
    leaves = [merkle.leaf_hash(e) for e in entries(new)]
    subtree = merkle.subtree_over(leaves)
    new_root = merkle.root_hash(leaves)
    for old in range(1, new + 1):
        old_root = merkle.root_hash(leaves[:old])
        path = merkle.consistency_path(old, new, subtree)
        assert merkle.verify_consistency(old, new, old_root, new_root, path)
        if old == new:
            continue
        assert not merkle.verify_consistency(old, new, new_root, new_root, path)
        assert not merkle.verify_consistency(old, new, old_root, old_root, path)
        for i in range(len(path)):
            bad = list(path)
            bad[i] = merkle.node_hash(bad[i], bad[i])
            assert not merkle.verify_consistency(old, new, old_root, new_root, bad)
        assert not merkle.verify_consistency(old, new, old_root, new_root, path[:-1])


def test_a_fork_is_not_consistent() -> None:
    honest = [merkle.leaf_hash(e) for e in entries(20)]
    forked = [*honest[:9], merkle.leaf_hash(b"rewritten"), *honest[10:]]
    path = merkle.consistency_path(12, 20, merkle.subtree_over(forked))
    old_root = merkle.root_hash(honest[:12])
    assert not merkle.verify_consistency(12, 20, old_root, merkle.root_hash(forked), path)


def test_out_of_range_proofs_are_refused() -> None:
    subtree = merkle.subtree_over([merkle.leaf_hash(b"x")])
    with pytest.raises(ValueError):
        merkle.inclusion_path(1, 1, subtree)
    with pytest.raises(ValueError):
        merkle.consistency_path(0, 1, subtree)
    with pytest.raises(ValueError):
        merkle.consistency_path(2, 1, subtree)
    assert not merkle.verify_inclusion(1, 1, merkle.leaf_hash(b"x"), [], merkle.EMPTY_ROOT)
    assert not merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(1, 2, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
