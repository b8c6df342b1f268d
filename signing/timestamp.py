"""RFC 3161 time-stamps: a small `TimeStamper` interface, an HTTP client, a verifier.

`verify_timestamp_token` checks the token on its own: the CMS signature, the
TSA certificate's timeStamping EKU, the message imprint. Whether the TSA
certificate chains to a trust anchor is the trust engine's question; the
verifier returns the certificates it needs to ask it.
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from asn1crypto import algos, cms, core, tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from signing.errors import RogatoryError, SigningError

# Hash algorithms accepted for a message imprint; SHA-1 is refused (ETSI TS 119 312).
HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
_MAX_RESPONSE = 1 << 20  # a TimeStampResp is a few kB; refuse to buffer a hostile stream


class TimestampError(RogatoryError):
    """A time-stamp token is malformed, forged, or not about the data given."""


class TimeStamper(Protocol):
    def timestamp(self, data: bytes, hash_algo: str = "sha256") -> bytes:
        """The DER TimeStampToken (a CMS ContentInfo) over `data`."""
        ...


@dataclass(frozen=True)
class TimestampInfo:
    gen_time: datetime
    tsa_cert: x509.Certificate
    other_certs: tuple[x509.Certificate, ...]
    hash_algo: str


class WeakTimestampError(TimestampError):
    """The token is sound but uses a hash algorithm Rogatory no longer accepts."""


def _digest(data: bytes, hash_algo: str) -> bytes:
    if hash_algo not in HASH_ALGORITHMS:
        raise WeakTimestampError(
            f"hash algorithm {hash_algo!r} is not accepted for time-stamps; "
            f"use one of {', '.join(HASH_ALGORITHMS)}"
        )
    return hashlib.new(hash_algo, data).digest()


class _TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 TimeStampResp; asn1crypto's wrongly requires the token a rejection lacks."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass(frozen=True)
class HttpTimeStamper:
    """An RFC 3161 client over HTTP (RFC 3161 section 3.4)."""

    url: str
    timeout: float = 10

    def timestamp(self, data: bytes, hash_algo: str = "sha256") -> bytes:
        try:
            digest = _digest(data, hash_algo)
        except TimestampError as e:
            raise SigningError(str(e)) from None
        return self.timestamp_digest(digest, hash_algo)

    def timestamp_digest(self, digest: bytes, hash_algo: str = "sha256") -> bytes:
        """A checked token over an already computed ``digest`` (as PAdES hands them over)."""
        if hash_algo not in HASH_ALGORITHMS:
            raise SigningError(f"hash algorithm {hash_algo!r} is not accepted for time-stamps")
        nonce = secrets.randbits(63) | 1 << 62  # positive and fixed width
        request = tsp.TimeStampReq(
            {
                "version": "v1",
                "message_imprint": _imprint(hash_algo, digest),
                "nonce": nonce,
                "cert_req": True,  # the token must carry the TSA certificate
            }
        )
        body = self._post(request.dump())
        try:
            response = _TimeStampResp.load(body, strict=True)
            status = response["status"]
            token = response["time_stamp_token"]
            granted = status["status"].native in ("granted", "granted_with_mods")
            if granted and not token:
                raise ValueError("status granted, but no token")
        except (ValueError, TypeError, KeyError) as e:
            raise SigningError(f"time-stamping authority {self.url} answered garbage: {e}") from e
        if not granted:
            text = "; ".join(status["status_string"].native or []) or "no reason given"
            raise SigningError(
                f"time-stamping authority {self.url} refused the request "
                f"({status['status'].native}: {text})"
            )
        token_der: bytes = token.dump()
        try:
            tst_info = _tst_info(token)
            verify_timestamp_digest(token_der, digest, hash_algo)
        except TimestampError as e:
            raise SigningError(f"time-stamping authority {self.url} sent a bad token: {e}") from e
        if tst_info["nonce"].native != nonce:
            raise SigningError(
                f"time-stamping authority {self.url} answered with the wrong nonce "
                "(a replayed or misrouted response)"
            )
        return token_der

    def _post(self, query: bytes) -> bytes:
        http = urllib.request.Request(  # noqa: S310 - the TSA URL is operator configuration
            self.url,
            data=query,
            method="POST",
            headers={"Content-Type": "application/timestamp-query"},
        )
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as reply:  # noqa: S310
                body: bytes = reply.read(_MAX_RESPONSE + 1)
        except urllib.error.HTTPError as e:
            raise SigningError(
                f"time-stamping authority {self.url} answered HTTP {e.code} {e.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SigningError(
                f"time-stamping authority {self.url} is unreachable: {reason}"
            ) from None
        if len(body) > _MAX_RESPONSE:
            raise SigningError(f"time-stamping authority {self.url} sent an oversized answer")
        return body


def verify_timestamp_token(token_der: bytes, data: bytes) -> TimestampInfo:
    """Check that `token_der` is a validly signed RFC 3161 token over `data`.

    Not checked here: the TSA certificate's path to a trust anchor and its
    revocation (the trust engine does that with the returned certificates).
    """
    return _verify_token(token_der, lambda hash_algo: _digest(data, hash_algo))


def verify_timestamp_digest(token_der: bytes, digest: bytes, hash_algo: str) -> TimestampInfo:
    """As ``verify_timestamp_token``, for a token over a known ``digest`` by ``hash_algo``."""

    def expected(token_algo: str) -> bytes:
        if token_algo != hash_algo:
            raise TimestampError(f"the token's imprint uses {token_algo}, not {hash_algo}")
        return digest

    return _verify_token(token_der, expected)


def _verify_token(token_der: bytes, expected_imprint: Callable[[str], bytes]) -> TimestampInfo:
    """The checks of a token; ``expected_imprint(hash_algo)`` is the digest it must carry.

    Not checked here: the TSA certificate's path to a trust anchor and its
    revocation (the trust engine does that with the returned certificates).
    """
    # pyHanko costs about 0.2 s to import: only documents with time-stamps pay it.
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation.generic_cms import (
        extract_certs_for_validation,
        get_signing_cert_attr,
        validate_sig_integrity,
    )

    try:
        token = cms.ContentInfo.load(token_der, strict=True)
        if token["content_type"].native != "signed_data":
            raise TimestampError("the token is not a CMS SignedData")
        signed_data = token["content"]
        tst_info = _tst_info(token)
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            raise TimestampError(f"the token has {len(signer_infos)} signers, RFC 3161 wants one")
        signer_info = signer_infos[0]
        imprint = tst_info["message_imprint"]
        hash_algo: str = imprint["hash_algorithm"]["algorithm"].native
        expected = expected_imprint(hash_algo)
        certs = extract_certs_for_validation(signed_data)
    except SignatureValidationError as e:
        raise TimestampError(f"the token's TSA certificate cannot be found: {e}") from e
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise TimestampError(f"the token is not a well-formed RFC 3161 token: {e}") from e

    if imprint["hashed_message"].native != expected:
        raise TimestampError(
            "the time-stamp is about other data: its message imprint does not match"
        )
    if (
        signer_info["signed_attrs"] is core.VOID
        or get_signing_cert_attr(signer_info["signed_attrs"]) is None
    ):
        # RFC 3161 2.4.2: the ESS signing-certificate attribute binds the TSA cert
        raise TimestampError("the token does not name its TSA certificate (ESSCertID)")
    # the signature covers the eContent octets as received, not a re-encoding
    content = bytes(signed_data["encap_content_info"]["content"])
    md_algo: str = signer_info["digest_algorithm"]["algorithm"].native
    try:
        intact, valid = validate_sig_integrity(
            signer_info,
            certs.signer_cert,
            expected_content_type="tst_info",
            actual_digest=hashlib.new(md_algo, content).digest(),
        )
    except (SignatureValidationError, ValueError, NotImplementedError) as e:
        raise TimestampError(f"the token's signature cannot be checked: {e}") from e
    if not intact:
        raise TimestampError("the token's content was altered after signing (digest mismatch)")
    if not valid:
        raise TimestampError("the token's signature does not verify with its TSA certificate")

    tsa_cert = _to_crypto(certs.signer_cert)
    _require_timestamping_eku(tsa_cert)
    signer_der = certs.signer_cert.dump()
    # Only plain certificates can help build the TSA's path; attribute and
    # other certificate choices are ignored rather than misread.
    others = tuple(
        _to_crypto(c)
        for c in signed_data["certificates"] or []
        if c.name == "certificate" and c.chosen.dump() != signer_der
    )
    return TimestampInfo(
        gen_time=tst_info["gen_time"].native,
        tsa_cert=tsa_cert,
        other_certs=others,
        hash_algo=hash_algo,
    )


def _imprint(hash_algo: str, digest: bytes) -> Any:
    return tsp.MessageImprint(
        {
            "hash_algorithm": algos.DigestAlgorithm({"algorithm": hash_algo}),
            "hashed_message": digest,
        }
    )


def _tst_info(token: Any) -> Any:
    encap = token["content"]["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise TimestampError("the token does not hold a TSTInfo")
    return encap["content"].parsed


def _to_crypto(cert: Any) -> x509.Certificate:
    der = cert.chosen.dump() if isinstance(cert, cms.CertificateChoices) else cert.dump()
    return x509.load_der_x509_certificate(der)


def _require_timestamping_eku(cert: x509.Certificate) -> None:
    # RFC 3161 2.3: timeStamping must be the only extended key usage, marked critical
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampError(
            f"the TSA certificate {cert.subject.rfc4514_string()} has no extended key usage; "
            "RFC 3161 requires timeStamping"
        ) from None
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING] or not eku.critical:
        raise TimestampError(
            f"the TSA certificate {cert.subject.rfc4514_string()} is not a time-stamping "
            "certificate (RFC 3161 wants timeStamping as its only, critical, extended key usage)"
        )
