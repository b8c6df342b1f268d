"""The trust engine shared by a gunicorn worker's threads judges alike in each of them.

asn1crypto parses lazily and memoizes on the object without a lock. When one
parsed certificate was shared between threads, a cold engine judged a valid
chain "no issuer found" now and then under concurrent first use; a valid
request was refused at random after each restart of the gateway.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from gateway.pki import DevPKI
from signing.trust import TrustEngine
from signing.verdict import Verdict

THREADS = 8
ROUNDS = 60  # before the fix about one round in twelve went wrong


@pytest.fixture()
def switch_often() -> Iterator[None]:
    """Threads switch every microsecond, so a race shows within a few rounds."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_a_cold_engine_judges_a_valid_chain_valid_in_every_thread(
    pki: DevPKI, engine: TrustEngine, switch_often: None
) -> None:
    signer = pki.signer("ES-MJ")
    verdicts: list[Verdict] = []
    for _ in range(ROUNDS):
        cold = TrustEngine(engine.policy)  # nothing parsed yet
        start = threading.Barrier(THREADS)

        def judge(cold: TrustEngine = cold, start: threading.Barrier = start) -> None:
            start.wait()
            verdicts.append(cold.validate(signer.cert, signer.chain).verdict)

        threads = [threading.Thread(target=judge) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wrong = [v for v in verdicts if not v.ok]
    assert len(verdicts) == THREADS * ROUNDS
    assert not wrong, f"{len(wrong)} of {len(verdicts)} judged wrongly, e.g. {wrong[0].reason}"
