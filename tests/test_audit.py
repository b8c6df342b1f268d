"""The audit log on SQLite and PostgreSQL: appends, proofs, checkpoints, export, verification."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway import merkle
from gateway.audit import AuditError, AuditEvent, AuditLog, canonical_json, decode_entry
from gateway.audit_cli import audit
from gateway.audit_verify import Problem, verify_export, verify_store
from gateway.checkpoint import parse_checkpoint
from gateway.db import Database, applied_migrations, migrate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture()
def log(db: Database) -> AuditLog:
    return AuditLog(db, origin="test.rogatory/audit")


def event(n: int, actor: str = "ES-MJ") -> AuditEvent:
    return AuditEvent("message.accepted", actor, f"ES-2026-{n:04d}", {"n": n, "digest": "ab" * 32})


def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(event(i))


def test_entries_are_canonical_and_chained(log: AuditLog) -> None:
    first = log.append(AuditEvent("message.received", "ES-MJ", None, {"z": 1, "a": [True, None]}))
    second = log.append(event(1))
    assert (first.index, second.index) == (0, 1)
    entry = log.entry(0)
    assert entry.encoded == (
        b'{"actor":"ES-MJ","details":{"a":[true,null],"z":1},"index":0,'
        b'"kind":"message.received","message_id":null,"previous_root":"'
        + merkle.EMPTY_ROOT.hex().encode()
        + b'","time":"'
        + entry.time.encode()
        + b'","v":1}'
    )
    assert entry.leaf_hash == first.leaf_hash == merkle.leaf_hash(entry.encoded)
    assert log.entry(1).previous_root == merkle.leaf_hash(entry.encoded) == log.root(1)
    assert [e.index for e in log.entries_for("ES-2026-0001")] == [1]


def test_canonical_json_follows_rfc_8785_key_order() -> None:
    # U+1F600 sorts before U+FB01 by UTF-16 code units, after it by code points.
    assert canonical_json({"\ufb01": 1, "\U0001f600": 2, "b": "é\n"}) == (
        '{"b":"é\\n","\U0001f600":2,"\ufb01":1}'.encode()
    )


@pytest.mark.parametrize(
    "bad",
    [
        AuditEvent("Message Accepted", "ES-MJ"),
        AuditEvent("message.accepted", ""),
        AuditEvent("message.accepted", "ES-MJ", ""),
        AuditEvent("message.accepted", "ES-MJ", None, {"x": 1.5}),
        AuditEvent("message.accepted", "ES-MJ", None, {"x": 2**60}),
        AuditEvent("message.accepted", "ES-MJ", None, {"x": "\ud800"}),
        AuditEvent("message.accepted", "ES-MJ", None, {"x": "y" * 70_000}),
        AuditEvent("message.accepted", "ES-MJ", None, {"x": {1: 2}}),  # type: ignore[dict-item]
    ],
)
def test_unloggable_events_are_refused_and_leave_no_entry(log: AuditLog, bad: AuditEvent) -> None:
    with pytest.raises(AuditError):
        log.append(bad)
    assert log.size() == 0


def test_proofs_match_the_tree_of_every_size(log: AuditLog) -> None:
    fill(log, 37)
    with log.db.begin_read() as connection:
        leaves = [merkle.leaf_hash(e) for e in AuditLog.stream_entries(connection, 37)]
    subtree = merkle.subtree_over(leaves)
    for size in range(1, 38):
        assert log.root(size) == merkle.root_hash(leaves[:size])
        for index in range(0, size, 5):
            proof = log.inclusion_proof(index, size)
            assert proof.path == merkle.inclusion_path(index, size, subtree)
            assert proof.verify()
        consistency = log.consistency_proof(size, 37)
        assert consistency.path == merkle.consistency_path(size, 37, subtree)
        assert consistency.verify()
    with pytest.raises(AuditError):
        log.inclusion_proof(37)
    with pytest.raises(AuditError):
        log.consistency_proof(0)


def test_checkpoints_are_signed_and_consistent(
    log: AuditLog, key: ec.EllipticCurvePrivateKey
) -> None:
    fill(log, 5)
    old = log.checkpoint(key)
    fill(log, 9)
    new = log.checkpoint(key)
    assert [c.size for c in log.checkpoints()] == [5, 14]
    assert parse_checkpoint(new.to_note()) == new
    assert old.signed_by(key.public_key()) and new.signed_by(key.public_key())
    proof = log.consistency_proof(old.size, new.size)
    assert (proof.old_root, proof.new_root) == (old.root_hash, new.root_hash)
    assert proof.verify()
    assert verify_store(log.db, key.public_key()).ok


def test_export_verifies(log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    fill(log, 20)
    log.checkpoint(key)
    fill(log, 3)
    out = tmp_path / "audit.jsonl"
    assert log.export(out) == 23
    report = verify_export(out, key.public_key())
    assert report.ok, report.summary()
    assert (report.entries, report.signed_size, report.root_hash) == (23, 20, log.root())
    assert "not yet signed" in report.summary()


def exported(log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> list[bytes]:
    fill(log, 30)
    log.checkpoint(key)
    out = tmp_path / "audit.jsonl"
    log.export(out)
    return out.read_bytes().splitlines()


def check(lines: list[bytes], key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> tuple[str, int]:
    bad = tmp_path / "tampered.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    report = verify_export(bad, key.public_key())
    first = report.first_bad_entry
    assert not report.ok and first is not None and first.index is not None
    return first.problem, first.index


def test_an_edited_entry_is_named(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    lines = exported(log, key, tmp_path)
    lines[1 + 12] = lines[1 + 12].replace(b'"actor":"ES-MJ"', b'"actor":"FR-MJ"')
    assert check(lines, key, tmp_path) == (Problem.EDITED, 12)


def test_an_edited_last_entry_is_named_by_its_checkpoint(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    fill(log, 5)
    log.checkpoint(key)
    lines = exported(log, key, tmp_path)
    # Nothing after entry 34 records a root over it: only the checkpoint of size 35 does,
    # so the report can narrow it down to the entries since the last good checkpoint.
    lines[35] = lines[35].replace(b'"n":29', b'"n":28')
    bad = tmp_path / "tampered.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    report = verify_export(bad, key.public_key())
    first = report.first_bad_entry
    assert first is not None and (first.problem, first.index) == (Problem.EDITED, 5)
    assert "one of entries 5..34 was changed" in first.message
    assert report.signed_size == 5


def test_a_removed_entry_is_named(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    lines = exported(log, key, tmp_path)
    del lines[1 + 7]
    assert check(lines, key, tmp_path) == (Problem.REMOVED, 7)


def test_removed_last_entries_are_named(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    lines = exported(log, key, tmp_path)
    del lines[28:31]
    assert check(lines, key, tmp_path) == (Problem.REMOVED, 27)


def test_reordered_entries_are_named(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    lines = exported(log, key, tmp_path)
    lines[1 + 4], lines[1 + 9] = lines[1 + 9], lines[1 + 4]
    assert check(lines, key, tmp_path) == (Problem.REORDERED, 4)


def test_a_rewritten_chain_is_caught_by_the_checkpoint(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    fill(log, 8)
    log.checkpoint(key)
    fill(log, 8)
    log.checkpoint(key)
    # Rewrite entry 10 and recompute every later previous_root, as a careful forger would.
    with log.db.begin_read() as connection:
        entries = list(AuditLog.stream_entries(connection, 16))
    forged = merkle.Frontier()
    out = []
    for i, encoded in enumerate(entries):
        obj = json.loads(encoded)
        obj["previous_root"] = forged.root().hex()
        if i == 10:
            obj["actor"] = "FR-MJ"
        encoded = canonical_json(obj)
        forged.append(merkle.leaf_hash(encoded))
        out.append(encoded)
    notes = [json.dumps({"checkpoint": c.to_note()}).encode() for c in log.checkpoints()]
    header = tmp_path.joinpath("h.jsonl")
    log.export(header)
    lines = [header.read_bytes().splitlines()[0], *out, *notes]
    problem, index = check(lines, key, tmp_path)
    assert (problem, index) == (Problem.EDITED, 8)  # somewhere in 8..15, the unsigned stretch


def test_a_checkpoint_with_a_bad_signature_is_refused(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    lines = exported(log, key, tmp_path)
    note = json.loads(lines[-1])["checkpoint"]
    forged = note.replace("\n30\n", "\n29\n")
    lines[-1] = json.dumps({"checkpoint": forged}).encode()
    bad = tmp_path / "forged.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    report = verify_export(bad, key.public_key())
    assert not report.ok
    assert [f.problem for f in report.findings] == [Problem.BAD_SIGNATURE, Problem.UNSIGNED]
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    report = verify_export(tmp_path / "audit.jsonl", other)
    assert Problem.BAD_SIGNATURE in [f.problem for f in report.findings]


@pytest.mark.parametrize(
    "content",
    [b"", b"not json\n", b'{"format":"other"}\n', b"\xff\xfe\n{]\n", b'{"checkpoint": 3}\n'],
)
def test_garbage_exports_are_reported_not_raised(
    content: bytes, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(content)
    report = verify_export(path, key.public_key())
    assert not report.ok
    assert report.findings[0].problem == Problem.MALFORMED


def test_a_store_edited_in_place_is_named(log: AuditLog, key: ec.EllipticCurvePrivateKey) -> None:
    fill(log, 12)
    log.checkpoint(key)
    with log.db.begin_write() as connection:
        encoded = connection.execute(sa.text("SELECT entry FROM audit_entries WHERE idx = 6"))
        changed = bytes(encoded.scalar_one()).replace(b"ES-MJ", b"XX-MJ")
        connection.execute(
            sa.text("UPDATE audit_entries SET entry = :e WHERE idx = 6"), {"e": changed}
        )
    first = verify_store(log.db, key.public_key()).first_bad_entry
    assert first is not None and (first.problem, first.index) == (Problem.EDITED, 6)


def test_migrations_are_recorded_and_idempotent(db: Database) -> None:
    assert applied_migrations(db.engine) == [
        "0001_audit_log", "0002_messages", "0003_outbox", "0004_small_blobs",
    ]  # fmt: skip
    assert migrate(db.engine) == []


def test_concurrent_threads_never_fork_the_log(
    log: AuditLog, key: ec.EllipticCurvePrivateKey
) -> None:
    def writer(name: str) -> None:
        for i in range(25):
            log.append(AuditEvent("test.append", name, None, {"i": i}))

    threads = [threading.Thread(target=writer, args=(f"thread-{t}",)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_each_once(log, {f"thread-{t}": 25 for t in range(6)})
    log.checkpoint(key)
    assert verify_store(log.db, key.public_key()).ok


WRITER = """
import sys
from gateway.audit import AuditEvent, AuditLog
from gateway.db import Database
url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = Database.from_url(url)
log = AuditLog(db)
i = 0
while count < 0 or i < count:
    ref = log.append(AuditEvent("test.append", name, None, {"i": i, "pad": "x" * (i % 300)}))
    print(ref.index, flush=True)
    i += 1
