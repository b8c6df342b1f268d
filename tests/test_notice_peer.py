"""Two real gateways: AR-MJ's reply overrides the channel, and gw-es records gw-ar's notice.

gw-es serves ES-MJ, gw-ar serves AR-MJ (gateway.pair); gw-ar's directory also
lists an e-mail address for ES-MJ. ES-MJ's request reaches AR-MJ through the
gateways; AR-MJ answers by e-mail (``?channel=email``, to a local SMTP server),
so gw-ar sends its signed notice to gw-es over mutual TLS. gw-es takes only a
notice gw-ar signed, about a message it sent gw-ar, and records every refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway import demo_messages
from gateway.client import GatewayClient, Reply
from gateway.evidence import GatewayRef
from gateway.model import Status
from gateway.notice import NoticeChannel, ReplyRef, build_notice, read_notice, sign_notice
from gateway.outbox import Backoff
from gateway.pair import prepare_pair
from gateway.peer_notice import MAX_NOTICE_BYTES
from gateway.pki import load_dev_pki
from gateway.services import Services, build_services
from signing.keys import Signer
from signing.xades_sign import sign_xml
from tests.gateway_process import GatewayProcess, free_port
from tests.mailservers import SmtpRelay, smtp_relay
from tests.test_record import detach_all

ES_MAIL = "mj@es.example"


@dataclass
class Side:
    url: str
    token: str
    process: GatewayProcess
    services: Services

    def client(self, *, as_peer: tuple[Path, Path] | None = None) -> GatewayClient:
        if as_peer is not None:
            return GatewayClient(self.url, ca_file=self.process.ca_file, client_cert=as_peer)
        return GatewayClient(self.url, token=self.token, ca_file=self.process.ca_file)

    def run_once(self) -> list[str]:
        dispatcher = self.services.dispatcher(
            backoff=Backoff(base_seconds=0.001, cap_seconds=0.001), concurrency=1
        )
        try:
            return dispatcher.run_once().outcomes
        finally:
            dispatcher.close()

    def status(self, message_id: str) -> Status:
        message = self.services.store.message(message_id)
        assert message is not None
        return message.status

    def kinds(self, message_id: str | None, prefix: str = "notice.") -> list[str]:
        if message_id is None:
            audit = self.services.audit
            entries = [audit.entry(i) for i in range(audit.size())]
            return [e.kind for e in entries if e.message_id is None and e.kind.startswith(prefix)]
        entries = self.services.audit.entries_for(message_id)
        return [e.kind for e in entries if e.kind.startswith(prefix)]


@dataclass
class Pair:
    es: Side
    ar: Side
    base: Path
    relay: SmtpRelay

    def signer(self, name: str) -> Signer:
        return load_dev_pki(self.base / "pki").signer(name)

    def as_gw_ar(self) -> tuple[Path, Path]:
        pki = load_dev_pki(self.base / "pki")
        return pki.cert_path("gw-ar"), pki.key_path("gw-ar")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("pair")
    es, ar = prepare_pair(base, (free_port(), free_port()))
    # gw-ar may also reach ES-MJ by e-mail: the channel AR-MJ's reply asks for.
    directory = ar.data_dir / "authorities.toml"
    text = directory.read_text()
    channel = f'[[authority.channel]]\nkind = "email"\naddress = "{ES_MAIL}"\n\n'
    directory.write_text(text.replace("[[gateway]]", channel + "[[gateway]]", 1))
    # The SMTP server only keeps what it is handed: no mailbox behind it.
    with smtp_relay(SimpleNamespace(lmtp_port=0)) as relay:  # type: ignore[arg-type]
        relay.deliver = False
        sides = []
        for member in (es, ar):
            process = GatewayProcess(
                member.data_dir, workers=1, port=member.port, ca_file=base / "pki" / "root-ca.pem",
                env={"ROGATORY_CONFIG": str(member.config_file)},
            )  # fmt: skip
            process.start()
            settings = replace(
                member.settings, smtp_url=f"smtp://127.0.0.1:{relay.port}",
                mail_from=f"{member.gateway_id}@{member.country.lower()}.example",
            )  # fmt: skip
            sides.append(Side(member.url, member.token, process, build_services(settings)))
        try:
            yield Pair(sides[0], sides[1], base, relay)
        finally:
            for side in sides:
                side.process.stop()
                side.services.close()


def _post(pair: Pair, side: Side, example: demo_messages.Example, signer: str, **kw: str) -> None:
    client = side.client()
    try:
        reply = client.submit(sign_xml(example.envelope, pair.signer(signer)), **kw)
    finally:
        client.close()
    assert reply.status == 202, reply.body


def _request_delivered(pair: Pair) -> demo_messages.Example:
    """ES-MJ's request, delivered to AR-MJ through the gateways."""
    request = demo_messages.request(with_attachments=False)
    _post(pair, pair.es, request, "ES-MJ")
    assert any(o.startswith("sent:") for o in pair.es.run_once())
    assert pair.ar.status(request.message_id) is Status.DELIVERED
    return request


