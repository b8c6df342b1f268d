"""XAdES signature time-stamps (level B-T): each one is checked, none is assumed."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from lxml import etree

from .timestamp import TimestampError, WeakTimestampError, verify_timestamp_token
from .trust import KeyPurpose, TrustEngine
from .verdict import SubIndication, Verdict
from .xmldsig import C14N, DS, XADES, UnsupportedAlgorithm, algorithm, canonicalize

_Q = {"ds": DS, "xades": XADES}
_STAMPS = (
    "ds:Object/xades:QualifyingProperties/xades:UnsignedProperties/"
    "xades:UnsignedSignatureProperties/xades:SignatureTimeStamp"
)


def check_signature_timestamps(
    signature: etree._Element,
    value_el: etree._Element,
    engine: TrustEngine | None,
    at: datetime | None,
) -> tuple[list[Verdict], datetime | None]:
    """Verdicts on every SignatureTimeStamp, and the earliest proven time."""
    verdicts: list[Verdict] = []
    earliest: datetime | None = None
    for stamp in signature.findall(_STAMPS, _Q):
        method_el = stamp.find("ds:CanonicalizationMethod", _Q)
        try:
            method = (
                algorithm(C14N, method_el.get("Algorithm"), "time-stamp canonicalization")
                if method_el is not None
                else C14N.C14N10
            )
        except UnsupportedAlgorithm as exc:
            verdicts.append(Verdict.indeterminate(SubIndication.FORMAT_FAILURE, str(exc)))
            continue
        encoded = stamp.findtext("xades:EncapsulatedTimeStamp", None, _Q)
        try:
            token = base64.b64decode("".join((encoded or "").split()), validate=True)
        except (binascii.Error, ValueError):
            verdicts.append(
                Verdict.failed(SubIndication.FORMAT_FAILURE, "a signature time-stamp is not base64")
            )
            continue
        try:
            info = verify_timestamp_token(token, canonicalize(value_el, method))
        except WeakTimestampError as exc:
            verdicts.append(
                Verdict.indeterminate(SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE, str(exc))
            )
            continue
        except TimestampError as exc:
            verdicts.append(
                Verdict.failed(
                    SubIndication.HASH_FAILURE, f"the signature time-stamp is invalid: {exc}"
                )
            )
            continue
        if engine is not None:
            result = engine.validate(
                info.tsa_cert, info.other_certs, purpose=KeyPurpose.TIMESTAMPING, at=at
            )
            if not result.verdict.ok:
                verdicts.append(
                    Verdict(
                        result.verdict.indication,
                        result.verdict.subindication,
                        f"the time-stamping authority is not trusted: {result.verdict.reason}",
                    )
                )
                continue
        if earliest is None or info.gen_time < earliest:
            earliest = info.gen_time
    return verdicts, earliest
