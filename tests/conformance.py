"""Shared helpers of the conformance tests (third-party data in ../shared/conformance).

The data is not part of this repository: the tests read it in place and skip,
saying why, when the folder is absent. Nothing here touches the network;
every trust policy is built with ``allow_fetching=False``.
"""

from __future__ import annotations

import base64
import binascii
import csv
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from signing.verdict import SignatureReport, SubIndication
from signing.xmldsig import DS

CONFORMANCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance"

# What a signature reports when the signed octets or the signature value do
# not hold, or when it cannot be read at all; anything else (passed, or
# INDETERMINATE for trust, policy or missing detached data) means the
# integrity of what is present held.
INTEGRITY_FAILURES = frozenset(
    {SubIndication.HASH_FAILURE, SubIndication.SIG_CRYPTO_FAILURE, SubIndication.FORMAT_FAILURE}
)


def folder(name: str) -> Path:
    """The conformance folder ``name``, or skip the test when it is absent."""
    path = CONFORMANCE / name
    if not path.is_dir():
        pytest.skip(f"conformance data {path} is not available")
    return path


def read_tsv(path: Path) -> list[dict[str, str]]:
    """The rows of a tab-separated expectations file; none when it is absent."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def unique_ids(names: Iterable[str]) -> list[str]:
    """Pytest ids from file names; repeats of a name get ``#2``, ``#3``..."""
    seen: Counter[str] = Counter()
    ids = []
    for name in names:
        seen[name] += 1
        ids.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return ids


def embedded_certificates(data: bytes) -> list[x509.Certificate]:
    """Every readable ds:X509Certificate of a document (for pinning, as signxml's tests do)."""
    from signing.xmlparse import parse_xml

    certs = []
    for node in parse_xml(data).iter(f"{{{DS}}}X509Certificate"):
        try:
            der = base64.b64decode("".join((node.text or "").split()), validate=True)
            certs.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError):
            continue
    return certs


def offline_engine(anchors: Iterable[x509.Certificate]) -> TrustEngine | None:
    """A trust engine that never fetches anything, or None without anchors."""
    pinned = tuple(anchors)
    if not pinned:
        return None
    return TrustEngine(
        TrustPolicy(anchors=pinned, allow_fetching=False, revocation=RevocationPolicy.SOFT)
    )


def claimed_signing_time(data: bytes) -> datetime | None:
    """The first xades:SigningTime of a document, as the verification time."""
    from signing.xmlparse import parse_xml

    root = parse_xml(data)
    for node in root.iter("{http://uri.etsi.org/01903/v1.3.2#}SigningTime"):
        text = (node.text or "").strip()
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def integrity_held(report: SignatureReport) -> bool:
    return report.verdict.subindication not in INTEGRITY_FAILURES


def describe(report: SignatureReport) -> str:
    verdict = report.verdict
    return f"{verdict.indication} {verdict.subindication}: {verdict.reason}"
