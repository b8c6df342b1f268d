"""Hostile requests through the HTTP API: regression tests for the security review's findings.

Each request gets its exact status and problem type, never a 500; where the
intake answers, the problem+json carries a signed rejection that verifies with
the gateway's trust anchors.
"""

# ruff: noqa: F811  (the fixtures of tests.test_api are imported by name)

from __future__ import annotations

import uuid

import pytest

from gateway.app import create_app
from gateway.evidence import read_evidence
from gateway.pki import load_dev_pki
from gateway.settings import Settings
from schemas import examples_dir
from signing.pades_sign import sign_pdf
from tests.conftest import signer_for
from tests.dbfixtures import db_url, pg_database  # noqa: F401  (fixtures)
from tests.pdf_samples import make_pdf
from tests.test_api import _tokens, auth, client, gateway  # noqa: F401  (fixtures)
from tests.test_intake import BOUNDARY, make_envelope, multipart

PROBLEM = "urn:rogatory:problem:"
MESSAGES = "/api/v1/messages"
LONG = 5000


# ---- helpers ----------------------------------------------------------------


@pytest.fixture()
def base() -> bytes:
    return (examples_dir() / "mla-request.xml").read_bytes()


@pytest.fixture()
def pki(gateway):
    return load_dev_pki(gateway[1] / "pki")


@pytest.fixture()
def services(gateway):
    return gateway[0].extensions["rogatory"]


@pytest.fixture()
def post(client, auth):
    def send(body: bytes, content_type: str = "application/xml", authority: str = "ES-MJ"):
        return client.post(MESSAGES, data=body, headers=auth(authority), content_type=content_type)

    return send


def envelope(pki, base: bytes, authority: str = "ES-MJ", **kwargs) -> bytes:
    """The example request signed by `authority` (recipient AR-MJ unless told)."""
    kwargs.setdefault("recipient", "AR-MJ")
    return make_envelope(base, signer_for(pki, authority), **kwargs)