def _post_notice(pair: Pair, message_id: str, data: bytes) -> Reply:
    client = pair.es.client(as_peer=pair.as_gw_ar())
    try:
        return client.request(
            "POST", f"/api/v1/messages/{message_id}/notices", data,
            {"Content-Type": "application/xml"},
        )  # fmt: skip
    finally:
        client.close()


def test_a_reply_that_overrides_the_channel_is_announced_and_the_requester_records_it(
    pair: Pair, tmp_path: Path
) -> None:
    es, ar = pair.es, pair.ar
    request = _request_delivered(pair)
    answer = demo_messages.reply(request)
    pair.relay.received.clear()
    _post(pair, ar, answer, "AR-MJ", channel="email")
    route = json.loads(ar.services.store.message(answer.message_id).route or "{}")  # type: ignore[union-attr]
    assert route["channel"] == {"kind": "email", "address": ES_MAIL}
    assert route["notice_by"] == {"kind": "gateway", "gateway": "gw-es"}

    outcomes = ar.run_once()
    assert len([o for o in outcomes if o.startswith("sent:")]) == 2, outcomes
    # The reply itself went by e-mail ...
    assert ar.status(answer.message_id) is Status.RELAYED
    assert [answer.message_id.encode() in mail for mail in pair.relay.received] == [True]
    # ... and gw-es was told by the channel the request came by.
    assert ar.kinds(answer.message_id) == ["notice.issued", "notice.sent"]
    [sent] = [
        e.details
        for e in ar.services.audit.entries_for(answer.message_id)
        if e.kind == "notice.sent"
    ]
    assert es.kinds(request.message_id) == ["notice.received"]
    [got] = [
        e.details
        for e in es.services.audit.entries_for(request.message_id)
        if e.kind == "notice.received"
    ]
    assert (got["notice_id"], got["sha256"]) == (sent["notice_id"], sent["sha256"])
    assert got["gateway"] == "gw-ar" and got["reply_id"] == answer.message_id
    document = es.services.blobs.read(str(got["sha256"]))
    notice = read_notice(document, es.services.engine, expect_issuer="gw-ar").notice  # type: ignore[arg-type]
    assert notice.in_reply_to == request.message_id
    assert notice.channel == NoticeChannel("email")
    assert notice.reason == "the sender chose the email channel"
    assert es.status(request.message_id) is Status.DELIVERED  # a notice moves no status

    # ES-MJ sees it with its message.
    client = es.client()
    try:
        shown = client.message(request.message_id).json()
    finally:
        client.close()
    assert [
        (n["notice_id"], n["direction"], n["state"], n["reply_channel"]) for n in shown["notices"]
    ] == [(notice.notice_id, "received", "received", "e-mail")]

    # Both written records hold the notice, byte for byte.
    for side, about, folder in ((es, request, "es"), (ar, answer, "ar")):
        (tmp_path / folder).mkdir()
        files = detach_all(side.services.written_record(about.message_id), tmp_path / folder)
        assert files[f"notice-{notice.notice_id}.xml"] == document

    # The same notice posted again is answered alike and recorded once.
    before = es.services.audit.size()
    again = _post_notice(pair, request.message_id, document)
    assert again.status == 200, again.body
    assert again.json() == {"notice_id": notice.notice_id, "message_id": request.message_id}
    assert es.services.audit.size() == before


def _gw_ar_notice(pair: Pair, about: str, signer: str = "", **changes: str) -> bytes:
    """A notice as gw-ar would issue it about ES-MJ's message ``about``."""
    ar = pair.ar.services
    notice = build_notice(
        changes.get("notice_id", "5b0e6a52-7d3c-4c39-9a51-0c0ffee00005"), ar.intake.issuer,
        changes.get("in_reply_to", about),
        ReplyRef("6b0e6a52-7d3c-4c39-9a51-0c0ffee00006", "AR-MJ",
                 changes.get("recipient", "ES-MJ"), "cd" * 32),
        NoticeChannel("email"), "the sender chose the email channel",
        conversation_id=changes.get("conversation_id"),
    )  # fmt: skip
    return sign_notice(notice, pair.signer(signer) if signer else ar.signer)


