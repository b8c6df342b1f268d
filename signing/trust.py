"""The one trust engine: trust anchors, path validation and revocation.

Every certificate Rogatory relies on (a signer's, a time-stamping
authority's) is judged here, through pyhanko-certvalidator. Certificates that
arrive inside a document are only ever candidates for path building; trust
comes from the anchors of the policy alone.

Revocation policy (stated, as the issue asks):
  * ``hard`` (default): revocation is checked wherever a certificate names a
    source (CRL distribution point, OCSP responder); if that source cannot
    be reached or answers nonsense, the result is INDETERMINATE. A
    certificate that names no source is accepted with a warning.
  * ``require``: every certificate must have revocation data, else
    INDETERMINATE.
  * ``soft``: revocation is checked where data can be had; failing to get it
    is only a warning. A certificate found revoked always fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as cv_errors

from .errors import TrustConfigError
from .verdict import SubIndication, Verdict


class RevocationPolicy(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    REQUIRE = "require"

    @property
    def certvalidator_mode(self) -> str:
        return {"hard": "hard-fail", "soft": "soft-fail", "require": "require"}[self.value]


class KeyPurpose(StrEnum):
    """What a certificate is being relied on for."""

    SIGNING = "signing"  # keyUsage digitalSignature or nonRepudiation
    TIMESTAMPING = "timestamping"  # extKeyUsage timeStamping (RFC 3161, 2.3)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle or a single DER certificate."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def load_anchors(paths: Iterable[Path]) -> tuple[x509.Certificate, ...]:
    """Trust anchors from files and folders (``*.pem``, ``*.crt``, ``*.cer``, ``*.der``)."""
    anchors: list[x509.Certificate] = []
    for path in paths:
        files = (
            sorted(p for p in path.iterdir() if p.suffix in {".pem", ".crt", ".cer", ".der"})
            if path.is_dir()
            else [path]
        )
        for file in files:
            if file.name.endswith(".key.pem"):
                continue
            try:
                anchors.extend(load_certificates(file.read_bytes()))
            except (OSError, ValueError) as exc:
                raise TrustConfigError(f"cannot read trust anchor {file}: {exc}") from None
    if not anchors:
        raise TrustConfigError("no trust anchor certificate found in " + ", ".join(map(str, paths)))
    return tuple(anchors)


@dataclass(frozen=True)
class TrustPolicy:
    """What the engine trusts and how it checks: configuration in, no I/O."""

    anchors: tuple[x509.Certificate, ...]
    revocation: RevocationPolicy = RevocationPolicy.HARD
    allow_fetching: bool = True
    fetch_timeout: float = 5.0
    crls: tuple[bytes, ...] = ()
    ocsps: tuple[bytes, ...] = ()
    # Live results (no fixed validation time) are reused this long; revocation
    # data is usually valid for hours, so this only bounds how stale a "good"
    # answer may be.
    cache_seconds: float = 60.0


@dataclass(frozen=True)
class ChainResult:
    """The trust engine's answer for one certificate."""

    verdict: Verdict
    chain: tuple[x509.Certificate, ...] = ()
    revocation: str = "not checked"
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # Rendered once: results are cached, and names are costly to render.
    chain_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain_names", tuple(describe(c) for c in self.chain))


def describe(cert: x509.Certificate) -> str:
    """The subject as RFC 4514 text, or the fingerprint when the subject cannot be read."""
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        return f"certificate with an unreadable subject, SHA-256 {fingerprint}"


def _names_revocation_source(cert: x509.Certificate) -> bool:
    for oid in (ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.AUTHORITY_INFORMATION_ACCESS):
        try:
            cert.extensions.get_extension_for_oid(oid)
            return True
        except x509.ExtensionNotFound:
            continue
    return False


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _to_crypto(cert: asn1_x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())


def _check_purpose(cert: x509.Certificate, purpose: KeyPurpose) -> str | None:
    """Why ``cert`` may not be used for ``purpose``, or None when it may."""
    if purpose is KeyPurpose.SIGNING:
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return "the signing certificate has no keyUsage extension"
        if not (ku.digital_signature or ku.content_commitment):
            return "the signing certificate allows neither digitalSignature nor nonRepudiation"
        return None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return "the time-stamping certificate has no extKeyUsage extension"
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING] or not eku.critical:
        return "the time-stamping certificate's extKeyUsage is not exactly a critical timeStamping"
    return None


