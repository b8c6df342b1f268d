"""CPU cost of one accepted submission, in process: no server, no TLS, no clients.

    python bench/intake_cpu.py [--messages N] [--rounds R] [--profile]

The gateway app is built on the development defaults in a temporary folder
(SQLite in WAL mode with synchronous=FULL, the development PKI) and driven by
Flask's test client from one thread: every envelope is the example MLA request
with fresh ids, signed XAdES-B-B by ES-MJ before the clock starts, and every
answer must be 202. Every check is on and every acceptance is its own durable
commit (one thread, so group commit never groups).

It prints the CPU time (user + system, this process) per acceptance in each
round and the median, and what that means in acceptances per CPU-second. The
figure leaves out what the HTTP server and TLS add (bench/intake.py measures
those under gunicorn), so it is the part of the cost that the gateway's own
code decides. CPU time is less disturbed by a busy machine than wall time, but
compare figures from the same run, or runs one right after the other.

``--profile`` runs one more round under cProfile and prints the functions with
the most time of their own.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import intake as bench  # bench/intake.py: envelopes, dev settings, token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300, help="per round (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--profile", action="store_true", help="one more round under cProfile")
    args = parser.parse_args()
    logging.getLogger("rogatory.settings").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="rogatory-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        client, headers = bench.in_process_gateway(data_dir)
        rounds = args.rounds + (1 if args.profile else 0)
        print(f"signing {20 + rounds * args.messages} envelopes ...", file=sys.stderr)
        bodies = iter(bench.signed_envelopes(data_dir, 20 + rounds * args.messages))

        def post(count: int) -> None:
            for _ in range(count):
                answer = client.post(bench.PATH, data=next(bodies), headers=headers)
                if answer.status_code != 202:
                    raise SystemExit(f"answered {answer.status_code}: {answer.get_data()[:400]!r}")

        post(20)  # warm: first use of the trust engine, statements, imports
        per_message = []
        for n in range(args.rounds):
            start = time.process_time()
            post(args.messages)
            ms = 1000 * (time.process_time() - start) / args.messages
            per_message.append(ms)
            print(f"round {n + 1}: {ms:.2f} ms CPU per acceptance")
        median = statistics.median(per_message)
        print(
            f"median: {median:.2f} ms CPU per acceptance = {1000 / median:.0f} acceptances "
            f"per CPU-second (spread {min(per_message):.2f}-{max(per_message):.2f} ms); "
            f"the target of {bench.TARGET_PER_CORE}/s per core allows "
            f"{1000 / bench.TARGET_PER_CORE:.2f} ms with the server's share"
        )
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(post, args.messages)
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
