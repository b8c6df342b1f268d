"""Two gateways that talk by an SFTP drop (or by S/MIME mail): gw-ar's notice comes back that way.

gw-es serves ES-MJ and reaches AR-MJ by an SFTP drop (it uploads to
``to-ar``, polls ``to-es``); on the drop's far side gw-ar, which serves AR-MJ,
polls ``to-ar`` and uploads to ``to-es``. AR-MJ's reply leaves by e-mail
(``channel=email``, to a local SMTP server that keeps what it is handed), so
gw-ar sends its signed notice by the request's channel: a file in ``to-es``.
gw-es's poller records it on the request, and refuses, records and moves aside
a tampered notice and one from a gateway its directory does not list. The
same by e-mail: both gateways reach the other's authority by S/MIME mail
through a local SMTP relay into dovecot, and poll their own mailbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway import demo_messages
from gateway.evidence import GatewayRef
from gateway.model import Direction, Status
from gateway.notice import (
    NoticeChannel,
    ReplyRef,
    build_notice,
    new_notice_id,
    read_notice,
    sign_notice,
)
from gateway.outbox import Backoff
from gateway.pair import prepare_pair
from gateway.pki import load_dev_pki
from gateway.services import Services, build_services
from signing.xades_sign import sign_xml
from tests.gateway_process import free_port
from tests.mailservers import DOVECOT, PASSWORD, dovecot, issue_smime, smtp_relay
from tests.sshd import SSHD, Sshd

pytestmark = pytest.mark.skipif(not SSHD.exists(), reason="OpenSSH's sshd is not installed")

ES_MAIL = "mj@es.example"


@dataclass
class Pair:
    es: Services
    ar: Services
    drop: Path
    base: Path


def _sftp(sshd: Sshd, folder: Path, inbound: Path) -> str:
    return (
        f'kind = "sftp"\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
        f'folder = "{folder}"\ninbound_folder = "{inbound}"\nhost_key = "{sshd.host_key_line}"'
    )


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[Pair]:
    es, ar = prepare_pair(tmp_path / "pair", (free_port(), free_port()))
    drop = tmp_path / "drop"
    for name in ("to-ar", "to-es"):
        (drop / name).mkdir(parents=True)
    with Sshd(tmp_path / "sshd") as sshd, smtp_relay(SimpleNamespace(lmtp_port=0)) as relay:  # type: ignore[arg-type]
        relay.deliver = False
        # Each reaches the other's authority by the drop, not through the other gateway.
        for member, other, out, back in ((es, "gw-ar", "to-ar", "to-es"),
                                         (ar, "gw-es", "to-es", "to-ar")):  # fmt: skip
            path = member.data_dir / "authorities.toml"
            channel = _sftp(sshd, drop / out, drop / back)
            if member is ar:  # ... and gw-ar may also write to ES-MJ by e-mail
                channel += f'\n\n[[authority.channel]]\nkind = "email"\naddress = "{ES_MAIL}"'
            text = path.read_text().replace(f'kind = "gateway"\ngateway = "{other}"', channel)
            path.write_text(text)
        sides = [
            build_services(
                replace(
                    member.settings, sftp_key=sshd.client_key,
                    smtp_url=f"smtp://127.0.0.1:{relay.port}",
                    mail_from=f"{member.gateway_id}@{member.country.lower()}.example",
                )
            )
            for member in (es, ar)
        ]  # fmt: skip
        try:
            yield Pair(sides[0], sides[1], drop, tmp_path / "pair")
        finally:
            for side in sides:
                side.close()


def _run(services: Services) -> list[str]:
    dispatcher = services.dispatcher(backoff=Backoff(0.001, 0.001), concurrency=1)
    try:
        return dispatcher.run_once().outcomes
    finally:
        dispatcher.close()


def _poll(services: Services) -> list[str]:
    poller = services.poller()
    assert poller is not None
    try:
        return poller.poll()
    finally:
        for source in poller.sources:
            source.adapter.close()


def _submit(services: Services, pair: Pair, example: demo_messages.Example, **kw: str) -> None:
    authority_id = "ES-MJ" if services is pair.es else "AR-MJ"
    authority = services.directory.get(authority_id)
    assert authority is not None
    signed = sign_xml(example.envelope, load_dev_pki(pair.base / "pki").signer(authority_id))
    answer = services.intake.submit(authority, "application/xml", [signed], len(signed), **kw)
    assert answer.status == 202, answer.body


def _kinds(services: Services, message_id: str | None) -> list[str]:
    if message_id is not None:
        entries = services.audit.entries_for(message_id)
    else:
        audit = services.audit
        entries = [audit.entry(i) for i in range(audit.size())]
        entries = [e for e in entries if e.message_id is None]
    return [e.kind for e in entries if e.kind.startswith("notice.")]


def test_a_notice_sent_to_the_sftp_drop_is_read_and_recorded_by_the_gateway_there(
    pair: Pair,
) -> None:
    es, ar = pair.es, pair.ar
    request = demo_messages.request(with_attachments=False)
    _submit(es, pair, request)
    assert any(o.startswith("sent:") for o in _run(es))
    assert (pair.drop / "to-ar" / request.message_id / "envelope.xml").exists()
    assert [line.split(":")[0] for line in _poll(ar)] == ["received"]
    got = ar.store.message(request.message_id)
    assert got is not None and got.direction is Direction.INBOUND

    answer = demo_messages.reply(request)
    _submit(ar, pair, answer, channel="email")
    route = json.loads(ar.store.message(answer.message_id).route or "{}")  # type: ignore[union-attr]
    assert route["notice_by"]["kind"] == "sftp"
    outcomes = _run(ar)
    assert len([o for o in outcomes if o.startswith("sent:")]) == 2, outcomes
    [sent] = [e.details for e in ar.audit.entries_for(answer.message_id) if e.kind == "notice.sent"]
    notice_file = pair.drop / "to-es" / f"notice-{sent['notice_id']}.xml"
    assert notice_file.exists()

    lines = _poll(es)
    assert [line.split(":")[0] for line in lines] == ["notice"], lines
    assert _kinds(es, request.message_id) == ["notice.received"]
    [taken] = [
        e.details for e in es.audit.entries_for(request.message_id) if e.kind == "notice.received"
    ]
    assert (taken["notice_id"], taken["sha256"]) == (sent["notice_id"], sent["sha256"])
    assert (taken["gateway"], taken["channel"], taken["authority"]) == ("gw-ar", "sftp", "AR-MJ")
    assert taken["reply_id"] == answer.message_id
    assert not notice_file.exists()
    assert (pair.drop / "to-es" / "processed" / notice_file.name).exists()
    assert es.store.message(request.message_id).status is Status.RELAYED  # type: ignore[union-attr]

    # The same notice again (a resend once the first was collected) is recorded once.
    notice_file.write_bytes(es.blobs.read(str(taken["sha256"])))
    assert [line.split(":")[0] for line in _poll(es)] == ["notice"]
    assert _kinds(es, request.message_id) == ["notice.received"]
    assert (pair.drop / "to-es" / "processed" / f"{notice_file.name}.1").exists()


def test_a_tampered_notice_and_one_from_an_unlisted_gateway_are_refused_and_moved_aside(
    pair: Pair,
) -> None:
    es, ar = pair.es, pair.ar
    request = demo_messages.request(with_attachments=False)
    _submit(es, pair, request)
    _run(es)

    def notice(issuer: GatewayRef, about: str = request.message_id) -> tuple[str, bytes]:
        built = build_notice(
            new_notice_id(), issuer, about,
            ReplyRef(new_notice_id(), "AR-MJ", "ES-MJ", "ab" * 32),
            NoticeChannel("email"), "the sender chose the email channel",
            conversation_id=es.store.message(request.message_id).conversation_id,  # type: ignore[union-attr]
        )  # fmt: skip
        return f"notice-{built.notice_id}.xml", sign_notice(built, ar.signer)

    inbound = pair.drop / "to-es"
    genuine_name, genuine = notice(ar.intake.issuer)
    assert read_notice(genuine, es.engine, expect_issuer="gw-ar")  # type: ignore[arg-type]
    tampered = genuine.replace(b"the sender chose", b"the sender picked")
    (inbound / genuine_name).write_bytes(tampered)
    stranger_name, stranger = notice(GatewayRef("gw-xx", "Nobody", "XX"))
    (inbound / stranger_name).write_bytes(stranger)

    lines = _poll(es)
    assert sorted(line.split(":")[0] for line in lines) == ["refused", "refused"], lines
    assert any("signature" in line for line in lines), lines
    assert any("gw-xx, which is not a gateway the authority directory lists" in line
               for line in lines), lines  # fmt: skip
    assert _kinds(es, request.message_id) == []
    assert _kinds(es, None) == ["notice.refused", "notice.refused"]
    audit = es.audit
    refused = [audit.entry(i).details for i in range(audit.size())]
    refused = [d for d in refused if d.get("code") == "notice-invalid"]
    assert sorted(int(str(d["size"])) for d in refused) == sorted([len(tampered), len(stranger)])
    assert all(d["kept"] is False and d["channel"] == "sftp" for d in refused)
    assert sorted(p.name for p in (inbound / "rejected").iterdir()) == sorted(
        [genuine_name, stranger_name]
    )
    assert [p.name for p in inbound.iterdir()] == ["rejected"]

    # gw-ar's genuine notice about a message we never sent by this drop: refused too.
    unknown_name, unknown = notice(ar.intake.issuer, about=new_notice_id())
    (inbound / unknown_name).write_bytes(unknown)
    lines = _poll(es)
    assert [line.split(":")[0] for line in lines] == ["refused"], lines
    assert "was sent by sftp to AR-MJ" in lines[0]
    assert (inbound / "rejected" / unknown_name).exists()
    # ... while the genuine one about the request is taken.
    (inbound / genuine_name).write_bytes(genuine)
    assert [line.split(":")[0] for line in _poll(es)] == ["notice"]
    assert _kinds(es, request.message_id) == ["notice.received"]


@pytest.mark.skipif(not DOVECOT.exists(), reason=f"{DOVECOT} is not installed")
def test_a_notice_sent_by_email_is_read_from_the_mailbox_and_recorded(tmp_path: Path) -> None:
    """Each gateway reaches the other's authority by S/MIME mail; the reply leaves by SFTP."""
    es, ar = prepare_pair(tmp_path / "pair", (free_port(), free_port()))
    pki = load_dev_pki(tmp_path / "pair" / "pki")
    addresses = {"gw-es": "es@es.example", "gw-ar": "ar@ar.example"}
    bundles = {}  # each gateway's S/MIME certificate with its CA: the chain it signs with
    for gateway_id, address in addresses.items():
        issue_smime(pki, f"{gateway_id}-smime", address)
        bundles[gateway_id] = tmp_path / f"{gateway_id}-smime-chain.pem"
        bundles[gateway_id].write_bytes(
            pki.cert_path(f"{gateway_id}-smime").read_bytes()
            + pki.cert_path("signers-ca").read_bytes()
        )
    drop = tmp_path / "drop"
    drop.mkdir()
    with (
        Sshd(tmp_path / "sshd") as sshd,
        dovecot(users=("es", "ar")) as mail,
        smtp_relay(mail) as relay,
    ):
        sides = []
        for member, other in ((es, ar), (ar, es)):
            channel = (
                f'kind = "email"\naddress = "{addresses[other.gateway_id]}"\n'
                f'smime_certificate = "{pki.cert_path(f"{other.gateway_id}-smime")}"'
            )
            if member is ar:  # ... and gw-ar may also upload to ES-MJ's drop
                channel += (
                    f'\n\n[[authority.channel]]\nkind = "sftp"\nhost = "127.0.0.1"\n'
                    f'port = {sshd.port}\nuser = "{sshd.user}"\nfolder = "{drop}"\n'
                    f'host_key = "{sshd.host_key_line}"'
                )
            path = member.data_dir / "authorities.toml"
            gateway = f'kind = "gateway"\ngateway = "{other.gateway_id}"'
            path.write_text(path.read_text().replace(gateway, channel))
            user = addresses[member.gateway_id].split("@")[0]
            sides.append(
                build_services(
                    replace(
                        member.settings, sftp_key=sshd.client_key,
                        smtp_url=f"smtp://127.0.0.1:{relay.port}",
                        mail_from=addresses[member.gateway_id],
                        imap_url=f"imap://{user}:{PASSWORD}@127.0.0.1:{mail.imap_port}/INBOX",
                        smime_key=pki.key_path(f"{member.gateway_id}-smime"),
                        smime_cert=bundles[member.gateway_id],
                    )
                )
            )  # fmt: skip
        gw_es, gw_ar = sides
        pair = Pair(gw_es, gw_ar, drop, tmp_path / "pair")
        try:
            request = demo_messages.request(with_attachments=False)
            _submit(gw_es, pair, request)
            assert any(o.startswith("sent:") for o in _run(gw_es))
            lines = _poll(gw_ar)
            assert [line.split(":")[0] for line in lines] == ["received"], lines

            answer = demo_messages.reply(request)
            _submit(gw_ar, pair, answer, channel="sftp")
            outcomes = _run(gw_ar)
            assert len([o for o in outcomes if o.startswith("sent:")]) == 2, outcomes
            assert (drop / answer.message_id / "envelope.xml").exists()
            [sent] = [
                e.details
                for e in gw_ar.audit.entries_for(answer.message_id)
                if e.kind == "notice.sent"
            ]

            lines = _poll(gw_es)
            assert [line.split(":")[0] for line in lines] == ["notice"], lines
            [taken] = [
                e.details
                for e in gw_es.audit.entries_for(request.message_id)
                if e.kind == "notice.received"
            ]
            assert (taken["notice_id"], taken["sha256"]) == (sent["notice_id"], sent["sha256"])
            assert (taken["channel"], taken["authority"]) == ("email", "AR-MJ")
            assert mail.messages("es") == [] and len(mail.messages("es", "Processed")) == 1
        finally:
            for side in sides:
                side.close()
