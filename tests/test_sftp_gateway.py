"""The gateway's SFTP channel end to end against a real sshd: routed, uploaded, polled, answered.

AR-MJ has no gateway: it is reached through an SFTP drop (we upload to its
``inbox``; it leaves its answers in ``outbox``). The dispatcher and poller are
the worker's, the directory and settings are the operator's files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import demo_messages
from gateway.app import prepare_settings
from gateway.authorities import fingerprint, hash_token
from gateway.model import Direction, EvidenceType, Status
from gateway.outbox import Backoff
from gateway.pki import create_dev_pki, load_dev_pki
from gateway.services import Services, build_services
from gateway.settings import Settings
from signing.xades_sign import sign_xml
from tests.sshd import SSHD, Sshd

pytestmark = pytest.mark.skipif(not SSHD.exists(), reason="OpenSSH's sshd is not installed")


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[tuple[Services, Sshd, Path]]:
    drop = tmp_path / "drop"
    (drop / "inbox").mkdir(parents=True)
    (drop / "outbox").mkdir()
    pki = create_dev_pki(tmp_path / "pki")
    with Sshd(tmp_path / "sshd") as sshd:
        directory = tmp_path / "authorities.toml"
        directory.write_text(
            "\n".join([
                "[[authority]]", 'id = "ES-MJ"', 'country = "ES"', 'name = "MJ"',
                f'signing_certificates = ["{fingerprint(pki.cert("ES-MJ"))}"]',
                f'api_tokens = ["{hash_token("es-token")}"]',
                "", "[[authority]]", 'id = "AR-MJ"', 'country = "AR"', 'name = "MJyDH"',
                f'signing_certificates = ["{fingerprint(pki.cert("AR-MJ"))}"]',
                "[[authority.channel]]", 'kind = "sftp"', 'host = "127.0.0.1"',
                f"port = {sshd.port}", f'user = "{sshd.user}"', f'folder = "{drop / "inbox"}"',
                f'inbound_folder = "{drop / "outbox"}"', f'host_key = "{sshd.host_key_line}"',
            ]) + "\n"
        )  # fmt: skip
        settings = prepare_settings(
            Settings(
                mode="development", data_dir=tmp_path / "data", pki_dir=tmp_path / "pki",
                authorities_file=directory, sftp_key=sshd.client_key,
            )
        )  # fmt: skip
        services = build_services(settings)
        try:
            yield services, sshd, drop
        finally:
            services.close()


def test_a_request_leaves_by_sftp_and_the_answer_comes_back_by_the_drop(
    setup: tuple[Services, Sshd, Path],
) -> None:
    services, _, drop = setup
    pki = load_dev_pki(services.settings.pki_dir)  # type: ignore[arg-type]
    es = services.directory.get("ES-MJ")
    assert es is not None
    request = demo_messages.request()
    signed = sign_xml(request.envelope, pki.signer("ES-MJ"))
    from gateway.client import related_body

    content_type, body = related_body(signed, request.attachments)
    answer = services.intake.submit(es, content_type, [body], len(body))
    assert answer.status == 202, answer.body
    route = json.loads(services.store.message(request.message_id).route or "{}")  # type: ignore[union-attr]
    assert route["channel"]["kind"] == "sftp"

    dispatcher = services.dispatcher(backoff=Backoff(0.001, 0.001), concurrency=1)
    stats = dispatcher.run_once()
    dispatcher.close()
    assert stats.sent == 1, stats.outcomes
    message = services.store.message(request.message_id)
    assert message is not None and message.status is Status.RELAYED
    assert EvidenceType.RELAY_ACCEPTANCE in [
        e.type for e in services.store.evidences(message.message_id)
    ]
    uploaded = drop / "inbox" / request.message_id
    assert (uploaded / "envelope.xml").read_bytes() == signed
    for content_id, _, data in request.attachments:
        assert (uploaded / content_id).read_bytes() == data
    assert not [p for p in (drop / "inbox").iterdir() if p.name.startswith(".")]

    # AR-MJ leaves its signed execution result in its outbox; the worker's poll takes it.
    result = demo_messages.reply(request)
    folder = drop / "outbox" / result.message_id
    folder.mkdir()
    (folder / "envelope.xml").write_bytes(sign_xml(result.envelope, pki.signer("AR-MJ")))
    # ... and a drop for an authority nobody here serves, signed all the same.
    stray = demo_messages.request(with_attachments=False)
    unknown = stray.envelope.replace(
        b"<AuthorityId>AR-MJ</AuthorityId>", b"<AuthorityId>CO-FGN</AuthorityId>"
    )
    unknown = unknown.replace(
        b"<AuthorityId>ES-MJ</AuthorityId>", b"<AuthorityId>AR-MJ</AuthorityId>", 1
    )
    (drop / "outbox" / stray.message_id).mkdir()
    (drop / "outbox" / stray.message_id / "envelope.xml").write_bytes(
        sign_xml(unknown, pki.signer("AR-MJ"))
    )
    poller = services.poller()
    assert poller is not None
    lines = poller.poll()
    assert sorted(line.split(":")[0] for line in lines) == ["received", "rejected"], lines

    received = services.store.message(result.message_id)
    assert received is not None and received.direction is Direction.INBOUND
    assert received.status is Status.DELIVERED
    assert json.loads(received.arrived_via or "{}")["kind"] == "sftp"
    assert [m.message_id for m in services.store.inbox("ES-MJ")] == [result.message_id]
    assert (drop / "outbox" / "processed" / result.message_id / "envelope.xml").exists()
    # The stray one: refused with the reason, recorded, moved aside, delivered to nobody.
    assert (drop / "outbox" / "rejected" / stray.message_id).exists()
    assert services.store.message(stray.message_id) is None
    first = services.store.first_answer("sftp:AR-MJ", stray.message_id)
    assert first is not None and first.answer.http_status == 422
    assert b"is not an authority this gateway serves" in first.answer.body
    assert b"SubmissionRejection" in first.answer.body  # the signed rejection is kept
    assert services.store.inbox("CO-FGN") == []
    assert poller.poll() == []  # nothing is taken twice


def test_a_changed_host_key_fails_the_message_with_the_reason(
    setup: tuple[Services, Sshd, Path],
) -> None:
    services, sshd, drop = setup
    from tests.sshd import keygen

    sshd.stop()
    sshd.host_keys = [keygen(sshd.directory / "host_ed25519_new")]
    sshd.start()
    pki = load_dev_pki(services.settings.pki_dir)  # type: ignore[arg-type]
    es = services.directory.get("ES-MJ")
    assert es is not None
    request = demo_messages.request(with_attachments=False)
    signed = sign_xml(request.envelope, pki.signer("ES-MJ"))
    assert services.intake.submit(es, "application/xml", [signed], len(signed)).status == 202
    dispatcher = services.dispatcher(concurrency=1)
    stats = dispatcher.run_once()
    dispatcher.close()
    assert stats.failed == 1, stats.outcomes
    history = services.store.history(request.message_id)
    assert history[-1].status is Status.FAILED
    assert "host key" in (history[-1].reason or "")
    assert list((drop / "inbox").iterdir()) == []
