"""Human output of verification reports: the verdict line first, then details."""

from __future__ import annotations

import click

from signing.verdict import DocumentReport, Indication

_STYLE = {
    Indication.TOTAL_PASSED: ("PASSED", "green"),
    Indication.TOTAL_FAILED: ("FAILED", "red"),
    Indication.INDETERMINATE: ("INDETERMINATE", "yellow"),
}


def render_report(report: DocumentReport, *, trusted: bool = True) -> None:
    """Print ``report`` for a clerk: one clear line, then one block per signature."""
    word, colour = _STYLE[report.verdict.indication]
    sub = f" [{report.verdict.subindication.value}]" if report.verdict.subindication else ""
    click.secho(f"{word:<13} {report.path} ({report.kind})", fg=colour, bold=True)
    click.echo(f"  {report.verdict.reason}{sub}")
    for warning in report.warnings:
        click.secho(f"  warning: {warning}", fg="yellow")
    for number, sig in enumerate(report.signatures, 1):
        s_word, s_colour = _STYLE[sig.verdict.indication]
        s_sub = f" [{sig.verdict.subindication.value}]" if sig.verdict.subindication else ""
        click.echo(f"  signature {number}: ", nl=False)
        click.secho(f"{s_word}{s_sub}", fg=s_colour, nl=False)
        click.echo(f" - {sig.verdict.reason}")
        rows = [
            ("signer", sig.signer),
            (
                "signing time",
                f"{sig.signing_time.isoformat()} ({sig.signing_time_source})"
                if sig.signing_time
                else None,
            ),
            ("level", sig.level),
            ("covers", sig.details.get("covers")),
            ("chain", " <- ".join(reversed(sig.chain)) if sig.chain else None),
            ("revocation", sig.revocation),
        ]
        for label, value in rows:
            if value:
                click.echo(f"    {label + ':':<14}{value}")
        for warning in sig.warnings:
            click.secho(f"    warning: {warning}", fg="yellow")
    if not trusted:
        click.secho(
            "  note: no trust anchor given (--trust); signers cannot be trusted", fg="yellow"
        )
