"""S/MIME (RFC 8551): sign, encrypt, decrypt and verify the e-mails of the e-mail channel.

Signing makes a ``multipart/signed`` entity with a detached CMS signature
(SHA-256, signing time, the signer's chain); encryption an
``application/pkcs7-mime`` enveloped-data entity (AES-256-CBC, RSA key
transport: the only recipient keys cryptography's CMS envelope supports).
Verification accepts ``multipart/signed`` and opaque signed-data, and judges
the signer's certificate with the trust engine alone: certificates in the
message are only candidates for building its path.

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
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from enum import StrEnum
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import InputError, SigningError
from .keys import Signer
from .trust import KeyPurpose, TrustEngine, describe
from .verdict import SignatureReport, SubIndication, Verdict, worst
from .xmldsig import PrivateKey, key_strength

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
ACCEPTED_DIGESTS = ("sha256", "sha384", "sha512")
_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_EMAIL_USAGES = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
_LINE_LIMIT = 998  # RFC 5322 2.1.1: longer lines are folded or cut in transit


class SmimeError(InputError):
    """A received S/MIME message cannot be opened: not encrypted, not for us, or corrupt."""


class SmimeKind(StrEnum):
    """What a message's top-level Content-Type says it is."""

    SIGNED = "multipart/signed"
    OPAQUE_SIGNED = "signed-data"
    ENVELOPED = "enveloped-data"
    OTHER = "other"


@dataclass(frozen=True)
class VerifiedSmime:
    """The verdict on an S/MIME signature and, only when it passed, what was signed.

    ``content`` is the signed MIME entity in canonical form (CRLF), exactly the
    bytes the signature's digest covers; never the unsigned outer headers.
    """

    report: SignatureReport
    content: bytes | None = None
    signer: x509.Certificate | None = None

    @property
    def verdict(self) -> Verdict:
        return self.report.verdict

    @property
    def ok(self) -> bool:
        return self.report.verdict.ok


class _Refused(Exception):
    """Verification stops here with this verdict."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


def _format(reason: str) -> _Refused:
    return _Refused(Verdict.failed(SubIndication.FORMAT_FAILURE, reason))


def canonical(data: bytes) -> bytes:
    """``data`` with every bare LF turned into CRLF (the canonical form above)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def _split(message: bytes) -> tuple[Message, bytes]:
    """The top-level headers and the body of a canonical message."""
    if message.startswith(b"\r\n"):
        return Message(), message[2:]
    end = message.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if end < 0:
        raise _format(f"no header block of at most {MAX_HEADER_BYTES} bytes ends in a blank line")
    return BytesHeaderParser(policy=compat32).parsebytes(message[: end + 2]), message[end + 4 :]


def _media_type(headers: Message) -> str | None:
    values = headers.get_all("Content-Type") or []
    if len(values) > 1:
        raise _format("the message has more than one Content-Type header")
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
    except _Refused:
        return SmimeKind.OTHER


