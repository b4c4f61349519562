"""``outlay demo`` end to end: the CLI on a fresh SQLite home, then the ledger read back independently."""

from __future__ import annotations

import json
import shlex
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from outlay import InvalidInput, budgets
from outlay._money import money_sum
from outlay.cli import main
from outlay.demo import END, START, DemoConfig, run_demo
from outlay.demo import _jobs as jobs
from outlay.ledger import SQLiteLedger
from outlay.reporting import Reports

FAST = ["--tenants", "6", "--runs", "24"]


def _invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["demo", "--home", str(home), *FAST, *args])


def _demo(home: Path, *args: str) -> Result:
    result = _invoke(home, *args)
    assert result.exit_code == 0, result.output
    return result


def _json(home: Path, *args: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(_demo(home, "--format", "json", *args).stdout)
    return report


def _tenant_rows(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["tenant"], r["plan"], r["events"], r["cost"]) for r in report["tenants"]]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    home = tmp_path_factory.mktemp("demo")
    return home, _json(home, "--seed", "3")


# -- what the CFO sees -----------------------------------------------------------------------------


def test_table_output_has_every_section(tmp_path: Path) -> None:
    out = _demo(tmp_path, "--seed", "3").stdout
    for heading in (
        "Cost per tenant",
        "Top cost drivers by feature",
        "Top cost drivers by agent",
        "Top cost drivers by model",
        "The costliest run",
        "Unattributed spend by origin",
        "Unpriced spend",
        "Budget decisions",
    ):
        assert heading in out
    assert "(unattributed)" in out
    umbrella = next(line for line in out.splitlines() if "umbrella" in line)
    assert "*" in umbrella  # its cost is more than the priced part shown, not all of it
    assert "* and unpriced events, whose cost is unknown" in out
    assert "vllm/legal-ft-v2" in out
    assert "Reconciliation exact" in out
    # the run tree is drawn: the orchestrator with sub-agents under it
    assert "deep-research-orchestrator" in out
    assert "└── " in out
    assert "├── researcher" in out
    assert (tmp_path / "outlay.db").exists()


def test_json_report_is_exact_data(seeded: tuple[Path, dict[str, Any]]) -> None:
    _, report = seeded
    assert report["window"] == {"from": "2026-02-01", "to": "2026-03-01"}
    assert report["config"] == {"seed": 3, "tenants": 6, "runs": 24, "power_ratio": 40}
    plans = {r["plan"] for r in report["tenants"] if r["tenant"] is not None}
    assert plans == {"free", "pro", "enterprise"}
    assert len([r for r in report["tenants"] if r["tenant"] is not None]) == 6
    # costs are decimal strings, never floats
    assert all(isinstance(r["cost"], str) for r in report["tenants"])
    Decimal(report["totals"]["cost"])
    for key in ("feature", "agent", "model"):
        assert report["drivers"][key], key
    models = {r["model"] for r in report["drivers"]["model"]}
    assert "claude-sonnet-4-5-20250929" in models


def test_power_user_costs_about_40x_the_median(seeded: tuple[Path, dict[str, Any]]) -> None:
    home, report = seeded
    concentration = report["concentration"]
    assert concentration["top_tenant"] == "globex"
    assert 30 <= Decimal(concentration["max_vs_median"]) <= 50
    # the same, recomputed from the ledger by the reports API rather than taken from the demo
    with SQLiteLedger(str(home / "outlay.db")) as ledger:
        rows = Reports(ledger).concentration(START, END)["rows"]
    costs = sorted(Decimal(r["cost"]) for r in rows)
    middle = len(costs) // 2
    median = costs[middle] if len(costs) % 2 else (costs[middle - 1] + costs[middle]) / 2
    assert 30 <= costs[-1] / median <= 50


def test_unattributed_spend_is_shown_by_origin(seeded: tuple[Path, dict[str, Any]]) -> None:
    _, report = seeded
    origins = {r["origin"]: r for r in report["unattributed"]}
    assert set(origins) == {"eval-suite", "reindex-embeddings"}
    assert all(Decimal(r["cost"]) > 0 for r in origins.values())
    unattributed = next(r for r in report["tenants"] if r["tenant"] is None)
    assert Decimal(unattributed["cost"]) == sum(Decimal(r["cost"]) for r in origins.values())


