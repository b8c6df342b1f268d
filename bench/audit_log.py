"""Audit log benchmark: durable appends per second, and the time to verify a 1,000,000-entry log.

    python bench/audit_log.py [--appends N] [--entries N] [--pg URL]

Appends go through ``AuditLog.append`` one transaction each (every one
durable: SQLite WAL with synchronous=FULL, PostgreSQL's default commit).
The big log is written straight to an export file in the same encoding the
gateway uses, then ``verify_export`` recomputes every leaf hash, the chain of
roots and the signed root, as ``rogatory audit verify`` would.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import merkle
from gateway.audit import AuditEvent, AuditLog, canonical_json, encode_entry
from gateway.audit_verify import verify_export
from gateway.checkpoint import sign_checkpoint
from gateway.db import Database

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def event(i: int) -> AuditEvent:
    details = {"digest": f"{i:064x}", "status": "accepted", "size": 5120 + i % 977}
    return AuditEvent("message.accepted", "ES-MJ", f"ES-2026-{i:07d}", details)


def appends_per_second(url: str, count: int, threads: int) -> float:
    db = Database.from_url(url)
    log = AuditLog(db)
    log.append(event(0))  # warm the pool and the schema cache

    def run(n: int) -> None:
        for i in range(n):
            log.append(event(i))

    workers = [threading.Thread(target=run, args=(count // threads,)) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    db.dispose()
    return (count // threads) * threads / elapsed


def write_big_export(path: Path, entries: int, key: ec.EllipticCurvePrivateKey) -> None:
    frontier = merkle.Frontier()
    when = datetime(2026, 11, 22, tzinfo=UTC)
    with path.open("wb") as out:
        header = {"format": "rogatory-audit-log", "version": 1, "origin": "bench"}
        out.write(canonical_json({**header, "size": entries, "checkpoints": 1}) + b"\n")
        for i in range(entries):
            encoded = encode_entry(i, when, event(i), frontier.root())
            frontier.append(merkle.leaf_hash(encoded))
            out.write(encoded + b"\n")
        note = sign_checkpoint("bench", entries, frontier.root(), when, key).to_note()
        out.write(canonical_json({"checkpoint": note}) + b"\n")


def pg_database(server: str) -> tuple[str, sa.Engine] | None:
    name = f"rogatory_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(server + "postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError:
        engine.dispose()
        return None
    return server + name, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--pg", default=PG_SERVER, help="PostgreSQL server URL (no database)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1, 4):
            rate = appends_per_second(f"sqlite:///{tmp}/audit-{threads}.db", args.appends, threads)
            print(f"SQLite      appends/s, {threads} thread(s): {rate:8.0f}")
        created = pg_database(args.pg)
        if created is None:
            print("PostgreSQL  unreachable; skipped")
        else:
            url, server = created
            try:
                for threads in (1, 4):
                    rate = appends_per_second(url, args.appends, threads)
                    print(f"PostgreSQL  appends/s, {threads} thread(s): {rate:8.0f}")
            finally:
                with server.connect() as connection:
                    name = url.rsplit("/", 1)[1]
                    connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
                server.dispose()

        key = ec.generate_private_key(ec.SECP256R1())
        path = Path(tmp) / "big.jsonl"
        start = time.perf_counter()
        write_big_export(path, args.entries, key)
        built = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        print(f"built a {args.entries:,}-entry export ({size_mb:.0f} MB) in {built:.1f} s")
        start = time.perf_counter()
        report = verify_export(path, key.public_key())
        elapsed = time.perf_counter() - start
        assert report.ok and report.entries == args.entries, report.summary()
        print(f"verified {args.entries:,} entries in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
