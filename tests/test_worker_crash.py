"""`rogatory worker` SIGKILLed at random points: nothing lost, nothing delivered twice.

Two real gateways (gateway.pair). Messages are posted to gw-es; a real
worker process sends them to gw-ar and is killed at random moments, then
started again, until the outbox is empty. Every message ends delivered on
gw-es, arrived exactly once on gw-ar, and both audit logs verify.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway import demo_messages
from gateway.audit_verify import verify_store
from gateway.model import Status
from gateway.pair import Member, prepare_pair
from gateway.pki import load_dev_pki
from gateway.services import build_services
from signing.xades_sign import sign_xml
from tests.gateway_process import REPO, GatewayProcess, free_port

MESSAGES = 24


def _worker(member: Member, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROGATORY_")}
    env |= {
        "ROGATORY_CONFIG": str(member.config_file),
        # A short lease, so a killed worker's claims come back quickly.
        "ROGATORY_DISPATCH_LEASE_SECONDS": "1",
        "ROGATORY_DISPATCH_BATCH": "4",
        "ROGATORY_DISPATCH_CONCURRENCY": "2",
        "PYTHONPATH": str(REPO),
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker"], cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def test_worker_killed_at_random_points_loses_nothing_and_delivers_nothing_twice(
    tmp_path: Path,
) -> None:
    es, ar = prepare_pair(tmp_path, (free_port(), free_port()))
    root = tmp_path / "pki" / "root-ca.pem"
    gateways = [
        GatewayProcess(m.data_dir, workers=1, port=m.port, ca_file=root,
                       env={"ROGATORY_CONFIG": str(m.config_file)})
        for m in (es, ar)
    ]  # fmt: skip
    for gateway in gateways:
        gateway.start()
    es_services, ar_services = build_services(es.settings), build_services(ar.settings)
    try:
        from gateway.client import GatewayClient

        signer = load_dev_pki(tmp_path / "pki").signer("ES-MJ")
        client = GatewayClient(es.url, token=es.token, ca_file=root)
        ids = []
        for _ in range(MESSAGES):
            example = demo_messages.request()
            assert (
                client.submit(sign_xml(example.envelope, signer), example.attachments).status == 202
            )
            ids.append(example.message_id)
        client.close()

        rng = random.Random(int(os.environ.get("ROGATORY_CRASH_SEED", "5")))
        log = tmp_path / "worker.log"

        def delivered() -> int:
            return sum(
                es_services.store.message(i).status is Status.DELIVERED  # type: ignore[union-attr]
                for i in ids
            )

        kills_while_sending = 0
        deadline = time.monotonic() + 120
        for _ in range(8):
            before = delivered()
            worker = _worker(es, log)
            try:
                # Kill it while it sends, however fast it is: at a random moment soon after
                # it has delivered something (its start-up, imports included, takes ~0.4 s).
                while delivered() == before:
                    assert worker.poll() is None, "the worker exited: " + log.read_text()[-3000:]
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.1))
                sending = delivered() < MESSAGES
            finally:
                with contextlib.suppress(ProcessLookupError):  # already gone: the assert says why
                    os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            kills_while_sending += sending
            if not sending:
                break
        # Then a worker that is left alone drains what is left.
        worker = _worker(es, log)
        while time.monotonic() < deadline:
            if all(es_services.store.message(i).status is Status.DELIVERED for i in ids):  # type: ignore[union-attr]
                break
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        assert kills_while_sending >= 2, kills_while_sending

        for message_id in ids:
            sent = es_services.store.message(message_id)
            assert sent is not None and sent.status is Status.DELIVERED, (
                message_id,
                log.read_text()[-3000:],
            )
            got = ar_services.store.message(message_id)
            assert got is not None and got.status is Status.DELIVERED
            assert got.envelope_sha256 == sent.envelope_sha256
        # Arrived once: one "message.received" entry per message on gw-ar.
        received = Counter(
            e.message_id
            for i in ids
            for e in ar_services.audit.entries_for(i)
            if e.kind == "message.received"
        )
        assert received == Counter(ids)
        assert es_services.store.messages_of  # the store still answers
        pki = load_dev_pki(tmp_path / "pki")
        for member, services in ((es, es_services), (ar, ar_services)):
            key = pki.key(f"{member.gateway_id}-evidence")
            services.audit.checkpoint(key)
            report = verify_store(services.db, key.public_key(), origin=member.gateway_id)
            assert report.ok, report.summary()
    finally:
        for gateway in gateways:
            gateway.stop()
        es_services.close()
        ar_services.close()


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses process groups")
