"""The HTTP API end to end in one process: post, read, collect, audit; authentication."""

from __future__ import annotations

import json

import pytest

import tests.test_intake as intake_tests
from gateway.app import create_app
from gateway.bootstrap import read_demo_tokens as _tokens
from gateway.envelope import Envelope
from gateway.pki import load_dev_pki
from gateway.settings import Settings
from schemas import examples_dir
from signing.xades_sign import sign_xml
from signing.xmlparse import parse_xml
from tests.conftest import signer_for


@pytest.fixture()
def gateway(tmp_path):
    settings = Settings(mode="development", data_dir=tmp_path / "data", audit_checkpoint_every=1)
    app = create_app(settings)
    yield app, tmp_path / "data"
    app.extensions["rogatory"].close()


@pytest.fixture()
def client(gateway):
    return gateway[0].test_client()


@pytest.fixture()
def auth(gateway):
    tokens = _tokens(gateway[1])
    return lambda authority: {"Authorization": f"Bearer {tokens[authority]}"}


@pytest.fixture()
def signed(gateway):
    pki = load_dev_pki(gateway[1] / "pki")
    return sign_xml((examples_dir() / "mla-request.xml").read_bytes(), signer_for(pki, "ES-MJ"))


def _post(client, auth, data, authority="ES-MJ"):
    """Post an envelope of the examples with the attachment files its manifest names."""
    envelope = Envelope.from_xml(parse_xml(data))
    folder = examples_dir() / "attachments"
    parts = [
        (a.content_id or a.id, (folder / a.file_name).read_bytes()) for a in envelope.attachments
    ]
    content_type, body = intake_tests.multipart(data, parts)
    return client.post(
        "/api/v1/messages", data=body, headers=auth(authority), content_type=content_type
    )


def test_without_credentials_every_call_is_refused(client, signed):
    for response in (
        client.post("/api/v1/messages", data=signed, content_type="application/xml"),
        client.get("/api/v1/inbox"),
        client.get("/api/v1/inbox", headers={"Authorization": "Bearer not-a-token"}),
    ):
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_post_read_collect_and_audit(client, auth, signed):
    accepted = _post(client, auth, signed)
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    assert accepted.mimetype == "application/xml" and b"SubmissionAcceptance" in accepted.data
    location = accepted.headers["Location"]
    message_id = location.rsplit("/", 1)[-1]

    status = client.get(location, headers=auth("ES-MJ")).get_json()
    assert status["message_id"] == message_id and status["sender"] == "ES-MJ"
    assert [h["status"] for h in status["history"]][:2] == ["received", "accepted"]
    original = client.get(f"{location}/envelope", headers=auth("ES-MJ"))
    assert original.data == signed  # byte for byte

    # Another authority does not even learn the message exists.
    assert client.get(location, headers=auth("CO-FGN")).status_code == 404

    inbox = client.get("/api/v1/inbox", headers=auth("AR-MJ")).get_json()["messages"]
    assert [m["message_id"] for m in inbox] == [message_id]
    collected = client.post(f"{location}/retrieval", headers=auth("AR-MJ"))
    assert collected.status_code == 200 and b"Retrieval" in collected.data
    again = client.post(f"{location}/retrieval", headers=auth("AR-MJ"))
    assert again.data == collected.data  # collecting twice gives the first evidence
    assert client.post(f"{location}/retrieval", headers=auth("ES-MJ")).status_code == 403
    final = client.get(location, headers=auth("AR-MJ")).get_json()
    assert final["status"] == "retrieved"
    assert {e["type"] for e in final["evidences"]} >= {"SubmissionAcceptance", "Retrieval"}

    evidence_id = final["evidences"][0]["evidence_id"]
    evidence = client.get(f"{location}/evidences/{evidence_id}", headers=auth("ES-MJ"))
    assert evidence.mimetype == "application/xml" and b"<ds:Signature" in evidence.data

    record = client.get(f"{location}/record", headers=auth("ES-MJ"))
    assert record.mimetype == "application/pdf" and record.data.startswith(b"%PDF-")
    assert client.get(f"{location}/record", headers=auth("CO-FGN")).status_code == 404

    checkpoint = client.get("/api/v1/audit/checkpoint", headers=auth("ES-MJ"))
    assert checkpoint.status_code == 200
    index = final["history"][0]["audit_index"]
    proof = client.get(f"/api/v1/audit/entries/{index}/proof", headers=auth("ES-MJ"))
    assert proof.status_code == 200 and json.loads(proof.data)


def test_the_same_message_posted_twice_gets_the_first_answer(client, auth, signed):
    first = _post(client, auth, signed)
    second = _post(client, auth, signed)
    assert (second.status_code, second.data) == (first.status_code, first.data)


def test_a_rejection_is_problem_json_with_a_signed_evidence(client, auth, signed):
    tampered = signed.replace(b"<Language>es", b"<Language>pt")
    refused = _post(client, auth, tampered)
    assert 400 <= refused.status_code < 500
    assert refused.mimetype == "application/problem+json"
    body = refused.get_json()
    assert "SubmissionRejection" in body["evidence"] and body["detail"]


def test_an_authority_posting_as_another_is_refused(client, auth, signed):
    refused = _post(client, auth, signed, authority="CO-FGN")
    assert refused.status_code == 403
    assert "SubmissionRejection" in refused.get_json()["evidence"]


def test_health_needs_no_credentials(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "gateway": "gw-es"}


def test_verify_endpoint_renders_the_cli_verdicts(client, auth, signed):
    ok = client.post("/api/v1/verify", data=signed, headers=auth("PT-PGR"))
    assert ok.get_json()["documents"][0]["indication"] == "TOTAL-PASSED"
    bad = client.post(
        "/api/v1/verify",
        data=signed.replace(b"<Language>es", b"<Language>pt"),
        headers=auth("PT-PGR"),
    ).get_json()["documents"][0]
    assert (bad["indication"], bad["subindication"]) == ("TOTAL-FAILED", "HASH_FAILURE")


def test_a_body_above_the_limit_is_refused_before_it_is_read(tmp_path):
    settings = Settings(
        mode="development", data_dir=tmp_path / "d", max_body_bytes=1024, max_envelope_bytes=512
    )
    app = create_app(settings)
    token = _tokens(tmp_path / "d")["ES-MJ"]
    response = app.test_client().post(
        "/api/v1/messages", data=b"x" * 4096, content_type="application/xml",
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert response.status_code == 413
    app.extensions["rogatory"].close()