def problem(response, status: int, code: str, services=None) -> dict:
    """Assert a problem+json answer of this status and type; verify its evidence if given."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"] == PROBLEM + code
    if services is not None:
        assert "SubmissionRejection" in body["evidence"]
        read_evidence(body["evidence"].encode(), services.engine)  # signed, within the schema
    return body


def raw_multipart(parts: list[tuple[str, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart body of these (header block, content) parts, closed."""
    pieces = [f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n" for head, data in parts]
    return b"".join(pieces) + f"--{boundary}--\r\n".encode()


CT = f'multipart/related; type="application/xml"; boundary="{BOUNDARY}"'


# ---- 1. over-long header values ---------------------------------------------


def test_a_5000_character_content_type_is_unsupported(post, services):
    response = post(b"x", "application/" + "x" * LONG)
    problem(response, 415, "unsupported-media-type", services)


def test_a_part_with_a_5000_character_content_id_is_malformed(post, services):
    cid = "z" * LONG + "@x"
    body = raw_multipart([(f"Content-ID: <{cid}>", b"A")])
    problem(post(body, CT), 400, "malformed-multipart", services)


def test_duplicate_or_encoded_long_content_ids_are_malformed(post, services):
    cid = "z" * LONG + "@x"
    duplicate = raw_multipart([(f"Content-ID: <{cid}>", b"A"), (f"Content-ID: <{cid}>", b"B")])
    problem(post(duplicate, CT), 400, "malformed-multipart", services)
    encoded = raw_multipart([(f"Content-ID: <{cid}>\r\nContent-Transfer-Encoding: base64", b"A")])
    problem(post(encoded, CT), 400, "malformed-multipart", services)


def test_a_part_with_a_5000_character_content_type_is_malformed(post, services):
    body = raw_multipart([(f"Content-ID: <a@b>\r\nContent-Type: {'x' * LONG}", b"A")])
    problem(post(body, CT), 400, "malformed-multipart", services)


@pytest.mark.parametrize("length", [256, 300, LONG])
def test_an_unlisted_part_with_a_long_content_id_after_a_signed_envelope(
    post, services, pki, base, length
):
    data = envelope(pki, base, attachments=[("a1@x", "text/plain", b"hi")])
    content_type, body = multipart(data, [("a1@x", b"hi"), ("z" * length + "@x", b"extra")])
    problem(post(body, content_type), 400, "malformed-multipart", services)


def test_a_5000_character_start_parameter_is_malformed(post, services):
    body = raw_multipart([("Content-ID: <a@b>", b"A")])
    response = post(body, CT + f'; start="<{"z" * LONG}@x>"')
    problem(response, 400, "malformed-multipart", services)


def test_a_5000_character_boundary_is_malformed(post, services):
    response = post(b"x", "multipart/related; boundary=" + "x" * LONG)
    problem(response, 400, "malformed-multipart", services)


# ---- 2. a message id split by a comment -------------------------------------


def test_a_message_id_split_by_a_comment_is_the_same_id(post, services, pki, base):
    message_id = str(uuid.uuid4())
    data = envelope(pki, base, message_id=message_id)
    whole = f"<MessageId>{message_id}</MessageId>".encode()
    split = f"<MessageId>{message_id[:4]}<!--x-->{message_id[4:]}</MessageId>".encode()
    assert whole in data
    assert post(data).status_code == 202
    conflicts = len(
        [e for e in services.audit.entries_for(message_id) if e.kind == "submission.conflict"]
    )

    response = post(data.replace(whole, split))
    problem(response, 409, "message-id-reused", services)
    after = [e for e in services.audit.entries_for(message_id) if e.kind == "submission.conflict"]
    assert len(after) == conflicts + 1


def test_a_comment_split_message_id_names_the_rejected_message(
    client, auth, post, services, pki, base
):
    message_id = str(uuid.uuid4())
    data = envelope(pki, base, message_id=message_id, attachments=[("a@x", "text/plain", b"hi")])
    whole = f"<MessageId>{message_id}</MessageId>".encode()
    split = f"<MessageId>{message_id[:4]}<!--x-->{message_id[4:]}</MessageId>".encode()
    content_type, body = multipart(data.replace(whole, split), [("a@x", b"HI")])
    refused = problem(post(body, content_type), 422, "attachment-digest", services)
    assert refused["message_id"] == message_id
    status = client.get(f"{MESSAGES}/{message_id}", headers=auth("ES-MJ"))
    assert status.status_code == 200 and status.get_json()["status"] == "rejected"


# ---- 3. a non-ASCII boundary ------------------------------------------------


def test_a_non_ascii_boundary_is_malformed(post, services, pki, base):
    data = envelope(pki, base)
    boundary = "béb".encode()
    body = b"--" + boundary + b"\r\nContent-ID: <x@y>\r\n\r\n" + data
    body += b"\r\n--" + boundary + b"--\r\n"
    response = post(body, 'multipart/related; boundary="béb"')
    problem(response, 400, "malformed-multipart", services)


# ---- 4. another authority reusing a message id ------------------------------


def test_another_authority_reusing_a_message_id_is_refused_and_recorded(post, services, pki, base):
    message_id = str(uuid.uuid4())
    assert post(envelope(pki, base, message_id=message_id)).status_code == 202
    size = services.audit.size()

    theirs = envelope(pki, base, "AR-MJ", sender="AR-MJ", recipient="CO-FGN", message_id=message_id)
    response = post(theirs, authority="AR-MJ")
    problem(response, 409, "message-id-reused", services)
    assert services.audit.size() == size + 1
    last = services.audit.entry(size)
    assert (last.kind, last.actor) == ("submission.refused", "AR-MJ")


# ---- 5. PDFs are known by their bytes, whatever the manifest says -----------


@pytest.mark.parametrize("label", ["application/octet-stream", "application/x-pdf"])
def test_an_unsigned_pdf_under_another_media_type_is_refused(post, services, pki, base, label):
    pdf = make_pdf()
    data = envelope(pki, base, attachments=[("pdf@es", label, pdf)])
    content_type, body = multipart(data, [("pdf@es", pdf)])
    problem(post(body, content_type), 422, "pdf-signature", services)


@pytest.mark.parametrize("label", ["application/octet-stream", "application/x-pdf"])
def test_a_signed_pdf_under_another_media_type_is_accepted(post, pki, base, label):
    pdf = sign_pdf(make_pdf(), signer_for(pki, "ES-MJ"))
    data = envelope(pki, base, attachments=[("pdf@es", label, pdf)])
    content_type, body = multipart(data, [("pdf@es", pdf)])
    response = post(body, content_type)
    assert response.status_code == 202, response.get_data(as_text=True)[:500]


# ---- 6. a rejected message is not delivered ---------------------------------


def test_a_rejected_message_is_invisible_to_its_recipient(client, auth, post, services, pki, base):
    data = envelope(pki, base, attachments=[("a@x", "text/plain", b"good")])
    content_type, body = multipart(data, [("a@x", b"EVIL")])
    message_id = problem(post(body, content_type), 422, "attachment-digest", services)["message_id"]
    location = f"{MESSAGES}/{message_id}"

    assert client.get(location, headers=auth("AR-MJ")).status_code == 404
    assert client.get(f"{location}/attachments/a@x", headers=auth("AR-MJ")).status_code == 404
    assert client.get(f"{location}/envelope", headers=auth("AR-MJ")).status_code == 404
    assert client.post(f"{location}/retrieval", headers=auth("AR-MJ")).status_code == 404
    inbox = client.get("/api/v1/inbox", headers=auth("AR-MJ")).get_json()["messages"]
    assert message_id not in [m["message_id"] for m in inbox]

    seen = client.get(location, headers=auth("ES-MJ"))
    assert seen.status_code == 200 and seen.get_json()["status"] == "rejected"


# ---- 7. a Content-ID with a slash -------------------------------------------


def test_an_attachment_whose_content_id_has_a_slash_is_downloadable(client, auth, post, pki, base):
    content = b"data \x00\xff bytes"
    data = envelope(pki, base, attachments=[("a/b@x", "text/plain", content)])
    content_type, body = multipart(data, [("a/b@x", content)])
    response = post(body, content_type)
    assert response.status_code == 202, response.get_data(as_text=True)[:500]
    download = client.get(
        f"{response.headers['Location']}/attachments/a/b@x", headers=auth("AR-MJ")
    )
    assert download.status_code == 200 and download.data == content


# ---- 8. the inbox cursor leaks nothing --------------------------------------


def test_an_inbox_cursor_of_someone_elses_message_leaks_nothing(client, auth, post, pki, base):
    hidden = str(uuid.uuid4())
    assert post(envelope(pki, base, message_id=hidden)).status_code == 202
    for _ in range(2):
        assert post(envelope(pki, base, recipient="CO-FGN")).status_code == 202

    def inbox(after: str):
        response = client.get(f"/api/v1/inbox?after={after}", headers=auth("CO-FGN"))
        return response.status_code, response.get_json()

    everything = client.get("/api/v1/inbox", headers=auth("CO-FGN")).get_json()["messages"]
    assert len(everything) == 2  # messages after the hidden one exist, yet none is shown
    assert inbox(hidden) == inbox(str(uuid.uuid4())) == (200, {"messages": []})


# ---- the 255-character Content-ID on SQLite and PostgreSQL -------------------


@pytest.fixture()
def db_gateway(db_url, tmp_path):
    """A development gateway on SQLite, then on a schema of the session's PostgreSQL database."""
    data_dir = tmp_path / "gw"
    settings = Settings(
        mode="development", data_dir=data_dir, audit_checkpoint_every=1, database_url=db_url
    )
    app = create_app(settings)
    yield app, data_dir
    app.extensions["rogatory"].close()


def test_content_ids_longer_than_255_on_every_database(db_gateway, base):
    app, data_dir = db_gateway
    services = app.extensions["rogatory"]
    client = app.test_client()
    tokens = _tokens(data_dir)
    pki = load_dev_pki(data_dir / "pki")

    def send(body: bytes, content_type: str):
        headers = {"Authorization": f"Bearer {tokens['ES-MJ']}"}
        return client.post(MESSAGES, data=body, headers=headers, content_type=content_type)

    longest = "z" * 253 + "@x"
    data = envelope(pki, base, attachments=[(longest, "text/plain", b"ok")])
    content_type, body = multipart(data, [(longest, b"ok")])
    assert send(body, content_type).status_code == 202

    cid = "z" * 300 + "@x"
    data = envelope(pki, base, attachments=[(cid, "text/plain", b"ok")])
    content_type, body = multipart(data, [(cid, b"ok")])
    first = send(body, content_type)
    problem(first, 422, "schema", services)  # the schema allows 255 characters at most
    second = send(body, content_type)
    assert (second.status_code, second.data) == (first.status_code, first.data)

    data = envelope(pki, base, attachments=[("a@x", "text/plain", b"ok")])
    content_type, body = multipart(data, [("a@x", b"ok"), (cid, b"extra")])
    problem(send(body, content_type), 400, "malformed-multipart", services)


def test_parts_refused_with_an_unsigned_envelope_are_named_in_the_audit_log(gateway, client, auth):
    """Refused bytes are kept for the record: the log says which blobs they are."""
    from schemas import examples_dir
    from tests.test_intake import make_envelope, multipart

    services = gateway[0].extensions["rogatory"]
    unsigned = make_envelope((examples_dir() / "mla-request.xml").read_bytes(), None)
    part = b"\x01" * 200_000
    content_type, body = multipart(unsigned, [("p@x", part)], envelope_last=True, start=True)
    before = services.audit.size()
    answer = client.post(
        "/api/v1/messages", data=body, content_type=content_type, headers=auth("ES-MJ")
    )
    assert answer.status_code == 422
    entries = [services.audit.entry(i) for i in range(before, services.audit.size())]
    refused = [e for e in entries if e.kind == "submission.refused"]
    assert len(refused) == 1
    (kept,) = refused[0].details["parts"]
    assert kept["content_id"] == "p@x" and kept["size"] == len(part)
    assert services.blobs.read(kept["sha256"]) == part
