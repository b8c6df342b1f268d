"""The one hardened parser refuses every hostile file, quickly and without I/O."""

from __future__ import annotations

import time

import pytest

from signing.errors import XMLInputError
from signing.verdict import Indication, SubIndication
from signing.xmlparse import parse_xml
from tests.conftest import CONFORMANCE

ATTACKS = CONFORMANCE / "xml-attacks"
HOSTILE = sorted(p for p in ATTACKS.glob("*.xml") if not p.name.startswith("simple"))


@pytest.fixture(autouse=True)
def _need_conformance_data():
    if not ATTACKS.is_dir():
        pytest.skip(f"conformance data not found at {ATTACKS}")


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_hostile_files_are_refused_quickly(path):
    start = time.perf_counter()
    with pytest.raises(XMLInputError, match="DTD"):
        parse_xml(path.read_bytes())
    # Generous bound: a bomb that expanded would take seconds and gigabytes.
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("name", ["simple.xml", "simple-ns.xml"])
def test_plain_files_parse(name):
    assert parse_xml((ATTACKS / name).read_bytes()).tag.endswith("root")


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_hostile_files_verify_as_failed_with_a_reason(path, engine):
    from gateway.verification import verify_document

    report = verify_document(path.read_bytes(), engine, path=str(path))
    assert report.verdict.indication is Indication.TOTAL_FAILED
    assert report.verdict.subindication is SubIndication.FORMAT_FAILURE
    assert "DTD" in report.verdict.reason


def test_dtd_in_utf16_is_refused_too():
    data = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "b">]><r>&a;</r>'
    with pytest.raises(XMLInputError, match="DTD"):
        parse_xml(data.encode("utf-16"))


def test_depth_and_size_are_bounded():
    deep = b"<a>" * 100 + b"</a>" * 100
    with pytest.raises(XMLInputError, match="deeper than 64"):
        parse_xml(deep)
    with pytest.raises(XMLInputError, match="above the limit"):
        parse_xml(b"<a>" + b"x" * 2000 + b"</a>", max_bytes=1000)


def test_external_entity_is_never_fetched(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    data = f'<!DOCTYPE r [<!ENTITY e SYSTEM "file://{secret}">]><r>&e;</r>'.encode()
    with pytest.raises(XMLInputError):
        parse_xml(data)
