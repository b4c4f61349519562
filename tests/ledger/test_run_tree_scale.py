"""Run trees at scale: deeper than Python's recursion limit, wider than SQLite's variable limit."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from outlay._money import money_str
from outlay.cli import main
from outlay.ledger import LedgerStore, SQLiteLedger
from outlay.ledger import _sqlite as sqlite_module
from outlay.reporting import Reports, render_json
from outlay.reporting._render import json_bytes

from .conftest import D, event


def _chain(depth: int) -> list:  # type: ignore[type-arg]
    """``depth`` runs, each the parent of the next (a re-planning agent spawning a sub-run)."""
    runs = [event(run_id="r0", root_run_id="r0", cost=D("0.001"))]
    for i in range(1, depth):
        runs.append(event(run_id=f"r{i}", parent_run_id=f"r{i - 1}", root_run_id="r0", cost=D("0.001")))
    return runs


def test_run_tree_deeper_than_the_recursion_limit(ledger: LedgerStore) -> None:
    """The tree was built recursively (two frames per level): a chain of ~500 runs raised
    RecursionError in `outlay report run`, the API and every caller of `run_tree`."""
    depth = sys.getrecursionlimit() + 100
    ledger.write(_chain(depth))
    tree = Reports(ledger).run_tree("r0")
    assert (tree["total_events"], tree["total_cost"]) == (depth, money_str(D("0.001") * depth))
    node, levels = tree, 1
    while node["children"]:
        (node,) = node["children"]
        levels += 1
    assert (levels, node["run_id"], node["total_events"]) == (depth, f"r{depth - 1}", 1)
    text = render_json(tree)  # compact past orjson's 255 levels, but complete
    assert text.startswith('{"run_id":"r0"') and text.count('"run_id"') == depth


def test_run_tree_json_past_orjsons_nesting_limit(ledger: LedgerStore) -> None:
    """orjson refuses more than 255 levels of nesting: `outlay report run --format json` of a chain
    of 128 runs failed with "TypeError: Recursion limit reached"."""
    ledger.write(_chain(200))
    tree = Reports(ledger).run_tree("r0")
    assert json.loads(render_json(tree)) == tree
    assert json.loads(json_bytes(tree)) == tree
    assert json.loads(render_json({"a": [1, "x", None, True, {}, []]})) == {"a": [1, "x", None, True, {}, []]}
    with pytest.raises(TypeError):  # anything else orjson refuses is still refused
        json_bytes({"a": object()})


def test_report_run_cli_on_a_deep_tree(tmp_path: Path) -> None:
    path = tmp_path / "outlay.db"
    with SQLiteLedger(path) as ledger:
        ledger.write(_chain(300))
    result = CliRunner().invoke(main, ["report", "run", "r0", "--ledger", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_events"] == 300
    table = CliRunner().invoke(main, ["report", "run", "r250", "--ledger", str(path)])
    assert table.exit_code == 0, table.output
    assert "r251" in table.output


def test_run_with_more_children_than_sqlite_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run tree asks for the runs under a whole frontier at once: with 100,000 children under
    one run that was one statement with 100,000 variables, over SQLite's default limit of 32,766
    ("too many SQL variables"). Shown small: a limit of 100 variables and 150 children."""
    monkeypatch.setattr(sqlite_module, "_CHUNK", 40)
    with SQLiteLedger(tmp_path / "outlay.db") as ledger:
        ledger.write(
            [event(run_id="root", root_run_id="root")]
            + [event(run_id=f"c{i}", parent_run_id="root", root_run_id="root") for i in range(150)]
            + [event(run_id=f"g{i}", parent_run_id=f"c{i}") for i in range(150)]  # no root: by parent only
        )
        ledger._connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)
        tree = Reports(ledger).run_tree("root")
        assert (tree["total_events"], len(tree["children"])) == (301, 150)
        assert all(len(child["children"]) == 1 for child in tree["children"])
        both = ledger.runs(run_ids=["c1", "c2"], parent_run_ids=["root", "c1"], root_run_id="root")
        assert len(both) == len({r.run_id for r in both}) == 152  # each run once
