"""The one result type of every verification: ETSI EN 319 102-1 indications.

Signing and verification code, the CLI, the HTTP API, evidences and the
written record all render these objects; none of them invents its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Indication(StrEnum):
    TOTAL_PASSED = "TOTAL-PASSED"
    TOTAL_FAILED = "TOTAL-FAILED"
    INDETERMINATE = "INDETERMINATE"


class SubIndication(StrEnum):
    """Sub-indications of ETSI EN 319 102-1, table 5 (the ones Rogatory uses)."""

    # with TOTAL-FAILED
    FORMAT_FAILURE = "FORMAT_FAILURE"
    HASH_FAILURE = "HASH_FAILURE"
    SIG_CRYPTO_FAILURE = "SIG_CRYPTO_FAILURE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    # with INDETERMINATE
    SIG_CONSTRAINTS_FAILURE = "SIG_CONSTRAINTS_FAILURE"
    CHAIN_CONSTRAINTS_FAILURE = "CHAIN_CONSTRAINTS_FAILURE"
    CERTIFICATE_CHAIN_GENERAL_FAILURE = "CERTIFICATE_CHAIN_GENERAL_FAILURE"
    CRYPTO_CONSTRAINTS_FAILURE = "CRYPTO_CONSTRAINTS_FAILURE"
    CRYPTO_CONSTRAINTS_FAILURE_NO_POE = "CRYPTO_CONSTRAINTS_FAILURE_NO_POE"
    NO_SIGNING_CERTIFICATE_FOUND = "NO_SIGNING_CERTIFICATE_FOUND"
    NO_CERTIFICATE_CHAIN_FOUND = "NO_CERTIFICATE_CHAIN_FOUND"
    REVOKED_NO_POE = "REVOKED_NO_POE"
    OUT_OF_BOUNDS_NO_POE = "OUT_OF_BOUNDS_NO_POE"
    TRY_LATER = "TRY_LATER"
    SIGNED_DATA_NOT_FOUND = "SIGNED_DATA_NOT_FOUND"
    TIMESTAMP_ORDER_FAILURE = "TIMESTAMP_ORDER_FAILURE"


_RANK = {Indication.TOTAL_PASSED: 0, Indication.INDETERMINATE: 1, Indication.TOTAL_FAILED: 2}


@dataclass(frozen=True)
class Verdict:
    """An indication, its sub-indication and a reason written for a person."""

    indication: Indication
    subindication: SubIndication | None
    reason: str

    @classmethod
    def passed(cls, reason: str = "signature valid") -> Verdict:
        return cls(Indication.TOTAL_PASSED, None, reason)

    @classmethod
    def failed(cls, sub: SubIndication, reason: str) -> Verdict:
        return cls(Indication.TOTAL_FAILED, sub, reason)

    @classmethod
    def indeterminate(cls, sub: SubIndication, reason: str) -> Verdict:
        return cls(Indication.INDETERMINATE, sub, reason)

    @property
    def ok(self) -> bool:
        return self.indication is Indication.TOTAL_PASSED

    def outranks(self, other: Verdict) -> bool:
        """A failure outranks an indeterminate result, which outranks a pass."""
        return _RANK[self.indication] > _RANK[other.indication]

    def to_json(self) -> dict[str, Any]:
        return {
            "indication": self.indication.value,
            "subindication": self.subindication.value if self.subindication else None,
            "reason": self.reason,
        }


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The verdict that outranks all others (the first of equals), or None."""
    result: Verdict | None = None
    for verdict in verdicts:
        if result is None or verdict.outranks(result):
            result = verdict
    return result


@dataclass(frozen=True)
class SignatureReport:
    """What one signature says, and what Rogatory concluded about it."""

    verdict: Verdict
    signer: str | None = None
    signing_time: datetime | None = None
    signing_time_source: str | None = None  # "claimed" or "timestamp"
    level: str | None = None  # e.g. "XAdES-B-B", "XAdES-B-T"
    chain: tuple[str, ...] = ()
    revocation: str | None = None
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.verdict.to_json(),
            "signer": self.signer,
            "signing_time": self.signing_time.isoformat() if self.signing_time else None,
            "signing_time_source": self.signing_time_source,
            "level": self.level,
            "chain": list(self.chain),
            "revocation": self.revocation,
            "warnings": list(self.warnings),
            **self.details,
        }


@dataclass(frozen=True)
class DocumentReport:
    """The verdict on a whole document and on each signature in it."""

    path: str
    kind: str  # "xml" or "pdf"
    verdict: Verdict
    signatures: tuple[SignatureReport, ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_signatures(
        cls,
        path: str,
        kind: str,
        signatures: Iterable[SignatureReport],
        *,
        document_failure: Verdict | None = None,
        warnings: Iterable[str] = (),
    ) -> DocumentReport:
        """Aggregate: the document is as good as its worst signature.

        A document without any signature is TOTAL-FAILED; a failure found in the
        document itself (``document_failure``) outranks every signature.
        """
        sigs = tuple(signatures)
        candidates = [s.verdict for s in sigs]
        if document_failure is not None:
            candidates.insert(0, document_failure)
        verdict = worst(candidates)
        if verdict is None:
            verdict = Verdict.failed(SubIndication.FORMAT_FAILURE, "the document is not signed")
        elif verdict.ok:
            count = len(sigs)
            verdict = Verdict.passed(
                "the signature is valid" if count == 1 else f"all {count} signatures are valid"
            )
        return cls(path, kind, verdict, sigs, tuple(warnings))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            **self.verdict.to_json(),
            "warnings": list(self.warnings),
            "signatures": [s.to_json() for s in self.signatures],
        }
