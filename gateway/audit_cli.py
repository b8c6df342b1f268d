"""``rogatory audit``: export, verify and prove the audit log from the command line.

Each command opens the store, calls one service and renders its result; the
rules live in ``gateway.audit`` and ``gateway.audit_verify``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from gateway.db import Database

EXIT_FAILED = 1

_db_option = click.option(
    "--db", "db_url", metavar="URL", help="sqlite:///path or postgresql://user@host/db"
)
_origin_option = click.option(
    "--origin", default="rogatory", show_default=True, help="The log's name in checkpoints."
)


def _open(db_url: str) -> Database:
    """An existing store; never creates tables in a database that has no audit log."""
    from gateway.db import Database, DatabaseError, applied_migrations

    db = Database.from_url(db_url, migrate_schema=False)
    if "0001_audit_log" not in applied_migrations(db.engine):
        db.dispose()
        raise DatabaseError(f"{db_url} holds no audit log")
    return db


@click.group()
def audit() -> None:
    """The tamper-evident audit trail: export, verify, checkpoints and proofs."""


@audit.command("export")
@_db_option
@click.option("--origin", default=None, help="The log's name (default: as its checkpoints say).")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def export_command(db_url: str | None, origin: str | None, out: Path) -> None:
    """Write the log and its checkpoints to OUT as JSON Lines."""
    from gateway.audit import AuditLog
    from gateway.cli import plain_errors

    with plain_errors():
        if not db_url:
            raise click.UsageError("give the store with --db URL")
        db = _open(db_url)
        try:
            if origin is None:
                signed = AuditLog(db).checkpoints()
                origin = signed[-1].origin if signed else "rogatory"
            count = AuditLog(db, origin=origin).export(out)
        finally:
            db.dispose()
    click.echo(f"exported {count} entries to {out}")


@audit.command("verify")
@click.argument("export", required=False, type=click.Path(exists=True, dir_okay=False))
@_db_option
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The gateway's checkpoint certificate or public key (PEM).",
)
@click.option("--origin", default=None, help="Refuse checkpoints of any other log.")
def verify_command(
    export: str | None, db_url: str | None, key_file: Path, origin: str | None
) -> None:
    """Check an EXPORT file or a live store (--db) offline; name the first bad entry."""
    from gateway.audit_verify import verify_export, verify_store
    from gateway.checkpoint import load_public_key
    from gateway.cli import plain_errors

    if (export is None) == (db_url is None):
        raise click.UsageError("give either an EXPORT file or --db URL")
    with plain_errors():
        key = load_public_key(key_file.read_bytes())
        if export is not None:
            report = verify_export(export, key)
        else:
            assert db_url is not None
            db = _open(db_url)
            try:
                report = verify_store(db, key, origin=origin)
            finally:
                db.dispose()
    click.secho(report.summary(), fg="green" if report.ok else "red")
    if not report.ok:
        sys.exit(EXIT_FAILED)


@audit.command("proof")
@_db_option
@click.argument("index", type=click.IntRange(min=0))
@click.option("--size", type=click.IntRange(min=1), help="Tree size (default: the whole log).")
def proof_command(db_url: str | None, index: int, size: int | None) -> None:
    """Print the inclusion proof of entry INDEX as JSON."""
    from gateway.audit import AuditLog
    from gateway.cli import plain_errors

    with plain_errors():
        if not db_url:
            raise click.UsageError("give the store with --db URL")
        db = _open(db_url)
        try:
            log = AuditLog(db)
            proof = log.inclusion_proof(index, size)
            body = {"inclusion": proof.to_json(), "entry": log.entry(index).encoded.decode()}
        finally:
            db.dispose()
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


@audit.command("consistency")
@_db_option
@click.argument("old_size", type=click.IntRange(min=1))
@click.option("--size", type=click.IntRange(min=1), help="Newer size (default: the whole log).")
def consistency_command(db_url: str | None, old_size: int, size: int | None) -> None:
    """Print the proof that the log of OLD_SIZE entries is a prefix of the current one."""
    from gateway.audit import AuditLog
    from gateway.cli import plain_errors

    with plain_errors():
        if not db_url:
            raise click.UsageError("give the store with --db URL")
        db = _open(db_url)
        try:
            proof = AuditLog(db).consistency_proof(old_size, size)
        finally:
            db.dispose()
    click.echo(json.dumps({"consistency": proof.to_json()}, indent=2))


@audit.command("checkpoint")
@_db_option
@_origin_option
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The gateway's private key (PEM, unencrypted).",
)
def checkpoint_command(db_url: str | None, origin: str, key_file: Path) -> None:
    """Sign the current tree head and store the checkpoint with the log."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from gateway.audit import AuditLog
    from gateway.checkpoint import CheckpointError
    from gateway.cli import plain_errors

    with plain_errors():
        if not db_url:
            raise click.UsageError("give the store with --db URL")
        try:
            key = load_pem_private_key(key_file.read_bytes(), None)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"cannot read the private key: {exc}") from None
        db = _open(db_url)
        try:
            note = AuditLog(db, origin=origin).checkpoint(key).to_note()  # type: ignore[arg-type]
        finally:
            db.dispose()
    click.echo(note, nl=False)
