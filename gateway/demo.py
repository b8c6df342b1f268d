"""The envelope demo: sign each example as its sender, verify it, and catch a tampered copy.

Until the gateway exists this is the project's main job on the embedded
default (a development PKI in a local data folder).
"""

from __future__ import annotations

from pathlib import Path

import click

from schemas import ENVELOPE_NS, examples_dir
from signing.keys import Signer
from signing.trust import RevocationPolicy
from signing.verdict import Indication
from signing.xades_sign import sign_xml
from signing.xmlparse import parse_xml

from .pki import DevPKI, create_dev_pki, load_dev_pki
from .render import render_report
from .verification import build_engine, verify_document


def _pki(data_dir: Path) -> DevPKI:
    folder = data_dir / "pki"
    if (folder / "root-ca.pem").exists():
        return load_dev_pki(folder)
    click.echo(f"creating the development PKI in {folder}")
    return create_dev_pki(folder)


def _sender(data: bytes) -> str:
    found = parse_xml(data).findtext(
        f"{{{ENVELOPE_NS}}}Header/{{{ENVELOPE_NS}}}Sender/{{{ENVELOPE_NS}}}AuthorityId"
    )
    return (found or "").strip()


def run_demo(data_dir: Path) -> int:
    """Run the demo; 0 when every verdict came out as expected."""
    dev = _pki(data_dir)
    out = data_dir / "demo"
    out.mkdir(parents=True, exist_ok=True)
    engine = build_engine([dev.root_path], revocation=RevocationPolicy.HARD, allow_fetching=False)
    ok = True
    signed_files = []
    for example in sorted(examples_dir().glob("*.xml")):
        data = example.read_bytes()
        sender = _sender(data)
        if sender not in dev.names():
            click.secho(f"skipping {example.name}: no demo key for sender {sender!r}", fg="yellow")
            continue
        # The intermediate travels with the signature; the root is the verifier's anchor.
        chain = tuple(c for c in dev.chain(sender)[1:] if c != dev.root())
        signer = Signer(dev.key(sender), dev.cert(sender), chain)
        target = out / example.name.replace(".xml", ".signed.xml")
        target.write_bytes(sign_xml(data, signer))
        click.echo(f"signed {example.name} as {sender} -> {target}")
        signed_files.append(target)
    click.echo()
    for target in signed_files:
        report = verify_document(target.read_bytes(), engine, path=str(target))
        render_report(report)
        ok = ok and report.verdict.indication is Indication.TOTAL_PASSED
    if signed_files:
        tampered = out / "tampered.signed.xml"
        original = signed_files[0].read_bytes()
        tampered.write_bytes(original.replace(b"<Language>", b"<Language> ", 1))
        click.echo("\na copy with one character added after signing:")
        report = verify_document(tampered.read_bytes(), engine, path=str(tampered))
        render_report(report)
        ok = ok and report.verdict.indication is Indication.TOTAL_FAILED
    click.secho(
        "\ndemo complete: every verdict as expected"
        if ok
        else "\ndemo: some verdicts were unexpected",
        fg="green" if ok else "red",
    )
    return 0 if ok else 1
