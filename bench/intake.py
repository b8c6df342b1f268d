"""Gateway intake under gunicorn: accepted/s and latency against a no-op Flask ceiling,
and peak worker memory while one client posts a 1 GB attachment.

    python bench/intake.py [--seconds N] [--clients C] [--workers W]

Everything runs on this machine over 127.0.0.1, in a temporary folder:

1. ``rogatory serve --dev`` (W workers, the gunicorn settings of gateway/serve.py,
   TLS from the development setup). Every envelope is the example MLA request
   without its attachment manifest, with a fresh MessageId and ConversationId,
   signed XAdES-B-B by the dev PKI's ES-MJ key before the clock starts. C client
   processes post them as application/xml over keep-alive HTTPS with ES-MJ's bearer
   token; every answer must be 202. Every check is on (XSD, profile, XAdES with
   chain validation, signer bound to the authority) and every acceptance is a
   durable SQLite commit (WAL, synchronous=FULL, the defaults).
2. The same bodies, the same client processes and the same gunicorn settings
   (GatewayServer, only the WSGI app replaced) against a no-op Flask endpoint that
   reads the body and answers 202: the framework ceiling.
3. One client streams a 1 GB attachment (generated on the fly, its SHA-256 and size
   in the signed manifest) as multipart/related; worker RSS is sampled from /proc.
4. bench/audit_log.py --appends 2000 --entries 100000.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import itertools
import json
import logging
import multiprocessing as mp
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxml import etree  # noqa: E402

from schemas import ENVELOPE_NS, examples_dir  # noqa: E402

NS = {"e": ENVELOPE_NS}
PATH = "/api/v1/messages"
AUTHORITY = "ES-MJ"
BOUNDARY = "rogatory-bench-boundary"
TARGET_PER_CORE = 500
TARGET_RSS_MB = 150
BIG = 1024**3  # the 1 GB attachment
BLOCK = 1024 * 1024


# ---- envelopes --------------------------------------------------------------


def envelope_xml(attachment: tuple[str, int, str] | None = None) -> bytes:
    """The example request, fresh ids, unsigned; with one manifest entry (cid, size, sha256)."""
    root = etree.fromstring((examples_dir() / "mla-request.xml").read_bytes())
    root.find("e:Header/e:MessageId", NS).text = str(uuid.uuid4())
    root.find("e:Header/e:ConversationId", NS).text = str(uuid.uuid4())
    manifest = root.find("e:Attachments", NS)
    root.remove(manifest)
    if attachment is not None:
        cid, size, digest = attachment
        manifest = etree.SubElement(root, f"{{{ENVELOPE_NS}}}Attachments")
        entry = etree.SubElement(
            manifest, f"{{{ENVELOPE_NS}}}Attachment", Id="att-1", ContentId=cid
        )
        for tag, text in (
            ("FileName", "annex-1.bin"),
            ("MediaType", "application/octet-stream"),
            ("Size", str(size)),
        ):
            etree.SubElement(entry, f"{{{ENVELOPE_NS}}}{tag}").text = text
        etree.SubElement(
            entry, f"{{{ENVELOPE_NS}}}Digest", Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"
        ).text = digest
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def signer(data_dir: Path) -> Any:
    from gateway.pki import load_dev_pki
    from tests.conftest import signer_for

    return signer_for(load_dev_pki(data_dir / "pki"), AUTHORITY)


def signed_envelopes(data_dir: Path, count: int) -> list[bytes]:
    from signing.xades_sign import sign_xml

    who = signer(data_dir)
    return [sign_xml(envelope_xml(), who) for _ in range(count)]


# ---- servers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_settings(data_dir: Path, port: int) -> Any:
    from gateway.app import prepare_settings
    from gateway.settings import Settings

    return prepare_settings(Settings(mode="development", data_dir=data_dir, port=port))


def run_noop_server(data_dir: Path, port: int, workers: int) -> None:
    """GatewayServer's gunicorn settings (TLS, workers, threads, keep-alive, access log),
    serving a Flask app whose one endpoint reads the body and answers 202."""
    from flask import Flask, Response, request

    from gateway.serve import GatewayServer

    class NoopServer(GatewayServer):  # type: ignore[misc]
        def load(self) -> Any:
            app = Flask("noop")

            @app.post(PATH)
            def submit() -> Response:
                while request.stream.read(64 * 1024):
                    pass
                return Response(b"", status=202)

            @app.get("/healthz")
            def health() -> Response:
                return Response(b"ok")

            return app

    NoopServer(dev_settings(data_dir, port), workers=workers).run()


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, log: Path) -> None:
        self.name, self.port = name, port
        self.log = log.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROGATORY_")}
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )

    def wait_ready(self, context: ssl.SSLContext, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log.name}"
                )
            try:
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=context, timeout=2
                )
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{self.name} did not start; see {self.log.name}")

    def workers(self) -> list[int]:
        pid = self.proc.pid
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


# ---- clients ----------------------------------------------------------------


def tls_context(data_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(data_dir / "pki" / "root-ca.pem"))


def in_process_gateway(data_dir: Path) -> tuple[Any, dict[str, str]]:
    """The gateway on the development defaults in ``data_dir``, in this process:
    Flask's test client and the headers of an ES-MJ envelope post."""
    from gateway.app import create_app

    client = create_app(dev_settings(data_dir, 8443)).test_client()
    headers = {"Authorization": f"Bearer {token(data_dir)}", "Content-Type": "application/xml"}
    return client, headers