def test_unpriced_model_is_reported_not_zero(seeded: tuple[Path, dict[str, Any]]) -> None:
    home, report = seeded
    [row] = report["unpriced"]
    assert (row["provider"], row["model"]) == ("vllm", "legal-ft-v2")
    assert row["unpriced_events"] > 0
    assert "no price for vllm/legal-ft-v2" in row["reason"]
    with SQLiteLedger(str(home / "outlay.db")) as ledger:
        entries = [e for e in ledger.entries(START, END) if e.event.model == "legal-ft-v2"]
    assert entries
    assert all(not e.priced and e.cost is None for e in entries)
    umbrella = next(r for r in report["tenants"] if r["tenant"] == "umbrella")
    assert umbrella["unpriced_events"] == row["unpriced_events"]


def test_ledger_total_equals_the_sum_of_event_costs(seeded: tuple[Path, dict[str, Any]]) -> None:
    home, report = seeded
    with SQLiteLedger(str(home / "outlay.db")) as ledger:
        entries = list(ledger.entries(START, END))
        by_tenant = Reports(ledger).tenants(START, END)
    events_sum = money_sum(e.cost for e in entries if e.cost is not None)
    rollups_sum = money_sum(Decimal(r["cost"]) for r in by_tenant if r["cost"] is not None)
    assert events_sum == rollups_sum == Decimal(report["totals"]["cost"])
    assert len(entries) == report["totals"]["events"] == report["simulation"]["events"]
    assert report["reconciliation"]["exact"] is True
    assert report["reconciliation"]["recorded"] == report["totals"]["cost"]


def test_costliest_run_tree_rolls_up(seeded: tuple[Path, dict[str, Any]]) -> None:
    home, report = seeded
    tree = report["costliest_run"]

    def own(node: dict[str, Any]) -> Decimal:
        return Decimal(node["cost"] or 0) + sum((own(c) for c in node["children"]), Decimal(0))

    assert tree["agent"] == "deep-research-orchestrator"
    assert tree["children"]
    assert Decimal(tree["total_cost"]) == own(tree)
    # no other root run costs more
    with SQLiteLedger(str(home / "outlay.db")) as ledger:
        roots = {e.event.root_run_id for e in ledger.entries(START, END)}
        totals = [
            money_sum(r.cost for r in ledger.runs(root_run_id=root) if r.cost is not None)
            for root in roots
            if root is not None
        ]
    assert max(totals) == Decimal(tree["total_cost"])


def test_queue_hop_keeps_the_tenant_and_the_run_tree(seeded: tuple[Path, dict[str, Any]]) -> None:
    home, _ = seeded
    with SQLiteLedger(str(home / "outlay.db")) as ledger:
        events = [e.event for e in ledger.entries(START, END)]
    schedulers = {e.run_id: e for e in events if e.agent == "digest-scheduler"}
    writers = [e for e in events if e.agent == "digest-writer"]
    assert writers
    for event in writers:
        assert event.tenant_id is not None
        assert event.feature == "weekly-digest"
        parent = schedulers[event.parent_run_id]  # the worker's run hangs under the scheduler's
        assert parent.tenant_id == event.tenant_id
        assert event.root_run_id == parent.root_run_id


def test_budget_stops_the_runaway_run(seeded: tuple[Path, dict[str, Any]]) -> None:
    _, report = seeded
    kinds = {d["kind"] for d in report["decisions"]}
    assert {"soft_exceeded", "downgraded", "denied"} <= kinds
    denied = [d for d in report["decisions"] if d["kind"] == "denied"]
    assert any(d["agent"] == "replanner" and d["tenant"] == "initech" for d in denied)
    assert all("$0.25 budget" in d["message"] for d in denied)
    assert report["simulation"]["runaway_calls_before_stop"] > 1
    # decisions happened inside the simulated month, not at wall-clock time
    assert all(d["time"].startswith("2026-02-") for d in report["decisions"])


# -- determinism and the home directory -------------------------------------------------------------


