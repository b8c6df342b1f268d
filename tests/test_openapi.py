"""The HTTP contract: gateway/openapi.yaml is valid OpenAPI 3.1, names every route, is kept.

Every answer below goes through ``Contract.exchange``, which finds the
operation the app routed the request to, and fails when the status is not
documented for it, when the media type is not the documented one, when a
required header is missing, or when a JSON body does not match the schema.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

import tests.test_api as api_tests
from gateway.app import create_app
from gateway.openapi import docs, load_openapi, openapi_text
from gateway.pki import load_dev_pki
from gateway.settings import Settings
from schemas import examples_dir
from signing.xades_sign import sign_xml
from tests.conftest import signer_for

DOCUMENT_URI = "urn:rogatory:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Flask adds these to every rule; the static route is Flask's own, not the gateway's.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
FLASK_ENDPOINTS = {"static"}


def _template(rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``<int:index>`` becomes ``{index}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _anchored(schema: Any) -> Any:
    """A schema taken out of the document, its ``#/...`` references pointing back into it."""
    if isinstance(schema, dict):
        return {
            k: DOCUMENT_URI + v if k == "$ref" and v.startswith("#") else _anchored(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_anchored(v) for v in schema]
    return schema


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        found: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part.replace("~1", "/").replace("~0", "~")]
        node = found
    return node


class Contract:
    """A test client whose every answer is checked against the OpenAPI document."""

    def __init__(self, app: Flask, document: dict[str, Any]) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(
            DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
        )
        self.seen: set[tuple[str, str, int]] = set()

    def operation(self, url: str, method: str) -> tuple[str, dict[str, Any]]:
        adapter = self.app.url_map.bind("gateway.test")
        rule, _ = adapter.match(url.split("?", 1)[0], method=method.upper(), return_rule=True)
        path = _template(rule.rule)
        assert path in self.document["paths"], f"{path} is routed but not documented"
        operation = self.document["paths"][path].get(method.lower())
        assert operation is not None, f"{method.upper()} {path} is routed but not documented"
        return path, operation

    def exchange(self, method: str, url: str, **kwargs: Any) -> TestResponse:
        path, operation = self.operation(url, method)
        response = self.client.open(url, method=method.upper(), **kwargs)
        self.check(path, method.lower(), operation, response)
        return response

    def check(
        self, path: str, method: str, operation: dict[str, Any], response: TestResponse
    ) -> None:
        where = f"{method.upper()} {path} -> {response.status_code}"
        responses = operation["responses"]
        documented = responses.get(str(response.status_code))
        assert documented is not None, (
            f"{where} is not documented (documented: {sorted(responses)}): "
            f"{response.get_data(as_text=True)[:300]}"
        )
        documented = _resolve(self.document, documented)
        for name, header in documented.get("headers", {}).items():
            header = _resolve(self.document, header)
            if header.get("required"):
                assert name in response.headers, f"{where}: no {name} header"
            if name in response.headers:
                self.validate(header["schema"], response.headers[name], f"{where} {name}")
        content = documented.get("content", {})
        media_type = response.mimetype
        if media_type not in content and "*/*" in content:
            media_type = "*/*"
        assert media_type in content, f"{where}: {response.mimetype} is not one of {list(content)}"
        schema = content[media_type].get("schema", {})
        if response.mimetype.endswith("json"):
            self.validate(schema, json.loads(response.data), where)
        elif response.mimetype.startswith("text/") or response.mimetype.endswith(("xml", "yaml")):
            self.validate(schema, response.get_data(as_text=True), where)
        self.seen.add((path, method, response.status_code))

    def validate(self, schema: dict[str, Any], instance: Any, where: str) -> None:
        validator = Draft202012Validator(
            _anchored(schema), registry=self.registry, format_checker=FormatChecker()
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{where}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )


def _with_docs(app: Flask) -> Flask:
    """The app with the contract served (until app.py registers the blueprint itself)."""
    if "docs" not in app.blueprints:
        app.register_blueprint(docs)
    return app


@pytest.fixture()
def gateway(tmp_path):
    settings = Settings(mode="development", data_dir=tmp_path / "data", audit_checkpoint_every=1)
    app = _with_docs(create_app(settings))
    yield app, tmp_path / "data"
    app.extensions["rogatory"].close()


@pytest.fixture()
def contract(gateway):
    return Contract(gateway[0], load_openapi())


@pytest.fixture()
def auth(gateway):
    tokens = api_tests._tokens(gateway[1])
    return lambda authority: {"Authorization": f"Bearer {tokens[authority]}"}


@pytest.fixture()
def pki(gateway):
    return load_dev_pki(gateway[1] / "pki")


@pytest.fixture()
def signed(pki):
    return sign_xml((examples_dir() / "mla-request.xml").read_bytes(), signer_for(pki, "ES-MJ"))


