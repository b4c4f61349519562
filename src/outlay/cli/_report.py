"""``outlay report ...`` and ``outlay rerate``: reports and re-rating from the command line."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from outlay._errors import BackendError, InvalidInput
from outlay._money import money_str
from outlay._runtime import embedded_log_path
from outlay.ledger import LedgerStore, RateFunction, ledger_url, open_ledger

__all__ = ["report", "rerate"]

F = TypeVar("F", bound=Callable[..., Any])
_FORMATS = ("table", "json", "csv")
_TABLE_COLUMNS = ("events", "cost", "unpriced_events")  # tokens too: --format json or csv


def _totals(*keys: str) -> tuple[str, ...]:
    """The keys of a totals row (``Reports.tenants``, ``breakdown``, ``unattributed``), in order."""
    from outlay.reporting import TOKEN_COLUMNS

    return (*keys, *_TABLE_COLUMNS, *TOKEN_COLUMNS)


_DEFAULT_DAYS = 30


def _default_window() -> tuple[str, str]:
    end = datetime.now(UTC).date() + timedelta(days=1)
    return (end - timedelta(days=_DEFAULT_DAYS)).isoformat(), end.isoformat()


def _catch_up_embedded(url: str | None, ledger: LedgerStore) -> None:
    """In embedded mode the event log sits beside the ledger (``embedded_log_path``): write what it holds
    first, so a report sees every event recorded before it was asked for."""
    from outlay.ledger import LedgerWriter
    from outlay.stream import SQLiteEventLog

    if os.environ.get("OUTLAY_STREAM_URL"):
        return  # a distributed log: the workers write, reports read the ledger as it is
    log_path = embedded_log_path(ledger_url(url))
    if log_path is None or not log_path.exists():
        return
    log = SQLiteEventLog(log_path)
    try:
        LedgerWriter(log, ledger).catch_up()
    finally:
        log.close()


@contextmanager
def _ledger(url: str | None) -> Iterator[LedgerStore]:
    """Open the ledger read-mostly, turning outlay errors into clean CLI errors (never a traceback)."""
    try:
        # A recording process that never read a report has only written the embedded event log.
        log_path = embedded_log_path(ledger_url(url))
        ledger = open_ledger(url, create=log_path is not None and log_path.exists())
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        _catch_up_embedded(url, ledger)
        yield ledger
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        ledger.close()


def _ledger_option(func: F) -> F:
    return click.option(
        "--ledger",
        "ledger_url",
        metavar="URL",
        help="Ledger path or URL (sqlite:PATH, postgresql://...); default $OUTLAY_LEDGER_URL, else"
        " $OUTLAY_URL, else .outlay/outlay.db",
    )(func)


def _window_options(func: F) -> F:
    func = click.option("--from", "start", metavar="DATE", help="Start (inclusive); default 30 days ago.")(
        func
    )
    return click.option("--to", "end", metavar="DATE", help="End (exclusive); default tomorrow (UTC).")(func)


def _common(func: F) -> F:
    func = click.option("--environment", help="Only this environment (production, staging, ...).")(func)
    func = click.option("--format", "fmt", type=click.Choice(_FORMATS), default="table", show_default=True)(
        func
    )
    return _ledger_option(_window_options(func))


def _window(start: str | None, end: str | None) -> tuple[str, str]:
    """The window asked for; only an option left out takes the default (``--to ""``, a script's
    unset variable, is an error, not a silent "up to tomorrow")."""
    default_start, default_end = _default_window()
    return default_start if start is None else start, default_end if end is None else end


def _plain(name: str, value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _cell(name: str, value: Any) -> str | Text:
    if value is None:
        if name == "cost":
            return "[yellow]unknown[/]"
        return "[dim](unattributed)[/]" if name == "tenant" else "[dim]-[/]"
    if isinstance(value, int):
        return f"{value:,}"
    # Recorded names (tenants, features, models, reasons) are data, never rich markup: a tenant
    # called "[bold]acme" is shown as written, and "[/]" does not crash the table.
    return Text(str(value))


def _print_rows(
    rows: Sequence[Mapping[str, Any]],
    fmt: str,
    columns: Sequence[str],
    title: str,
    empty: str = "no events in this window",
    header: Sequence[str] = (),
) -> None:
    """``rows`` as JSON, CSV or a table; a table with no rows is followed by ``empty``, which says
    what is missing (a window may hold events and still no unpriced ones, or nothing to re-rate).
    An empty CSV is its ``header`` line (the rows' keys; default: the table's ``columns``)."""
    from outlay.reporting import render_csv, render_json

    if fmt == "json":
        click.echo(render_json(list(rows)))
    elif fmt == "csv":
        click.echo(render_csv(rows, header or columns), nl=False)
    else:
        table = Table(title=title)
        for name in columns:
            # Numbers are never cut short or split over lines: amounts, shares and counts keep
            # every digit on one line (a narrow terminal wraps the lines instead); names fold.
            widest = max((len(_plain(name, row.get(name))) for row in rows), default=0)
            table.add_column(
                _HEADERS.get(name, name),
                justify="left" if name in _KEY_NAMES else "right",
                overflow="fold",
                min_width=None if name in _KEY_NAMES else widest,
            )
        for row in rows:
            table.add_row(*(_cell(name, row.get(name)) for name in columns))
        _print_table(table)
        if not rows:
            click.echo(empty)


_HEADERS = {"unpriced_events": "unpriced", "input_tokens": "input tokens", "ours_cost": "ours",
            "theirs_cost": "theirs", "drift_pct": "drift %", "ours_tokens": "our tokens",
            "theirs_tokens": "their tokens"}  # fmt: skip
_KEY_NAMES = frozenset(
    ("tenant", "day", "feature", "agent", "model", "provider", "operation", "environment", "origin", "reason",
     "status")
)  # fmt: skip


def _print_table(table: Table) -> None:
    # crop=False: on a narrow terminal lines wrap instead of amounts being cut off.
    Console().print(table, crop=False)


@click.group()
def report() -> None:
    """Cost reports from the ledger (per tenant, breakdowns, run trees, unattributed, unpriced)."""


def _reports(ledger: LedgerStore) -> Any:
    from outlay.reporting import Reports

    return Reports(ledger)


@report.command()
@_common
def tenants(
    *, start: str | None, end: str | None, environment: str | None, fmt: str, ledger_url: str | None
) -> None:
    """Spend per tenant, most expensive first."""
    start, end = _window(start, end)
    with _ledger(ledger_url) as ledger:
        rows = _reports(ledger).tenants(start, end, environment=environment)
    _print_rows(
        rows,
        fmt,
        ("tenant", *_TABLE_COLUMNS),
        f"Spend per tenant, {start} to {end}",
        header=_totals("tenant"),
    )


@report.command()
@click.option("--by", default="tenant", show_default=True, help="Comma-separated group-by keys.")
@click.option("--tenant", help="Only this tenant.")
@_common
def breakdown(
    *,
    by: str,
    tenant: str | None,
    start: str | None,
    end: str | None,
    environment: str | None,
    fmt: str,
    ledger_url: str | None,
) -> None:
    """Spend grouped by tenant, day, feature, agent, model, provider, operation, environment, origin."""
    start, end = _window(start, end)
    keys = [part.strip() for part in by.split(",")]
    with _ledger(ledger_url) as ledger:
        rows = _reports(ledger).breakdown(keys, start, end, environment=environment, tenant=tenant)
    title = f"Spend by {', '.join(keys)}, {start} to {end}"
    _print_rows(rows, fmt, (*keys, *_TABLE_COLUMNS), title, header=_totals(*keys))


@report.command()
@_common
def unattributed(
    *, start: str | None, end: str | None, environment: str | None, fmt: str, ledger_url: str | None
) -> None:
    """Spend with no tenant, by origin (the workflow, job or service that made it)."""
    start, end = _window(start, end)
    with _ledger(ledger_url) as ledger:
        rows = _reports(ledger).unattributed(start, end, environment=environment)
    _print_rows(
        rows,
        fmt,
        ("origin", *_TABLE_COLUMNS),
        f"Unattributed spend, {start} to {end}",
        "no unattributed events in this window",
        _totals("origin"),
    )


@report.command()
@click.option("--tenant", help="Only this tenant.")
@_common
def unpriced(
    *,
    tenant: str | None,
    start: str | None,
    end: str | None,
    environment: str | None,
    fmt: str,
    ledger_url: str | None,
) -> None:
    """Events with no known cost, by provider, model and reason (re-rate them once priced)."""
    start, end = _window(start, end)
    with _ledger(ledger_url) as ledger:
        rows = _reports(ledger).unpriced(start, end, environment=environment, tenant=tenant)
    from outlay.reporting import TOKEN_COLUMNS

    columns = ("provider", "model", "reason", "unpriced_events", "input_tokens")
    header = (*columns[:4], *TOKEN_COLUMNS)
    _print_rows(
        rows, fmt, columns, f"Unpriced events, {start} to {end}", "no unpriced events in this window", header
    )


@report.command()
@_common
def concentration(
    *, start: str | None, end: str | None, environment: str | None, fmt: str, ledger_url: str | None
) -> None:
    """How concentrated spend is across tenants: top 1/5/10 shares and each tenant vs the median."""
    start, end = _window(start, end)
    with _ledger(ledger_url) as ledger:
        result = _reports(ledger).concentration(start, end, environment=environment)
    if fmt == "json":
        from outlay.reporting import render_json

        click.echo(render_json(result))
        return
    columns = ("rank", "tenant", "events", "cost", "share", "vs_median", "unpriced_events")
    header = ("rank", "tenant", "events", "cost", "unpriced_events", "share", "vs_median")  # the rows' order
    _print_rows(result["rows"], fmt, columns, f"Spend concentration, {start} to {end}", header=header)
    if fmt == "table":

        def shown(value: str | None, missing: str = "-") -> str:
            return missing if value is None else value

        click.echo(
            f"tenants: {result['tenants']} ({result['priced_tenants']} priced)  total: {result['total_cost']}"
            f"  median: {shown(result['median_cost'])}  top 1/5/10 share: {shown(result['top_1_share'])}"
            f" / {shown(result['top_5_share'])} / {shown(result['top_10_share'])}"
            f"  unattributed: {shown(result['unattributed_cost'], 'unknown')}"  # None: events, none priced
        )


@report.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True)
@_ledger_option
def run(run_id: str, fmt: str, ledger_url: str | None) -> None:
    """The cost tree of a run: each run's own cost and the cost rolled up from its children."""
    with _ledger(ledger_url) as ledger:
        tree = _reports(ledger).run_tree(run_id)
    if fmt == "json":
        from outlay.reporting import render_json

        click.echo(render_json(tree))
        return
    root = Tree(_run_label(tree))
    stack = [(root, tree)]
    while stack:
        branch, node = stack.pop()
        for child in node["children"]:
            stack.append((branch.add(_run_label(child)), child))
    Console().print(root)


