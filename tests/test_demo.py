"""The README's main command: two real gateways exchange a request and its reply, as expected."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    # As README command 1 runs it: the default, relative data folder.
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "demo"],
        capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo complete: every step as expected" in proc.stdout
    out = proc.stdout
    # Both messages, on both sides: outbound on the sending gateway, inbound on the other.
    assert (
        out.count("outbound: received -> accepted -> queued -> sending -> delivered -> retrieved")
        == 2
    )
    assert out.count("inbound: received -> delivered -> retrieved") == 2
    assert "it goes back by the channel the request came by, and is delivered ... ok" in out
    assert "the audit trail of gw-es verifies offline ... ok" in out
    assert "the audit trail of gw-ar verifies offline ... ok" in out
    assert "the written record (a signed PDF with the originals embedded) ... ok" in proc.stdout
    assert list((tmp_path / "data").glob("record-*.pdf"))
    assert "Traceback" not in proc.stdout + proc.stderr