def _post(contract: Contract, auth, data: bytes, authority: str = "ES-MJ") -> TestResponse:
    """The envelope with its attachments as multipart/related, checked against the contract."""
    path, operation = contract.operation("/api/v1/messages", "post")
    response = api_tests._post(contract.client, auth, data, authority)
    contract.check(path, "post", operation, response)
    return response


# ---- the document -----------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    document = load_openapi()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_is_documented_and_every_documented_operation_is_routed(gateway):
    app = gateway[0]
    routed = {
        (_template(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in FLASK_ENDPOINTS
        for method in (rule.methods or set()) - IMPLICIT_METHODS
    }
    paths = load_openapi()["paths"]
    documented = {(path, m) for path, item in paths.items() for m in item if m in HTTP_METHODS}
    assert routed - documented == set(), "routes missing from gateway/openapi.yaml"
    assert documented - routed == set(), "documented operations the app does not route"


def test_every_authenticated_operation_answers_401_as_documented(contract):
    document = contract.document
    names = {"message_id": str(uuid.uuid4()), "content_id": "a", "evidence_id": "e", "index": "0"}
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or operation.get("security", document["security"]) == []:
                continue
            url = path.format(**names)
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                response = contract.exchange(method, url, headers=headers)
                assert response.status_code == 401, f"{method} {url}"
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            checked += 1
    assert checked == 14


def test_the_document_is_served_without_credentials(contract):
    response = contract.exchange("get", "/api/v1/openapi.yaml")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == openapi_text()
    assert yaml.safe_load(response.data) == load_openapi()


def test_health(contract):
    assert contract.exchange("get", "/healthz").get_json()["status"] == "ok"


# ---- intake -----------------------------------------------------------------


def test_an_accepted_post_and_its_replay(contract, auth, signed):
    accepted = _post(contract, auth, signed)
    assert accepted.status_code == 202 and b"SubmissionAcceptance" in accepted.data
    assert re.fullmatch(r"/api/v1/messages/[0-9a-f-]{36}", accepted.headers["Location"])
    replay = _post(contract, auth, signed)
    assert (replay.status_code, replay.data) == (202, accepted.data)
    alone = contract.exchange(
        "post", "/api/v1/messages", data=signed, headers=auth("ES-MJ"),
        content_type="application/xml",
    )  # fmt: skip
    assert (alone.status_code, alone.data) == (202, accepted.data)


def test_the_same_id_with_other_content_is_a_409(contract, auth, signed, pki):
    assert _post(contract, auth, signed).status_code == 202
    original = (examples_dir() / "mla-request.xml").read_bytes()
    other = original.replace(b"<Language>es", b"<Language>pt")
    assert other != original
    conflict = _post(contract, auth, sign_xml(other, signer_for(pki, "ES-MJ")))
    assert conflict.status_code == 409
    assert conflict.get_json()["errors"][0]["code"] == "message-id-reused"


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/xml", b"<Envelope", 400),
        ("text/plain", b"hello", 415),
        ("multipart/related", b"--x--", 400),  # no boundary
    ],
)
def test_refused_bodies_are_documented_problems(contract, auth, content_type, body, status):
    refused = contract.exchange(
        "post", "/api/v1/messages", data=body, headers=auth("ES-MJ"), content_type=content_type
    )
    assert refused.status_code == status
    assert "SubmissionRejection" in refused.get_json()["evidence"]


def test_a_bad_signature_is_422(contract, auth, signed):
    tampered = _post(contract, auth, signed.replace(b"<Language>es", b"<Language>pt"))
    assert tampered.status_code == 422


def test_an_envelope_without_its_attachments_is_422_and_not_collectable(contract, auth, signed):
    alone = contract.exchange(
        "post", "/api/v1/messages", data=signed, headers=auth("ES-MJ"),
        content_type="application/xml",
    )  # fmt: skip
    assert alone.status_code == 422
    body = alone.get_json()
    assert {e["code"] for e in body["errors"]} == {"attachment-missing"}
    location = f"/api/v1/messages/{body['message_id']}"
    status = contract.exchange("get", location, headers=auth("ES-MJ")).get_json()
    assert status["status"] == "rejected"
    # A rejected message was never handed on: its recipient does not see it.
    refused = contract.exchange("post", f"{location}/retrieval", headers=auth("AR-MJ"))
    assert refused.status_code == 404


def test_posting_as_another_authority_is_403(contract, auth, signed):
    assert _post(contract, auth, signed, authority="CO-FGN").status_code == 403


