"""Benchmark: ``rogatory verify`` on PAdES files against poppler's ``pdfsig``.

Run on demand, never from the tests::

    python bench/verify_pades.py [--batch 100] [--rounds 5] [--cold-runs 3]

Setup, in a temporary folder: the dev PKI; two unsigned PDFs from
``tests.pdf_samples.make_pdf`` (1 page and 50 pages), each signed PAdES-B-B by
the dev PKI's ES-MJ key (signers CA embedded); and two batch folders, one with
``--batch`` copies of the signed 1-page file and one with copies of the signed
50-page file (the two sizes are measured separately, never mixed). The dev PKI
root is the only trust anchor.

Contenders, all run as separate processes exactly as a clerk would run them:

1. cold start: ``rogatory verify --trust ROOT --offline FILE``, one new process
   per file (``--offline``: nothing is fetched; the dev PKI names no revocation
   source anyway);
2. batch: ``rogatory verify --trust ROOT --offline FOLDER`` over the batch
   folder, one process for all files;
3. ``pdfsig -nocert FILE`` (signature and digest only, no certificate
   validation), once per file; for the batch, one pdfsig process per file
   launched one after another (that is how pdfsig is used on many files: it
   takes a single file).

Every contender is first checked to accept the files (Rogatory: every document
TOTAL-PASSED in ``--json``; pdfsig: exit 0 and "Signature is Valid"), and every
timed run must exit 0, so only successful verifications are timed. One untimed
warm-up run of each fills the bytecode and page caches.

The machine is shared and noisy, so the measurements are interleaved: each
round runs every contender (cold starts ``--cold-runs`` times each) in an order
that rotates from round to round, and medians over the rounds are reported.

pdfsig does no modification analysis (incremental updates, DocMDP, form field
changes) and, with ``-nocert``, no path validation: it is the floor, not a peer.

Finally ``python -X importtime`` on one cold verification lists the imports that
cost the most (cumulative), so the cold start can be cut where it matters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.pki import create_dev_pki  # noqa: E402
from signing.pades_sign import PadesLevel, sign_pdf  # noqa: E402
from tests.pdf_samples import make_pdf  # noqa: E402

SIGNER_NAME = "ES-MJ"
SIZES = (1, 50)
COLD_TARGET_S = 0.6
RATIO_TARGET = 3.0
IMPORT_TOP = 8
ROGATORY = Path(sys.executable).parent / "rogatory"


@dataclass
class Setup:
    tmp: Path
    root: Path
    single: dict[int, Path]  # pages -> one signed file
    batch: dict[int, Path]  # pages -> folder of copies
    env: dict[str, str]


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def build(tmp: Path, batch: int) -> Setup:
    pki = create_dev_pki(tmp / "pki")
    signer = pki.signer(SIGNER_NAME)
    single: dict[int, Path] = {}
    folders: dict[int, Path] = {}
    for pages in SIZES:
        signed = sign_pdf(make_pdf(pages), signer, level=PadesLevel.B_B)
        single[pages] = tmp / f"signed-{pages}p.pdf"
        single[pages].write_bytes(signed)
        folder = tmp / f"batch-{pages}p"
        folder.mkdir()
        for i in range(batch):
            shutil.copyfile(single[pages], folder / f"doc-{i:04d}.pdf")
        folders[pages] = folder
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROGATORY_")}
    return Setup(tmp, pki.root_path, single, folders, env)


def rogatory_cmd(s: Setup, target: Path, *, json_out: bool = False) -> list[str]:
    cmd = [str(ROGATORY), "verify", "--trust", str(s.root), "--offline"]
    return [*cmd, "--json", str(target)] if json_out else [*cmd, str(target)]


def pdfsig_cmd(target: Path) -> list[str]:
    return ["pdfsig", "-nocert", str(target)]


def run(cmd: list[str], s: Setup) -> float:
    """Wall time of one process; it must exit 0."""
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=s.tmp, env=s.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def check(s: Setup, batch: int) -> None:
    """Every contender accepts every file before anything is timed."""
    for pages in SIZES:
        for target, expected in ((s.single[pages], 1), (s.batch[pages], batch)):
            done = subprocess.run(
                rogatory_cmd(s, target, json_out=True),
                cwd=s.tmp,
                env=s.env,
                capture_output=True,
                check=False,
            )
            docs = json.loads(done.stdout)["documents"] if done.returncode == 0 else []
            ok = len(docs) == expected and all(d["indication"] == "TOTAL-PASSED" for d in docs)
            if not ok:
                raise SystemExit(f"rogatory does not accept {target}: {done.stdout[-800:]!r}")
        done = subprocess.run(pdfsig_cmd(s.single[pages]), capture_output=True, check=False)
        if done.returncode != 0 or b"Signature is Valid" not in done.stdout:
            raise SystemExit(f"pdfsig does not accept {s.single[pages]}: {done.stdout!r}")


def pdfsig_loop(s: Setup, folder: Path) -> float:
    files = sorted(folder.iterdir())
    start = time.perf_counter()
    for f in files:
        done = subprocess.run(pdfsig_cmd(f), stdout=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise SystemExit(f"pdfsig exited {done.returncode} on {f}")
    return time.perf_counter() - start


def measure(s: Setup, rounds: int, cold_runs: int) -> dict[str, Samples]:
    tasks: dict[str, Callable[[], list[float]]] = {
        "python -c pass": lambda: [
            run([sys.executable, "-c", "pass"], s) for _ in range(cold_runs)
        ],
    }
    for pages in SIZES:
        one, folder = s.single[pages], s.batch[pages]
        tasks[f"cold {pages}p"] = lambda one=one: [
            run(rogatory_cmd(s, one), s) for _ in range(cold_runs)
        ]
        tasks[f"pdfsig {pages}p"] = lambda one=one: [
            run(pdfsig_cmd(one), s) for _ in range(cold_runs)
        ]
        tasks[f"batch {pages}p"] = lambda folder=folder: [run(rogatory_cmd(s, folder), s)]
        tasks[f"pdfsig loop {pages}p"] = lambda folder=folder: [pdfsig_loop(s, folder)]
    for task in tasks.values():  # warm-up, untimed
        task()
    out = {name: Samples() for name in tasks}
    names = list(tasks)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].values.extend(tasks[name]())
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return out


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_profile(s: Setup) -> tuple[list[tuple[int, int, str, str]], int, float]:
    """(cumulative us, depth, module, importer) rows, total self us, and the run's wall time."""
    cmd = [sys.executable, "-X", "importtime", *rogatory_cmd(s, s.single[1])]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=s.tmp, env=s.env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"importtime run failed: {done.stderr[-500:]}")
    parsed, total = [], 0
    for line in done.stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            total += int(m[1])
            parsed.append((int(m[2]), (len(m[3]) - 1) // 2, m[4]))
    # importtime prints a module after its children: the importer is the next
    # line with a smaller depth.
    rows = []
    for i, (cumulative, depth, module) in enumerate(parsed):
        importer = next((m for _, d, m in parsed[i + 1 :] if d < depth), "-")
        rows.append((cumulative, depth, module, importer))
    rows.sort(reverse=True)
    return rows, total, wall


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def report(s: Setup, res: dict[str, Samples], batch: int, args: argparse.Namespace) -> None:
    versions = ", ".join(f"{p} {version(p)}" for p in ("pyhanko", "pyhanko-certvalidator"))
    pdfsig_v = subprocess.run(["pdfsig", "-v"], capture_output=True, text=True, check=False)
    pdfsig_v = (pdfsig_v.stderr or pdfsig_v.stdout).splitlines()[0]
    print(f"Python {platform.python_version()}, {versions}, {pdfsig_v}")
    sizes = ", ".join(f"{p} page(s) {s.single[p].stat().st_size / 1024:.1f} KB" for p in SIZES)
    print(f"Signed PAdES-B-B by dev PKI {SIGNER_NAME}: {sizes}")
    print(
        f"{args.rounds} interleaved rounds, rotating order; cold starts and single pdfsig runs "
        f"{args.cold_runs}x per round; one untimed warm-up of each first."
    )
    print("Rogatory always runs with --offline (no fetching; the dev PKI names no revocation")
    print("source anyway) and --trust <dev root>; every timed run exited 0.")
    print()
    print("1. Cold start: `rogatory verify --trust ROOT --offline FILE`, one new process")
    print(f"   {'':22}{'median':>11}{'min':>11}{'max':>11}   target < {COLD_TARGET_S} s")
    for pages in SIZES:
        c = res[f"cold {pages}p"]
        verdict = "met" if c.median < COLD_TARGET_S else "NOT met"
        print(
            f"   {f'{pages}-page file':22}{ms(c.median)}{ms(c.low)}{ms(c.high)}   "
            f"{c.median / COLD_TARGET_S:.2f}x target: {verdict}"
        )
    bare = res["python -c pass"]
    print(f"   {'(python -c pass)':22}{ms(bare.median)}{ms(bare.low)}{ms(bare.high)}")
    print()
    print(f"2./3. Batch of {batch} copies of one file (1-page and 50-page batches measured")
    print("   separately). Rogatory: one process over the folder. pdfsig: one process per")
    print(f"   file, {batch} run one after another (pdfsig takes one file per run).")
    print("   per-file = batch total / files (Rogatory's includes its one start-up).")
    head = (
        f"   {'':8}{'rogatory total':>16}{'per file':>12}{'pdfsig total':>15}"
        f"{'per file':>12}{'pdfsig 1 file':>15}{'ratio':>8}"
    )
    print(head)
    ratios = {}
    for pages in SIZES:
        rb, pl, p1 = res[f"batch {pages}p"], res[f"pdfsig loop {pages}p"], res[f"pdfsig {pages}p"]
        ratios[pages] = rb.median / pl.median
        print(
            f"   {f'{pages}-page':8}{ms(rb.median):>16}{ms(rb.median / batch):>12}"
            f"{ms(pl.median):>15}{ms(pl.median / batch):>12}{ms(p1.median):>15}"
            f"{ratios[pages]:7.2f}x"
        )
    for pages in SIZES:
        rb, cold = res[f"batch {pages}p"], res[f"cold {pages}p"]
        marginal = (rb.median - cold.median) / max(batch - 1, 1)
        print(
            f"   {pages}-page: Rogatory marginal cost per extra file "
            f"(batch - cold start) / {batch - 1} = {ms(marginal).strip()}; "
            f"batch spread {ms(rb.low).strip()} .. {ms(rb.high).strip()}"
        )
    print()
    print("Ratios (medians)")
    for pages in SIZES:
        r = ratios[pages]
        verdict = "met" if r <= RATIO_TARGET else "NOT met"
        print(
            f"   {pages}-page batch, Rogatory per file / pdfsig per file: {r:5.2f}x "
            f"(target <= {RATIO_TARGET:.0f}x: {verdict})"
        )
    for pages in SIZES:
        c = res[f"cold {pages}p"].median
        verdict = "met" if c < COLD_TARGET_S else "NOT met"
        print(
            f"   {pages}-page cold start / target: {c:.3f} s / {COLD_TARGET_S} s = "
            f"{c / COLD_TARGET_S:.2f} ({verdict})"
        )
    print("   pdfsig -nocert checks the CMS signature and the byte-range digest only: no")
    print("   modification analysis of incremental updates, no certificate path validation.")
    print("   It is the floor, not a peer.")
    print()
    rows, total_us, wall = import_profile(s)
    print(
        f"Cold start imports: `python -X importtime rogatory verify ... 1-page` "
        f"(wall {wall:.3f} s; times include importtime's own overhead):"
    )
    print(f"   all imports, sum of self times: {total_us / 1000:.1f} ms")
    print(f"   top {IMPORT_TOP} by cumulative time (indent = nesting under the importer):")
    for cumulative, depth, module, _ in rows[:IMPORT_TOP]:
        print(f"   {cumulative / 1000:8.1f} ms  {'  ' * depth}{module}")
    packages = [r for r in rows if "." not in r[2] and r[2] not in ("site", "encodings")]
    print(f"   top {IMPORT_TOP} packages (first import of a top-level name) and who imports them:")
    for cumulative, _, module, importer in packages[:IMPORT_TOP]:
        print(f"   {cumulative / 1000:8.1f} ms  {module:<34} <- {importer}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=100, help="files per batch (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--cold-runs", type=int, default=3, help="cold starts per file per round (default 3)"
    )
    args = parser.parse_args()
    if args.batch < 2 or args.rounds < 1 or args.cold_runs < 1:
        parser.error("need --batch >= 2, --rounds >= 1, --cold-runs >= 1")
    if not ROGATORY.exists() or shutil.which("pdfsig") is None:
        raise SystemExit(f"need {ROGATORY} and pdfsig (poppler-utils) on PATH")
    with tempfile.TemporaryDirectory(prefix="bench-pades-") as tmp:
        s = build(Path(tmp), args.batch)
        check(s, args.batch)
        res = measure(s, args.rounds, args.cold_runs)
        report(s, res, args.batch, args)


if __name__ == "__main__":
    main()
