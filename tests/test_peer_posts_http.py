"""What a peer gateway posts about our messages, over HTTP: its evidences and its notices.

gw-es (this app, in process, from gateway.pair's setup) sends ES-MJ's request
towards gw-ar; gw-ar authenticates with its TLS client certificate (the
environ key the TLS layer fills). Every refusal is answered problem+json with
its code and recorded in the audit trail; a signature that cannot be checked
now is a 503 with Retry-After, recorded as deferred, never as refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient

from gateway import demo_messages
from gateway.api import CLIENT_CERT_ENVIRON
from gateway.app import create_app
from gateway.audit import AuditEntry
from gateway.authorities import fingerprint
from gateway.evidence import GatewayRef, MessageRef, build_evidence, sign_evidence
from gateway.intake_checks import RETRY_AFTER_SECONDS
from gateway.model import EvidenceType
from gateway.notice import NoticeChannel, ReplyRef, build_notice, sign_notice
from gateway.pair import Member, prepare_pair
from gateway.pki import load_dev_pki
from gateway.services import Services
from signing.keys import Signer, load_signer
from signing.xades_sign import sign_xml
from tests.conftest import signer_for, unreachable_crl_signer

GW_AR = GatewayRef("gw-ar", "Rogatory gateway of Argentina", "AR")


@dataclasses.dataclass
class GwEs:
    app: Flask
    client: FlaskClient
    es: Member
    ar_signer: Signer  # gw-ar's evidence key, as its directory entry lists it
    unreachable: Signer  # also listed, but its CRL cannot be fetched now
    peer_environ: dict[str, Any]

    @property
    def services(self) -> Services:
        found: Services = self.app.extensions["rogatory"]
        return found

    def kinds(self, message_id: str) -> list[str]:
        return [e.kind for e in self.services.audit.entries_for(message_id)]

    def last(self, kind: str) -> AuditEntry:
        audit = self.services.audit
        found = [audit.entry(i) for i in range(audit.size())]
        return [e for e in found if e.kind == kind][-1]


@pytest.fixture()
def gw_es(tmp_path: Path) -> Iterator[GwEs]:
    es, ar = prepare_pair(tmp_path / "pair", (18443, 18444))  # nothing listens: no dispatcher
    # A second signer for gw-ar, from a PKI whose CRL is out of reach (INDETERMINATE/TRY_LATER).
    live, unreachable = unreachable_crl_signer(tmp_path / "live", "gw-ar-evidence")
    assert ar.settings.signing_key is not None and ar.settings.signing_cert is not None
    ar_signer = load_signer(
        ar.settings.signing_key.read_bytes(),
        ar.settings.signing_cert.read_bytes(),
        [p.read_bytes() for p in ar.settings.signing_chain],
    )
    directory = es.settings.authorities_file
    assert directory is not None
    text = directory.read_text()
    listed = f'evidence_signers = ["{fingerprint(ar_signer.cert)}"'
    assert listed in text
    directory.write_text(text.replace(listed, f'{listed}, "{fingerprint(unreachable.cert)}"'))
    settings = dataclasses.replace(
        es.settings, trust_anchors=(*es.settings.trust_anchors, live.root_path)
    )
    app = create_app(settings)
    pki = load_dev_pki(tmp_path / "pair" / "pki")
    environ = {CLIENT_CERT_ENVIRON: pki.cert("gw-ar").public_bytes(Encoding.DER)}
    yield GwEs(app, app.test_client(), es, ar_signer, unreachable, environ)
    app.extensions["rogatory"].close()


def sent_to_gw_ar(gw: GwEs) -> str:
    """ES-MJ's request to AR-MJ, accepted by gw-es and queued for gw-ar; its message id."""
    pki = load_dev_pki(gw.es.settings.pki_dir or Path())
    example = demo_messages.request(with_attachments=False)  # fresh ids, no manifest
    answer = gw.client.post(
        "/api/v1/messages",
        data=sign_xml(example.envelope, signer_for(pki, "ES-MJ")),
        headers={"Authorization": f"Bearer {gw.es.token}", "Content-Type": "application/xml"},
    )
    assert answer.status_code == 202, answer.get_data(as_text=True)
    message_id = example.message_id
    message = gw.services.store.message(message_id)
    assert message is not None and message.route is not None and '"gw-ar"' in message.route
    return message_id


