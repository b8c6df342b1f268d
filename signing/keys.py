"""Signing keys: a private key with its certificate and chain, loaded from files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    pkcs12,
)

from .errors import SigningError
from .trust import load_certificates
from .xmldsig import PrivateKey


@dataclass(frozen=True)
class Signer:
    """A private key, its certificate and the chain to send along."""

    key: PrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


def load_signer(
    key_pem: bytes, cert_pem: bytes, chain: Sequence[bytes] = (), password: bytes | None = None
) -> Signer:
    """A ``Signer`` from a PEM key, a PEM certificate (bundle) and extra chain files."""
    try:
        key = load_pem_private_key(key_pem, password)
        certs = load_certificates(cert_pem)
        extra = [c for blob in chain for c in load_certificates(blob)]
    except (ValueError, TypeError) as exc:
        raise SigningError(f"cannot read the signing key or certificate: {exc}") from None
    return _signer(key, certs[0], [*certs[1:], *extra])


def load_signer_p12(p12: bytes, password: bytes | None, chain: Sequence[bytes] = ()) -> Signer:
    """A ``Signer`` from a PKCS#12 file and extra chain files."""
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(p12, password)
        more = [c for blob in chain for c in load_certificates(blob)]
    except (ValueError, TypeError) as exc:
        raise SigningError(f"cannot read the PKCS#12 file: {exc}") from None
    if key is None or cert is None:
        raise SigningError("the PKCS#12 file holds no private key and certificate")
    return _signer(key, cert, [*extra, *more])


def _spki(public: CertificatePublicKeyTypes) -> bytes:
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _signer(key: object, cert: x509.Certificate, chain: list[x509.Certificate]) -> Signer:
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise SigningError(f"unsupported key type {type(key).__name__}")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise SigningError("the private key does not belong to the certificate")
    return Signer(key, cert, tuple(c for c in chain if c != cert))
