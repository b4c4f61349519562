"""``outlay demo``: simulate a month of a multi-tenant agent platform and print what a CFO asks for."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from outlay._errors import InvalidInput
from outlay.demo import DEFAULT_HOME, MIN_TENANTS, DemoConfig, render_report, run_demo
from outlay.reporting import render_json

__all__ = ["demo"]


@click.command()
@click.option(
    "--seed", type=click.IntRange(-(2**63), 2**63 - 1), default=7, show_default=True,
    help="Same seed, same totals to the last digit.",
)  # fmt: skip
@click.option("--tenants", type=click.IntRange(min=MIN_TENANTS), default=8, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=160, show_default=True,
              help="Customer agent runs, shared among the tenants (at least one each).")  # fmt: skip
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_HOME,
              show_default=True, help="Directory of the demo's SQLite ledger and event log.")  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the ledger of earlier demo runs instead of starting fresh.")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True)
@click.option("--mode", type=click.Choice(("batching", "durable")), default="batching", show_default=True,
              help="batching: buffered, flushed at the end (fast); durable: a commit per event.")  # fmt: skip
def demo(*, seed: int, tenants: int, runs: int, home: Path, keep: bool, fmt: str, mode: str) -> None:
    """Simulate a month of a multi-tenant agent platform through outlay and report its costs.

    Orchestrators spawn sub-agents that call OpenAI, Anthropic, Gemini, a self-hosted model, tools
    and a vector store for tenants on free, pro and enterprise plans; everything is recorded,
    rated and written to a real SQLite ledger, then read back as reports.
    """
    if runs < tenants:
        raise click.BadParameter(
            f"need at least one run per tenant ({tenants}), got {runs}", param_hint="--runs"
        )
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal,
    )  # fmt: skip
    try:
        with progress:
            result = run_demo(
                home,
                DemoConfig(seed=seed, tenants=tenants, runs=runs),
                mode=mode,
                keep=keep,
                progress=progress,
            )
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # --home where no directory can be made, or no ledger written
        raise click.BadParameter(f"{home}: {exc.strerror or exc}", param_hint="--home") from None
    if fmt == "json":
        click.echo(render_json(result.report))
    else:
        render_report(result.report, Console(highlight=False))
    events = result.simulation.events
    ledger = home / "outlay.db"
    err.print(
        f"[dim]{events:,} events recorded ({mode} mode) in {result.simulate_seconds:.2f} s, "
        f"reports in {result.report_seconds:.2f} s; ledger: {escape(str(ledger))}[/]",
        highlight=False,
    )
    if fmt == "table":
        window = f"--from {result.report['window']['from']} --to {result.report['window']['to']}"
        err.print(
            # A command to paste: the path quoted for the shell, and never read as rich markup.
            f"[dim]Explore it: outlay report breakdown --by tenant,model {window}"
            f" --ledger {escape(shlex.quote(str(ledger)))}[/]",
            highlight=False,
            soft_wrap=True,
        )
