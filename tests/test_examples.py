"""The shipped schema and example envelopes: valid, realistic, and honest about attachments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from lxml import etree

from gateway.envelope import (
    Envelope,
    MessageKind,
    RequestType,
    UrgencyLevel,
    check_envelope,
    validate_envelope,
)
from schemas import ENVELOPE_NS, examples_dir, schema_path
from signing.xmlparse import parse_xml

EXAMPLES = sorted(examples_dir().glob("*.xml"))
XS = "{http://www.w3.org/2001/XMLSchema}"


def test_examples_are_found() -> None:
    assert len(EXAMPLES) >= 5
    assert (examples_dir() / "mla-request.xml") in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_schema_and_profile(path: Path) -> None:
    root = parse_xml(path.read_bytes())
    assert validate_envelope(root) == []
    assert root.tag == f"{{{ENVELOPE_NS}}}Envelope"
    assert root.get("version") == "1.0"
    # Unsigned on purpose: the signing tests sign them.
    assert root.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_realistic_size(path: Path) -> None:
    assert 3_000 <= path.stat().st_size <= 6_500


def test_mla_example_is_about_5_kb_for_the_benchmarks() -> None:
    assert 4_500 <= (examples_dir() / "mla-request.xml").stat().st_size <= 6_000


def test_examples_cover_the_main_request_types_and_several_countries() -> None:
    envelopes = [check_envelope(p.read_bytes())[1] for p in EXAMPLES]
    assert {e.request_type for e in envelopes} >= {
        RequestType.MUTUAL_LEGAL_ASSISTANCE,
        RequestType.EXTRADITION,
        RequestType.PRESERVATION_OF_ELECTRONIC_EVIDENCE,
        RequestType.CONFISCATION_AND_ASSET_RECOVERY,
        RequestType.SERVICE_OF_DOCUMENTS,
    }
    assert {e.sender.id for e in envelopes} >= {"ES-MJ", "AR-MJ", "CO-FGN", "PT-PGR", "MX-FGR"}
    assert len({e.message_id for e in envelopes}) == len(envelopes)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_attachment_digests_match_the_files_beside_the_examples(path: Path) -> None:
    _, envelope = check_envelope(path.read_bytes())
    for attachment in envelope.attachments:
        content = (examples_dir() / "attachments" / attachment.file_name).read_bytes()
        assert len(content) == attachment.size
        assert hashlib.sha256(content).hexdigest() == attachment.sha256_hex


def test_mla_example_reads_into_plain_data() -> None:
    _, envelope = check_envelope((examples_dir() / "mla-request.xml").read_bytes())
    assert isinstance(envelope, Envelope)
    assert envelope.message_id == "0d0896ee-3cf1-4469-a704-b57c32b8ada9"
    assert envelope.kind is MessageKind.REQUEST
    assert envelope.in_reply_to is None
    assert envelope.created.utcoffset() is not None
    assert envelope.created.isoformat() == "2025-03-04T10:15:00+01:00"
    assert (envelope.sender.id, envelope.sender.country) == ("ES-MJ", "ES")
    assert (envelope.recipient.id, envelope.recipient.country) == ("AR-MJ", "AR")
    assert [(b.instrument, b.article) for b in envelope.legal_basis][1] == ("UNTOC", "18")
    assert envelope.urgency.level is UrgencyLevel.NORMAL
    assert envelope.confidentiality.statement is not None
    assert envelope.language == "es"
    assert [a.id for a in envelope.attachments] == ["att-1", "att-2"]
    assert envelope.attachments[0].content_id == "auto-jci4@es-mj.rogatory.example"


def test_urgent_example_reads_reason_and_deadline() -> None:
    _, envelope = check_envelope((examples_dir() / "extradition-request.xml").read_bytes())
    assert envelope.urgency.level is UrgencyLevel.URGENT
    assert envelope.urgency.reason
    assert envelope.urgency.deadline is not None
    assert envelope.urgency.deadline > envelope.created


def test_schema_is_self_contained_so_it_loads_offline() -> None:
    schema_root = parse_xml(schema_path().read_bytes())
    assert schema_root.get("targetNamespace") == ENVELOPE_NS
    for tag in ("import", "include", "redefine"):
        assert schema_root.find(XS + tag) is None
    etree.XMLSchema(schema_root)  # compiles without any resolver