def retrieval(gw: GwEs, message_id: str, signer: Signer) -> bytes:
    message = gw.services.store.message(message_id)
    assert message is not None
    evidence = build_evidence(EvidenceType.RETRIEVAL, MessageRef.of_stored(message), GW_AR)
    return sign_evidence(evidence, signer)


def notice(message_id: str, signer: Signer) -> bytes:
    reply = ReplyRef(str(uuid.uuid4()), "AR-MJ", "ES-MJ", "cd" * 32)
    built = build_notice(
        str(uuid.uuid4()), GW_AR, message_id, reply, NoticeChannel("email"),
        "the sender chose the email channel",
    )  # fmt: skip
    return sign_notice(built, signer)


def post(gw: GwEs, path: str, data: bytes) -> Any:
    return gw.client.post(
        path, data=data, content_type="application/xml", environ_base=gw.peer_environ
    )


def test_a_revocation_outage_is_a_503_with_retry_after_for_evidences_and_notices(
    gw_es: GwEs,
) -> None:
    message_id = sent_to_gw_ar(gw_es)
    for path, data, what in (
        (f"/api/v1/messages/{message_id}/evidences",
         retrieval(gw_es, message_id, gw_es.unreachable), "evidence"),
        (f"/api/v1/messages/{message_id}/notices",
         notice(message_id, gw_es.unreachable), "notice"),
    ):  # fmt: skip
        answer = post(gw_es, path, data)
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.headers["Retry-After"] == RETRY_AFTER_SECONDS
        assert answer.mimetype == "application/problem+json"
        body = answer.get_json()
        assert body["type"] == "urn:rogatory:problem:revocation-unavailable"
        assert "TRY_LATER" in body["detail"] and "again later" in body["detail"]
        kinds = gw_es.kinds(message_id)
        assert f"{what}.deferred" in kinds and f"{what}.refused" not in kinds
        assert not gw_es.services.blobs.exists(hashlib.sha256(data).hexdigest())
    message = gw_es.services.store.message(message_id)
    assert message is not None and message.status.value == "queued"


def test_every_refused_evidence_is_answered_with_its_code_and_recorded(gw_es: GwEs) -> None:
    message_id = sent_to_gw_ar(gw_es)
    path = f"/api/v1/messages/{message_id}/evidences"
    good = retrieval(gw_es, message_id, gw_es.ar_signer)
    tampered = good.replace(message_id.encode(), str(uuid.uuid4()).encode(), 1)
    assert tampered != good
    unknown = str(uuid.uuid4())
    cases = [
        # (path, body, status, code, the message the entry is on)
        (f"/api/v1/messages/{unknown}/evidences", good, 404, "unknown-message", None),
        (path, tampered, 422, "evidence-invalid", message_id),
        (path, b"<not-an-evidence/>", 422, "evidence-invalid", message_id),
        (path, b"x" * (1024 * 1024 + 1), 413, "evidence-too-large", None),
        # A Retrieval of a message still queued for gw-ar: it cannot apply.
        (path, good, 409, "evidence-conflict", message_id),
    ]
    for where, data, status, code, about in cases:
        answer = post(gw_es, where, data)
        assert answer.status_code == status, (code, answer.get_data(as_text=True))
        assert answer.get_json()["type"] == f"urn:rogatory:problem:{code}"
        assert "Retry-After" not in answer.headers
        entry = gw_es.last("evidence.refused")
        assert entry.message_id == about
        assert entry.actor == "gateway:gw-ar"
        details = entry.details
        assert (details["status"], details["code"], details["gateway"]) == (status, code, "gw-ar")
        assert details["reason"] == answer.get_json()["detail"]
        assert details["size"] == len(data)
        assert details["sha256"] == hashlib.sha256(data).hexdigest()
        # Bytes are kept only once their signature verified (the 409), and then say so.
        kept = status == 409
        assert details["kept"] is kept
        assert gw_es.services.blobs.exists(hashlib.sha256(data).hexdigest()) is kept
    refused = [e for e in gw_es.kinds(message_id) if e == "evidence.refused"]
    assert len(refused) == 3
    message = gw_es.services.store.message(message_id)
    assert message is not None and message.status.value == "queued"
