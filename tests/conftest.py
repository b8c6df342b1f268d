"""Shared fixtures: a development PKI, signers, a trust engine and signed envelopes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.pki import DevPKI, create_dev_pki
from schemas import examples_dir
from signing.keys import Signer
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from signing.xades_sign import sign_xml

# The database fixtures (SQLite and PostgreSQL), for every test module.
from tests.dbfixtures import db, db_url, pg_database  # noqa: F401

CONFORMANCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("pki"))


def signer_for(pki: DevPKI, name: str) -> Signer:
    return pki.signer(name)


def unreachable_crl_signer(folder: Path, name: str) -> tuple[DevPKI, Signer]:
    """A signer ``name`` of a new dev PKI in ``folder`` whose CRL is out of reach
    (nothing listens on port 9): a hard revocation check of it is INDETERMINATE/TRY_LATER."""
    live = create_dev_pki(folder, crl_url="http://127.0.0.1:9/crl")
    live.issue_signer(name)
    return live, signer_for(live, name)


@pytest.fixture(scope="session")
def es_signer(pki: DevPKI) -> Signer:
    return signer_for(pki, "ES-MJ")


@pytest.fixture(scope="session")
def engine(pki: DevPKI) -> TrustEngine:
    return TrustEngine(
        TrustPolicy(anchors=(pki.root(),), revocation=RevocationPolicy.HARD, allow_fetching=False)
    )


@pytest.fixture(scope="session")
def envelope() -> bytes:
    """The unsigned 5 KB mutual legal assistance request from Spain (ES-MJ)."""
    return (examples_dir() / "mla-request.xml").read_bytes()


@pytest.fixture(scope="session")
def signed_envelope(envelope: bytes, es_signer: Signer) -> bytes:
    return sign_xml(envelope, es_signer)


@pytest.fixture()
def sign(es_signer: Signer) -> Callable[[bytes], bytes]:
    return lambda data: sign_xml(data, es_signer)
