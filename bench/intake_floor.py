"""The floor under one acceptance: the work it must do, written as bare as it goes.

    python bench/intake_floor.py [--messages N] [--rounds R]

Issue 4 asks for 500 accepted/s per core, which leaves 2 ms of CPU for each
acceptance, the HTTP server and TLS included. This script asks how much of
that the required work takes before any gateway code runs, so the gap can be
judged: it does each step of an acceptance with lxml, cryptography, hashlib,
json and sqlite3 directly, with no policy objects, no error reporting, no
SQLAlchemy, nothing shared with the gateway but the example envelope, the
schema and the development PKI:

1. parse the 8.5 KB signed envelope (the secure parser settings the gateway uses);
2. verify its XAdES-B-B signature: canonical SignedInfo, the enveloped
   document's digest (a copy without the Signature), the SignedProperties'
   digest, the signing certificate's digest, ECDSA P-256; the chain verdict is
   taken as cached, as the gateway's trust engine does;
3. validate the signed content against the envelope schema and read the header
   fields the store needs;
4. build and sign two evidences (SubmissionAcceptance and its receipt), each
   a small tree with SignedProperties, two references and an ECDSA signature;
5. store it durably: one SQLite transaction in WAL mode with synchronous=FULL
   (the gateway's default) writing the submission, the message, three status
   rows, two evidences, three small blobs and seven audit entries (canonical
   JSON, RFC 9162 leaf and node hashes, the head), then COMMIT.

Beside it, in the same run: a no-op Flask endpoint through the test client
(what Flask costs per request before any work), and the gateway itself through
the test client (what ``bench/intake_cpu.py`` measures). The server's own
share under gunicorn with TLS is measured by ``bench/intake.py`` (its no-op
row's "req/CPU-s"); add it to the floor to compare with the 2 ms budget.

Every figure is process CPU time (user + system) per acceptance, the median of
the rounds. Compare only figures from the same run.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))
import intake as bench  # bench/intake.py: envelopes, dev settings, token

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
EV = "urn:rogatory:evidence:floor"
C14N_EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"
GROUP = 8  # acceptances per commit in the grouped row
PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=False
)


def _c14n(node: Any) -> bytes:
    return etree.tostring(node, method="c14n", exclusive=True)


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class Floor:
    """The steps of one acceptance, bare."""

    def __init__(self, signer: Any, schema: etree.XMLSchema, db_path: Path) -> None:
        self.key = signer.key
        self.cert = signer.cert
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.cert_digest = _sha256_b64(self.cert_der)
        self.cert_b64 = base64.b64encode(self.cert_der).decode()
        self.public_key = self.cert.public_key()
        self.schema = schema
        self.db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.frontier: list[tuple[int, bytes]] = []  # (height, hash) of complete subtrees
        self.size = 0

    # -- 1 to 3: parse, verify, validate --------------------------------------------

    def verify(self, body: bytes) -> dict[str, str | None]:
        root = etree.fromstring(body, PARSER)
        signature = root.find(f"{{{DS}}}Signature")
        signed_info = signature.find(f"{{{DS}}}SignedInfo")
        info_octets = _c14n(signed_info)
        content = copy.deepcopy(root)
        content.remove(content.find(f"{{{DS}}}Signature"))
        props = signature.find(f".//{{{XADES}}}SignedProperties")
        for ref in signed_info.iterfind(f"{{{DS}}}Reference"):
            target = content if ref.get("URI") == "" else props
            if _sha256_b64(_c14n(target)) != ref.findtext(f"{{{DS}}}DigestValue"):
                raise ValueError("digest")
        if props.findtext(f".//{{{DS}}}DigestValue") != self.cert_digest:
            raise ValueError("signing certificate")
        raw = base64.b64decode(signature.findtext(f"{{{DS}}}SignatureValue"))
        der = _raw_to_der(raw)
        self.public_key.verify(der, info_octets, ec.ECDSA(hashes.SHA256()))
        if not self.schema.validate(content):
            raise ValueError("schema")
        ns = {"e": bench.ENVELOPE_NS}
        return {
            name: content.findtext(path, namespaces=ns)
            for name, path in (
                ("message_id", "e:Header/e:MessageId"),
                ("conversation_id", "e:Header/e:ConversationId"),
                ("kind", "e:Header/e:MessageKind"),
                ("sender", "e:Header/e:Sender/e:AuthorityId"),
                ("recipient", "e:Header/e:Recipient/e:AuthorityId"),
                ("request_type", "e:Header/e:RequestType"),
            )
        }

    # -- 4: evidences ----------------------------------------------------------------

    def evidence(self, kind: str, message_id: str, subject_sha256: str) -> tuple[str, bytes]:
        evidence_id = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat()
        root = etree.Element(f"{{{EV}}}{kind}", nsmap={None: EV, "ds": DS, "xades": XADES})
        for tag, text in (
            ("EvidenceId", evidence_id),
            ("MessageId", message_id),
            ("Issuer", "gw-es"),
            ("IssuedAt", now),
            ("SubjectDigest", subject_sha256),
            ("Outcome", "accepted"),
        ):
            etree.SubElement(root, f"{{{EV}}}{tag}").text = text
        document_digest = _sha256_b64(_c14n(root))
        signature = etree.SubElement(root, f"{{{DS}}}Signature", Id="sig")
        signed_info = etree.SubElement(signature, f"{{{DS}}}SignedInfo")
        etree.SubElement(signed_info, f"{{{DS}}}CanonicalizationMethod", Algorithm=C14N_EXC)
        etree.SubElement(
            signed_info,
            f"{{{DS}}}SignatureMethod",
            Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        )
        value = etree.SubElement(signature, f"{{{DS}}}SignatureValue")
        key_info = etree.SubElement(signature, f"{{{DS}}}KeyInfo")
        x509_data = etree.SubElement(key_info, f"{{{DS}}}X509Data")
        etree.SubElement(x509_data, f"{{{DS}}}X509Certificate").text = self.cert_b64
        obj = etree.SubElement(signature, f"{{{DS}}}Object")
        qualifying = etree.SubElement(obj, f"{{{XADES}}}QualifyingProperties", Target="#sig")
        props = etree.SubElement(qualifying, f"{{{XADES}}}SignedProperties", Id="props")
        sig_props = etree.SubElement(props, f"{{{XADES}}}SignedSignatureProperties")
        etree.SubElement(sig_props, f"{{{XADES}}}SigningTime").text = now
        cert_v2 = etree.SubElement(sig_props, f"{{{XADES}}}SigningCertificateV2")
        cert_el = etree.SubElement(cert_v2, f"{{{XADES}}}Cert")
        digest_el = etree.SubElement(cert_el, f"{{{XADES}}}CertDigest")
        etree.SubElement(digest_el, f"{{{DS}}}DigestValue").text = self.cert_digest
        for uri, digest in (("", document_digest), ("#props", _sha256_b64(_c14n(props)))):
            ref = etree.SubElement(signed_info, f"{{{DS}}}Reference", URI=uri)
            etree.SubElement(ref, f"{{{DS}}}DigestValue").text = digest
        der = self.key.sign(_c14n(signed_info), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        value.text = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()
        return evidence_id, etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    # -- 5: the durable write --------------------------------------------------------

    def store(
        self, body: bytes, fields: dict[str, str | None], evidences: list[tuple[str, bytes]]
    ) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.write(body, fields, evidences)
        self.db.execute("COMMIT")

    def write(
        self, body: bytes, fields: dict[str, str | None], evidences: list[tuple[str, bytes]]
    ) -> None:
        """One acceptance's rows, inside the caller's transaction."""
        now = datetime.now(UTC).isoformat()
        message_id = fields["message_id"]
        envelope_sha = hashlib.sha256(body).hexdigest()
        submission_id = str(uuid.uuid4())
        blobs = [(envelope_sha, body)] + [(hashlib.sha256(b).hexdigest(), b) for _, b in evidences]
        events: list[tuple[str, dict[str, Any]]] = [
            ("message.received", {"submission_id": submission_id, **fields}),
            ("message.verified", {"from": "received", "to": "verified"}),
            ("message.accepted", {"from": "verified", "to": "accepted"}),
            ("message.queued", {"from": "accepted", "to": "queued"}),
        ]
        events += [
            ("evidence.issued", {"evidence_id": evidence_id, "sha256": sha256})
            for (evidence_id, _), (sha256, _) in zip(evidences, blobs[1:], strict=True)
        ]
        events.append(("submission.answered", {"submission_id": submission_id, "status": 202}))
        db = self.db
        db.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?)", blobs)
        db.execute(
            "INSERT INTO submissions VALUES (?, ?, ?, ?, ?, ?)",
            (submission_id, fields["sender"], message_id, envelope_sha, 202, now),
        )
        db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message_id, submission_id, fields["sender"], fields["recipient"],
                fields["kind"], fields["request_type"], "queued", envelope_sha, now,
            ),
        )  # fmt: skip
        db.executemany(
            "INSERT INTO history VALUES (?, ?, ?, ?)",
            [(message_id, seq, s, now) for seq, s in enumerate(("verified", "accepted", "queued"))],
        )
        db.executemany(
            "INSERT INTO evidences VALUES (?, ?, ?)",
            [
                (i, message_id, sha256)
                for (i, _), (sha256, _) in zip(evidences, blobs[1:], strict=True)
            ],
        )
        start = self.size
        entries, nodes = [], []
        for kind, details in events:
            entry = json.dumps(
                {"details": details, "index": self.size, "kind": kind, "time": now},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode()
            leaf = hashlib.sha256(b"\x00" + entry).digest()
            entries.append((self.size, leaf, entry, kind, message_id))
            nodes += self._append_leaf(leaf)
            self.size += 1
        db.executemany("INSERT INTO audit_entries VALUES (?, ?, ?, ?, ?)", entries)
        db.executemany("INSERT INTO audit_nodes VALUES (?, ?, ?)", nodes)
        frontier = b"".join(h for _, h in self.frontier)
        moved = db.execute(
            "UPDATE audit_head SET size = ?, frontier = ? WHERE id = 1 AND size = ?",
            (self.size, frontier, start),
        )
        if moved.rowcount != 1:
            raise RuntimeError("the head moved")

    def _append_leaf(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """RFC 9162 frontier: merge equal-height subtrees, return the nodes completed."""
        completed = []
        height, node, index = 0, leaf, self.size
        while self.frontier and self.frontier[-1][0] == height:
            _, left = self.frontier.pop()
            node = hashlib.sha256(b"\x01" + left + node).digest()
            height += 1
            index >>= 1
            completed.append((height, index, node))
        self.frontier.append((height, node))
        return completed

    def check_and_sign(self, body: bytes) -> tuple[dict[str, str | None], list[tuple[str, bytes]]]:
        fields = self.verify(body)
        message_id = fields["message_id"] or ""
        subject = _sha256_b64(body)
        evidences = [
            self.evidence("SubmissionAcceptance", message_id, subject),
            self.evidence("RelayReceipt", message_id, subject),
        ]
        return fields, evidences

    def accept(self, body: bytes) -> None:
        """One acceptance, its own durable commit."""
        self.store(body, *self.check_and_sign(body))

    def accept_group(self, bodies: list[bytes]) -> None:
        """Acceptances sharing one durable commit, as group commit shares it under load."""
        self.db.execute("BEGIN IMMEDIATE")
        for body in bodies:
            self.write(body, *self.check_and_sign(body))
        self.db.execute("COMMIT")


def _raw_to_der(raw: bytes) -> bytes:
    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


_SCHEMA = """
CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, data BLOB);
CREATE TABLE submissions (id TEXT PRIMARY KEY, authority_id TEXT, message_id TEXT,
    envelope_sha256 TEXT, http_status INTEGER, created_at TEXT,
    UNIQUE (authority_id, message_id));
