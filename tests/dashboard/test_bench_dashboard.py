"""bench/bench_dashboard.py keeps working: its quick mode times every page, and its ledger has the
shape it claims (decisions, spikes, unpriced and unattributed spend) and is reused, not rebuilt."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest

from outlay.events import CostEvent
from outlay.ledger import SQLiteLedger

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_dashboard.py"
PAGES = (
    "finance, month",
    "finance, 30 days",
    "tenant list (admin)",
    "tenant tenant-000, month",
    "tenant tenant-000, 30 days",
    "tenant tenant-001, month",
    "invoice CSV, month",
    "entries CSV, month",
)


def _bench() -> ModuleType:
    """The bench script as a module (registered first: its dataclasses look themselves up there)."""
    name = "bench_dashboard"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_quick_mode_times_every_page_and_removes_its_ledger(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    _bench().main(["--quick", "--repeats", "2", "--by-call"])
    out = capsys.readouterr().out
    assert re.search(r"ledger .*: 20,0\d\d events", out)
    rows = {}
    for line in out.splitlines():
        match = re.match(r"(\S.+?)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", line)
        if match:
            rows[match[1]] = match.groups()[1:]
    assert tuple(rows) == PAGES
    for label, (size, cold, p50, top, warm) in rows.items():
        assert int(size.replace(",", "")) > 0 and float(cold) > 0 and float(top) >= float(p50) > 0
        assert warm == ("1" if label.startswith("entries") else "2")
    assert re.search(r"^load average [\d.]+ \(1 min\), \d+ cores", out, re.MULTILINE)
    # --by-call: under each page, what its API calls took (the finance page asks for spikes)
    assert re.search(r"^finance, month .*\n    .*/api/v1/finance/spikes \d", out, re.MULTILINE)
    assert not list(tmp_path.iterdir())  # the scratch ledger is gone with the run


def test_the_ledger_has_decisions_spikes_unpriced_and_unattributed_spend() -> None:
    bench = _bench()
    events: list[CostEvent] = bench.make_events(20_000, seed=1)
    decisions = [e for e in events if e.operation.startswith("decision:")]
    assert {e.tenant_id for e in decisions} == {bench.tenant_name(r) for r in bench.BURSTY}
    assert any(e.tenant_id == "tenant-000" and e.time.month == 3 for e in decisions)
    costs = [e for e in events if not e.operation.startswith("decision:")]
    assert len(costs) == 20_000
    assert 0 < sum(not e.priced for e in costs) < 400  # a few unpriced, with their reason, cost unknown
    assert all(e.cost is None and e.unpriced_reason for e in costs if not e.priced)
    assert 0 < sum(e.tenant_id is None for e in costs) < 1000
    sizes = Counter(e.tenant_id for e in costs if e.tenant_id)
    assert len(sizes) == 200 and sizes.most_common(1)[0][0] == "tenant-000"
    # tenant-000's runaway day in March costs over 3x its median day: a spike
    days: dict[str, Decimal] = {}
    for e in costs:
        if e.tenant_id == "tenant-000" and e.cost is not None:
            day = e.time.date().isoformat()
            days[day] = days.get(day, Decimal(0)) + e.cost
    assert days["2026-03-01"] > 3 * sorted(days.values())[len(days) // 2]


def test_a_ledger_is_reused_then_topped_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench()
    path = tmp_path / "ledger.db"
    first = bench.build(path, 1000)
    assert first == 1000 + 8 * 2  # cost events and the decisions of the runaway tenants
    assert bench.build(path, 1000) == first  # reused as it is
    assert bench.build(path, 500) == first  # a smaller run reads the bigger ledger
    capsys.readouterr()
    # Chunks of 1000: the first is already there, only the second is built.
    monkeypatch.setattr(bench, "CHUNK", 1000)
    assert bench.build(path, 1500) == first + 500 + 16
    assert capsys.readouterr().out.count("built") == 1


def test_pages_picks_what_is_timed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _bench().main(["--ledger", str(tmp_path / "l.db"), "--events", "2000", "--pages", "invoice,tenants"])
    out = capsys.readouterr().out
    table = out.split("warm n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split("  ")[0] for line in table] == ["tenant list (admin)", "invoice CSV, month"]
    assert (tmp_path / "l.db").exists()  # a ledger given with --ledger is kept for the next run


def test_a_foreign_ledger_is_refused_not_mixed_in(tmp_path: Path) -> None:
    bench = _bench()
    path = tmp_path / "other.db"
    ledger = SQLiteLedger(path)
    ledger.write(bench.make_events(1000, seed=7)[:10])
    ledger.close()
    with pytest.raises(SystemExit, match="holds 10 events, not a build of this benchmark"):
        bench.build(path, 1000)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--events", "10"], "--events must be >= 1000"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--entries-repeats", "-1"], "--entries-repeats >= 0"),
        (["--events", "many"], "invalid int value"),
        (["--pages", "finance,bogus"], "--pages: unknown page ['bogus']"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _bench().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