# certvalidator's errors, most specific first, as (sub-indication, revocation, reason).
_ERRORS: tuple[tuple[type[Exception], SubIndication, str, str], ...] = (
    (cv_errors.RevokedError, SubIndication.REVOKED, "revoked", "certificate revoked"),
    (cv_errors.ExpiredError, SubIndication.OUT_OF_BOUNDS_NO_POE, "not checked",
     "certificate expired at the validation time"),
    (cv_errors.NotYetValidError, SubIndication.OUT_OF_BOUNDS_NO_POE, "not checked",
     "certificate not yet valid at the validation time"),
    (cv_errors.InsufficientRevinfoError, SubIndication.TRY_LATER, "unavailable",
     "revocation status unavailable"),
    (cv_errors.DisallowedAlgorithmError, SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE,
     "not checked", "weak algorithm in the certificate path"),
    (cv_errors.PathBuildingError, SubIndication.NO_CERTIFICATE_CHAIN_FOUND, "not checked",
     "the certificate does not chain to a trust anchor"),
    (cv_errors.PathValidationError, SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE,
     "not checked", "certificate path validation failed"),
    (Exception, SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE, "not checked",
     "certificate path validation could not run"),
)  # fmt: skip


def _chain_failure(cert: x509.Certificate, exc: Exception) -> ChainResult:
    """The verdict for a path validation error: revoked fails, all else is indeterminate."""
    for kind, sub, revocation, reason in _ERRORS:
        if isinstance(exc, kind):
            message = f"{reason} ({describe(cert)}): {exc}"
            verdict = (
                Verdict.failed(sub, message)
                if sub is SubIndication.REVOKED
                else Verdict.indeterminate(sub, message)
            )
            return ChainResult(verdict, revocation=revocation)
    raise AssertionError("unreachable: the table ends with Exception")


class _Fingerprints:
    """The SHA-256 of each certificate's DER, which names it in the verdict cache.

    The same few certificates come with every document, so the digest of
    each one of a real size is kept (bounded): re-encoding a certificate costs
    more than looking it up.
    """

    KEPT_BYTES = 16 * 1024
    KEPT = 256

    def __init__(self) -> None:
        self._known: dict[x509.Certificate, bytes] = {}  # keyed by content (hash and ==)

    def of(self, cert: x509.Certificate) -> bytes:
        known = self._known.get(cert)
        if known is not None:
            return known
        der = cert.public_bytes(Encoding.DER)
        fingerprint = hashlib.sha256(der).digest()
        if len(der) <= self.KEPT_BYTES:
            if len(self._known) >= self.KEPT:
                self._known.clear()
            self._known[cert] = fingerprint
        return fingerprint


class _Parsed(threading.local):
    """One thread's asn1crypto certificates, parsed once and kept.

    asn1crypto parses lazily and memoizes on the object without a lock: two
    threads reading one half-parsed certificate see a part missing, and a
    valid chain is judged "no issuer found". So no asn1crypto object is ever
    shared between threads; each thread keeps its own.
    """

    def __init__(self, anchors: Sequence[x509.Certificate]) -> None:
        self.anchors = [_to_asn1(c) for c in anchors]
        self.certs: dict[bytes, asn1_x509.Certificate] = {}


