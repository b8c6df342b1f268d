"""The README's main command: the demo runs a real gateway and every step comes out as expected."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--data", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo complete: every step as expected" in proc.stdout
    assert "received -> accepted -> queued -> sending -> delivered -> retrieved" in proc.stdout
    assert "the written record (a signed PDF with the originals embedded) ... ok" in proc.stdout
    assert list((tmp_path / "data").glob("record-*.pdf"))
    assert "Traceback" not in proc.stdout + proc.stderr
