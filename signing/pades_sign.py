"""PAdES signing (ETSI EN 319 142-1) at B-B, B-T, B-LT and B-LTA, through pyHanko.

The signature is a detached CAdES (SubFilter ``ETSI.CAdES.detached``), SHA-256,
added as an incremental update: a document that is already signed keeps its
earlier signatures intact.

* B-T adds a signature time-stamp from the TSA.
* B-LT also embeds, in the document security store (DSS), the certificates
  and the CRLs/OCSP responses for the signer's and the TSA's chains, gathered
  with a validation context from the trust engine (same anchors, same
  revocation policy).
* B-LTA then adds a document time-stamp over the whole file.

Time-stamps are requested by `PadesTimeStamper`, a pyHanko time-stamper that
posts through Rogatory's `HttpTimeStamper` and checks each answer as that
client does (status, nonce, message imprint, token signature, TSA key usage).
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from io import BytesIO
from typing import Any

from asn1crypto import cms
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.timestamps.api import TimeStamper as PyHankoTimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator import errors as cv_errors
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .errors import SigningError
from .keys import Signer
from .pades_appearance import VisibleBox, stamp_style
from .timestamp import (
    HttpTimeStamper,
    TimeStamper,
)
from .trust import TrustEngine

__all__ = ["PadesLevel", "PadesTimeStamper", "VisibleBox", "sign_pdf"]

_MD = "sha256"
_MAX_INPUT = 512 << 20  # refuse to hold more than 512 MiB of PDF in memory


class PadesLevel(StrEnum):
    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @property
    def needs_timestamp(self) -> bool:
        return self is not PadesLevel.B_B

    @property
    def needs_validation_data(self) -> bool:
        return self in (PadesLevel.B_LT, PadesLevel.B_LTA)


def sign_pdf(
    data: bytes,
    signer: Signer,
    *,
    level: PadesLevel = PadesLevel.B_B,
    timestamper: TimeStamper | PyHankoTimeStamper | None = None,
    validation: ValidationContext | TrustEngine | None = None,
    visible: VisibleBox | None = None,
    field_name: str | None = None,
    reason: str | None = None,
    location: str | None = None,
) -> bytes:
    """Return ``data`` with a PAdES signature at ``level`` appended as an incremental update.

    ``timestamper`` is required from B-T up; ``validation`` (a trust engine, or
    a ready pyhanko-certvalidator context) from B-LT up. ``visible`` draws a
    stamp with the signer's name, the signing time and the reason.
    Every failure is a `SigningError` with a message for the operator.
    """
    try:
        level = PadesLevel(level)
    except ValueError:
        choices = ", ".join(PadesLevel)
        raise SigningError(f"unknown PAdES level {level!r}; choose one of {choices}") from None
    if level.needs_timestamp and timestamper is None:
        raise SigningError(f"level {level} needs a time-stamping authority (--tsa URL)")
    if level.needs_validation_data and validation is None:
        raise SigningError(
            f"level {level} embeds validation data and needs trust anchors to gather it"
        )
    pdf_stamper = _pyhanko_timestamper(timestamper) if level.needs_timestamp else None
    context = _context(validation, signer) if level.needs_validation_data else None

    writer = _open(data)
    name = field_name or _free_field_name(writer)
    field_spec = None
    style = None
    if visible is not None:
        pages = int(writer.root["/Pages"]["/Count"])
        field_spec = visible.field_spec(name, pages)
        style = stamp_style(reason)
    meta = signers.PdfSignatureMetadata(
        field_name=name,
        md_algorithm=_MD,
        reason=reason,
        location=location,
        subfilter=fields.SigSeedSubFilter.PADES,
        embed_validation_info=context is not None,
        use_pades_lta=level is PadesLevel.B_LTA,
        validation_context=context,
        signer_key_usage=_key_usage(signer),
    )
    pdf_signer = signers.PdfSigner(
        meta,
        _pyhanko_signer(signer),
        timestamper=pdf_stamper,
        stamp_style=style,
        new_field_spec=field_spec,
    )
    params = {"reason": reason or "not given"} if visible is not None else None
    try:
        out = pdf_signer.sign_pdf(writer, appearance_text_params=params)
    except Exception as exc:  # any library failure becomes a message
        raise _signing_error(exc, level) from None
    signed: bytes = out.getvalue()
    if context is not None:
        _require_revocation_data(signed, signer)
    return signed


def _open(data: bytes) -> IncrementalPdfFileWriter:
    if len(data) > _MAX_INPUT:
        raise SigningError(f"the PDF is larger than {_MAX_INPUT >> 20} MiB")
    if b"%PDF-" not in data[:1024]:
        raise SigningError("the input is not a PDF (no %PDF- header)")
    try:
        writer = IncrementalPdfFileWriter(BytesIO(data), strict=False)
        encrypted = writer.prev.encrypted
        if not encrypted:
            _ = writer.root["/Pages"]["/Count"]  # a PDF without a page tree is refused now
    except SigningError:
        raise
    except Exception as exc:  # pyHanko's reader raises many kinds
        raise SigningError(f"the PDF cannot be read (damaged or truncated?): {exc}") from None
    if encrypted:
        raise SigningError(
            "the PDF is encrypted; Rogatory does not sign encrypted documents "
            "(remove the password first)"
        )
    return writer


def _free_field_name(writer: IncrementalPdfFileWriter) -> str:
    try:
        taken = {name for name, _, _ in fields.enumerate_sig_fields(writer.prev)}
    except Exception:  # a broken form is the signer's problem later
        taken = set()
    return next(f"Signature{n}" for n in range(1, len(taken) + 2) if f"Signature{n}" not in taken)


def _key_usage(signer: Signer) -> set[str]:
    try:
        usage = signer.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return set()
    return {"non_repudiation"} if usage.content_commitment else {"digital_signature"}


def _pyhanko_signer(signer: Signer) -> signers.SimpleSigner:
    def asn1(cert: Any) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))

    key_der = signer.key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    cert = asn1(signer.cert)
    store = SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
        [cert, *(asn1(c) for c in signer.chain)]
    )
    return signers.SimpleSigner(
        signing_cert=cert,
        signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
        cert_registry=store,
    )


def _context(validation: ValidationContext | TrustEngine | None, signer: Signer) -> Any:
    if isinstance(validation, TrustEngine):
        return validation.validation_context(intermediates=signer.chain)
    return validation


def _pyhanko_timestamper(timestamper: object) -> PyHankoTimeStamper:
    if isinstance(timestamper, PyHankoTimeStamper):
        return timestamper
    if isinstance(timestamper, HttpTimeStamper):
        return PadesTimeStamper(timestamper)
    raise SigningError(
        "PAdES time-stamps need an RFC 3161 HTTP time-stamping authority (HttpTimeStamper)"
    )


class PadesTimeStamper(PyHankoTimeStamper):
    """pyHanko's time-stamper interface over Rogatory's checked HTTP client.

    pyHanko hands over a digest (of the signature value, or of the document's
    byte range); `HttpTimeStamper.timestamp_digest` requests and checks the
    token: granted status, our nonce, our imprint, an intact token naming its
    TSA certificate, and that certificate's timeStamping key usage.
    """

    def __init__(self, client: HttpTimeStamper) -> None:
        super().__init__(include_nonce=True)  # type: ignore[no-untyped-call]
        self.client = client

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        return await asyncio.to_thread(self._timestamp, message_digest, md_algorithm)

    def _timestamp(self, digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        return cms.ContentInfo.load(self.client.timestamp_digest(digest, md_algorithm))


def _signing_error(exc: BaseException, level: PadesLevel) -> SigningError:
    seen: BaseException | None = exc
    while seen is not None:  # our own message, raised inside pyHanko, wins
        if isinstance(seen, SigningError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, TimestampRequestError):
        return SigningError(f"the time-stamping authority failed: {exc}")
    if isinstance(exc, PyHankoSigningError) and "validat" in str(exc).lower():
        cause = exc.__cause__
        detail = f"{exc}: {cause}" if cause is not None else str(exc)
        return SigningError(f"cannot gather validation data for {level}: {detail}")
    if isinstance(exc, cv_errors.PathError | cv_errors.ValidationError):
        return SigningError(f"cannot gather validation data for {level}: {exc}")
    if isinstance(exc, PdfError):
        return SigningError(f"the PDF cannot be signed: {exc}")
    return SigningError(f"cannot sign the PDF ({type(exc).__name__}): {exc}")


def _names_revocation_source(cert: x509.Certificate) -> bool:
    for kind in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
        try:
            cert.extensions.get_extension_for_class(kind)
            return True
        except (x509.ExtensionNotFound, ValueError):
            continue
    return False


def _require_revocation_data(signed: bytes, signer: Signer) -> None:
    """B-LT promises revocation data; refuse a result whose DSS has none."""
    if not _names_revocation_source(signer.cert):
        return  # nothing to fetch; the DSS holds the certificates only
    reader = PdfFileReader(BytesIO(signed))
    dss = reader.root.get("/DSS")
    dss = dss.get_object() if dss is not None else None
    if dss is None or not (len(dss.get("/CRLs", ())) or len(dss.get("/OCSPs", ()))):
        raise SigningError(
            "no revocation data (CRL or OCSP) could be gathered for the signer's "
            "certificate; the document would not reach B-LT"
        )
