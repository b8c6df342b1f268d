"""The development PKI writes what it says, and its certificates check out with openssl."""

from __future__ import annotations

import base64
import ipaddress
import stat
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki import (
    DEMO_AUTHORITIES,
    DEMO_GATEWAYS,
    ROOT_CA,
    SIGNERS_CA,
    TSA,
    DevPKI,
    DevPKIError,
    create_dev_pki,
    load_dev_pki,
)
from tests.servers import revocation_server

AUTHORITY_IDS = [a.id for a in DEMO_AUTHORITIES]


@pytest.fixture
def pki(tmp_path: Path) -> DevPKI:
    return create_dev_pki(tmp_path / "pki")


def openssl_verify(pki: DevPKI, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    untrusted = pki.directory / "untrusted.pem"
    untrusted.write_bytes(pki.cert_path(SIGNERS_CA).read_bytes())
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki.root_path), "-untrusted", str(untrusted),
         *extra, str(pki.cert_path(name))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip


def test_writes_every_certificate_with_a_0600_key(pki: DevPKI) -> None:
    expected = {ROOT_CA, SIGNERS_CA, TSA, *DEMO_GATEWAYS, *AUTHORITY_IDS}
    assert set(pki.names()) == expected
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700
    for name in expected:
        assert pki.cert_path(name).is_file()
        assert stat.S_IMODE(pki.key_path(name).stat().st_mode) == 0o600
        assert pki.cert(name).public_key() == pki.key(name).public_key()
    for authority in AUTHORITY_IDS:
        assert stat.S_IMODE(pki.p12_path(authority).stat().st_mode) == 0o600
        _key, cert, chain = pkcs12.load_key_and_certificates(
            pki.p12_path(authority).read_bytes(), None
        )
        assert cert == pki.cert(authority)
        assert chain == [pki.cert(SIGNERS_CA), pki.root()]


@pytest.mark.parametrize("name", [*AUTHORITY_IDS, *DEMO_GATEWAYS, TSA, SIGNERS_CA])
def test_openssl_verifies_the_chain(pki: DevPKI, name: str) -> None:
    done = openssl_verify(pki, name)
    assert done.returncode == 0, done.stdout


def test_chain_runs_leaf_to_below_the_root(pki: DevPKI) -> None:
    assert pki.chain("ES-MJ") == [pki.cert("ES-MJ"), pki.cert(SIGNERS_CA)]
    assert pki.chain(TSA) == [pki.cert(TSA)]
    assert pki.root().subject.rfc4514_string() == (
        "CN=Rogatory Development Root CA,O=Rogatory Development,C=ES"
    )


def test_signer_names_its_authority_and_may_sign(pki: DevPKI) -> None:
    cert = pki.cert("CO-FGN")
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "CO"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Fiscalía General de la Nación"
    )
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == "CO-FGN"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    assert not ku.value.key_cert_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_gateway_tls_certs(pki: DevPKI) -> None:
    cert = pki.cert("gw-ar")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    for purpose in ("sslserver", "sslclient"):
        done = openssl_verify(pki, "gw-ar", "-purpose", purpose)
        assert done.returncode == 0, done.stdout


def test_tsa_cert_has_only_critical_timestamping_eku(pki: DevPKI) -> None:
    eku = pki.cert(TSA).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    done = openssl_verify(pki, TSA, "-purpose", "timestampsign")
    assert done.returncode == 0, done.stdout


def test_refuses_to_overwrite_unless_asked(pki: DevPKI) -> None:
    old_root = pki.root()
    with pytest.raises(DevPKIError, match="already holds a development PKI"):
        create_dev_pki(pki.directory)
    assert pki.root() == old_root
    pki.issue_signer("extra")
    create_dev_pki(pki.directory, overwrite=True)
    assert pki.root() != old_root
    assert not pki.cert_path("extra").exists()


def test_load_reopens_and_refuses_other_folders(pki: DevPKI, tmp_path: Path) -> None:
    assert load_dev_pki(pki.directory).cert("ES-MJ") == pki.cert("ES-MJ")
    with pytest.raises(DevPKIError, match="rogatory pki init"):
        load_dev_pki(tmp_path)
    with pytest.raises(DevPKIError, match="no certificate named"):
        pki.cert("XX-NONE")


