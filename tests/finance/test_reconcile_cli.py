"""``outlay report reconcile`` through the real command group, on a SQLite ledger."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from outlay.cli import main
from outlay.ledger import SQLiteLedger

from .conftest import MARCH, D, event

EXPORT = (
    "start_time,end_time,amount_value,amount_currency,line_item,project_id\n"
    '1773100800,1773187200,0.2,usd,"gpt-4o-2024-08-06, input",proj_1\n'
    '1773187200,1773273600,0.0000000000000000001,usd,"gpt-4o-2024-08-06, input",proj_1\n'
    '1773187200,1773273600,0.5,usd,"o3-2025-04-16, output",proj_1\n'
)


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    path = tmp_path / "outlay.db"
    with SQLiteLedger(path) as ledger:
        ledger.write([
            event(model="gpt-4o-2024-08-06"),
            event(model="gpt-4o-2024-08-06", tenant_id="globex", cost=D("0.1")),
            event(time=MARCH + timedelta(days=1), model="gpt-4o", cost=D("0.0000000000000000001")),
        ])  # fmt: skip
    return str(path)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", "reconcile", *args])
    return result.exit_code, result.output


@pytest.fixture
def export(tmp_path: Path) -> str:
    path = tmp_path / "costs.csv"
    path.write_text(EXPORT)
    return str(path)


def test_table_shows_each_row_and_the_totals(ledger_path: str, export: str) -> None:
    code, out = run("--provider", "openai", "--csv", export, "--ledger", ledger_path)
    assert code == 0, out
    assert "Reconciliation: openai (openai-costs), 2026-03-10 to 2026-03-12" in out
    assert "theirs_only" in out and "o3" in out and "match" in out
    assert "ours 0.2000000000000000001  theirs 0.7000000000000000001  drift -0.5 (-71.43%)" in out
    assert "2 match, 1 theirs_only" in out


def test_json_is_exact(ledger_path: str, export: str) -> None:
    code, out = run("--provider", "openai", "--csv", export, "--ledger", ledger_path, "--format", "json",
                    "--from", "2026-03-11", "--to", "2026-03-12")  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    assert [
        (r["day"], r["model"], r["ours_cost"], r["theirs_cost"], r["status"]) for r in result["rows"]
    ] == [
        ("2026-03-11", "gpt-4o", "0.0000000000000000001", "0.0000000000000000001", "match"),
        ("2026-03-11", "o3", None, "0.5", "theirs_only"),
    ]
    assert result["skipped_lines"] == 1


def test_csv_format_and_a_column_map(ledger_path: str, tmp_path: Path) -> None:
    mapped = tmp_path / "mine.csv"
    mapped.write_text("Day,Model,Spend\n2026-03-10,gpt-4o,0.2\n")
    code, out = run("--provider", "openai", "--csv", str(mapped), "--ledger", ledger_path, "--format", "csv",
                    "--columns", "date=Day,model=Model,cost=Spend")  # fmt: skip
    assert code == 0, out
    assert out.splitlines() == [
        "day,model,status,ours_cost,theirs_cost,drift,drift_pct,ours_tokens,theirs_tokens",
        "2026-03-10,gpt-4o,match,0.2,0.2,0,0.00,3000,",
    ]


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (
            EXPORT.replace("0.0000000000000000001", "1e"),
            ["--provider", "openai"],
            "line 3, column 'amount_value'",
        ),
        (EXPORT, ["--provider", "anthropic"], "this is the openai-costs export"),
        (
            EXPORT,
            ["--provider", "openai", "--from", "2026-03-12", "--to", "2026-03-10"],
            "must be after from",
        ),
        (EXPORT, ["--provider", "openai", "--tolerance", "-0.01"], "tolerance"),
        (EXPORT, ["--provider", "open ai"], "provider"),
    ],
)
def test_bad_input_is_a_usage_error(
    ledger_path: str, tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code, out = run(*args, "--csv", str(bad), "--ledger", ledger_path)
    assert code == 2 and message in out, out
    assert "Traceback" not in out


def test_missing_file_is_a_usage_error(ledger_path: str, tmp_path: Path) -> None:
    code, out = run("--provider", "openai", "--csv", str(tmp_path / "nope.csv"), "--ledger", ledger_path)
    assert code == 2 and "cannot read" in out