def _base64(body: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _format(f"the {what} is not valid base64") from None


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
    except _Refused as exc:
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
    except _Refused as exc:
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
            raise _format(f"the message of {len(message)} bytes exceeds the limit of {max_bytes}")
        content, cms_der, kind = _signed_parts(canonical(message))
        return _verify(content, cms_der, kind, engine)
    except _Refused as exc:
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
        raise _format("the message is encrypted; decrypt it before verifying its signature")
    if kind is not SmimeKind.SIGNED:
        raise _format(
            f"the message is not S/MIME signed (Content-Type {_media_type(headers) or 'missing'})"
        )
    protocol = (_param(headers, "protocol") or "").lower()
    if protocol not in _SIGNATURE_TYPES:
        raise _format(f"multipart/signed with protocol {protocol!r}, not a CMS signature")
    boundary = _param(headers, "boundary")
    if not boundary:
        raise _format("multipart/signed without a boundary")
    first, second = _two_parts(body, boundary.encode("ascii", "replace"))
    sig_headers, sig_body = _split(second)
    if _media_type(sig_headers) not in _SIGNATURE_TYPES:
        raise _format("the second part of multipart/signed is not application/pkcs7-signature")
    encoding = (sig_headers.get("Content-Transfer-Encoding") or "").strip().lower()
    if encoding != "base64":
        raise _format(f"the signature part has Content-Transfer-Encoding {encoding!r}, not base64")
    return first, _base64(sig_body, "signature part"), kind


def _two_parts(body: bytes, boundary: bytes) -> tuple[bytes, bytes]:
    """The two parts of a multipart body; the CRLF before a delimiter is its own (RFC 2046)."""
    delimiter = re.compile(rb"\r\n--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r\n|$)")
    text = b"\r\n" + body
    found = list(delimiter.finditer(text))
    closing = next((i for i, m in enumerate(found) if m.group(1)), None)
    if closing is None:
        raise _format("the multipart/signed body has no closing boundary")
    if closing != 2:
        raise _format(f"multipart/signed holds {closing} parts, not the content and its signature")
    first = text[found[0].end() + 2 : found[1].start()]
    second = text[found[1].end() + 2 : found[2].start()]
    return first, second


def _verify(
    content: bytes | None, cms_der: bytes, kind: SmimeKind, engine: TrustEngine
) -> VerifiedSmime:
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation.generic_cms import (
        extract_certs_for_validation,
        validate_sig_integrity,
    )

    try:
        info = cms.ContentInfo.load(cms_der, strict=True)
        if info["content_type"].native != "signed_data":
            raise _format(f"the CMS structure is {info['content_type'].native}, not signed-data")
        signed_data = info["content"]
        signer_infos = signed_data["signer_infos"]
        encap = signed_data["encap_content_info"]
    except (ValueError, TypeError, KeyError) as exc:
        raise _format(f"the CMS signature cannot be parsed: {exc}") from None
    if len(signer_infos) != 1:
        raise _format(f"the message has {len(signer_infos)} signers; exactly one is accepted")
    if encap["content_type"].native != "data":
        raise _format(f"the signed content type is {encap['content_type'].native}, not data")
    embedded = encap["content"].native
    if content is not None and embedded is not None:
        raise _format("a detached signature that also embeds content")
    if content is None:
        if embedded is None:
            raise _format("opaque signed-data without content")
        content = bytes(embedded)
    signer_info = signer_infos[0]
    _refuse_weak(signer_info)
    digest_algo: str = signer_info["digest_algorithm"]["algorithm"].native

    try:
        certs = extract_certs_for_validation(signed_data)
    except SignatureValidationError as exc:
        raise _Refused(
            Verdict.indeterminate(
                SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
                f"the signer's certificate is not among the message's certificates: {exc}",
            )
        ) from None
    try:
        intact, valid = validate_sig_integrity(
            signer_info, certs.signer_cert, "data", hashlib.new(digest_algo, content).digest()
        )
    except SignatureValidationError as exc:
        raise _format(f"the signature cannot be checked: {exc}") from None
    if not intact:
        raise _Refused(
            Verdict.failed(
                SubIndication.HASH_FAILURE,
                "the signed content was changed after signing (its digest does not match)",
            )
        )
    if not valid:
        raise _Refused(
            Verdict.failed(
                SubIndication.SIG_CRYPTO_FAILURE,
                "the signature value does not verify with the signer's certificate",
            )
        )
    signer = x509.load_der_x509_certificate(certs.signer_cert.dump())
    others = [x509.load_der_x509_certificate(c.dump()) for c in certs.other_certs]
    return _judge_signer(content, signer, others, signer_info, kind, engine)


def _refuse_weak(signer_info: Any) -> None:
    digest_algo = signer_info["digest_algorithm"]["algorithm"].native
    try:
        signature_hash: str | None = signer_info["signature_algorithm"].hash_algo
    except ValueError:  # rsaEncryption names no hash: the digest algorithm applies
        signature_hash = None
    for algo in (digest_algo, signature_hash):
        if algo is not None and algo not in ACCEPTED_DIGESTS:
            weak = algo in ("md5", "sha1", "md2", "sha224")
            raise _Refused(
                Verdict.indeterminate(
                    SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE,
                    f"the signature relies on {algo.upper()}, which is "
                    + ("no longer accepted" if weak else "not supported")
                    + f"; accepted: {', '.join(a.upper() for a in ACCEPTED_DIGESTS)}",
                )
            )


def _judge_signer(
    content: bytes,
    signer: x509.Certificate,
    others: list[x509.Certificate],
    signer_info: Any,
    kind: SmimeKind,
    engine: TrustEngine,
) -> VerifiedSmime:
    verdicts: list[Verdict] = []
    strength = key_strength(signer.public_key())
    if not strength.ok:
        verdicts.append(
            Verdict.indeterminate(SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE, strength.reason)
        )
    purpose = _email_purpose(signer)
    if purpose is not None:
        verdicts.append(Verdict.indeterminate(SubIndication.CHAIN_CONSTRAINTS_FAILURE, purpose))
    result = engine.validate(signer, others, purpose=KeyPurpose.SIGNING)
    verdicts.append(result.verdict)
    verdict = worst(v for v in verdicts if not v.ok) or Verdict.passed("S/MIME signature valid")
    report = SignatureReport(
        verdict=verdict,
        signer=describe(signer),
        signing_time=_signing_time(signer_info),
        signing_time_source="claimed",
        chain=result.chain_names,
        revocation=result.revocation,
        warnings=result.warnings,
        details={
            "format": "multipart/signed" if kind is SmimeKind.SIGNED else "opaque signed-data",
            "digest": signer_info["digest_algorithm"]["algorithm"].native,
        },
    )
    return VerifiedSmime(report, content if verdict.ok else None, signer)


def _email_purpose(cert: x509.Certificate) -> str | None:
    """RFC 8550 4.4.4: an extended key usage, when present, must allow e-mail protection."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if _EMAIL_USAGES & set(eku):
        return None
    return "the signer's certificate is not for e-mail (its extKeyUsage lacks emailProtection)"


def _signing_time(signer_info: Any) -> datetime | None:
    attrs = signer_info["signed_attrs"]
    for attr in attrs if attrs.native is not None else ():
        if attr["type"].native == "signing_time":
            when: datetime = attr["values"][0].native
            return when
    return None