def test_refuses_the_repository_certs_folder() -> None:
    certs = Path(__file__).resolve().parent.parent / "certs" / "dev"
    with pytest.raises(DevPKIError, match="committed to git"):
        create_dev_pki(certs)
    assert not certs.exists()


def test_fixed_clock(tmp_path: Path) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    pki = create_dev_pki(tmp_path, now=now)
    assert pki.cert("ES-MJ").not_valid_before_utc == now - timedelta(hours=1)


def test_special_signers_for_negative_tests(pki: DevPKI) -> None:
    past = datetime.now(UTC) - timedelta(days=400)
    pki.issue_signer("expired", not_before=past, not_after=past + timedelta(days=30))
    assert "certificate has expired" in openssl_verify(pki, "expired").stdout

    cert = pki.issue_signer("encipher-only", key_usage=frozenset({"keyEncipherment"}))
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert not ku.digital_signature and not ku.content_commitment

    weak = pki.issue_signer("weak", key=rsa.generate_private_key(65537, 1024))  # noqa: S505 - on purpose
    weak_key = weak.public_key()
    assert isinstance(weak_key, rsa.RSAPublicKey)
    assert weak_key.key_size == 1024
    assert openssl_verify(pki, "weak").returncode == 0

    other = pki.issue_signer("AR-OTHER", country="AR", organization="Otra Autoridad")
    org_id = other.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)
    assert org_id[0].value == "AR-OTHER"


def _fetch(url: str, data: bytes | None = None) -> bytes:
    headers = {"Content-Type": "application/ocsp-request"} if data else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as reply:
        return bytes(reply.read())


def test_revocation_served_live_by_crl_and_ocsp(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    with revocation_server(directory) as url:
        pki = create_dev_pki(directory, crl_url=f"{url}/crl", ocsp_url=f"{url}/ocsp")
        cert = pki.issue_signer("revoked-signer", revoked=True)
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        crl_url = points[0].full_name[0].value
        assert crl_url == f"{url}/crl/{SIGNERS_CA}.crl"
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert aia[0].access_location.value == f"{url}/ocsp"
        assert pki.is_revoked("revoked-signer") and not pki.is_revoked("ES-MJ")

        crl = x509.load_der_x509_crl(_fetch(crl_url))
        assert crl.is_signature_valid(pki.cert(SIGNERS_CA).public_key())  # type: ignore[arg-type]
        assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        assert crl.get_revoked_certificate_by_serial_number(pki.cert("ES-MJ").serial_number) is None

        def ocsp_status(name: str, *, get: bool = False) -> ocsp.OCSPCertStatus:
            algo = hashes.SHA1() if get else hashes.SHA256()  # noqa: S303 - OCSP clients use either
            request = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(pki.cert(name), pki.cert(SIGNERS_CA), algo)
                .build()
                .public_bytes(serialization.Encoding.DER)
            )
            if get:
                raw = _fetch(f"{url}/ocsp/" + base64.b64encode(request).decode())
            else:
                raw = _fetch(f"{url}/ocsp", request)
            response = ocsp.load_der_ocsp_response(raw)
            assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            return response.certificate_status

        assert ocsp_status("revoked-signer") == ocsp.OCSPCertStatus.REVOKED
        assert ocsp_status("ES-MJ", get=True) == ocsp.OCSPCertStatus.GOOD

        # openssl checks the same CRL and OCSP answer end to end
        (tmp_path / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        done = openssl_verify(
            pki, "revoked-signer", "-crl_check", "-CRLfile", str(tmp_path / "crl.pem")
        )
        assert "certificate revoked" in done.stdout
        done = subprocess.run(
            ["openssl", "ocsp", "-issuer", str(pki.cert_path(SIGNERS_CA)),
             "-cert", str(pki.cert_path("revoked-signer")), "-url", f"{url}/ocsp",
             "-CAfile", str(pki.root_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "Response verify OK" in done.stderr + done.stdout, done.stderr
        assert f"{pki.cert_path('revoked-signer')}: revoked" in done.stdout
