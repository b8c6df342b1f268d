"""Certificate, CRL and OCSP building blocks of the development PKI.

Pure functions over `cryptography` objects: no file layout, no state. The
folder, the names and the revocation records live in `gateway.pki`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from asn1crypto import keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# RFC 5280 names, so a test reads like the certificate profile it exercises.
KEY_USAGES = (
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
)
SIGNING_KEY_USAGE = frozenset({"digitalSignature", "nonRepudiation"})
CA_KEY_USAGE = frozenset({"keyCertSign", "cRLSign"})

EKU = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}


def new_key() -> PrivateKey:
    """A P-256 key: 128-bit security like RSA-3072, generated in microseconds."""
    return ec.generate_private_key(ec.SECP256R1())


def name(*, cn: str, o: str, c: str, org_id: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, c),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
    ]
    if org_id is not None:
        # organizationIdentifier (2.5.4.97, ETSI EN 319 412-1) carries the authority id.
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, org_id))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Profile:
    """What a certificate may be used for, and where its status is published."""

    key_usage: frozenset[str] = SIGNING_KEY_USAGE
    ca_path_length: int | None = None  # set for CA certificates only
    eku: tuple[str, ...] = ()
    eku_critical: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    email_addresses: tuple[str, ...] = ()  # rfc822Name SANs, for S/MIME certificates
    crl_url: str | None = None
    ocsp_url: str | None = None


def build_cert(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    profile: Profile,
) -> x509.Certificate:
    """Issue one certificate; `issuer_cert=None` makes it self-signed."""
    unknown = profile.key_usage - set(KEY_USAGES)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}; known: {KEY_USAGES}")
    is_ca = profile.ca_path_length is not None
    ku = {u: u in profile.key_usage for u in KEY_USAGES}
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=profile.ca_path_length), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=ku["digitalSignature"],
                content_commitment=ku["nonRepudiation"],
                key_encipherment=ku["keyEncipherment"],
                data_encipherment=ku["dataEncipherment"],
                key_agreement=ku["keyAgreement"],
                key_cert_sign=ku["keyCertSign"],
                crl_sign=ku["cRLSign"],
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    if profile.eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([EKU[e] for e in profile.eku]), critical=profile.eku_critical
        )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in profile.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in profile.ip_addresses]
    sans += [x509.RFC822Name(address) for address in profile.email_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if profile.crl_url:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier(profile.crl_url)], None, None, None
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if profile.ocsp_url:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier(profile.ocsp_url),
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Revocation:
    serial: int
    revoked_at: datetime


def build_crl(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Iterable[Revocation],
    now: datetime,
    next_update: timedelta = timedelta(days=7),
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now)
        .next_update(now + next_update)
        # a CRL number that grows with time is monotonic without keeping a counter
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .build()
        )
    return builder.sign(issuer_key, hashes.SHA256())


def build_ocsp_response(
    request_der: bytes,
    *,
    issuers: Sequence[tuple[x509.Certificate, PrivateKey, dict[int, Revocation | None]]],
    now: datetime,
) -> bytes:
    """Answer an OCSP request, signed by the CA that issued the certificate asked about.

    `issuers` gives each CA with the status of every serial it issued (None = good);
    a serial the CA never issued is answered `unknown`, never `good`.
    """
    try:
        request = ocsp.load_der_ocsp_request(request_der)
    except ValueError:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        ).public_bytes(serialization.Encoding.DER)
    for ca_cert, ca_key, serials in issuers:
        algo = request.hash_algorithm
        name_hash = _digest(algo, ca_cert.subject.public_bytes())
        key_hash = _digest(algo, _subject_public_key_bits(ca_cert))
        if (request.issuer_name_hash, request.issuer_key_hash) != (name_hash, key_hash):
            continue
        status = serials.get(request.serial_number, "unknown")
        cert_status = (
            ocsp.OCSPCertStatus.UNKNOWN
            if status == "unknown"
            else ocsp.OCSPCertStatus.REVOKED
            if status is not None
            else ocsp.OCSPCertStatus.GOOD
        )
        revoked_at = status.revoked_at if isinstance(status, Revocation) else None
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=request.serial_number,
                algorithm=algo,
                cert_status=cert_status,
                this_update=now,
                next_update=now + timedelta(hours=1),
                revocation_time=revoked_at,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)
        )
        nonce = _request_nonce(request)
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        response = builder.sign(ca_key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)
    return ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.UNAUTHORIZED
    ).public_bytes(serialization.Encoding.DER)


def _digest(algo: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algo)
    h.update(data)
    return h.finalize()


def _subject_public_key_bits(cert: x509.Certificate) -> bytes:
    # OCSP's issuerKeyHash is over the BIT STRING contents of subjectPublicKey, not the SPKI
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bytes(keys.PublicKeyInfo.load(spki)["public_key"].contents[1:])


def _request_nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a PEM key readable by its owner only, created 0600 from the start."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_secret(path, data)


def write_p12(path: Path, label: str, key: PrivateKey, chain: Sequence[x509.Certificate]) -> None:
    """PKCS#12 bundle without a password: the PEM key beside it is no better protected."""
    data = pkcs12.serialize_key_and_certificates(
        label.encode(), key, chain[0], list(chain[1:]), serialization.NoEncryption()
    )
    _write_secret(path, data)


def _write_secret(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"{path}: unsupported key type {type(key).__name__}")
    return key
