"""S/MIME (RFC 8551): sign, encrypt, decrypt and verify the e-mails of the e-mail channel.

Signing makes a ``multipart/signed`` entity with a detached CMS signature
(SHA-256, signing time, the signer's chain); encryption an
``application/pkcs7-mime`` enveloped-data entity (AES-256-CBC, RSA key
transport: the only recipient keys cryptography's CMS envelope supports).
Verification accepts ``multipart/signed`` and opaque signed-data: this module
finds the signed content and the CMS signature in the message, and
signing.smime_cms judges the signature and the signer's certificate, with the
trust engine alone: certificates in the message are only candidates for
building its path.

Canonical form (decided here, once): S/MIME digests the signed entity with
CRLF line ends (RFC 8551, 3.1.1), but mail stores and IMAP servers may hand a
message back with bare LF line ends. Before anything is parsed, every bare LF
is turned into CRLF, and the entity is found, digested and returned in that
form. A signer that digested LF-only text signed a non-canonical form; its
signature fails with a digest mismatch. Because 8-bit or binary content could
not survive that, ``sign_smime`` refuses anything but 7-bit text lines.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from .errors import InputError, SigningError
from .keys import Signer
from .smime_cms import Refused, VerifiedSmime, format_failure, verify_signed_data
from .trust import TrustEngine, describe
from .verdict import SignatureReport, SubIndication, Verdict
from .xmldsig import PrivateKey

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_MESSAGE_BYTES",
    "SmimeError",
    "SmimeKind",
    "VerifiedSmime",
    "base64_lines",
    "canonical",
    "classify",
    "decrypt_smime",
    "encrypt_smime",
    "sign_smime",
    "verify_smime",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_LINE_LIMIT = 998  # RFC 5322 2.1.1: longer lines are folded or cut in transit


class SmimeError(InputError):
    """A received S/MIME message cannot be opened: not encrypted, not for us, or corrupt."""


class SmimeKind(StrEnum):
    """What a message's top-level Content-Type says it is."""

    SIGNED = "multipart/signed"
    OPAQUE_SIGNED = "signed-data"
    ENVELOPED = "enveloped-data"
    OTHER = "other"


def canonical(data: bytes) -> bytes:
    """``data`` with every bare LF turned into CRLF (the canonical form above)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def _split(message: bytes) -> tuple[Message, bytes]:
    """The top-level headers and the body of a canonical message."""
    if message.startswith(b"\r\n"):
        return Message(), message[2:]
    end = message.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if end < 0:
        raise format_failure(
            f"no header block of at most {MAX_HEADER_BYTES} bytes ends in a blank line"
        )
    return BytesHeaderParser(policy=compat32).parsebytes(message[: end + 2]), message[end + 4 :]


def _media_type(headers: Message) -> str | None:
    values = headers.get_all("Content-Type") or []
    if len(values) > 1:
        raise format_failure("the message has more than one Content-Type header")
    return headers.get_content_type() if values else None


def _param(headers: Message, name: str) -> str | None:
    value = headers.get_param(name)
    return value if isinstance(value, str) else None


def _kind(headers: Message) -> SmimeKind:
    media_type = _media_type(headers)
    if media_type == "multipart/signed":
        return SmimeKind.SIGNED
    if media_type in _MIME_TYPES:
        smime_type = (_param(headers, "smime-type") or "").lower()
        if smime_type == "signed-data":
            return SmimeKind.OPAQUE_SIGNED
        if smime_type in ("enveloped-data", "authenveloped-data"):
            return SmimeKind.ENVELOPED
    return SmimeKind.OTHER


def classify(message: bytes) -> SmimeKind:
    """What kind of S/MIME message this is, by its top-level Content-Type."""
    try:
        return _kind(_split(canonical(message))[0])
    except Refused:
        return SmimeKind.OTHER


def _base64(body: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise format_failure(f"the {what} is not valid base64") from None


def base64_lines(data: bytes) -> bytes:
    """``data`` as base64 in 76-character lines ending in CRLF (RFC 2045 6.8)."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _check_text(entity: bytes) -> None:
    if not entity.isascii() or b"\0" in entity:
        raise SigningError(
            "the MIME entity to sign holds 8-bit or NUL bytes; encode its parts as base64 "
            "so the signature survives mail transport"
        )
    if any(len(line) > _LINE_LIMIT for line in entity.split(b"\r\n")):
        raise SigningError(f"the MIME entity to sign has a line longer than {_LINE_LIMIT} bytes")


# --- producing


