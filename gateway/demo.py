"""The demo: two gateways on the embedded default exchange a request and its reply.

It starts two development gateways (gunicorn, TLS, SQLite) for two demo
countries, gw-es serving ES-MJ and gw-ar serving AR-MJ, each with its
``rogatory worker``. ES-MJ posts a signed request with attachments to gw-es,
which sends it to gw-ar over mutual TLS; AR-MJ collects it and sends the
execution result back, which returns by the channel the request came by.
It prints each message's status history and evidences on both sides, checks
the written record and verifies both audit trails offline. Exit code 0 when
every step came out as expected.
"""

from __future__ import annotations

import contextlib
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
from .pair import Member
from .settings import Settings

_STEP_OK = click.style("ok", fg="green")
_STEP_BAD = click.style("UNEXPECTED", fg="red", bold=True)


def free_port() -> int:
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
    from .pair import prepare_pair

    data_dir.mkdir(parents=True, exist_ok=True)
    es, ar = prepare_pair(data_dir, (free_port(), free_port()))
    ca = data_dir / "pki" / "root-ca.pem"
    click.echo("Rogatory demo: two development gateways on localhost")
    for member in (es, ar):
        click.echo(
            f"  {member.gateway_id} ({member.country}) on {member.url}, serving "
            f"{member.authority_id}; data in {member.data_dir}"
        )
    steps = _Steps()
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for member in (es, ar):
            env = {k: v for k, v in os.environ.items() if not k.startswith("ROGATORY_")}
            env["ROGATORY_CONFIG"] = str(member.config_file)
            for role, args in (("gateway", ["serve", "--workers", "2"]), ("worker", ["worker"])):
                log = (data_dir / f"{member.gateway_id}-{role}.log").open("wb")
                logs.append(log)
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gateway", *args], env=env, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )  # fmt: skip
        for member, process in ((es, processes[0]), (ar, processes[2])):
            _wait_ready(member.url, ca, process)
        steps.check("both gateways and their workers started (gunicorn, TLS, SQLite)", True)
        _conversation(es, ar, ca, steps, data_dir)
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs:
            log.close()
    steps.check("gateways and workers stopped", all(p.returncode is not None for p in processes))
    for member in (es, ar):
        _audit_offline(member.settings, steps)
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


def _conversation(es: Member, ar: Member, ca: Path, steps: _Steps, data_dir: Path) -> None:
    from signing.xades_sign import sign_xml

    from . import demo_messages
    from .pki import load_dev_pki

    pki = load_dev_pki(data_dir / "pki")
    spain = GatewayClient(es.url, token=es.token, ca_file=ca)
    argentina = GatewayClient(ar.url, token=ar.token, ca_file=ca)
    try:
        request = demo_messages.request()
        signed = sign_xml(request.envelope, pki.signer(es.authority_id))
        message_id = request.message_id
        reply = spain.submit(signed, request.attachments)
        steps.check(
            f"ES-MJ posts a signed MLA request for AR-MJ to {es.gateway_id}, "
            f"with {len(request.attachments)} attachments",
            reply.status == 202 and b"SubmissionAcceptance" in reply.body,
            f"HTTP {reply.status}, SubmissionAcceptance evidence signed by {es.gateway_id}",
        )
        replay = spain.submit(signed, request.attachments)
        steps.check(
            "posting it again returns the first answer, byte for byte",
            replay.status == reply.status and replay.body == reply.body,
        )
        # A new message id written into the signed bytes: the signature no longer holds.
        tampered = signed.replace(message_id.encode(), str(uuid.uuid4()).encode())
        refused = spain.submit(tampered, request.attachments)
        problem = refused.json() if refused.content_type.startswith("application/problem") else {}
        steps.check(
            "a copy changed after signing is refused with a signed rejection",
            400 <= refused.status < 500 and "SubmissionRejection" in problem.get("evidence", ""),
            f"HTTP {refused.status}: {problem.get('detail', '')[:100]}",
        )
        delivered = _wait_status(spain, message_id, "delivered")
        steps.check(
            f"{es.gateway_id}'s worker sends it to {ar.gateway_id} (mutual TLS); "
            f"{ar.gateway_id} answers with a signed Delivery",
            delivered,
        )
        inbox = argentina.inbox().json()["messages"]
        steps.check(
            f"AR-MJ finds it in its inbox on {ar.gateway_id}",
            [m["message_id"] for m in inbox].count(message_id) == 1,
        )
        collected = argentina.collect(message_id)
        steps.check(
            "AR-MJ collects it: a Retrieval evidence",
            collected.status == 200 and b"Retrieval" in collected.body,
        )
        steps.check(
            f"the Retrieval travels back: the request is retrieved on {es.gateway_id}",
            _wait_status(spain, message_id, "retrieved"),
        )
        answer = demo_messages.reply(request)
        answer_signed = sign_xml(answer.envelope, pki.signer(ar.authority_id))
        posted = argentina.submit(answer_signed)
        steps.check(
            f"AR-MJ posts the execution result (in reply to the request) to {ar.gateway_id}",
            posted.status == 202,
            f"HTTP {posted.status}",
        )
        steps.check(
            "it goes back by the channel the request came by, and is delivered",
            _wait_status(argentina, answer.message_id, "delivered"),
        )
        got = spain.collect(answer.message_id)
        steps.check(
            "ES-MJ collects the result; its Retrieval travels back",
            got.status == 200 and _wait_status(argentina, answer.message_id, "retrieved"),
        )
        for title, client, which in (
            (f"the request on {es.gateway_id}", spain, message_id),
            (f"the request on {ar.gateway_id}", argentina, message_id),
            (f"the execution result on {ar.gateway_id}", argentina, answer.message_id),
            (f"the execution result on {es.gateway_id}", spain, answer.message_id),
        ):
            _show(title, client, which, steps)
        _record(spain, message_id, steps, data_dir)
    finally:
        spain.close()
        argentina.close()


