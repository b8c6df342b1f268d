"""The HTTP verification endpoint renders the same verdicts as the CLI."""

from __future__ import annotations

import pytest

from gateway.app import create_app


@pytest.fixture()
def client(pki):
    return create_app({"TRUST": str(pki.root_path)}).test_client()


def test_health(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "trust_anchors": 1}


def test_verify_endpoint_passes_and_fails(client, signed_envelope):
    ok = client.post("/api/v1/verify", data=signed_envelope).get_json()["documents"][0]
    assert ok["indication"] == "TOTAL-PASSED"
    bad = client.post(
        "/api/v1/verify", data=signed_envelope.replace(b"<Language>es", b"<Language>pt")
    ).get_json()["documents"][0]
    assert (bad["indication"], bad["subindication"]) == ("TOTAL-FAILED", "HASH_FAILURE")


def test_oversized_body_is_refused(client):
    response = client.post("/api/v1/verify", data=b"<a>" + b"x" * (17 * 1024 * 1024))
    assert response.status_code == 413