def sign_smime(mime_entity: bytes, signer: Signer) -> bytes:
    """``mime_entity`` (headers, blank line, body) as a ``multipart/signed`` entity."""
    entity = canonical(mime_entity)
    _check_text(entity)
    try:
        if _media_type(_split(entity)[0]) is None:
            raise SigningError("the MIME entity to sign has no Content-Type header")
    except Refused as exc:
        raise SigningError(f"the MIME entity to sign is malformed: {exc}") from None
    if not isinstance(signer.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SigningError(
            f"S/MIME signing needs an RSA or EC key, not {type(signer.key).__name__}"
        )
    builder = pkcs7.PKCS7SignatureBuilder().set_data(entity)
    builder = builder.add_signer(signer.cert, signer.key, hashes.SHA256())
    for cert in signer.chain:  # after add_signer, which starts a new certificate list
        builder = builder.add_certificate(cert)
    signature = builder.sign(
        Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    )
    boundary = _boundary(entity)
    return b"".join(
        [
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n',
            b' micalg=sha-256; boundary="' + boundary + b'"\r\n',
            b"\r\n",
            b"This is an S/MIME signed message.\r\n",
            b"\r\n--" + boundary + b"\r\n",
            entity,
            b"\r\n--" + boundary + b"\r\n",
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n',
            b"Content-Transfer-Encoding: base64\r\n",
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n',
            b"\r\n",
            base64_lines(signature),
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )


def _boundary(entity: bytes) -> bytes:
    while True:
        boundary = b"=_rogatory_" + secrets.token_hex(16).encode()
        if boundary not in entity:
            return boundary


def encrypt_smime(mime_entity: bytes, recipients: Sequence[x509.Certificate]) -> bytes:
    """``mime_entity`` encrypted (AES-256-CBC) to each recipient, as application/pkcs7-mime."""
    if not recipients:
        raise SigningError("an encrypted S/MIME message needs at least one recipient")
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(canonical(mime_entity))
    for cert in recipients:
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise SigningError(
                f"cannot encrypt to {describe(cert)}: S/MIME encryption here supports "
                "RSA recipient keys only"
            )
        builder = builder.add_recipient(cert)
    builder = builder.set_content_encryption_algorithm(algorithms.AES256)
    enveloped = builder.encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])
    return b"".join(
        [
            b"MIME-Version: 1.0\r\n",
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n",
            b' name="smime.p7m"\r\n',
            b"Content-Transfer-Encoding: base64\r\n",
            b'Content-Disposition: attachment; filename="smime.p7m"\r\n',
            b"\r\n",
            base64_lines(enveloped),
        ]
    )


# --- receiving


def decrypt_smime(
    message: bytes,
    key: PrivateKey,
    cert: x509.Certificate,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> bytes:
    """The MIME entity inside an enveloped-data message addressed to ``cert``.

    Decryption proves nothing about the sender: verify the entity it returns.
    """
    if len(message) > max_bytes:
        raise SmimeError(f"the message of {len(message)} bytes exceeds the limit of {max_bytes}")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SmimeError(
            f"cannot decrypt with a {type(key).__name__}: S/MIME decryption here needs an RSA key"
        )
    try:
        headers, body = _split(canonical(message))
        if _kind(headers) is not SmimeKind.ENVELOPED:
            raise SmimeError(
                f"the message is not encrypted S/MIME (Content-Type {_media_type(headers)})"
            )
        der = _base64(body, "encrypted content")
    except Refused as exc:
        raise SmimeError(f"the encrypted message is malformed: {exc}") from None
    try:
        return pkcs7.pkcs7_decrypt_der(der, cert, key, [])
    except (ValueError, TypeError) as exc:
        raise SmimeError(f"the message cannot be decrypted with {describe(cert)}: {exc}") from None


def verify_smime(
    message: bytes, engine: TrustEngine, *, max_bytes: int = MAX_MESSAGE_BYTES
) -> VerifiedSmime:
    """Verify an S/MIME signed message; fails closed, and the verdict says why."""
    try:
        if len(message) > max_bytes:
            raise format_failure(
                f"the message of {len(message)} bytes exceeds the limit of {max_bytes}"
            )
        content, cms_der, kind = _signed_parts(canonical(message))
        form = "multipart/signed" if kind is SmimeKind.SIGNED else "opaque signed-data"
        return verify_signed_data(content, cms_der, form, engine)
    except Refused as exc:
        return VerifiedSmime(SignatureReport(exc.verdict))
    except Exception as exc:  # fail closed: a library surprise is a failure, never a pass
        reason = f"the S/MIME signature could not be processed ({type(exc).__name__}: {exc})"
        return VerifiedSmime(SignatureReport(Verdict.failed(SubIndication.FORMAT_FAILURE, reason)))


def _signed_parts(message: bytes) -> tuple[bytes | None, bytes, SmimeKind]:
    """The signed entity (None for opaque signed-data) and the CMS signature's DER."""
    headers, body = _split(message)
    kind = _kind(headers)
    if kind is SmimeKind.OPAQUE_SIGNED:
        return None, _base64(body, "signed-data"), kind
    if kind is SmimeKind.ENVELOPED:
        raise format_failure("the message is encrypted; decrypt it before verifying its signature")
    if kind is not SmimeKind.SIGNED:
        raise format_failure(
            f"the message is not S/MIME signed (Content-Type {_media_type(headers) or 'missing'})"
        )
    protocol = (_param(headers, "protocol") or "").lower()
    if protocol not in _SIGNATURE_TYPES:
        raise format_failure(f"multipart/signed with protocol {protocol!r}, not a CMS signature")
    boundary = _param(headers, "boundary")
    if not boundary:
        raise format_failure("multipart/signed without a boundary")
    first, second = _two_parts(body, boundary.encode("ascii", "replace"))
    sig_headers, sig_body = _split(second)
    if _media_type(sig_headers) not in _SIGNATURE_TYPES:
        raise format_failure(
            "the second part of multipart/signed is not application/pkcs7-signature"
        )
    encoding = (sig_headers.get("Content-Transfer-Encoding") or "").strip().lower()
    if encoding != "base64":
        raise format_failure(
            f"the signature part has Content-Transfer-Encoding {encoding!r}, not base64"
        )
    return first, _base64(sig_body, "signature part"), kind


def _two_parts(body: bytes, boundary: bytes) -> tuple[bytes, bytes]:
    """The two parts of a multipart body; the CRLF before a delimiter is its own (RFC 2046)."""
    delimiter = re.compile(rb"\r\n--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r\n|$)")
    text = b"\r\n" + body
    found = list(delimiter.finditer(text))
    closing = next((i for i, m in enumerate(found) if m.group(1)), None)
    if closing is None:
        raise format_failure("the multipart/signed body has no closing boundary")
    if closing != 2:
        raise format_failure(
            f"multipart/signed holds {closing} parts, not the content and its signature"
        )
    first = text[found[0].end() + 2 : found[1].start()]
    second = text[found[1].end() + 2 : found[2].start()]
    return first, second