CREATE TABLE messages (message_id TEXT PRIMARY KEY, submission_id TEXT, sender_id TEXT,
    recipient_id TEXT, kind TEXT, request_type TEXT, status TEXT, envelope_sha256 TEXT,
    created_at TEXT);
CREATE TABLE history (message_id TEXT, seq INTEGER, status TEXT, at TEXT,
    PRIMARY KEY (message_id, seq));
CREATE TABLE evidences (evidence_id TEXT PRIMARY KEY, message_id TEXT, sha256 TEXT);
CREATE INDEX evidences_message ON evidences (message_id);
CREATE TABLE audit_entries (idx INTEGER PRIMARY KEY, leaf_hash BLOB, entry BLOB, kind TEXT,
    message_id TEXT);
CREATE INDEX audit_message ON audit_entries (message_id);
CREATE TABLE audit_nodes (level INTEGER, idx INTEGER, hash BLOB, PRIMARY KEY (level, idx));
CREATE TABLE audit_head (id INTEGER PRIMARY KEY, size INTEGER, frontier BLOB);
INSERT INTO audit_head VALUES (1, 0, x'');
"""


def cpu_per_call(step: Callable[[], None], count: int) -> float:
    """CPU milliseconds per call of ``step``, over ``count`` calls."""
    start = time.process_time()
    for _ in range(count):
        step()
    return 1000 * (time.process_time() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300, help="per round (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    args = parser.parse_args()
    logging.getLogger("rogatory.settings").setLevel(logging.ERROR)

    from flask import Flask, Response, request

    from gateway.xsd import schema_for
    from schemas import schema_path

    with tempfile.TemporaryDirectory(prefix="rogatory-floor-") as tmp:
        data_dir = Path(tmp) / "data"
        client, headers = bench.in_process_gateway(data_dir)
        noop = Flask("noop")

        @noop.post(bench.PATH)
        def submit() -> Response:
            request.get_data()
            return Response(b"", status=202)

        noop_client = noop.test_client()
        floor = Floor(bench.signer(data_dir), schema_for(schema_path()), Path(tmp) / "floor.db")
        per_round = args.messages
        total = (2 + GROUP) * (20 + args.rounds * per_round)
        print(f"signing {total} envelopes ...", file=sys.stderr)
        bodies = iter(bench.signed_envelopes(data_dir, total))
        sample = bench.signed_envelopes(data_dir, 1)[0]

        def gateway() -> None:
            answer = client.post(bench.PATH, data=next(bodies), headers=headers)
            if answer.status_code != 202:
                raise SystemExit(f"gateway answered {answer.status_code}")

        parsed = etree.fromstring(sample, PARSER)
        sample_fields, sample_evidences = floor.check_and_sign(sample)

        def store_alone() -> None:
            # Fresh ids and bytes, so every blob is a new row, as in an acceptance.
            fresh = uuid.uuid4().bytes
            fields = dict(sample_fields, message_id=str(uuid.uuid4()))
            evidences = [(str(uuid.uuid4()), b + fresh) for _, b in sample_evidences]
            floor.store(sample + fresh, fields, evidences)

        def grouped() -> None:
            floor.accept_group([next(bodies) for _ in range(GROUP)])

        steps: dict[str, Callable[[], None]] = {
            "1. parse": lambda: etree.fromstring(sample, PARSER) is None or None,
            "1-3. parse, verify, validate": lambda: floor.verify(sample) and None,
            "3. schema alone": lambda: floor.schema.validate(parsed) and None,
            "4. two evidences": lambda: [floor.evidence("A", "m", "d") for _ in "ab"] and None,
            "5. store alone (own commit)": store_alone,
            "1-5. floor: all of it": lambda: floor.accept(next(bodies)),
            f"1-5, {GROUP} per commit": grouped,
            "Flask no-op (test client)": lambda: noop_client.post(
                bench.PATH, data=sample, headers=headers
            ).close(),
            "the gateway (test client)": gateway,
        }
        for step in steps.values():  # warm
            for _ in range(20):
                step()
        figures: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                ms = cpu_per_call(step, per_round)
                figures[name].append(ms / GROUP if name.endswith("per commit") else ms)
        print(f"CPU ms per acceptance, median of {args.rounds} rounds of {per_round}:")
        medians = {name: statistics.median(values) for name, values in figures.items()}
        for name, ms in medians.items():
            spread = f"{min(figures[name]):.3f}-{max(figures[name]):.3f}"
            print(f"  {name:32} {ms:7.3f} ms   (spread {spread})")
        floor_ms = medians["1-5. floor: all of it"] + medians["Flask no-op (test client)"]
        gateway_ms = medians["the gateway (test client)"]
        budget = 1000 / bench.TARGET_PER_CORE
        print(
            f"floor + Flask: {floor_ms:.2f} ms; the gateway: {gateway_ms:.2f} ms "
            f"(ratio {gateway_ms / floor_ms:.1f}); the target of {bench.TARGET_PER_CORE}/s "
            f"per core allows {budget:.2f} ms including the server and TLS "
            "(bench/intake.py's no-op row gives their share)"
        )


if __name__ == "__main__":
    main()
