"""The gateway's domain: message status and its legal transitions, evidence kinds.

Plain data, no I/O (DESIGN.md, Status and Evidences). The store refuses any
transition this module does not allow, so an illegal one can never be written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Direction(StrEnum):
    OUTBOUND = "outbound"  # posted by one of our authorities, to be sent on
    INBOUND = "inbound"  # arrived from a peer, held for one of our authorities


class Status(StrEnum):
    RECEIVED = "received"
    REJECTED = "rejected"
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENDING = "sending"
    WAITING_FOR_RETRY = "waiting-for-retry"
    RELAYED = "relayed"
    DELIVERED = "delivered"
    RETRIEVED = "retrieved"
    FAILED = "failed"


_OUTBOUND: dict[Status, frozenset[Status]] = {
    Status.RECEIVED: frozenset({Status.REJECTED, Status.ACCEPTED}),
    Status.ACCEPTED: frozenset({Status.QUEUED, Status.FAILED}),
    Status.QUEUED: frozenset({Status.SENDING, Status.FAILED}),
    Status.SENDING: frozenset(
        {Status.WAITING_FOR_RETRY, Status.RELAYED, Status.DELIVERED, Status.FAILED}
    ),
    Status.WAITING_FOR_RETRY: frozenset({Status.SENDING, Status.FAILED}),
    Status.RELAYED: frozenset({Status.DELIVERED, Status.FAILED}),
    Status.DELIVERED: frozenset({Status.RETRIEVED}),
}
_INBOUND: dict[Status, frozenset[Status]] = {
    Status.RECEIVED: frozenset({Status.REJECTED, Status.DELIVERED}),
    Status.DELIVERED: frozenset({Status.RETRIEVED}),
}
FINAL = frozenset({Status.REJECTED, Status.RETRIEVED, Status.FAILED})


class IllegalTransition(Exception):
    """A status change the lifecycle does not allow."""


def allowed_next(direction: Direction, current: Status) -> frozenset[Status]:
    table = _OUTBOUND if direction is Direction.OUTBOUND else _INBOUND
    return table.get(current, frozenset())


def check_transition(direction: Direction, current: Status, new: Status) -> None:
    """Raise ``IllegalTransition`` unless ``current -> new`` is legal for ``direction``."""
    if new not in allowed_next(direction, current):
        raise IllegalTransition(
            f"a {direction.value} message cannot go from {current.value} to {new.value}"
        )


class EvidenceType(StrEnum):
    """ETSI REM evidences (EN 319 522-2), as e-CODEX uses them."""

    SUBMISSION_ACCEPTANCE = "SubmissionAcceptance"
    SUBMISSION_REJECTION = "SubmissionRejection"
    RELAY_ACCEPTANCE = "RelayAcceptance"
    RELAY_REJECTION = "RelayRejection"
    RELAY_FAILURE = "RelayFailure"
    DELIVERY = "Delivery"
    NON_DELIVERY = "NonDelivery"
    RETRIEVAL = "Retrieval"
    NON_RETRIEVAL = "NonRetrieval"

    @property
    def negative(self) -> bool:
        return self.value.startswith(("Non", "SubmissionRejection", "RelayRejection")) or (
            self is EvidenceType.RELAY_FAILURE
        )


@dataclass(frozen=True)
class StatusChange:
    """One step of a message's history, as stored and audited."""

    status: Status
    at: datetime
    reason: str | None = None
    audit_index: int | None = None
