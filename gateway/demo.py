"""The demo: one gateway on the embedded default, a request sent, collected and recorded.

It starts a real gateway (gunicorn, TLS) in development mode on a free port,
posts a signed example request with its attachments as one central authority,
collects it as the recipient, shows a tampered copy refused, prints the
message's history and evidences, fetches its written record and verifies the
audit trail offline. Exit code 0 when every step came out as expected.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import click
from lxml import etree

from schemas import ENVELOPE_NS, examples_dir

from .client import GatewayClient
from .settings import Settings

_STEP_OK = click.style("ok", fg="green")
_STEP_BAD = click.style("UNEXPECTED", fg="red", bold=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, ca: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException("the gateway stopped while starting; see its log above")
        try:
            client = GatewayClient(url, ca_file=ca, timeout=2)
            if client.request("GET", "/healthz").status == 200:
                client.close()
                return
        except OSError:
            time.sleep(0.3)
    raise click.ClickException(f"the gateway did not answer on {url} within {timeout:.0f} s")


def _fresh_request() -> tuple[bytes, list[tuple[str, str, bytes]], str]:
    """The Spanish MLA example with new ids, and the attachment files its manifest names."""
    ns = {"e": ENVELOPE_NS}
    root = etree.fromstring((examples_dir() / "mla-request.xml").read_bytes())
    message_id = str(uuid.uuid4())
    root.find("e:Header/e:MessageId", ns).text = message_id  # type: ignore[union-attr]
    root.find("e:Header/e:ConversationId", ns).text = str(uuid.uuid4())  # type: ignore[union-attr]
    attachments = []
    for item in root.findall("e:Attachments/e:Attachment", ns):
        content_id = item.get("ContentId") or item.get("Id") or ""
        file_name = item.findtext("e:FileName", "", ns)
        data = (examples_dir() / "attachments" / file_name).read_bytes()
        attachments.append((content_id, item.findtext("e:MediaType", "", ns), data))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8"), attachments, message_id


class _Steps:
    def __init__(self) -> None:
        self.ok = True
        self.number = 0

    def check(self, title: str, passed: bool, detail: str = "") -> None:
        self.number += 1
        self.ok = self.ok and passed
        mark = _STEP_OK if passed else _STEP_BAD
        click.echo(f"{self.number:>2}. {title} ... {mark}")
        for line in detail.splitlines():
            click.echo(f"      {line}")


def run_demo(data_dir: Path) -> int:
    """Run the demo with its data under ``data_dir``; 0 when every step was as expected."""
    from signing.xades_sign import sign_xml

    from .bootstrap import read_demo_tokens
    from .pki import load_dev_pki

    gateway_dir = data_dir / "gateway"
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gateway", "serve", "--dev", "--data", str(gateway_dir)]
    command += ["--port", str(port), "--workers", "2"]
    click.echo(f"Rogatory demo: a development gateway on {url} (data in {gateway_dir})")
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "gateway.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    steps = _Steps()
    try:
        ca = gateway_dir / "pki" / "root-ca.pem"
        _wait_until(lambda: ca.exists(), process)
        _wait_ready(url, ca, process)
        steps.check("gateway started (gunicorn, TLS, SQLite, development PKI)", True)
        pki = load_dev_pki(gateway_dir / "pki")
        tokens = read_demo_tokens(gateway_dir)
        signer = pki.signer("ES-MJ")
        envelope, attachments, message_id = _fresh_request()
        signed = sign_xml(envelope, signer)
        _exchange(url, ca, tokens, signed, attachments, message_id, steps, data_dir)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    steps.check("gateway stopped", process.returncode is not None)
    _audit_offline(gateway_dir, steps)
    colour = "green" if steps.ok else "red"
    verdict = "every step as expected" if steps.ok else "some steps were unexpected"
    click.secho(f"\ndemo complete: {verdict}", fg=colour, bold=True)
    return 0 if steps.ok else 1


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if ready():
            return
        if process.poll() is not None:
            raise click.ClickException("the gateway stopped while starting")
        time.sleep(0.1)


def _exchange(
    url: str,
    ca: Path,
    tokens: dict[str, str],
    signed: bytes,
    attachments: list[tuple[str, str, bytes]],
    message_id: str,
    steps: _Steps,
    data_dir: Path,
) -> None:
    spain = GatewayClient(url, token=tokens["ES-MJ"], ca_file=ca)
    argentina = GatewayClient(url, token=tokens["AR-MJ"], ca_file=ca)
    try:
        reply = spain.submit(signed, attachments)
        steps.check(
            f"ES-MJ posts a signed MLA request to AR-MJ with {len(attachments)} attachments",
            reply.status == 202 and b"SubmissionAcceptance" in reply.body,
            f"HTTP {reply.status}, SubmissionAcceptance evidence signed by the gateway",
        )
        replay = spain.submit(signed, attachments)
        steps.check(
            "posting it again returns the first answer, byte for byte",
            replay.status == reply.status and replay.body == reply.body,
        )
        # A new message id written into the signed bytes: the signature no longer holds.
        tampered = signed.replace(message_id.encode(), str(uuid.uuid4()).encode())
        refused = spain.submit(tampered, attachments)
        problem = refused.json() if refused.content_type.startswith("application/problem") else {}
        steps.check(
            "a copy changed after signing is refused with a signed rejection",
            400 <= refused.status < 500 and "SubmissionRejection" in problem.get("evidence", ""),
            f"HTTP {refused.status}: {problem.get('detail', '')[:100]}",
        )
        inbox = argentina.inbox().json()["messages"]
        steps.check(
            "AR-MJ finds it in its inbox",
            [m["message_id"] for m in inbox].count(message_id) == 1,
        )
        collected = argentina.collect(message_id)
        steps.check(
            "AR-MJ collects it: a Retrieval evidence",
            collected.status == 200 and b"Retrieval" in collected.body,
        )
        status = spain.message(message_id).json()
        history = " -> ".join(h["status"] for h in status["history"])
        evidences = ", ".join(e["type"] for e in status["evidences"])
        steps.check(
            "ES-MJ reads the status history and evidences",
            status["status"] == "retrieved",
            f"history: {history}\nevidences: {evidences}",
        )
        _record(spain, message_id, steps, data_dir)
    finally:
        spain.close()
        argentina.close()


def _record(client: GatewayClient, message_id: str, steps: _Steps, data_dir: Path) -> None:
    from signing.pades_verify import verify_pdf
    from signing.trust import TrustEngine, TrustPolicy

    from .pki import load_dev_pki

    reply = client.request("GET", f"/api/v1/messages/{message_id}/record")
    path = data_dir / f"record-{message_id}.pdf"
    path.write_bytes(reply.body)
    pki = load_dev_pki(data_dir / "gateway" / "pki")
    engine = TrustEngine(TrustPolicy(anchors=(pki.root(),), allow_fetching=False))
    report = verify_pdf(reply.body, engine, path=str(path))
    steps.check(
        "the written record (a signed PDF with the originals embedded)",
        reply.status == 200 and report.verdict.ok,
        f"{path}: {report.verdict.indication.value} - {report.verdict.reason}",
    )


def _audit_offline(gateway_dir: Path, steps: _Steps) -> None:
    from signing.keys import load_signer

    from .audit import AuditLog
    from .audit_verify import verify_store
    from .checkpoint import load_public_key
    from .db import Database

    settings = _gateway_settings(gateway_dir)
    assert settings.signing_key is not None and settings.signing_cert is not None
    cert_pem = settings.signing_cert.read_bytes()
    signer = load_signer(settings.signing_key.read_bytes(), cert_pem)
    db = Database.from_url(settings.database_url)
    try:
        AuditLog(db, origin=settings.gateway_id or "rogatory").checkpoint(signer.key)
        report = verify_store(db, load_public_key(cert_pem))
    finally:
        db.dispose()
    steps.check("the audit trail verifies offline", report.ok, report.summary())


def _gateway_settings(gateway_dir: Path) -> Settings:
    """The settings the demo gateway ran with (development mode, its data folder)."""
    from .app import prepare_settings
    from .settings import load_settings

    env = {"ROGATORY_MODE": "development", "ROGATORY_DATA_DIR": str(gateway_dir)}
    return prepare_settings(load_settings(env=env))