def token(data_dir: Path, authority: str = AUTHORITY) -> str:
    from gateway.bootstrap import read_demo_tokens

    found = read_demo_tokens(data_dir).get(authority)
    if found is None:
        raise SystemExit(f"no token for {authority}")
    return found


def client(n: int, cfg: dict[str, Any], ready: Any, go: Any, start_at: Any, results: Any) -> None:
    """Sign a pool of envelopes, connect, warm up, then post until the deadline."""
    data_dir = Path(cfg["data_dir"])
    pool = signed_envelopes(data_dir, cfg["pool"] + cfg["warmup"])
    headers = {
        "Authorization": f"Bearer {token(data_dir)}",
        "Content-Type": "application/xml",
        "Connection": "keep-alive",
    }
    context = tls_context(data_dir)
    out: dict[str, dict[str, Any]] = {}
    for target in cfg["targets"]:
        name, port = target["name"], target["port"]
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
        bodies = iter(pool) if target["unique"] else itertools.cycle(pool)
        bad: dict[str, int] = {}

        def post(body: bytes, conn: http.client.HTTPSConnection = conn) -> int:
            conn.request("POST", PATH, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status

        for _ in range(cfg["warmup"]):
            status = post(next(bodies))
            if status != 202:
                bad[str(status)] = bad.get(str(status), 0) + 1
        ready.release()
        go[name].wait()
        begin = start_at[name].value
        end = begin + cfg["seconds"]
        time.sleep(max(0.0, begin - time.time()))
        latencies: list[float] = []
        exhausted = False
        cpu0 = os.times()
        while time.time() < end:
            body = next(bodies, None)
            if body is None:
                exhausted = True
                break
            t0 = time.perf_counter()
            status = post(body)
            latencies.append(time.perf_counter() - t0)
            if status != 202:
                bad[str(status)] = bad.get(str(status), 0) + 1
        cpu1 = os.times()
        conn.close()
        out[name] = {
            "latencies": latencies,
            "bad": bad,
            "exhausted": exhausted,
            "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            "stopped": time.time(),
        }
    results.put((n, out))


def load_phase(
    servers: dict[str, Server], cfg: dict[str, Any], clients: int
) -> dict[str, dict[str, Any]]:
    """Run the clients against each server in turn (same processes, same bodies)."""
    ctx = mp.get_context("fork")
    ready = ctx.Semaphore(0)
    go = {t["name"]: ctx.Event() for t in cfg["targets"]}
    start_at = {t["name"]: ctx.Value("d", 0.0) for t in cfg["targets"]}
    results = ctx.Queue()
    procs = [
        ctx.Process(target=client, args=(n, cfg, ready, go, start_at, results))
        for n in range(clients)
    ]
    for p in procs:
        p.start()
    summary: dict[str, dict[str, Any]] = {}
    for target in cfg["targets"]:
        name = target["name"]
        for _ in range(clients):
            ready.acquire()
        server = servers[name]
        pids = server.workers()
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        start_at[name].value = time.time() + 0.3
        go[name].set()
        spies = []
        if cfg["profile"] and name == "gateway":
            time.sleep(0.3)
            spies = [py_spy(pid, cfg["seconds"], Path(cfg["data_dir"]).parent) for pid in pids]
            time.sleep(cfg["seconds"])
        else:
            time.sleep(0.3 + cfg["seconds"])
        for spy, _ in spies:
            spy.wait()
        if spies:
            summary["profile"] = {"files": [out for _, out in spies]}
        cpu_after = {pid: cpu_seconds(pid) for pid in pids}
        summary[name] = {
            "worker_cpu": [cpu_after[p] - cpu_before[p] for p in pids],
            "rss": [rss_mb(p)[0] for p in pids],
        }
    gathered = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    for name, s in summary.items():
        if name == "profile":
            continue
        lat = [x for _, out in gathered for x in out[name]["latencies"]]
        s["requests"] = len(lat)
        s["latencies"] = sorted(lat)
        s["bad"] = {}
        for _, out in gathered:
            for k, v in out[name]["bad"].items():
                s["bad"][k] = s["bad"].get(k, 0) + v
        s["exhausted"] = sum(out[name]["exhausted"] for _, out in gathered)
        s["client_cpu"] = sum(out[name]["cpu"] for _, out in gathered)
        s["rate"] = len(lat) / cfg["seconds"]
    return summary


def py_spy(pid: int, seconds: float, folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy record of one worker, idle threads included (fsync, lock waits)."""
    out = folder / f"py-spy-{pid}.txt"
    cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
           "--duration", str(max(1, int(seconds) - 1)), "--rate", "100", "--idle",
           "--nonblocking", "--format", "raw", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def profile_report(files: list[Path], top: int = 10) -> list[str]:
    """Where request-handling time goes: samples of threads inside the submit view."""
    own: dict[str, int] = {}
    inside: dict[str, int] = {}
    total = 0
    for file in files:
        if not file.exists():
            continue
        for line in file.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            starts = [i for i, f in enumerate(frames) if f.startswith("submit (gateway/api.py")]
            if not starts:
                continue
            n = int(count)
            total += n
            names = [f.rsplit(":", 1)[0] + ")" for f in frames[starts[0] :]]
            own[names[-1]] = own.get(names[-1], 0) + n
            for fn in {x for x in names if x.startswith(("gateway", "signing"), x.find("(") + 1)}:
                inside[fn] = inside.get(fn, 0) + n
    if not total:
        return ["  (no samples: is py-spy installed and allowed to attach?)"]
    lines = [
        f"  {total:,} samples of threads inside POST /api/v1/messages (wall time, idle included)"
    ]
    lines.append("  self (the frame the thread was in):")
    for fn, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {n / total:6.1%}  {fn}")
    lines.append("  inclusive, Rogatory functions:")
    for fn, n in sorted(inside.items(), key=lambda kv: -kv[1])[1 : top + 1]:
        lines.append(f"    {n / total:6.1%}  {fn}")
    return lines


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# ---- the 1 GB attachment ----------------------------------------------------


def big_blocks() -> Iterator[bytes]:
    """1 GB of incompressible bytes, one MiB at a time, the same on every call."""
    base = bytearray(hashlib.shake_256(b"rogatory-bench").digest(BLOCK))
    for i in range(BIG // BLOCK):
        base[:8] = i.to_bytes(8, "big")
        yield bytes(base)


def big_upload(data_dir: Path, server: Server) -> dict[str, Any]:
    from signing.xades_sign import sign_xml

    t0 = time.perf_counter()
    digest = hashlib.sha256()
    for block in big_blocks():
        digest.update(block)
    sha = digest.hexdigest()
    prep = time.perf_counter() - t0
    cid = "big-annex@es-mj.rogatory.example"
    envelope = sign_xml(envelope_xml((cid, BIG, sha)), signer(data_dir))
    head_env = (
        f"--{BOUNDARY}\r\nContent-Type: application/xml\r\nContent-ID: <envelope@es-mj>\r\n\r\n"
    ).encode()
    head_att = (
        f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-ID: <{cid}>\r\n\r\n"
    ).encode()
    tail = f"--{BOUNDARY}--\r\n".encode()
    length = len(head_env) + len(envelope) + 2 + len(head_att) + BIG + 2 + len(tail)

    def body() -> Iterator[bytes]:
        yield head_env + envelope + b"\r\n" + head_att
        yield from big_blocks()
        yield b"\r\n" + tail

    pids = server.workers()
    before = {p: rss_mb(p)[0] for p in pids}
    peak = dict(before)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for p in pids:
                with contextlib.suppress(OSError, KeyError):
                    peak[p] = max(peak[p], rss_mb(p)[0])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = http.client.HTTPSConnection(
        "localhost", server.port, context=tls_context(data_dir), timeout=600
    )
    headers = {
        "Authorization": f"Bearer {token(data_dir)}",
        "Content-Type": f'multipart/related; type="application/xml"; boundary="{BOUNDARY}"',
        "Content-Length": str(length),
    }
    t1 = time.perf_counter()
    conn.request("POST", PATH, body=body(), headers=headers)
    response = conn.getresponse()
    answer = response.read()
    elapsed = time.perf_counter() - t1
    stop.set()
    sampler.join()
    location = response.getheader("Location") or ""
    stored = [p.stat().st_size for p in (data_dir / "blobs").rglob(sha)]
    listed = None
    if response.status == 202 and location:
        conn.request("GET", location, headers={"Authorization": headers["Authorization"]})
        status = json.loads(conn.getresponse().read())
        listed = [a["size"] for a in status.get("attachments", [])]
    conn.close()
    hwm = {p: rss_mb(p)[1] for p in pids}
    return {
        "status": response.status,
        "answer": answer[:300],
        "seconds": elapsed,
        "prep": prep,
        "before": before,
        "peak": peak,
        "hwm": hwm,
        "stored": stored,
        "listed": listed,
        "sha": sha,
    }


# ---- report -----------------------------------------------------------------


def row(name: str, s: dict[str, Any], seconds: float) -> str:
    lat = s["latencies"]
    bad = ", ".join(f"{k}: {v}" for k, v in s["bad"].items()) or "none"
    cpu = sum(s["worker_cpu"])
    per_cpu = s["requests"] / cpu if cpu else float("nan")
    return (
        f"  {name:<24} {s['rate']:>9.0f} {percentile(lat, 0.5) * 1000:>8.1f} "
        f"{percentile(lat, 0.99) * 1000:>8.1f}  {cpu / seconds:>6.2f}  {per_cpu:>9.0f}   "
        f"{s['client_cpu'] / seconds:>5.2f}   non-202: {bad}"
        + (f"; {s['exhausted']} client(s) ran out of envelopes" if s["exhausted"] else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="each timed phase (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the gateway workers (pip install py-spy)"
    )
    parser.add_argument("--no-big", action="store_true", help="skip the 1 GB attachment")
    parser.add_argument("--no-audit", action="store_true", help="skip bench/audit_log.py")
    parser.add_argument(
        "--noop-server", nargs=3, metavar=("DIR", "PORT", "W"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.noop_server:
        run_noop_server(
            Path(args.noop_server[0]), int(args.noop_server[1]), int(args.noop_server[2])
        )
        return

    cores = os.cpu_count() or 1
    logging.getLogger("rogatory.settings").setLevel(logging.ERROR)  # "development mode" warning
    with tempfile.TemporaryDirectory(prefix="rogatory-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        dev_settings(data_dir, 8443)  # the development setup, once, before either server
        context = tls_context(data_dir)
        gw_port, noop_port = free_port(), free_port()
        rogatory = str(Path(sys.executable).with_name("rogatory"))
        gateway = Server(
            "gateway",
            [rogatory, "serve", "--dev", "--data", str(data_dir), "--port", str(gw_port),
             "--workers", str(args.workers)],
            gw_port, Path(tmp) / "gateway.log",
        )  # fmt: skip
        noop = Server(
            "no-op Flask",
            [sys.executable, __file__, "--noop-server", str(data_dir), str(noop_port),
             str(args.workers)],
            noop_port, Path(tmp) / "noop.log",
        )  # fmt: skip
        try:
            gateway.wait_ready(context)
            noop.wait_ready(context)
            # Enough envelopes for twice the target rate; a client that runs out says so.
            rate_cap = 2 * TARGET_PER_CORE * args.workers
            cfg = {
                "data_dir": str(data_dir),
                "seconds": args.seconds,
                "pool": int(rate_cap * args.seconds / args.clients) + 1,
                "warmup": 10,
                "profile": args.profile,
                "targets": [
                    {"name": "gateway", "port": gw_port, "unique": True},
                    {"name": "no-op Flask", "port": noop_port, "unique": False},
                ],
            }
            sample = signed_envelopes(data_dir, 1)[0]
            t0 = time.perf_counter()
            summary = load_phase({"gateway": gateway, "no-op Flask": noop}, cfg, args.clients)
            load_time = time.perf_counter() - t0
            big = None if args.no_big else big_upload(data_dir, gateway)
        finally:
            gateway.stop()
            noop.stop()

        gw, ceiling = summary["gateway"], summary["no-op Flask"]
        profile = profile_report(summary["profile"]["files"]) if "profile" in summary else None
        print("Rogatory intake benchmark (bench/intake.py)")
        print(
            f"machine: {cores} cores (os.cpu_count); gunicorn gthread, {args.workers} worker(s) x 4"
            f" threads, TLS (dev PKI), keep-alive; {args.clients} client processes on the same"
            " machine (http.client over TLS)"
        )
        print(
            f"load: {len(sample):,}-byte signed envelopes (the 5.5 KB example, no attachments,"
            " fresh MessageId/ConversationId, XAdES-B-B by ES-MJ, signed before the clock),"
            f" application/xml, {args.seconds:g} s per server, gateway then no-op"
            f" (phase wall time incl. client signing {load_time:.0f} s)"
        )
        print()
        print(
            f"  {'':<24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  {'wrk CPU':>6}  {'req/CPU-s':>9}"
            f"   {'cli CPU':>5}"
        )
        print(row("gateway (202 accepted)", gw, args.seconds))
        print(row("no-op Flask endpoint", ceiling, args.seconds))
        ratio = gw["rate"] / ceiling["rate"] if ceiling["rate"] else float("nan")
        print(f"  ratio gateway / no-op: {ratio:.2f}")
        print(
            "  (wrk CPU: gunicorn workers' CPU-seconds per second, summed; req/CPU-s: requests"
            " per worker CPU-second; cli CPU: the clients' CPU, same machine)"
        )
        print(
            "  per-worker CPU during the gateway phase: "
            + ", ".join(f"{c / args.seconds:.2f}" for c in gw["worker_cpu"])
            + "; RSS after: "
            + ", ".join(f"{r:.0f} MB" for r in gw["rss"])
        )
        per_core = gw["rate"] / args.workers
        accepted_ok = not gw["bad"] and gw["requests"] > 0
        print()
        print(
            f"per core: {gw['rate']:.0f} accepted/s / {args.workers} worker process(es) ="
            f" {per_core:.0f} accepted/s per worker (machine: {cores} cores)"
        )
        print(
            f"  target >= {TARGET_PER_CORE} accepted/s per core: "
            f"{'MET' if per_core >= TARGET_PER_CORE and accepted_ok else 'NOT MET'}"
            + ("" if accepted_ok else " (not every answer was 202)")
        )
        if profile is not None:
            print()
            print("where the gateway's time goes (py-spy, both workers, the timed phase):")
            print("\n".join(profile))
        if big is not None:
            print()
            print("1 GB attachment (one client, multipart/related, streamed from a generator)")
            print(
                f"  answer: {big['status']}"
                + ("" if big["status"] == 202 else f" {big['answer']!r}")
            )
            rate = BIG / big["seconds"] / 1e6
            print(
                f"  upload + intake: {big['seconds']:.1f} s ({rate:.0f} MB/s);"
                f" hashing it first took {big['prep']:.1f} s"
            )
            stored = big["stored"]
            print(
                f"  stored blob: {', '.join(f'{s:,} bytes' for s in stored) or 'not found'}"
                f" (expected {BIG:,}; {'OK' if stored == [BIG] else 'MISMATCH'});"
                f" status lists attachment sizes {big['listed']}"
            )
            for p in big["before"]:
                print(
                    f"  worker {p}: RSS before {big['before'][p]:.0f} MB, sampled peak"
                    f" {big['peak'][p]:.0f} MB, VmHWM (lifetime peak) {big['hwm'][p]:.0f} MB"
                )
            worst = max(big["peak"].values())
            met = worst < TARGET_RSS_MB and big["status"] == 202 and stored == [BIG]
            print(
                f"  target peak < {TARGET_RSS_MB} MB:"
                f" {'MET' if met else 'NOT MET'} ({worst:.0f} MB)"
            )

    if not args.no_audit:
        print()
        print("audit log: python bench/audit_log.py --appends 2000 --entries 100000")
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "audit_log.py"), "--appends", "2000",
             "--entries", "100000"],
            capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
        )  # fmt: skip
        for line in (done.stdout + done.stderr).strip().splitlines():
            print(f"  {line}")
        print("  (the 1,000,000-entry figure: python bench/audit_log.py, default --entries)")


if __name__ == "__main__":
    main()
