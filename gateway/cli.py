"""The ``rogatory`` command line: a thin layer over the signing and gateway services.

Heavy modules (cryptography, lxml, pyHanko) are imported inside commands so
that ``rogatory --help`` and a clerk's first ``verify`` start quickly.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .settings import Settings

EXIT_FAILED = 1


@contextmanager
def plain_errors() -> Iterator[None]:
    """Turn Rogatory's own errors into a one-line message and exit code 1."""
    from signing.errors import RogatoryError

    try:
        yield
    except RogatoryError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_FAILED)


def _parse_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-11-22T10:00:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rogatory")
def main() -> None:
    """Rogatory: sign and verify requests for international cooperation in criminal matters."""


@main.command()
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Private key (PEM); use with --cert.",
)
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Signing certificate (PEM).",
)
@click.option(
    "--p12",
    "p12_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PKCS#12 file with key and certificate, instead of --key/--cert.",
)
@click.option(
    "--password-env",
    metavar="VAR",
    help="Environment variable holding the key or PKCS#12 password.",
)
@click.option(
    "--chain",
    "chain_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Intermediate certificate(s) to embed; repeatable.",
)
@click.option(
    "--tsa", "tsa_url", metavar="URL", help="RFC 3161 time-stamping service (B-T and above)."
)
@click.option(
    "--level",
    type=click.Choice(["B-B", "B-T", "B-LT", "B-LTA"]),
    default=None,
    help="XAdES (B-B, B-T) or PAdES (all four) level; default B-T with --tsa, else B-B.",
)
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Trust anchors whose validation data B-LT/B-LTA embed (PDF); repeatable.",
)
@click.option("--visible", metavar="PAGE,X1,Y1,X2,Y2", help="PDF: a visible signature box.")
@click.option("--field", "field_name", metavar="NAME", help="PDF: the signature field's name.")
@click.option("--reason", help="PDF: the reason for signing.")
@click.option("--location", help="PDF: where the document was signed.")
@click.argument(
    "input_file", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("output_file", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
def sign(
    key_file: Path | None,
    cert_file: Path | None,
    p12_file: Path | None,
    password_env: str | None,
    chain_files: tuple[Path, ...],
    tsa_url: str | None,
    level: str | None,
    trust: tuple[Path, ...],
    visible: str | None,
    field_name: str | None,
    reason: str | None,
    location: str | None,
    input_file: Path,
    output_file: Path,
) -> None:
    """Sign IN (XML: enveloped XAdES; PDF: PAdES), writing OUT.

    The kind is read from the content, not the file name.
    """
    if p12_file is None and (key_file is None or cert_file is None):
        raise click.UsageError("give --key and --cert, or --p12")
    if p12_file is not None and (key_file or cert_file):
        raise click.UsageError("--p12 cannot be combined with --key/--cert")
    password = os.environ.get(password_env, "").encode() or None if password_env else None
    with plain_errors():
        from signing.keys import load_signer, load_signer_p12

        from .signing_service import SignRequest, sign_document

        chain = [p.read_bytes() for p in chain_files]
        if p12_file is not None:
            signer = load_signer_p12(p12_file.read_bytes(), password, chain)
        else:
            assert key_file is not None and cert_file is not None
            signer = load_signer(key_file.read_bytes(), cert_file.read_bytes(), chain, password)
        request = SignRequest(level, tsa_url, trust, visible, field_name, reason, location)
        signed = sign_document(input_file.read_bytes(), signer, request)
        output_file.write_bytes(signed.data)
    style = "XAdES" if signed.kind == "xml" else "PAdES"
    subject = signer.cert.subject.rfc4514_string()
    click.echo(f"signed {input_file} -> {output_file} ({style}-{signed.level}, {subject})")


@main.command()
@click.option(
    "--trust",
    "trust",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Trust anchor certificate file or folder; repeatable. "
    "Default: $ROGATORY_TRUST (folders separated by ':').",
)
@click.option(
    "--at",
    "at",
    callback=_parse_time,
    metavar="TIME",
    help="Validate at this time (ISO 8601) instead of now; revocation data is then not fetched.",
)
@click.option(
    "--revocation",
    type=click.Choice(["hard", "soft", "require"]),
    default="hard",
    show_default=True,
    help="hard: check wherever a certificate names a source, INDETERMINATE if unreachable; "
    "require: missing revocation data is INDETERMINATE; soft: unreachable data is a warning.",
)
@click.option("--offline", is_flag=True, help="Never fetch CRLs or OCSP responses.")
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object {"documents": [...]}.')
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def verify(
    trust: tuple[Path, ...],
    at: datetime | None,
    revocation: str,
    offline: bool,
    as_json: bool,
    paths: tuple[Path, ...],
) -> None:
    """Verify the signatures of each document in PATHS (files or folders).

    Exit code: 0 all TOTAL-PASSED, 1 any TOTAL-FAILED, 3 some INDETERMINATE,
    4 a path could not be read, 2 a usage error.
    """
    from signing.trust import RevocationPolicy

    from .batch import exit_code, verify_paths
    from .render import Progress, render_report, render_summary
    from .verification import build_engine

    anchors = list(trust) or [Path(p) for p in os.environ.get("ROGATORY_TRUST", "").split(":") if p]
    with plain_errors():
        engine = build_engine(
            anchors, revocation=RevocationPolicy(revocation), allow_fetching=not offline
        )
    outcomes = []
    with Progress() as progress:
        for outcome in verify_paths(paths, engine, at=at, on_start=progress.start):
            progress.advance(outcome.path)
            outcomes.append(outcome)
            if outcome.unreadable is not None:
                click.secho(
                    f"error: cannot read {outcome.path}: {outcome.unreadable}", fg="red", err=True
                )
            elif not as_json:
                assert outcome.report is not None
                render_report(outcome.report, trusted=engine is not None)
    if as_json:
        documents = [
            o.report.to_json() if o.report is not None else _unreadable_json(o.path, o.unreadable)
            for o in outcomes
        ]
        click.echo(json.dumps({"documents": documents}, indent=2, ensure_ascii=False))
    elif len(outcomes) > 1:
        render_summary(outcomes)
    sys.exit(exit_code(outcomes))


def _unreadable_json(path: str, reason: str | None) -> dict[str, Any]:
    return {
        "path": path, "kind": None, "indication": None, "subindication": None,
        "reason": f"cannot read: {reason}", "error": reason, "signatures": [],
    }  # fmt: skip


@main.group()
def pki() -> None:
    """The development PKI (never for production use)."""


@pki.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a PKI that already exists in DIRECTORY.")
@click.option("--crl-url", metavar="URL", help="Base URL where the CRLs will be published.")
@click.option(
    "--ocsp-url", metavar="URL", help="URL of an OCSP responder for the issued certificates."
)
def pki_init(directory: Path, force: bool, crl_url: str | None, ocsp_url: str | None) -> None:
    """Write a root CA, demo authorities' signing certificates, gateway TLS and TSA certificates.

    Private keys stay in DIRECTORY (mode 0600); never commit them.
    """
    with plain_errors():
        from .pki import create_dev_pki

        dev = create_dev_pki(directory, crl_url=crl_url, ocsp_url=ocsp_url, overwrite=force)
    click.echo(f"development PKI written to {directory}")
    for name in dev.names():
        click.echo(f"  {name:<12} {dev.cert(name).subject.rfc4514_string()}")
    click.echo(f"trust anchor: {dev.root_path}")


@main.command()
@click.option(
    "--data",
    "data_dir",
    default="data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo gateway's data (database, blobs, development PKI, tokens).",
)
def demo(data_dir: Path) -> None:
    """Run a development gateway, send a request through it, collect it, check the record.

    Starts the gateway (gunicorn, TLS) on a free port, posts a signed example
    request with attachments as ES-MJ, collects it as AR-MJ, shows a tampered
    copy refused, prints the history and evidences, and verifies the audit
    trail offline. Exit code 0 when every step came out as expected.
    """
    with plain_errors():
        from .demo import run_demo

        code = run_demo(data_dir)
    sys.exit(code)


def _settings(dev: bool, data_dir: Path | None, **options: Any) -> Settings:
    """ROGATORY_* settings with the command line's overrides, completed and checked."""
    from .app import prepare_settings
    from .settings import load_settings

    changes: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if dev:
        changes["mode"] = "development"
    if data_dir is not None:
        changes["data_dir"] = data_dir
    settings = load_settings()
    return prepare_settings(settings.replace(**changes) if changes else settings)


@main.command()
@click.option("--dev", is_flag=True, help="Development mode: create a demo PKI and authorities.")
@click.option(
    "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), help="Data folder."
)
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8443).")
@click.option("--workers", type=int, help="gunicorn worker processes (default: CPU count).")
def serve(
    dev: bool, data_dir: Path | None, host: str | None, port: int | None, workers: int | None
) -> None:
    """Run the gateway over HTTPS under gunicorn, from ROGATORY_* settings.

    Refuses to start on missing or unsafe settings outside development mode.
    """
    with plain_errors():
        from .serve import GatewayServer

        settings = _settings(dev, data_dir, host=host, port=port)
    scheme = "http" if settings.plain_http else "https"
    click.echo(f"gateway {settings.gateway_id} on {scheme}://{settings.host}:{settings.port}")
    if settings.development:
        click.echo(f"  demo API tokens: {settings.data_dir / 'tokens.txt'}")
        click.echo(f"  trust anchor:    {settings.data_dir / 'pki' / 'root-ca.pem'}")
    GatewayServer(settings, workers=workers).run()


@main.command()
@click.option("--dev", is_flag=True, help="Development mode, as for serve.")
@click.option(
    "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), help="Data folder."
)
@click.option("--once", is_flag=True, help="Stop once the outbox holds nothing due.")
@click.option(
    "--batch", type=int,
    help="Most rows claimed at a time; more are claimed as sends end (default: dispatch_batch).",
)  # fmt: skip
@click.option(
    "--concurrency", type=int,
    help="Sends in flight at once; a slow one holds up no other (default: dispatch_concurrency).",
)  # fmt: skip
def worker(
    dev: bool, data_dir: Path | None, once: bool, batch: int | None, concurrency: int | None
) -> None:
    """Send queued messages through their channels and poll the pull channels.

    Retries transient failures with exponential backoff and jitter, fails a
    message with its reason on a permanent error or when its attempts run
    out, and resumes after a crash without losing or double-sending. Several
    workers may share one database. Prints a line per outcome.
    """
    import signal
    import threading

    with plain_errors():
        from .services import build_services
        from .worker import Worker

        settings = _settings(dev, data_dir)
        services = build_services(settings)
        options: dict[str, Any] = {}
        if batch is not None:
            options["batch"] = batch
        if concurrency is not None:
            options["concurrency"] = concurrency
        dispatcher = services.dispatcher(**options)
        poller = services.poller()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(
        f"worker of gateway {settings.gateway_id}: batch {dispatcher.batch}, "
        f"concurrency {dispatcher.concurrency}, {len(poller.sources) if poller else 0} "
        "pull channel(s)",
        err=True,
    )
    runner = Worker(
        dispatcher, poller, poll_seconds=settings.poll_seconds,
        report=lambda line: click.echo(line), after_turn=services.maybe_checkpoint,
    )  # fmt: skip
    try:
        totals = runner.run(stop, once=once)
    finally:
        services.close()
    click.echo(
        f"sent {totals.sent}, retried {totals.retried}, failed {totals.failed}, "
        f"received {totals.received}, refused {totals.refused}",
        err=True,
    )


@main.command()
@click.argument("message_id")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the PDF here (default: record-ID.pdf).",
)  # fmt: skip
def record(message_id: str, output: Path | None) -> None:
    """Write the signed written record (PDF) of message MESSAGE_ID from the local store.

    Uses the gateway's settings (ROGATORY_*; development mode with --data as for serve).
    """
    with plain_errors():
        from .app import prepare_settings
        from .services import build_services
        from .settings import load_settings

        services = build_services(prepare_settings(load_settings()))
        try:
            pdf = services.written_record(message_id)
        finally:
            services.close()
    target = output or Path(f"record-{message_id}.pdf")
    target.write_bytes(pdf)
    click.echo(f"written record of {message_id} -> {target}")


# Imported last: audit_cli reaches back for plain_errors. It is click only;
# the audit services load inside each command.
from .audit_cli import audit  # noqa: E402

main.add_command(audit)
