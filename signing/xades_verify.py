"""Verification of one XML-DSig / XAdES signature.

Checks run in a fixed order and each contributes a verdict; the signature's
verdict is the worst of them, so a manipulated document is TOTAL-FAILED even
when its signer is also untrusted. What was signed is handed back as the
canonical octets of each reference, never as the tree as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from lxml import etree

from .errors import XMLInputError
from .references import Dereferenced, ReferenceError_, apply_transforms, dereference
from .trust import KeyPurpose, TrustEngine, describe
from .verdict import SignatureReport, SubIndication, Verdict, worst
from .xades_parts import (
    EmbeddedCertificate,
    FormatProblem,
    b64,
    certificates,
    claimed_signing_time,
    countersigned_value,
    key_values,
    one,
    public_key,
    signed_properties,
    signing_cert_from_property,
)
from .xades_timestamp import check_signature_timestamps
from .xmldsig import (
    C14N,
    DS,
    ENVELOPED,
    SIGNED_PROPERTIES_TYPE,
    Digest,
    SignatureMethod,
    UnsupportedAlgorithm,
    algorithm,
    canonicalize,
    digest,
    key_strength,
    verify_raw,
)
from .xmlparse import parse_xml

COUNTERSIGNED_TYPE = "http://uri.etsi.org/01903#CountersignedSignature"


# Each reference may canonicalize the whole document: bound the work per signature.
MAX_REFERENCES = 32


@dataclass(frozen=True)
class SignedReference:
    """One reference: what it points at and the octets its digest covers."""

    uri: str | None
    type: str | None
    transforms: tuple[str, ...]
    octets: bytes
    whole_document: bool
    enveloped: bool


@dataclass
class Checked:
    """The outcome of verifying one signature element."""

    report: SignatureReport
    references: list[SignedReference] = field(default_factory=list)
    signing_cert: x509.Certificate | None = None


def verify_signature(
    signature: etree._Element,
    root: etree._Element,
    engine: TrustEngine | None,
    *,
    at: datetime | None = None,
) -> Checked:
    """Verify ``signature`` (an element of the tree ``root``)."""
    try:
        return _verify(signature, root, engine, at)
    except FormatProblem as exc:
        return Checked(SignatureReport(Verdict.failed(SubIndication.FORMAT_FAILURE, str(exc))))
    except UnsupportedAlgorithm as exc:
        return Checked(
            SignatureReport(Verdict.indeterminate(SubIndication.FORMAT_FAILURE, str(exc)))
        )
    except Exception as exc:  # fail closed: a library surprise is a failure, never a pass
        reason = f"the signature could not be processed ({type(exc).__name__}: {exc})"
        return Checked(SignatureReport(Verdict.failed(SubIndication.FORMAT_FAILURE, reason)))


def _verify(
    signature: etree._Element,
    root: etree._Element,
    engine: TrustEngine | None,
    at: datetime | None,
) -> Checked:
    verdicts: list[Verdict] = []
    warnings: list[str] = []
    signed_info = one(signature, "ds:SignedInfo", "SignedInfo")
    c14n = algorithm(
        C14N,
        one(signed_info, "ds:CanonicalizationMethod", "CanonicalizationMethod").get("Algorithm"),
        "canonicalization",
    )
    sig_method = algorithm(
        SignatureMethod,
        one(signed_info, "ds:SignatureMethod", "SignatureMethod").get("Algorithm"),
        "signature",
    )
    value_el = one(signature, "ds:SignatureValue", "SignatureValue")
    value = b64(value_el.text, "SignatureValue")
    # Canonicalize SignedInfo before any reference processing touches the tree.
    signed_info_octets = canonicalize(signed_info, c14n)

    references: list[SignedReference] = []
    countersigned = countersigned_value(signature)
    countersigns = False
    weak = sig_method.weak
    ref_elements = list(signed_info.iterchildren(f"{{{DS}}}Reference"))
    if not ref_elements:
        raise FormatProblem("SignedInfo has no Reference")
    if len(ref_elements) > MAX_REFERENCES:
        raise FormatProblem(
            f"SignedInfo has {len(ref_elements)} references, more than the {MAX_REFERENCES} allowed"
        )
    for ref in ref_elements:
        uri = ref.get("URI")
        method = algorithm(
            Digest, one(ref, "ds:DigestMethod", "DigestMethod").get("Algorithm"), "digest"
        )
        weak = weak or method.weak
        expected = b64(one(ref, "ds:DigestValue", "DigestValue").text, "DigestValue")
        try:
            target = dereference(root, uri)
            octets, transforms = apply_transforms(ref, signature, target)
        except ReferenceError_ as exc:
            if exc.missing:
                verdicts.append(
                    Verdict.indeterminate(SubIndication.SIGNED_DATA_NOT_FOUND, str(exc))
                )
                continue
            raise FormatProblem(str(exc)) from None
        if digest(octets, method) != expected:
            verdicts.append(
                Verdict.failed(
                    SubIndication.HASH_FAILURE,
                    f"the content referenced by URI={uri!r} was changed after signing",
                )
            )
        references.append(_signed_reference(ref, uri, transforms, octets, target))
        if countersigned is not None and ref.get("Type") == COUNTERSIGNED_TYPE:
            countersigns = countersigns or target.node is countersigned
    if countersigned is not None and not countersigns:
        verdicts.append(
            Verdict.failed(
                SubIndication.FORMAT_FAILURE,
                "the counter-signature does not sign the SignatureValue of the signature it is "
                "attached to (no CountersignedSignature reference points at it)",
            )
        )

    certs = certificates(signature)
    props = signed_properties(signature)
    signing_cert: EmbeddedCertificate | None = None
    signed_props: etree._Element | None = None
    uncovered_props: Verdict | None = None
    if props is not None:
        props_id = props.get("Id")
        if props_id is None or not any(r.uri == f"#{props_id}" for r in references):
            uncovered_props = Verdict.failed(
                SubIndication.FORMAT_FAILURE,
                "the XAdES SignedProperties are not covered by the signature",
            )
        # Read the properties from what was digested, never from the tree as received.
        signed_props = _signed_octets_as_tree(references, props_id)
        signing_cert, problem, weak_cert_digest = signing_cert_from_property(
            signed_props if signed_props is not None else props, certs
        )
        if problem is not None:
            verdicts.append(problem)
        if weak_cert_digest:
            warnings.append("the SigningCertificate property uses SHA-1")

    # With signed properties, only the certificate they name may verify the signature.
    if props is not None:
        candidates = [signing_cert] if signing_cert is not None else []
    else:
        candidates = certs
    verified: EmbeddedCertificate | None = None
    for candidate in candidates:
        try:
            verify_raw(public_key(candidate.cert), sig_method, value, signed_info_octets)
            verified = candidate
            break
        except InvalidSignature:
            continue
    verified_with = verified.cert if verified is not None else None
    if verified_with is None and candidates:
        verdicts.append(
            Verdict.failed(
                SubIndication.SIG_CRYPTO_FAILURE,
                "the signature value does not verify with the signing certificate's key",
            )
        )
    elif not candidates and props is None:
        verdicts.append(
            _bare_key_verdict(key_values(signature), sig_method, value, signed_info_octets)
        )

    # After the signature value: when SignedInfo itself was altered, that is the first finding.
    if uncovered_props is not None:
        verdicts.append(uncovered_props)

    if weak:
        verdicts.append(
            Verdict.indeterminate(
                SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE,
                "the signature relies on SHA-1, which is no longer accepted",
            )
        )
    if verified_with is not None:
        strength = key_strength(verified_with.public_key())
        if not strength.ok:
            verdicts.append(
                Verdict.indeterminate(
                    SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE, strength.reason
                )
            )

    signing_time, source = claimed_signing_time(signed_props)
    level = None
    if props is not None:
        level = "XAdES-B-B"
    try:
        stamp_verdicts, stamp_time = check_signature_timestamps(signature, value_el, engine, at)
    except ValueError as exc:  # a token whose ASN.1 the time-stamp reader does not expect
        stamp_verdicts, stamp_time = (
            [
                Verdict.indeterminate(
                    SubIndication.FORMAT_FAILURE, f"a signature time-stamp cannot be read: {exc}"
                )
            ],
            None,
        )
    verdicts.extend(stamp_verdicts)
    if stamp_time is not None:
        signing_time, source, level = stamp_time, "timestamp", "XAdES-B-T"

    chain_names: tuple[str, ...] = ()
    revocation = None
    if verified_with is not None and engine is not None:
        others = [c.cert for c in certs if c is not verified]
        try:
            result = engine.validate(verified_with, others, purpose=KeyPurpose.SIGNING, at=at)
        except ValueError as exc:  # an extension the certificate parser refuses
            verdicts.append(
                Verdict.indeterminate(
                    SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE,
                    f"the signing certificate cannot be validated: {exc}",
                )
            )
        else:
            verdicts.append(result.verdict)
            chain_names, revocation = result.chain_names, result.revocation
            warnings.extend(result.warnings)
    elif verified_with is not None:
        verdicts.append(
            Verdict.indeterminate(
                SubIndication.NO_CERTIFICATE_CHAIN_FOUND, "no trust anchor was given"
            )
        )

    verdict = worst(v for v in verdicts if not v.ok) or Verdict.passed("signature valid")
    report = SignatureReport(
        verdict=verdict,
        signer=_signer_name(verified_with, chain_names),
        signing_time=signing_time,
        signing_time_source=source,
        level=level,
        chain=chain_names,
        revocation=revocation,
        warnings=tuple(warnings),
        details={"covers": _coverage(references), "id": signature.get("Id")},
    )
    return Checked(report, references, verified_with)


def _bare_key_verdict(
    keys: list[object], method: SignatureMethod, value: bytes, signed_info_octets: bytes
) -> Verdict:
    """Without a certificate: check the signature value with a bare key if there is one."""
    no_cert = "the signature carries no X.509 certificate to identify its signer"
    if not keys:
        return Verdict.indeterminate(SubIndication.NO_SIGNING_CERTIFICATE_FOUND, no_cert)
    for key in keys:
        try:
            verify_raw(key, method, value, signed_info_octets)
        except InvalidSignature:
            continue
        strength = key_strength(key)
        if not strength.ok:
            return Verdict.indeterminate(
                SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE, strength.reason
            )
        return Verdict.indeterminate(
            SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
            f"{no_cert}; the signature value verifies with the bare public key in KeyInfo, "
            "which identifies no one",
        )
    return Verdict.failed(
        SubIndication.SIG_CRYPTO_FAILURE,
        "the signature value does not verify with the public key given in KeyInfo",
    )


def _signed_reference(
    ref: etree._Element,
    uri: str | None,
    transforms: tuple[str, ...],
    octets: bytes,
    target: Dereferenced,
) -> SignedReference:
    return SignedReference(
        uri=uri,
        type=ref.get("Type"),
        transforms=transforms,
        octets=octets,
        whole_document=target.whole_document,
        enveloped=ENVELOPED in transforms,
    )


def _coverage(references: list[SignedReference]) -> str:
    if any(r.whole_document for r in references):
        return "the whole document"
    uris = [r.uri or "" for r in references if r.type != SIGNED_PROPERTIES_TYPE]
    return "part of the document: " + ", ".join(uris) if uris else "no document content"


def _signer_name(cert: x509.Certificate | None, chain_names: tuple[str, ...]) -> str | None:
    """The signer's subject; the validated chain ends with it, already rendered."""
    if cert is None:
        return None
    return chain_names[-1] if chain_names else describe(cert)


def _signed_octets_as_tree(
    references: list[SignedReference], element_id: str | None
) -> etree._Element | None:
    """The element a reference ``#element_id`` digested, parsed from those octets."""
    for ref in references:
        if element_id is not None and ref.uri == f"#{element_id}":
            try:
                return parse_xml(ref.octets)
            except XMLInputError as exc:
                raise FormatProblem(f"the signed properties cannot be read: {exc}") from None
    return None
