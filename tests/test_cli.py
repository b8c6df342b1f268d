"""The rogatory command line: sign, verify (human and JSON), pki init, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gateway.cli import main
from tests.conftest import CONFORMANCE


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def signed_file(tmp_path, signed_envelope):
    path = tmp_path / "request.xml"
    path.write_bytes(signed_envelope)
    return path


def test_sign_then_verify_json(runner, pki, tmp_path):
    from schemas import examples_dir

    out = tmp_path / "signed.xml"
    result = runner.invoke(
        main,
        ["sign", "--key", str(pki.key_path("ES-MJ")), "--cert", str(pki.cert_path("ES-MJ")),
         "--chain", str(pki.cert_path("signers-ca")), str(examples_dir() / "mla-request.xml"),
         str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "XAdES-B-B" in result.output
    result = runner.invoke(main, ["verify", "--trust", str(pki.root_path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    (doc,) = json.loads(result.stdout)["documents"]
    assert doc["path"] == str(out) and doc["kind"] == "xml"
    assert doc["indication"] == "TOTAL-PASSED" and doc["subindication"] is None and doc["reason"]
    (sig,) = doc["signatures"]
    assert sig["indication"] == "TOTAL-PASSED" and "ES-MJ" in sig["signer"]
    assert sig["signing_time"] and sig["subindication"] is None


def test_sign_with_p12(runner, pki, tmp_path):
    from schemas import examples_dir

    out = tmp_path / "signed.xml"
    result = runner.invoke(
        main, ["sign", "--p12", str(pki.p12_path("AR-MJ")),
               str(examples_dir() / "preservation-request.xml"), str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    verify = runner.invoke(main, ["verify", "--trust", str(pki.root_path), str(out)])
    assert verify.exit_code == 0, verify.output
    assert verify.output.startswith("PASSED")


def test_human_output_puts_the_verdict_first(runner, pki, signed_file):
    signed_file.write_bytes(signed_file.read_bytes().replace(b"<Language>es", b"<Language>en"))
    result = runner.invoke(main, ["verify", "--trust", str(pki.root_path), str(signed_file)])
    assert result.exit_code == 1
    first, second = result.output.splitlines()[:2]
    assert first.startswith("FAILED") and str(signed_file) in first
    assert "changed after signing" in second and "HASH_FAILURE" in second


def test_exit_code_3_when_indeterminate(runner, signed_file, tmp_path):
    from gateway.pki import create_dev_pki

    other = create_dev_pki(tmp_path / "other")
    result = runner.invoke(main, ["verify", "--trust", str(other.root_path), str(signed_file)])
    assert result.exit_code == 3
    assert result.output.startswith("INDETERMINATE")


def test_exit_code_4_for_an_unreadable_path(runner, pki, signed_file, tmp_path):
    result = runner.invoke(
        main, ["verify", "--trust", str(pki.root_path), "--json", str(signed_file),
               str(tmp_path / "missing.xml")],
    )  # fmt: skip
    assert result.exit_code == 4
    docs = json.loads(result.stdout)["documents"]
    assert [d["indication"] for d in docs] == ["TOTAL-PASSED", None]
    assert "missing.xml" in result.stderr


def test_exit_code_2_for_a_usage_error(runner, signed_file):
    assert runner.invoke(main, ["verify", "--at", "yesterday", str(signed_file)]).exit_code == 2
    assert runner.invoke(main, ["verify"]).exit_code == 2
    assert runner.invoke(main, ["sign", str(signed_file), "out.xml"]).exit_code == 2


def test_a_folder_is_verified_file_by_file(runner, pki, signed_file, tmp_path):
    (tmp_path / "unsigned.xml").write_bytes(b"<a/>")
    result = runner.invoke(main, ["verify", "--trust", str(pki.root_path), "--json", str(tmp_path)])
    docs = {d["path"]: d["indication"] for d in json.loads(result.stdout)["documents"]}
    assert docs == {
        str(signed_file): "TOTAL-PASSED",
        str(tmp_path / "unsigned.xml"): "TOTAL-FAILED",
    }
    assert result.exit_code == 1


def test_verify_at_a_past_time(runner, pki, signed_file):
    result = runner.invoke(
        main, ["verify", "--trust", str(pki.root_path), "--at", "2000-01-01T00:00:00Z",
               str(signed_file)],
    )  # fmt: skip
    assert result.exit_code == 3
    assert "not yet valid" in result.output


def test_hostile_file_is_failed_without_a_traceback(pki):
    bomb = CONFORMANCE / "xml-attacks" / "xmlbomb.xml"
    if not bomb.exists():
        pytest.skip("conformance data absent")
    # The installed entry point as a user runs it, in a process of its own.
    cmd = [sys.executable, "-m", "gateway"]
    proc = subprocess.run(
        [*cmd, "verify", "--trust", str(pki.root_path), str(bomb)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAILED") and "DTD" in proc.stdout


def test_pki_init_writes_and_refuses_to_overwrite(runner, tmp_path):
    target = tmp_path / "pki"
    first = runner.invoke(main, ["pki", "init", str(target)])
    assert first.exit_code == 0, first.output
    assert (target / "root-ca.pem").exists() and (
        target / "ES-MJ.key.pem"
    ).stat().st_mode & 0o077 == 0
    second = runner.invoke(main, ["pki", "init", str(target)])
    assert second.exit_code == 1 and "already holds" in second.stderr
    assert "Traceback" not in second.output


def test_sign_reports_a_wrong_key_plainly(runner, pki, tmp_path, signed_file):
    result = runner.invoke(
        main, ["sign", "--key", str(pki.key_path("AR-MJ")), "--cert", str(pki.cert_path("ES-MJ")),
               str(signed_file), str(tmp_path / "o.xml")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "does not belong to the certificate" in result.stderr


def test_b_t_signing_through_a_tsa(runner, pki, tmp_path):
    from schemas import examples_dir
    from tests.servers import tsa_server

    out = tmp_path / "bt.xml"
    with tsa_server(pki.cert("tsa"), pki.key("tsa")) as url:
        result = runner.invoke(
            main, ["sign", "--p12", str(pki.p12_path("ES-MJ")), "--tsa", url,
                   str(examples_dir() / "mla-request.xml"), str(out)],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    verify = runner.invoke(main, ["verify", "--trust", str(pki.root_path), "--json", str(out)])
    sig = json.loads(verify.stdout)["documents"][0]["signatures"][0]
    assert sig["level"] == "XAdES-B-T" and sig["signing_time_source"] == "timestamp"
    down = runner.invoke(
        main, ["sign", "--p12", str(pki.p12_path("ES-MJ")), "--tsa", "http://127.0.0.1:9/tsa",
               str(examples_dir() / "mla-request.xml"), str(tmp_path / "x.xml")],
    )  # fmt: skip
    assert down.exit_code == 1 and "Traceback" not in down.output


def test_batch_prints_a_summary_table_with_counts(runner, pki, signed_file, tmp_path):
    (tmp_path / "tampered.xml").write_bytes(
        signed_file.read_bytes().replace(b"<Language>es", b"<Language>pt")
    )
    result = runner.invoke(main, ["verify", "--trust", str(pki.root_path), str(tmp_path)])
    assert result.exit_code == 1
    assert "Summary" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == (
        "1 passed, 1 failed, 0 indeterminate, 0 unreadable"
    )


def test_sign_and_verify_a_pdf_with_a_visible_box(runner, pki, tmp_path):
    from tests.pdf_samples import make_pdf
    from tests.servers import tsa_server

    source, out = tmp_path / "request.pdf", tmp_path / "signed.pdf"
    source.write_bytes(make_pdf(2))
    with tsa_server(pki.cert("tsa"), pki.key("tsa")) as url:
        result = runner.invoke(
            main, ["sign", "--p12", str(pki.p12_path("ES-MJ")), "--tsa", url,
                   "--visible", "1,50,50,250,120", "--reason", "Solicitud MLA",
                   str(source), str(out)],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "PAdES-B-T" in result.output
    verify = runner.invoke(main, ["verify", "--trust", str(pki.root_path), "--json", str(out)])
    (doc,) = json.loads(verify.stdout)["documents"]
    assert verify.exit_code == 0, verify.stdout
    assert doc["kind"] == "pdf" and doc["indication"] == "TOTAL-PASSED"
    assert doc["signatures"][0]["signing_time_source"] == "timestamp"


def test_pdf_level_not_available_for_xml(runner, pki, tmp_path):
    from schemas import examples_dir

    result = runner.invoke(
        main, ["sign", "--p12", str(pki.p12_path("ES-MJ")), "--level", "B-LT",
               str(examples_dir() / "mla-request.xml"), str(tmp_path / "o.xml")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "not available for XML" in result.stderr
