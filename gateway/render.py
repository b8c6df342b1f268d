"""Human output of verification reports: the verdict line first, then details."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from signing.verdict import DocumentReport, Indication

if TYPE_CHECKING:
    from .batch import Outcome

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


class Progress:
    """A progress bar on standard error when it is a terminal and there is more than one file."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        return self

    def start(self, total: int) -> None:
        if total < 2 or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
            # Reports go to stdout: through the bar when both are this terminal,
            # untouched when stdout is a file or a pipe.
            redirect_stdout=sys.stdout.isatty(),
        )
        self._bar.start()
        self._task = self._bar.add_task("", total=total)

    def advance(self, path: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=path[-40:])

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def render_summary(outcomes: Sequence[Outcome]) -> None:
    """A table of every document's verdict, then the counts."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Summary", show_lines=False)
    table.add_column("verdict")
    table.add_column("document", overflow="fold")
    table.add_column("reason", overflow="fold")
    counts = {word: 0 for word, _ in _STYLE.values()} | {"UNREADABLE": 0}
    for outcome in outcomes:
        if outcome.report is None:
            counts["UNREADABLE"] += 1
            table.add_row("[red]UNREADABLE[/red]", outcome.path, outcome.unreadable or "")
            continue
        word, colour = _STYLE[outcome.report.verdict.indication]
        counts[word] += 1
        table.add_row(f"[{colour}]{word}[/{colour}]", outcome.path, outcome.report.verdict.reason)
    console = Console()
    console.print(table)
    console.print(", ".join(f"{n} {word.lower()}" for word, n in counts.items()))