def _wait_status(client: GatewayClient, message_id: str, status: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.message(message_id)
        if answer.status == 200 and answer.json()["status"] == status:
            return True
        time.sleep(0.1)
    return False


def _show(title: str, client: GatewayClient, message_id: str, steps: _Steps) -> None:
    answer = client.message(message_id)
    if answer.status != 200:
        steps.check(f"status history of {title}", False, f"HTTP {answer.status}")
        return
    status = answer.json()
    history = " -> ".join(h["status"] for h in status["history"])
    evidences = ", ".join(e["type"] for e in status["evidences"])
    steps.check(
        f"status history and evidences of {title}",
        True,
        f"{status['direction']}: {history}\nevidences: {evidences}",
    )


def _record(client: GatewayClient, message_id: str, steps: _Steps, data_dir: Path) -> None:
    from signing.pades_verify import verify_pdf
    from signing.trust import TrustEngine, TrustPolicy

    from .pki import load_dev_pki

    reply = client.request("GET", f"/api/v1/messages/{message_id}/record")
    path = data_dir / f"record-{message_id}.pdf"
    path.write_bytes(reply.body)
    pki = load_dev_pki(data_dir / "pki")
    engine = TrustEngine(TrustPolicy(anchors=(pki.root(),), allow_fetching=False))
    report = verify_pdf(reply.body, engine, path=str(path))
    steps.check(
        "the written record (a signed PDF with the originals embedded)",
        reply.status == 200 and report.verdict.ok,
        f"{path}: {report.verdict.indication.value} - {report.verdict.reason}",
    )


def _audit_offline(settings: Settings, steps: _Steps) -> None:
    from signing.keys import load_signer

    from .audit import AuditLog
    from .audit_verify import verify_store
    from .checkpoint import load_public_key
    from .db import Database

    assert settings.signing_key is not None and settings.signing_cert is not None
    cert_pem = settings.signing_cert.read_bytes()
    signer = load_signer(settings.signing_key.read_bytes(), cert_pem)
    db = Database.from_url(settings.database_url)
    try:
        AuditLog(db, origin=settings.gateway_id or "rogatory").checkpoint(signer.key)
        report = verify_store(db, load_public_key(cert_pem))
    finally:
        db.dispose()
    steps.check(
        f"the audit trail of {settings.gateway_id} verifies offline", report.ok, report.summary()
    )