db.dispose()
"""


def writer_process(url: str, name: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, name, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def assert_each_once(log: AuditLog, expected: dict[str, int]) -> None:
    seen: dict[str, list[int]] = {}
    with log.db.begin_read() as connection:
        for position, encoded in enumerate(AuditLog.stream_entries(connection, log.size())):
            entry = decode_entry(encoded)
            assert entry.index == position
            seen.setdefault(entry.actor, []).append(int(entry.details["i"]))  # type: ignore[arg-type]
    assert {actor: sorted(items) for actor, items in seen.items()} == {
        actor: list(range(n)) for actor, n in expected.items()
    }


def test_concurrent_processes_and_threads_never_fork_the_log(
    db_url: str, log: AuditLog, key: ec.EllipticCurvePrivateKey
) -> None:
    processes = [writer_process(db_url, f"process-{p}", 60) for p in range(2)]
    threads = [
        threading.Thread(
            target=lambda n=t: [
                log.append(AuditEvent("test.append", f"thread-{n}", None, {"i": i}))
                for i in range(30)
            ]
        )
        for t in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        assert len(out.split()) == 60
    assert_each_once(log, {"process-0": 60, "process-1": 60, "thread-0": 30, "thread-1": 30})
    log.checkpoint(key)
    assert verify_store(log.db, key.public_key()).ok


def test_a_writer_killed_mid_append_leaves_only_whole_entries(
    db_url: str, log: AuditLog, key: ec.EllipticCurvePrivateKey
) -> None:
    rng = random.Random(9162)
    committed: list[int] = []
    for _ in range(4):
        process = writer_process(db_url, "doomed", -1)
        time.sleep(rng.uniform(0.6, 1.5))  # start-up, then somewhere in the append loop
        os.kill(process.pid, signal.SIGKILL)
        out, _ = process.communicate(timeout=30)
        committed += [int(line) for line in out.split()]
        log.append(event(len(committed)))  # the log takes appends after the crash
    assert committed, "the writer never got to append"
    size = log.size()
    assert set(committed) <= set(range(size))
    log.checkpoint(key)
    report = verify_store(log.db, key.public_key())
    assert report.ok and report.entries == size, report.summary()


def test_cli_export_verify_and_proof(
    db_url: str, log: AuditLog, key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    fill(log, 10)
    log.checkpoint(key)
    cert = tmp_path / "key.pem"
    cert.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    runner = CliRunner()
    out = tmp_path / "audit.jsonl"
    result = runner.invoke(audit, ["export", "--db", db_url, str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(audit, ["verify", str(out), "--key", str(cert)])
    assert result.exit_code == 0 and "verifies" in result.output
    result = runner.invoke(audit, ["verify", "--db", db_url, "--key", str(cert)])
    assert result.exit_code == 0 and "verifies" in result.output
    lines = out.read_bytes().splitlines()
    lines[4] = lines[4].replace(b"ES-MJ", b"FR-MJ")
    out.write_bytes(b"\n".join(lines) + b"\n")
    result = runner.invoke(audit, ["verify", str(out), "--key", str(cert)])
    assert result.exit_code == 1 and "FIRST BAD ENTRY: 3 (edited)" in result.output
    result = runner.invoke(audit, ["proof", "--db", db_url, "3", "--size", "7"])
    proof = json.loads(result.output)["inclusion"]
    assert (proof["index"], proof["size"], proof["root_hash"]) == (3, 7, log.root(7).hex())
    result = runner.invoke(audit, ["proof", "--db", db_url, "12"])
    assert result.exit_code == 1 and "not in the log" in result.output
    result = runner.invoke(audit, ["verify", "--key", str(cert)])
    assert result.exit_code == 2


def test_latest_checkpoint_is_the_newest(db, key):
    log = AuditLog(db)
    assert log.latest_checkpoint() is None
    log.append(AuditEvent("message.received", "ES-MJ"))
    log.checkpoint(key)
    log.append(AuditEvent("message.accepted", "ES-MJ"))
    newest = log.checkpoint(key)
    latest = log.latest_checkpoint()
    assert latest is not None and latest.size == newest.size == 2
    assert latest.to_note() == log.checkpoints()[-1].to_note()