def test_bad_notices_are_refused_with_a_reason_and_recorded(pair: Pair) -> None:
    es = pair.es
    request = _request_delivered(pair)
    other = _request_delivered(pair)
    conversation = {"conversation_id": request.conversation_id}
    genuine = _gw_ar_notice(pair, request.message_id, **conversation)
    inbound = demo_messages.reply(other)  # a message gw-es received, never sent
    _post(pair, pair.ar, inbound, "AR-MJ")
    pair.ar.run_once()
    assert es.status(inbound.message_id) is Status.DELIVERED

    cases = [
        # (posted about, body, status, code, what the reason says)
        (request.message_id, genuine.replace(b">email<", b">sftp<"), 422, "notice-invalid",
         "signature is not valid"),
        (request.message_id, _gw_ar_notice(pair, request.message_id, "AR-MJ", **conversation),
         422, "notice-invalid", "not an evidence signer of gateway gw-ar"),
        (request.message_id, _gw_ar_notice(pair, request.message_id, "gw-es-evidence"),
         422, "notice-invalid", "not an evidence signer"),
        (other.message_id, genuine, 422, "notice-invalid",
         f"is about a reply to message {request.message_id}"),
        (request.message_id, _gw_ar_notice(pair, request.message_id, recipient="ES-XX",
                                           **conversation),
         422, "notice-invalid", "addressed to ES-XX"),
        (request.message_id, b"OK", 422, "notice-invalid", "signature is not valid"),
        (inbound.message_id, genuine, 404, "unknown-message", "was sent to gateway gw-ar"),
        ("no-such-message", genuine, 404, "unknown-message", "no message no-such-message"),
        (request.message_id, b"<" * (MAX_NOTICE_BYTES + 1), 413, "notice-too-large", "at most"),
    ]  # fmt: skip
    for about, body, status, code, why in cases:
        answer = _post_notice(pair, about, body)
        assert answer.status == status, (why, answer.body)
        problem = answer.json()
        assert problem["type"] == f"urn:rogatory:problem:{code}", problem
        assert why in problem["detail"], problem

    refused = [
        e for e in es.services.audit.entries_for(request.message_id) if e.kind == "notice.refused"
    ]
    assert [e.details["status"] for e in refused] == [422] * 5
    assert all(e.actor == "gateway:gw-ar" and e.details["sha256"] for e in refused)
    assert es.kinds(other.message_id) == ["notice.refused"]
    # Not the peer's business: recorded on no message, never on the one named.
    assert es.kinds(inbound.message_id) == []
    assert es.kinds(None)[-3:] == ["notice.refused"] * 3
    assert es.kinds(request.message_id).count("notice.received") == 0

    # The genuine one is taken; the same id with other bytes is then a conflict.
    assert _post_notice(pair, request.message_id, genuine).status == 201
    resigned = _gw_ar_notice(pair, request.message_id, **conversation)
    conflict = _post_notice(pair, request.message_id, resigned)
    assert conflict.status == 409 and conflict.json()["type"].endswith("notice-conflict")
    assert es.kinds(request.message_id).count("notice.received") == 1

    # An authority may not post notices, only a peer gateway.
    client = es.client()
    try:
        answer = client.request(
            "POST", f"/api/v1/messages/{request.message_id}/notices", genuine,
            {"Content-Type": "application/xml"},
        )  # fmt: skip
    finally:
        client.close()
    assert answer.status == 403


def test_an_issuer_other_than_the_posting_peer_is_refused(pair: Pair) -> None:
    request = _request_delivered(pair)
    ar = pair.ar.services
    notice = build_notice(
        "7b0e6a52-7d3c-4c39-9a51-0c0ffee00007", GatewayRef("gw-xx", "Another gateway", "XX"),
        request.message_id, ReplyRef("6b0e6a52-7d3c-4c39-9a51-0c0ffee00006", "AR-MJ", "ES-MJ",
                                     "cd" * 32),
        NoticeChannel("email"), "the sender chose the email channel",
    )  # fmt: skip
    answer = _post_notice(pair, request.message_id, sign_notice(notice, ar.signer))
    assert answer.status == 422
    assert "issued by 'gw-xx', not by 'gw-ar'" in answer.json()["detail"]
    assert pair.es.kinds(request.message_id) == ["notice.refused"]