_RECONCILE_COLUMNS = ("day", "model", "status", "ours_cost", "theirs_cost", "drift", "drift_pct",
                      "ours_tokens", "theirs_tokens")  # fmt: skip


@report.command()
@click.option("--provider", required=True, help="Whose export it is: openai, anthropic, ...")
@click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False), help="The export file.")
@click.option("--from", "start", metavar="DATE", help="First UTC day; default the export's first.")
@click.option("--to", "end", metavar="DATE", help="Day after the last; default after the export's last.")
@click.option("--columns", metavar="MAP", help="Map another CSV: date=Day,model=Model,cost=Spend[,tokens=T].")
@click.option("--tolerance", default="0.01", show_default=True, help="USD within which amounts match.")
@click.option("--environment", help="Only this environment (default: all; the provider bills them all).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="table", show_default=True)
@_ledger_option
def reconcile(
    *,
    provider: str,
    csv_path: str,
    start: str | None,
    end: str | None,
    columns: str | None,
    tolerance: str,
    environment: str | None,
    fmt: str,
    ledger_url: str | None,
) -> None:
    """Our cost per model and UTC day against a provider's usage or cost export (drift = ours - theirs)."""
    from outlay.finance import reconcile as compare

    try:
        data = Path(csv_path).read_bytes()
    except OSError as exc:
        raise click.UsageError(f"cannot read {csv_path}: {exc.strerror}") from None
    with _ledger(ledger_url) as ledger:
        result = compare(ledger, provider, data, start=start, end=end, columns=columns,
                         tolerance=tolerance, environment=environment).to_json()  # fmt: skip
    if fmt == "json":
        from outlay.reporting import render_json

        click.echo(render_json(result))
        return
    rows = [{name: row[name] for name in _RECONCILE_COLUMNS} for row in result["rows"]]
    title = f"{result['provider']} ({result['shape']}), {result['from']} to {result['to']}"
    _print_rows(rows, fmt, _RECONCILE_COLUMNS, f"Reconciliation: {title}")
    if fmt == "table":
        counts = ", ".join(f"{n} {status}" for status, n in result["counts"].items() if n)
        theirs, drift, pct = (result[k] or "-" for k in ("theirs_cost", "drift", "drift_pct"))
        ours = result["ours_cost"] or "unknown"  # (our events, none of them priced)
        click.echo(
            f"ours {ours}  theirs {theirs}  drift {drift} ({pct}%)  rows: {counts or 'none'};"
            f" {result['unpriced_events']} unpriced events;"
            f" {result['skipped_lines']} export lines outside the window"
        )


def _run_label(node: Mapping[str, Any]) -> Text:
    # Text, not markup: run ids and agent names are recorded data ("[/]" is a name, not a tag).
    label = Text(node["run_id"])
    if node["agent"]:
        label.append(" ").append(node["agent"], style="cyan")
    if node["inferred"]:
        label.append(" (no events of its own)", style="dim")
    elif node["several_tenants"]:
        label.append(" (events of several tenants)", style="yellow")
    own = node["cost"] if node["cost"] is not None else "unknown"
    total = node["total_cost"] if node["total_cost"] is not None else "unknown"
    unpriced_note = f", {node['total_unpriced_events']} unpriced" if node["total_unpriced_events"] else ""
    label.append(f"  own {own}  total ").append(total, style="bold")
    return label.append(f" ({node['total_events']} events{unpriced_note})")


@click.command()
@click.option("--from", "start", metavar="DATE", required=True, help="Start (inclusive).")
@click.option("--to", "end", metavar="DATE", required=True, help="End (exclusive).")
@click.option("--prices", metavar="FILE", help="Price overrides file (default: $OUTLAY_PRICES).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="table", show_default=True)
@_ledger_option
def rerate(*, start: str, end: str, prices: str | None, fmt: str, ledger_url: str | None) -> None:
    """Re-rate a window with the current prices; appends adjustments and prints the delta per tenant."""
    from outlay.ledger import rerate as rerate_window

    rate = _catalog_rate(prices)
    with _ledger(ledger_url) as ledger:
        result = rerate_window(ledger, rate, start, end)
    rows = [
        {"tenant": tenant, "delta": money_str(delta)}
        for tenant, delta in sorted(
            result.by_tenant.items(), key=lambda item: (item[0] is None, item[0] or "")
        )
    ]
    _print_rows(
        rows, fmt, ("tenant", "delta"), f"Re-rating {start} to {end}", "no cost changed: nothing to adjust"
    )
    # The summary: after the table, or on stderr beside JSON/CSV (stdout stays the rows alone).
    click.echo(
        f"examined {result.examined:,}, adjusted {result.adjusted:,}"
        f" ({result.newly_priced:,} newly priced), still unpriced {result.still_unpriced:,},"
        f" skipped {result.skipped:,}; total delta {money_str(result.delta)}",
        err=fmt != "table",
    )


def _catalog_rate(prices: str | None) -> RateFunction:
    from outlay.ledger import catalog_rater

    try:
        from outlay.pricing import PriceCatalog, default_catalog

        catalog = PriceCatalog.load(prices) if prices else default_catalog()
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    return catalog_rater(catalog)
