"""Two real gateways (gunicorn, mutual TLS) exchange a request and its reply over the peer channel.

gw-es serves ES-MJ, gw-ar serves AR-MJ (gateway.pair). The dispatchers run
in this process against each gateway's own database, so each step is
observed; the intake, retrieval and evidence endpoints are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import demo_messages
from gateway.client import GatewayClient
from gateway.dispatcher import Dispatcher, DispatchStats
from gateway.evidence import read_evidence
from gateway.model import Direction, EvidenceType, Status
from gateway.outbox import Backoff
from gateway.pair import Member, prepare_pair
from gateway.pki import load_dev_pki
from gateway.services import Services, build_services
from signing.xades_sign import sign_xml
from tests.gateway_process import GatewayProcess, free_port


@dataclass
class Side:
    member: Member
    process: GatewayProcess
    services: Services

    def client(self) -> GatewayClient:
        return GatewayClient(self.member.url, token=self.member.token, ca_file=self.process.ca_file)

    def dispatcher(self, **options: object) -> Dispatcher:
        options.setdefault("backoff", Backoff(base_seconds=0.001, cap_seconds=0.001))
        options.setdefault("concurrency", 1)
        return self.services.dispatcher(**options)

    def run_once(self, **options: object) -> DispatchStats:
        """One dispatcher turn, its connections closed after."""
        dispatcher = self.dispatcher(**options)
        try:
            return dispatcher.run_once()
        finally:
            dispatcher.close()

    def status(self, message_id: str) -> Status:
        message = self.services.store.message(message_id)
        assert message is not None
        return message.status


@dataclass
class Pair:
    es: Side
    ar: Side
    base: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("pair")
    es, ar = prepare_pair(base, (free_port(), free_port()))
    sides = []
    for member in (es, ar):
        process = GatewayProcess(
            member.data_dir, workers=1, port=member.port, ca_file=base / "pki" / "root-ca.pem",
            env={"ROGATORY_CONFIG": str(member.config_file)},
        )  # fmt: skip
        process.start()
        sides.append(Side(member, process, build_services(member.settings)))
    try:
        yield Pair(sides[0], sides[1], base)
    finally:
        for side in sides:
            side.process.stop()
            side.services.close()


def _post(side: Side, example: demo_messages.Example, signer_name: str, base: Path) -> str:
    pki = load_dev_pki(base / "pki")
    signed = sign_xml(example.envelope, pki.signer(signer_name))
    client = side.client()
    try:
        reply = client.submit(signed, example.attachments)
    finally:
        client.close()
    assert reply.status == 202, reply.body
    return example.message_id


def _kinds(side: Side, message_id: str) -> list[EvidenceType]:
    return [e.type for e in side.services.store.evidences(message_id)]


def test_a_request_and_its_reply_travel_both_ways_with_signed_evidences(pair: Pair) -> None:
    es, ar = pair.es, pair.ar
    request = demo_messages.request()
    message_id = _post(es, request, "ES-MJ", pair.base)
    assert es.status(message_id) is Status.QUEUED
    route = json.loads(es.services.store.message(message_id).route or "{}")
    assert route["channel"] == {"kind": "gateway", "gateway": "gw-ar"}

    stats = es.run_once()
    assert stats.sent == 1, stats.outcomes
    # The peer's signed Delivery evidence is kept on the sending side and moved the status.
    assert es.status(message_id) is Status.DELIVERED
    assert EvidenceType.DELIVERY in _kinds(es, message_id)
    delivery = next(
        e for e in es.services.store.evidences(message_id) if e.type is EvidenceType.DELIVERY
    )
    verified = read_evidence(es.services.blobs.read(delivery.sha256), es.services.engine)
    assert verified.evidence.issuer.id == "gw-ar"

    # On the far side: an inbound message for AR-MJ, byte for byte, with its attachments.
    received = ar.services.store.message(message_id)
    assert received is not None and received.direction is Direction.INBOUND
    assert received.status is Status.DELIVERED
    assert json.loads(received.arrived_via or "{}") == {"kind": "gateway", "gateway": "gw-es"}
    original = es.services.store.message(message_id)
    assert original is not None and received.envelope_sha256 == original.envelope_sha256
    sent_parts = {a.content_id: a.sha256 for a in es.services.store.attachments(message_id)}
    got_parts = {a.content_id: a.sha256 for a in ar.services.store.attachments(message_id)}
    assert got_parts == sent_parts and sent_parts

    # AR-MJ collects it; the Retrieval evidence goes back to gw-es by the same channel.
    client = ar.client()
    assert [m["message_id"] for m in client.inbox().json()["messages"]] == [message_id]
    assert client.collect(message_id).status == 200
    client.close()
    assert ar.run_once().sent == 1
    assert es.status(message_id) is Status.RETRIEVED
    assert EvidenceType.RETRIEVAL in _kinds(es, message_id)

    # The execution result goes back by the channel the request came by.
    answer = demo_messages.reply(request)
    reply_id = _post(ar, answer, "AR-MJ", pair.base)
    route = json.loads(ar.services.store.message(reply_id).route or "{}")
    assert route["why"] == "the channel the request came by"
    assert ar.run_once().sent == 1
    assert ar.status(reply_id) is Status.DELIVERED
    client = es.client()
    assert client.collect(reply_id).status == 200
    client.close()
    assert es.run_once().sent == 1
    assert ar.status(reply_id) is Status.RETRIEVED


def test_a_resend_after_a_crash_is_answered_with_the_first_evidence_and_delivered_once(
    pair: Pair,
) -> None:
    es, ar = pair.es, pair.ar
    message_id = _post(es, demo_messages.request(with_attachments=False), "ES-MJ", pair.base)
    # A worker claims the message and dies before recording the answer: its lease runs out.
    from datetime import timedelta

    dead = es.dispatcher(lease=timedelta(seconds=-1), owner="dead-worker")
    [claim] = dead.outbox.claim("dead-worker", 1, timedelta(seconds=-1))
    assert claim.attempt == 1
    outgoing = dead._outgoing(es.services.store.message(message_id))  # type: ignore[arg-type]
    first = dead.transports.adapter(
        es.services.directory.get("AR-MJ").channels[0]  # type: ignore[union-attr]
    ).send(outgoing)
    dead.close()
    assert ar.status(message_id) is Status.DELIVERED
    audit_before = ar.services.audit.size()

    stats = es.run_once()
    assert stats.sent == 1, stats.outcomes
    assert es.status(message_id) is Status.DELIVERED
    history = [c.status for c in es.services.store.history(message_id)]
    assert history[-4:] == [
        Status.SENDING, Status.WAITING_FOR_RETRY, Status.SENDING, Status.DELIVERED,
    ]  # fmt: skip
    # The peer answered the resend with its first evidence and stored nothing new.
    [delivery] = [
        e for e in es.services.store.evidences(message_id) if e.type is EvidenceType.DELIVERY
    ]
    assert es.services.blobs.read(delivery.sha256) == first.evidences[0]
    assert ar.services.audit.size() == audit_before
    assert len([m for m in ar.services.store.inbox("AR-MJ") if m.message_id == message_id]) == 1


def test_a_peer_that_is_down_is_retried_and_delivered_once_it_is_back(pair: Pair) -> None:
    es, ar = pair.es, pair.ar
    message_id = _post(es, demo_messages.request(with_attachments=False), "ES-MJ", pair.base)
    ar.process.stop()
    try:
        stats = es.run_once()
        assert stats.retried == 1, stats.outcomes
        assert es.status(message_id) is Status.WAITING_FOR_RETRY
        reason = es.services.store.history(message_id)[-1].reason or ""
        assert "gw-ar" in reason and "could not be reached" in reason
    finally:
        ar.process.start()
    stats = es.run_once()
    assert stats.sent == 1, stats.outcomes
    assert es.status(message_id) is Status.DELIVERED
    assert ar.status(message_id) is Status.DELIVERED


def test_attempts_used_up_fail_the_message_with_the_reason_and_a_relay_failure(
    pair: Pair,
) -> None:
    es, ar = pair.es, pair.ar
    message_id = _post(es, demo_messages.request(with_attachments=False), "ES-MJ", pair.base)
    ar.process.stop()
    try:
        dispatcher = es.dispatcher(backoff=Backoff(0.001, 0.001, max_attempts=2))
        assert dispatcher.run_once().retried == 1
        import time

        time.sleep(0.01)
        stats = dispatcher.run_once()
        dispatcher.close()
        assert stats.failed == 1, stats.outcomes
    finally:
        ar.process.start()
    assert es.status(message_id) is Status.FAILED
    reason = es.services.store.history(message_id)[-1].reason or ""
    assert reason.startswith("gave up after 2 attempts: gateway gw-ar")
    assert EvidenceType.RELAY_FAILURE in _kinds(es, message_id)
    assert es.services.store.message(message_id) is not None
    assert ar.services.store.message(message_id) is None  # never delivered


def test_a_peer_may_not_read_messages_nor_speak_for_authorities_it_does_not_serve(
    pair: Pair,
) -> None:
    es = pair.es
    pki = load_dev_pki(pair.base / "pki")
    # gw-ar's TLS client certificate authenticates it as a peer on gw-es ...
    client = GatewayClient(
        es.member.url, ca_file=es.process.ca_file,
        client_cert=(pki.cert_path("gw-ar"), pki.key_path("gw-ar")),
    )  # fmt: skip
    try:
        assert client.inbox().status == 403  # ... which may only post
        # ... and may bring messages from AR-MJ only, not from ES-MJ.
        forged = sign_xml(
            demo_messages.request(with_attachments=False).envelope, pki.signer("ES-MJ")
        )
        answer = client.submit(forged)
        assert answer.status == 403
        assert answer.json()["type"].endswith("sender-not-of-peer")
    finally:
        client.close()


class _FakePeer:
    """An HTTPS server on gw-ar's port with gw-ar's TLS certificate that answers every post
    with 202 and the body it is given: the peer that answers with a bad evidence."""

    def __init__(self, base: Path, port: int, answer: bytes) -> None:
        import http.server
        import ssl
        import threading

        body = answer

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(202)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        pki = load_dev_pki(base / "pki")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.cert_path("gw-ar"), pki.key_path("gw-ar"))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _FakePeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _forged_delivery(base: Path, message_id: str, envelope_sha256: str, signer: str) -> bytes:
    from gateway.evidence import GatewayRef, MessageRef, build_evidence, sign_evidence

    ref = MessageRef(envelope_sha256, message_id, None, "ES-MJ", "AR-MJ")
    issuer = GatewayRef("gw-ar", "Rogatory development gateway (gw-ar)", "AR")
    evidence = build_evidence(EvidenceType.DELIVERY, ref, issuer)
    return sign_evidence(evidence, load_dev_pki(base / "pki").signer(signer))


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("unsigned", "signature"),
        ("wrong-signer", "not an evidence signer of gateway gw-ar"),
        ("tampered", "signature"),
        ("not-xml", "without a valid evidence"),
    ],
)
def test_a_peer_answering_with_an_invalid_or_unsigned_evidence_is_not_counted_as_delivered(
    pair: Pair, case: str, why: str
) -> None:
    from gateway.evidence import evidence_xml, read_evidence

    es, ar = pair.es, pair.ar
    message_id = _post(es, demo_messages.request(with_attachments=False), "ES-MJ", pair.base)
    message = es.services.store.message(message_id)
    assert message is not None
    # What the real gw-ar would sign, but spoiled in one way.
    genuine = _forged_delivery(pair.base, message_id, message.envelope_sha256, "gw-ar-evidence")
    answers = {
        "unsigned": evidence_xml(
            read_evidence(genuine, es.services.engine).evidence  # type: ignore[arg-type]
        ),
        "wrong-signer": _forged_delivery(pair.base, message_id, message.envelope_sha256, "AR-MJ"),
        "tampered": genuine.replace(b">Delivery<", b">Retrieval<"),
        "not-xml": b"OK, got it",
    }
    ar.process.stop()
    try:
        with _FakePeer(pair.base, ar.member.port, answers[case]):
            stats = es.run_once()
    finally:
        ar.process.start()
    assert stats.retried == 1, stats.outcomes
    assert es.status(message_id) is Status.WAITING_FOR_RETRY
    reason = es.services.store.history(message_id)[-1].reason or ""
    assert "gw-ar answered without a valid evidence" in reason and why in reason
    assert EvidenceType.DELIVERY not in _kinds(es, message_id)
    # The real peer, back, is answered properly: delivered once.
    assert es.run_once().sent == 1
    assert es.status(message_id) is Status.DELIVERED
