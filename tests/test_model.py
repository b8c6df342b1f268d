"""The status lifecycle allows exactly the transitions DESIGN.md draws."""

from __future__ import annotations

import itertools

import pytest

from gateway.model import (
    FINAL,
    Direction,
    EvidenceType,
    IllegalTransition,
    Status,
    allowed_next,
    check_transition,
)

OUTBOUND_PATH = [
    Status.RECEIVED, Status.ACCEPTED, Status.QUEUED, Status.SENDING, Status.WAITING_FOR_RETRY,
    Status.SENDING, Status.RELAYED, Status.DELIVERED, Status.RETRIEVED,
]  # fmt: skip
INBOUND_PATH = [Status.RECEIVED, Status.DELIVERED, Status.RETRIEVED]


@pytest.mark.parametrize(
    ("direction", "path"),
    [(Direction.OUTBOUND, OUTBOUND_PATH), (Direction.INBOUND, INBOUND_PATH)],
)
def test_the_happy_paths_are_legal(direction, path):
    for current, new in itertools.pairwise(path):
        check_transition(direction, current, new)


@pytest.mark.parametrize(
    ("direction", "current", "new"),
    [
        (Direction.OUTBOUND, Status.RECEIVED, Status.DELIVERED),  # skips acceptance
        (Direction.OUTBOUND, Status.REJECTED, Status.ACCEPTED),  # a refusal is final
        (Direction.OUTBOUND, Status.RETRIEVED, Status.SENDING),
        (Direction.INBOUND, Status.RECEIVED, Status.QUEUED),  # inbound is never sent on
        (Direction.INBOUND, Status.RETRIEVED, Status.DELIVERED),
        (Direction.OUTBOUND, Status.FAILED, Status.SENDING),
    ],
)
def test_illegal_transitions_are_refused_with_a_reason(direction, current, new):
    with pytest.raises(IllegalTransition, match=f"from {current.value} to {new.value}"):
        check_transition(direction, current, new)


@pytest.mark.parametrize("direction", list(Direction))
def test_final_states_lead_nowhere(direction):
    for status in FINAL:
        assert allowed_next(direction, status) == frozenset()


def test_failure_is_reachable_from_every_outbound_step_after_acceptance():
    for status in OUTBOUND_PATH[1:-2]:
        assert Status.FAILED in allowed_next(Direction.OUTBOUND, status), status


def test_negative_evidences():
    negative = {e for e in EvidenceType if e.negative}
    assert negative == {
        EvidenceType.SUBMISSION_REJECTION, EvidenceType.RELAY_REJECTION,
        EvidenceType.RELAY_FAILURE, EvidenceType.NON_DELIVERY, EvidenceType.NON_RETRIEVAL,
    }  # fmt: skip
