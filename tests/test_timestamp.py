"""RFC 3161 time-stamps against a real TSA on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.pki import TSA, DevPKI, create_dev_pki
from gateway.pki_issue import Profile, name
from signing.errors import SigningError
from signing.timestamp import HttpTimeStamper, TimestampError, verify_timestamp_token
from tests.servers import TsaMode, tsa_server

DATA = b"<Envelope>request for mutual legal assistance</Envelope>"


@pytest.fixture
def pki(tmp_path: Path) -> DevPKI:
    return create_dev_pki(tmp_path / "pki")


def _stamp(pki: DevPKI, data: bytes = DATA, mode: TsaMode = TsaMode.OK, **kw: str) -> bytes:
    with tsa_server(pki.cert(TSA), pki.key(TSA), mode=mode) as url:
        return HttpTimeStamper(url).timestamp(data, **kw)


def test_token_from_tsa_verifies(pki: DevPKI) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    info = verify_timestamp_token(_stamp(pki), DATA)
    assert before <= info.gen_time <= datetime.now(UTC)
    assert info.tsa_cert == pki.cert(TSA)
    assert info.other_certs == ()
    assert info.hash_algo == "sha256"


def test_sha512_imprint(pki: DevPKI) -> None:
    assert verify_timestamp_token(_stamp(pki, hash_algo="sha512"), DATA).hash_algo == "sha512"


def test_token_returns_extra_certs_for_the_trust_engine(pki: DevPKI) -> None:
    with tsa_server(pki.cert(TSA), pki.key(TSA), extra_certs=[pki.root()]) as url:
        token = HttpTimeStamper(url).timestamp(DATA)
    assert verify_timestamp_token(token, DATA).other_certs == (pki.root(),)


def test_rsa_tsa(pki: DevPKI) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = pki.issue(
        "tsa-rsa",
        subject=name(cn="RSA TSA", o="Rogatory Development", c="ES"),
        profile=Profile(eku=("timeStamping",), eku_critical=True),
        issuer="root-ca",
        key=key,
    )
    with tsa_server(cert, key) as url:
        token = HttpTimeStamper(url).timestamp(DATA)
    assert verify_timestamp_token(token, DATA).tsa_cert == cert


def test_token_over_other_data_is_refused(pki: DevPKI) -> None:
    with pytest.raises(TimestampError, match="about other data"):
        verify_timestamp_token(_stamp(pki), DATA + b" ")


def test_tampered_token_is_refused(pki: DevPKI) -> None:
    token = bytearray(_stamp(pki))
    token[-10] ^= 0x01  # inside the signature, the last field of the token
    with pytest.raises(TimestampError):
        verify_timestamp_token(bytes(token), DATA)


def test_not_a_token_is_refused() -> None:
    with pytest.raises(TimestampError, match="not a well-formed"):
        verify_timestamp_token(b"\x30\x03\x02\x01\x00", DATA)


def test_tsa_cert_without_timestamping_eku_is_refused(pki: DevPKI) -> None:
    pki.issue_signer("not-a-tsa")
    with (
        tsa_server(pki.cert("not-a-tsa"), pki.key("not-a-tsa")) as url,
        pytest.raises(SigningError, match="no extended key usage"),
    ):
        HttpTimeStamper(url).timestamp(DATA)


def test_tsa_cert_with_non_critical_eku_is_refused(pki: DevPKI) -> None:
    cert = pki.issue(
        "lax-tsa",
        subject=name(cn="Lax TSA", o="Rogatory Development", c="ES"),
        profile=Profile(eku=("timeStamping",), eku_critical=False),
        issuer="root-ca",
    )
    with (
        tsa_server(cert, pki.key("lax-tsa")) as url,
        pytest.raises(SigningError, match="not a time-stamping certificate"),
    ):
        HttpTimeStamper(url).timestamp(DATA)


def test_tsa_down(pki: DevPKI) -> None:
    with socket.socket() as s:  # a port nobody listens on once this socket closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SigningError, match="is unreachable"):
        HttpTimeStamper(f"http://127.0.0.1:{port}/tsa", timeout=2).timestamp(DATA)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (TsaMode.HTTP_500, "answered HTTP 500"),
        (TsaMode.GARBAGE, "answered garbage"),
        (TsaMode.REJECTION, r"refused the request \(rejection: policy says no\)"),
        (TsaMode.WRONG_IMPRINT, "about other data"),
        (TsaMode.WRONG_NONCE, "wrong nonce"),
    ],
)
def test_bad_tsa_answers_raise_signing_error(pki: DevPKI, mode: TsaMode, message: str) -> None:
    with pytest.raises(SigningError, match=message):
        _stamp(pki, mode=mode)


def test_sha1_is_refused_before_asking(pki: DevPKI) -> None:
    with pytest.raises(SigningError, match="'sha1' is not accepted"):
        _stamp(pki, hash_algo="sha1")


def test_openssl_verifies_the_token(pki: DevPKI, tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "token.der").write_bytes(_stamp(pki))
    done = subprocess.run(
        ["openssl", "ts", "-verify", "-token_in", "-in", "token.der", "-data", "data",
         "-CAfile", str(pki.root_path)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Verification: OK" in done.stdout