def test_same_seed_same_totals_to_the_last_digit(tmp_path: Path, seeded: tuple[Path, dict[str, Any]]) -> None:
    _, first = seeded
    again = _json(tmp_path, "--seed", "3")
    assert again["totals"] == first["totals"]
    assert _tenant_rows(again) == _tenant_rows(first)
    assert again["drivers"] == first["drivers"]
    assert again["unpriced"] == first["unpriced"]
    assert [(d["time"], d["kind"], d["message"].split(":")[0]) for d in again["decisions"]] == [
        (d["time"], d["kind"], d["message"].split(":")[0]) for d in first["decisions"]
    ]
    other = _json(tmp_path, "--seed", "4")
    assert other["totals"]["cost"] != first["totals"]["cost"]


def test_durable_mode_records_the_same_numbers(tmp_path: Path, seeded: tuple[Path, dict[str, Any]]) -> None:
    _, batching = seeded
    durable = _json(tmp_path, "--seed", "3", "--mode", "durable")
    assert durable["totals"] == batching["totals"]
    assert _tenant_rows(durable) == _tenant_rows(batching)


def test_each_run_starts_fresh_unless_keep(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    first = _json(tmp_path, "--seed", "5")
    second = _json(tmp_path, "--seed", "5")
    assert second["totals"] == first["totals"]  # wiped: not doubled
    kept = _json(tmp_path, "--seed", "5", "--keep")
    assert kept["totals"]["events"] == 2 * first["totals"]["events"]
    assert Decimal(kept["totals"]["cost"]) == 2 * Decimal(first["totals"]["cost"])
    assert kept["reconciliation"]["exact"] is True
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only outlay's own files are removed


# -- bad input and failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenants", "5"], "--tenants"),
        (["--tenants", "8", "--runs", "7"], "at least one run per tenant"),
        (["--format", "csv"], "--format"),
        (["--mode", "eventual"], "--mode"),
        (["--seed", "99999999999999999999", "--format", "json"], "--seed"),  # not a JSON traceback
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["demo", "--home", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "outlay.db").exists()


def test_a_home_that_cannot_be_made_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(main, ["demo", "--home", str(blocker / "below")])
    assert result.exit_code == 2 and "--home" in result.output and "Traceback" not in result.output


def test_the_explore_command_it_prints_runs_as_pasted(tmp_path: Path) -> None:
    """The suggested command names the ledger as a shell would read it: a home with a space or
    brackets is quoted, and "[dir]" is not taken for rich markup and dropped from the path."""
    home = tmp_path / "my [dir]"
    result = _demo(home)
    squeezed = "".join(result.stderr.split())  # the timing line may wrap anywhere
    assert "".join(f"ledger: {home / 'outlay.db'}".split()) in squeezed
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Explore it: ")]
    words = shlex.split(line.removeprefix("Explore it: "))
    assert words[0] == "outlay" and words[words.index("--ledger") + 1] == str(home / "outlay.db")
    explored = CliRunner().invoke(main, [*words[1:], "--format", "json"])
    assert explored.exit_code == 0, explored.output
    assert json.loads(explored.stdout)


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    result = _invoke(target)
    assert result.exit_code == 2
    assert target.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"tenants": 5}, "tenants"), ({"runs": 0}, "runs"), ({"power_ratio": True}, "power_ratio")],
)
def test_config_names_the_bad_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        DemoConfig(**kwargs)
    assert info.value.field == field


def test_a_failing_queue_worker_fails_the_demo_and_restores_budgets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = budgets.get_engine()

    def broken(platform: object, message: object) -> None:
        raise RuntimeError("worker crashed")

    monkeypatch.setattr(jobs, "_write_digest", broken)
    with pytest.raises(RuntimeError, match="worker crashed"):
        run_demo(tmp_path, DemoConfig(seed=1, tenants=6, runs=6))
    assert budgets.get_engine() is engine  # the demo's private engine does not leak


def test_default_run_power_user_and_reconciliation(tmp_path: Path) -> None:
    """The README's numbers: the default settings, through the Python API."""
    result = run_demo(tmp_path)
    report = result.report
    assert report["config"] == {"seed": 7, "tenants": 8, "runs": 160, "power_ratio": 40}
    assert 30 <= Decimal(report["concentration"]["max_vs_median"]) <= 50
    assert report["reconciliation"]["exact"] is True
    assert Decimal(report["totals"]["cost"]) == result.simulation.recorded_cost
    assert result.simulation.events == report["totals"]["events"]
