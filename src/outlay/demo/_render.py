"""The report as a CFO reads it: rich tables, the costliest run as a tree.

Amounts are exact in the data (``--format json``); here they are shown rounded to a tenth of a cent
for reading, and an unknown cost is shown as ``unknown``, never as ``$0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

__all__ = ["money", "render_report"]

_DISPLAY: Final = Context(prec=34, rounding=ROUND_HALF_EVEN)
_UNATTRIBUTED: Final = "(unattributed)"
_NONE: Final = "(none)"


def money(amount: str | None, places: int = 3) -> str:
    """``$1,234.568`` from an exact decimal string; ``unknown`` when there is no known cost."""
    if amount is None:
        return "unknown"
    value = Decimal(amount).quantize(Decimal(1).scaleb(-places), context=_DISPLAY)
    return f"${value:,}"


def _pct(share: str | None) -> str:
    if share is None:
        return "—"
    return f"{Decimal(share) * 100:.1f}%"


def _times(ratio: str | None) -> str:
    return "—" if ratio is None else f"{Decimal(ratio):.1f}x"


def _table(title: str, columns: Sequence[str], numeric: Sequence[str] = ()) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left", overflow="fold")
    return table


def _tenants(report: dict[str, Any]) -> Table:
    table = _table("Cost per tenant", ("tenant", "plan", "events", "cost", "share", "vs median"),
                   ("events", "cost", "share", "vs median"))  # fmt: skip
    for row in report["tenants"]:
        unattributed = row["tenant"] is None
        table.add_row(
            row["tenant"] or _UNATTRIBUTED,
            row["plan"] or "—",
            f"{row['events']:,}",
            # A tenant with unpriced events costs more than the priced part shown: say so.
            money(row["cost"]) + ("*" if row["unpriced_events"] else ""),
            _pct(row["share"]),
            _times(row["vs_median"]),
            style="yellow"
            if unattributed
            else ("bold red" if row["vs_median"] and Decimal(row["vs_median"]) >= 10 else None),
        )
    partial = any(row["unpriced_events"] for row in report["tenants"])
    if partial:
        table.caption = "* and unpriced events, whose cost is unknown (not $0)"
        table.caption_justify = "left"
    totals = report["totals"]
    table.add_section()
    total = money(totals["cost"]) + ("*" if partial else "")
    table.add_row("total", "", f"{totals['events']:,}", total, "100.0%", "", style="bold")
    return table


def _drivers(report: dict[str, Any]) -> list[Table]:
    tables = []
    for key, rows in report["drivers"].items():
        title = f"Top cost drivers by {key}" + (" (tools and custom units too)" if key == "model" else "")
        table = _table(title, (key, "events", "cost", "share"), ("events", "cost", "share"))
        for row in rows:
            table.add_row(row[key] or _NONE, f"{row['events']:,}", money(row["cost"]), _pct(row["share"]))
        tables.append(table)
    return tables


def _events(count: int) -> str:
    return f"{count:,} event{'' if count == 1 else 's'}"


def _node_label(node: dict[str, Any]) -> Text:
    label = Text()
    label.append(node["agent"] or node["run_id"], style="bold")
    if node.get("tenant"):
        label.append(f" · {node['tenant']}", style="cyan")
    label.append(f"  own {money(node['cost'], 4)} ({_events(node['events'])})")
    if node["children"]:
        label.append(
            f"  total {money(node['total_cost'], 4)} ({_events(node['total_events'])})", style="green"
        )
    if node["unpriced_events"]:
        label.append(f"  {node['unpriced_events']} unpriced", style="yellow")
    return label


def _add(tree: Tree, node: dict[str, Any]) -> None:
    for child in node["children"]:
        _add(tree.add(_node_label(child)), child)


def _run_tree(report: dict[str, Any]) -> Tree | Text:
    root = report["costliest_run"]
    if root is None:
        return Text("No runs recorded.")
    tree = Tree(_node_label(root), guide_style="dim")
    _add(tree, root)
    return tree


def _unattributed(report: dict[str, Any]) -> Table:
    table = _table("Unattributed spend by origin (no tenant)", ("origin", "events", "cost", "share"),
                   ("events", "cost", "share"))  # fmt: skip
    for row in report["unattributed"]:
        table.add_row(row["origin"] or _NONE, f"{row['events']:,}", money(row["cost"]), _pct(row["share"]))
    return table


def _unpriced(report: dict[str, Any]) -> Table:
    tokens = "tokens in / out"
    table = _table("Unpriced spend (cost unknown: not counted as $0, re-rate once priced)",
                   ("provider/model", "events", tokens, "reason"), ("events", tokens))  # fmt: skip
    for row in report["unpriced"]:
        table.add_row(f"{row['provider'] or _NONE}/{row['model'] or _NONE}", f"{row['unpriced_events']:,}",
                      f"{row['input_tokens']:,} / {row['output_tokens']:,}", row["reason"] or "")  # fmt: skip
    return table


def _decisions(report: dict[str, Any]) -> Table:
    table = _table("Budget decisions", ("kind", "tenant", "agent", "count", "last message"), ("count",))
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in report["decisions"]:
        grouped.setdefault((row["kind"], row["tenant"] or _NONE, row["agent"] or _NONE), []).append(row)
    for (kind, tenant, agent), rows in grouped.items():
        table.add_row(kind, tenant, agent, str(len(rows)), rows[-1]["message"] or "")
    return table


def _headline(report: dict[str, Any]) -> Panel:
    c = report["concentration"]
    totals = report["totals"]
    config = report["config"]
    unattributed = next((r for r in report["tenants"] if r["tenant"] is None), None)
    lines = [
        f"[bold]{money(totals['cost'], 2)}[/] spent on {totals['events']:,} events "
        f"from {report['window']['from']} to {report['window']['to']} (seed {config['seed']}, "
        f"{config['tenants']} tenants, {config['runs']} customer runs).",
        f"[bold red]{c['top_tenant']}[/] alone is {_pct(c['top_1_share'])} of tenant spend: "
        f"{_times(c['max_vs_median'])} the median tenant ({money(c['median_cost'], 2)}); "
        f"top 5 tenants: {_pct(c['top_5_share'])}.",
    ]
    if unattributed is not None:
        lines.append(
            f"[yellow]{money(unattributed['cost'], 2)}[/] ({_pct(unattributed['share'])}) "
            "was spent for no tenant."
        )
    unpriced = sum(r["unpriced_events"] for r in report["unpriced"])
    if unpriced:
        lines.append(f"[yellow]{unpriced}[/] events have no known price (not counted as $0).")
    rec = report["reconciliation"]
    mark = "[green]exact[/]" if rec["exact"] else "[bold red]MISMATCH[/]"
    lines.append(
        f"Reconciliation {mark}: ledger rollups ${rec['ledger_rollups']} = ledger events "
        f"${rec['ledger_events']} = recorded ${rec['recorded']}."
    )
    return Panel("\n".join(lines), title="outlay demo — one month of a multi-tenant agent platform",
                 title_align="left")  # fmt: skip


def render_report(report: dict[str, Any], console: Console) -> None:
    """Print ``report`` (from :func:`outlay.demo.build_report`) as tables and a tree."""
    console.print(_headline(report))
    console.print(_tenants(report))
    for table in _drivers(report):
        console.print(table)
    console.print(Group(Text("The costliest run (own cost, and rolled up with its sub-agents)", style="bold"),
                        _run_tree(report)))  # fmt: skip
    console.print(_unattributed(report))
    console.print(_unpriced(report))
    if report["decisions"]:
        console.print(_decisions(report))
