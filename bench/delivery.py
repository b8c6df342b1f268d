"""End-to-end delivery over the peer channel beside intake alone, in one run.

    python bench/delivery.py [--messages N] [--clients C] [--batch B] [--concurrency K]

Two development gateways on this machine (gateway.pair: gw-es and gw-ar, each
gunicorn with TLS and SQLite, one worker process each unless --gunicorn-workers),
in a temporary folder. Envelopes are the example MLA request without
attachments, fresh ids, signed XAdES-B-B by ES-MJ before the clock starts;
C client processes post them to gw-es over keep-alive HTTPS.

1. intake only: N envelopes posted, no dispatcher running: accepted/s.
2. end to end: N more envelopes posted while ``rogatory worker`` of gw-es
   runs (batch B, concurrency K); the clock stops when the last of them is
   delivered on gw-ar with its signed Delivery evidence recorded on gw-es.
   Delivered/s = N / that time, beside the intake rate seen in the same phase.

Target (issue 5): delivery keeps up with intake, at least 80% of its rate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.8


def _post_all(url: str, token: str, ca: str, bodies: list[bytes], out: Any) -> None:
    from gateway.client import GatewayClient

    client = GatewayClient(url, token=token, ca_file=Path(ca))
    bad = 0
    for body in bodies:
        reply = client.submit(body)
        if reply.status != 202:
            bad += 1
    client.close()
    out.put(bad)


def _post(member: Any, ca: Path, bodies: list[bytes], clients: int) -> tuple[float, int]:
    out: Any = mp.Queue()
    shares = [bodies[i::clients] for i in range(clients)]
    procs = [
        mp.Process(target=_post_all, args=(member.url, member.token, str(ca), share, out))
        for share in shares
    ]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    bad = sum(out.get() for _ in procs)
    for proc in procs:
        proc.join()
    return time.perf_counter() - start, bad


def _delivered(db: Path, ids: list[str]) -> int:
    connection = sqlite3.connect(db, timeout=30)
    try:
        rows = connection.execute("select message_id from messages where status = 'delivered'")
        return len(set(ids).intersection(row[0] for row in rows))
    finally:
        connection.close()


def _signed(base: Path, count: int) -> tuple[list[bytes], list[str]]:
    from gateway import demo_messages
    from gateway.pki import load_dev_pki
    from signing.xades_sign import sign_xml

    signer = load_dev_pki(base / "pki").signer("ES-MJ")
    bodies, ids = [], []
    for _ in range(count):
        example = demo_messages.request(with_attachments=False)
        bodies.append(sign_xml(example.envelope, signer))
        ids.append(example.message_id)
    return bodies, ids


def _start(
    args: list[str], member: Any, log: Path, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROGATORY_")}
    env |= {"ROGATORY_CONFIG": str(member.config_file), "PYTHONPATH": str(ROOT)} | extra
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )  # fmt: skip


def _wait_healthy(member: Any, ca: Path) -> None:
    from gateway.client import GatewayClient

    for _ in range(300):
        try:
            client = GatewayClient(member.url, ca_file=ca, timeout=2)
            if client.request("GET", "/healthz").status == 200:
                client.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{member.gateway_id} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600, help="per phase (default 600)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--batch", type=int, default=32, help="dispatcher batch (default 32)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel sends (default 8)")
    parser.add_argument("--gunicorn-workers", type=int, default=1, help="per gateway (default 1)")
    options = parser.parse_args()

    from gateway.demo import free_port
    from gateway.pair import prepare_pair

    with tempfile.TemporaryDirectory(prefix="rogatory-delivery-") as folder:
        base = Path(folder)
        es, ar = prepare_pair(base, (free_port(), free_port()))
        ca = base / "pki" / "root-ca.pem"
        workers = str(options.gunicorn_workers)
        servers = [
            _start(["serve", "--workers", workers], m, base / f"{m.gateway_id}.log", {})
            for m in (es, ar)
        ]
        dispatcher = None
        try:
            for member in (es, ar):
                _wait_healthy(member, ca)
            print(f"signing {2 * options.messages} envelopes ...", flush=True)
            first, _ = _signed(base, options.messages)
            second, ids = _signed(base, options.messages)

            seconds, bad = _post(es, ca, first, options.clients)
            intake_rate = options.messages / seconds
            print(f"intake only:  {options.messages} accepted in {seconds:.2f} s "
                  f"= {intake_rate:.0f}/s ({bad} not 202)", flush=True)  # fmt: skip

            # The first phase's messages wait in the outbox too: send them before timing.
            extra = {
                "ROGATORY_DISPATCH_BATCH": str(options.batch),
                "ROGATORY_DISPATCH_CONCURRENCY": str(options.concurrency),
                "ROGATORY_POLL_SECONDS": "0.05",
            }
            dispatcher = _start(["worker"], es, base / "worker.log", extra)
            db = es.data_dir / "rogatory.db"
            while _delivered(db, _ids_of(first)) < len(first):
                time.sleep(0.1)

            start = time.perf_counter()
            posted, bad = _post(es, ca, second, options.clients)
            while _delivered(db, ids) < len(ids):
                time.sleep(0.02)
            total = time.perf_counter() - start
            e2e_rate = options.messages / total
            during = options.messages / posted
            print(f"end to end:   {options.messages} delivered on gw-ar in {total:.2f} s "
                  f"= {e2e_rate:.0f}/s (intake during it {during:.0f}/s, {bad} not 202)"
                  )  # fmt: skip
            print(f"dispatcher:   batch {options.batch}, concurrency {options.concurrency}; "
                  f"gunicorn workers per gateway {options.gunicorn_workers}; "
                  f"{options.clients} client processes")  # fmt: skip
            ratio = e2e_rate / intake_rate
            verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
            print(f"ratio:        delivered/s / intake-only accepted/s = {ratio:.2f} "
                  f"(target >= {TARGET_RATIO}): {verdict}")  # fmt: skip
        finally:
            for proc in ([dispatcher] if dispatcher else []) + servers:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


_ID_CACHE: dict[int, list[str]] = {}


def _ids_of(bodies: list[bytes]) -> list[str]:
    key = id(bodies)
    if key not in _ID_CACHE:
        from lxml import etree

        from schemas import ENVELOPE_NS

        _ID_CACHE[key] = [
            etree.fromstring(b).findtext(f"{{{ENVELOPE_NS}}}Header/{{{ENVELOPE_NS}}}MessageId")
            or ""
            for b in bodies
        ]
    return _ID_CACHE[key]


if __name__ == "__main__":
    main()