def _post_too_much(tmp_path, url: str) -> None:
    settings = Settings(
        mode="development", data_dir=tmp_path / "d", max_body_bytes=1024, max_envelope_bytes=512
    )
    app = _with_docs(create_app(settings))
    try:
        contract = Contract(app, load_openapi())
        token = api_tests._tokens(tmp_path / "d")["ES-MJ"]
        response = contract.exchange(
            "post", url, data=b"x" * 4096, content_type="application/xml",
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert response.status_code == 413
    finally:
        app.extensions["rogatory"].close()


def test_a_body_above_the_limit_is_413(tmp_path):
    _post_too_much(tmp_path, "/api/v1/messages")


# ---- reading, collecting, audit ---------------------------------------------


def test_read_collect_and_audit(contract, auth, signed):
    location = _post(contract, auth, signed).headers["Location"]
    ex = contract.exchange

    status = ex("get", location, headers=auth("ES-MJ")).get_json()
    assert status["sender"] == "ES-MJ" and len(status["attachments"]) == 2
    assert ex("get", location, headers=auth("CO-FGN")).status_code == 404

    envelope = ex("get", f"{location}/envelope", headers=auth("ES-MJ"))
    assert envelope.data == signed
    digest = base64.b64encode(bytes.fromhex(status["envelope_sha256"])).decode()
    assert envelope.headers["Repr-Digest"] == f"sha-256=:{digest}:"
    first = status["attachments"][0]
    attachment = ex("get", f"{location}/attachments/{first['content_id']}", headers=auth("AR-MJ"))
    assert attachment.status_code == 200 and attachment.mimetype == first["media_type"]
    assert ex("get", f"{location}/attachments/nope", headers=auth("ES-MJ")).status_code == 404

    inbox = ex("get", "/api/v1/inbox?limit=10", headers=auth("AR-MJ")).get_json()
    assert [m["message_id"] for m in inbox["messages"]] == [status["message_id"]]
    after = ex("get", f"/api/v1/inbox?after={status['message_id']}", headers=auth("AR-MJ"))
    assert after.get_json() == {"messages": []}
    assert ex("get", "/api/v1/inbox?limit=x", headers=auth("AR-MJ")).status_code == 400

    assert ex("post", f"{location}/retrieval", headers=auth("ES-MJ")).status_code == 403
    collected = ex("post", f"{location}/retrieval", headers=auth("AR-MJ"))
    assert collected.status_code == 200 and b"Retrieval" in collected.data
    final = ex("get", location, headers=auth("AR-MJ")).get_json()
    assert final["status"] == "retrieved"

    evidence_id = final["evidences"][-1]["evidence_id"]
    evidence = ex("get", f"{location}/evidences/{evidence_id}", headers=auth("ES-MJ"))
    assert b"<ds:Signature" in evidence.data
    assert ex("get", f"{location}/evidences/nope", headers=auth("ES-MJ")).status_code == 404

    record = ex("get", f"{location}/record", headers=auth("ES-MJ"))
    assert record.data.startswith(b"%PDF-")

    checkpoint = ex("get", "/api/v1/audit/checkpoint", headers=auth("ES-MJ"))
    size = int(checkpoint.get_data(as_text=True).splitlines()[1])
    index = final["history"][0]["audit_index"]
    proof = ex("get", f"/api/v1/audit/entries/{index}/proof?size={size}", headers=auth("PT-PGR"))
    assert proof.get_json()["size"] == size
    consistency = ex("get", f"/api/v1/audit/consistency?old=1&new={size}", headers=auth("ES-MJ"))
    assert consistency.get_json()["new_size"] == size
    assert ex("get", "/api/v1/audit/consistency", headers=auth("ES-MJ")).status_code == 400


def test_no_checkpoint_yet_is_404(tmp_path):
    settings = Settings(mode="development", data_dir=tmp_path / "d", audit_checkpoint_every=1000)
    app = _with_docs(create_app(settings))
    try:
        contract = Contract(app, load_openapi())
        token = api_tests._tokens(tmp_path / "d")["ES-MJ"]
        headers = {"Authorization": f"Bearer {token}"}
        response = contract.exchange("get", "/api/v1/audit/checkpoint", headers=headers)
        assert response.status_code == 404
    finally:
        app.extensions["rogatory"].close()


def test_verify(contract, auth, signed):
    ok = contract.exchange("post", "/api/v1/verify", data=signed, headers=auth("PT-PGR"))
    assert ok.get_json()["documents"][0]["indication"] == "TOTAL-PASSED"
    junk = contract.exchange("post", "/api/v1/verify", data=b"junk", headers=auth("PT-PGR"))
    assert junk.get_json()["documents"][0]["subindication"] == "FORMAT_FAILURE"


# ---- refusals outside the intake keep the contract too ----------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/inbox?limit=0",
        "/api/v1/audit/entries/9999/proof",
        "/api/v1/audit/consistency?old=0",
    ],
)
def test_out_of_range_queries_are_documented_400s(contract, auth, signed, url):
    _post(contract, auth, signed)
    assert contract.exchange("get", url, headers=auth("ES-MJ")).status_code == 400


def test_a_document_to_verify_above_the_body_limit_is_a_problem(tmp_path):
    _post_too_much(tmp_path, "/api/v1/verify")