class TrustEngine:
    """Validates certificates against a ``TrustPolicy``; one per process is enough.

    Safe to share between threads: the verdict cache holds plain results, and
    the parsed certificates that path validation reads are kept per thread.
    """

    def __init__(self, policy: TrustPolicy) -> None:
        if not policy.anchors:
            raise TrustConfigError("a trust policy needs at least one trust anchor")
        self.policy = policy
        self._cache: dict[tuple[object, ...], tuple[float, ChainResult]] = {}
        self._parsed = _Parsed(policy.anchors)
        self._fingerprints = _Fingerprints()

    def validate(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        *,
        purpose: KeyPurpose = KeyPurpose.SIGNING,
        at: datetime | None = None,
    ) -> ChainResult:
        """Judge ``cert`` for ``purpose`` at time ``at`` (now when None)."""
        fingerprint = self._fingerprints.of
        key = (fingerprint(cert), tuple(map(fingerprint, intermediates)), purpose, at)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and (at is not None or cached[0] > now):
            return cached[1]
        result = self._validate(cert, intermediates, purpose, at)
        expiry = now + self.policy.cache_seconds
        if at is None and cert.not_valid_after_utc <= datetime.now(UTC):
            expiry = now
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (expiry, result)
        return result

    def _asn1(self, cert: x509.Certificate) -> asn1_x509.Certificate:
        # asn1crypto memoizes what it parses on the object: reusing one object per
        # certificate (in this thread) makes a repeated path validation about twice as fast.
        der = cert.public_bytes(Encoding.DER)
        mine = self._parsed.certs
        parsed = mine.get(der)
        if parsed is None:
            if len(mine) > 10_000:
                mine.clear()
            parsed = mine[der] = asn1_x509.Certificate.load(der)
        return parsed

    def validation_context(
        self,
        at: datetime | None = None,
        intermediates: Sequence[x509.Certificate] = (),
        *,
        crls: Sequence[bytes] = (),
        ocsps: Sequence[bytes] = (),
    ) -> ValidationContext:
        """A pyhanko-certvalidator context with this engine's anchors and policy.

        For libraries that validate certificates themselves (pyHanko for PAdES):
        they judge by the same anchors, revocation mode and fetching rules.
        Revocation data embedded in a document may be added with ``crls``/``ocsps``.
        """
        return self._context(at, [self._asn1(c) for c in intermediates], crls=crls, ocsps=ocsps)

    def _context(
        self,
        at: datetime | None,
        intermediates: list[asn1_x509.Certificate],
        *,
        crls: Sequence[bytes] = (),
        ocsps: Sequence[bytes] = (),
    ) -> ValidationContext:
        policy = self.policy
        fetching = policy.allow_fetching and at is None
        mode = policy.revocation.certvalidator_mode
        backend = None
        if fetching:  # requests and urllib3 cost ~50 ms to import: only when fetching
            from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend

            backend = RequestsFetcherBackend(per_request_timeout=policy.fetch_timeout)
        return ValidationContext(
            trust_roots=self._parsed.anchors,
            other_certs=intermediates,
            moment=at,
            allow_fetching=fetching,
            crls=[*policy.crls, *crls],
            ocsps=[*policy.ocsps, *ocsps],
            revocation_mode=mode,
            fetcher_backend=backend,
        )

    def _validate(
        self,
        cert: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        purpose: KeyPurpose,
        at: datetime | None,
    ) -> ChainResult:
        warnings: list[str] = []
        try:
            purpose_problem = _check_purpose(cert, purpose)
        except ValueError as exc:  # cryptography refuses a malformed extension
            return _chain_failure(cert, exc)
        if cert.issuer == cert.subject and cert not in self.policy.anchors:
            return ChainResult(
                Verdict.indeterminate(
                    SubIndication.NO_CERTIFICATE_CHAIN_FOUND,
                    f"the certificate {describe(cert)!r} is self-signed and is not a trust anchor",
                )
            )
        try:
            context = self._context(at, [self._asn1(c) for c in intermediates])
            validator = CertificateValidator(self._asn1(cert), validation_context=context)
            path = asyncio.run(validator.async_validate_path())
        except (cv_errors.PathError, cv_errors.ValidationError, ValueError) as exc:
            return _chain_failure(cert, exc)
        chain = tuple(_to_crypto(c) for c in path.iter_certs(include_root=True))
        if purpose_problem is not None:
            return ChainResult(
                Verdict.indeterminate(SubIndication.CHAIN_CONSTRAINTS_FAILURE, purpose_problem),
                chain,
            )
        unchecked = [c for c in chain[1:] if not _names_revocation_source(c)]
        for c in unchecked:
            warnings.append(f"no revocation source named by {describe(c)!r}; accepted unchecked")
        if self.policy.revocation is RevocationPolicy.SOFT:
            warnings.append("revocation checked in soft-fail mode")
        revocation = "good" if len(unchecked) < len(chain) - 1 else "no source named"
        return ChainResult(
            Verdict.passed("certificate path valid"), chain, revocation, tuple(warnings)
        )
