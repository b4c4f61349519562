"""``outlay report ...`` and ``outlay rerate`` through the real command group."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from outlay._money import money_str
from outlay._usage import Usage
from outlay.cli import main
from outlay.ledger import SQLiteLedger
from outlay.pricing import PriceCatalog

from .conftest import T0, D, awkward_events, event, unpriced

WINDOW = ["--from", "2026-03-01", "--to", "2026-04-01"]


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    path = tmp_path / "outlay.db"
    with SQLiteLedger(path) as ledger:
        ledger.write(awkward_events(200))
        ledger.write(
            [
                event(
                    tenant_id="acme", run_id="root", root_run_id="root", agent="orchestrator", cost=D("0.5")
                ),
                event(
                    tenant_id="acme", run_id="step", parent_run_id="root", root_run_id="root", cost=D("0.25")
                ),
            ]
        )
    return str(path)


def _run(*args: str) -> str:
    """What the command prints on stdout (a summary beside JSON or CSV goes to stderr)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_breakdown_json_is_exact(ledger_path: str) -> None:
    rows = json.loads(
        _run(
            "report",
            "breakdown",
            "--by",
            "tenant,model",
            *WINDOW,
            "--format",
            "json",
            "--ledger",
            ledger_path,
        )
    )
    with SQLiteLedger(ledger_path) as ledger:
        expected = ledger.rollup_totals(
            ["tenant", "model"], T0.date().replace(day=1), T0.date().replace(month=4, day=1)
        )
    assert {(r["tenant"], r["model"]): r["cost"] for r in rows} == {
        t.key: (None if t.cost is None else format(t.cost.normalize(), "f")) for t in expected
    }
    assert all(isinstance(r["cost"], str | None) for r in rows)


def test_tenants_table_and_csv(ledger_path: str) -> None:
    table = _run("report", "tenants", *WINDOW, "--ledger", ledger_path)
    assert "acme" in table
    assert "(unattributed)" in table
    assert "…" not in table
    csv_text = _run("report", "tenants", *WINDOW, "--format", "csv", "--ledger", ledger_path)
    assert csv_text.splitlines()[0].startswith("tenant,events,cost,unpriced_events")


def test_other_reports_run(ledger_path: str) -> None:
    assert "job-0" in _run("report", "unattributed", *WINDOW, "--ledger", ledger_path)
    assert "no price" in _run("report", "unpriced", *WINDOW, "--ledger", ledger_path)
    tree = json.loads(_run("report", "run", "root", "--format", "json", "--ledger", ledger_path))
    assert (tree["total_cost"], tree["children"][0]["run_id"]) == ("0.75", "step")
    assert "orchestrator" in _run("report", "run", "root", "--ledger", ledger_path)
    shares = json.loads(_run("report", "concentration", *WINDOW, "--format", "json", "--ledger", ledger_path))
    assert shares["tenants"] == 4
    assert "top 1/5/10 share" in _run("report", "concentration", *WINDOW, "--ledger", ledger_path)


def test_an_empty_table_says_what_the_window_lacks(tmp_path: Path) -> None:
    path = str(tmp_path / "outlay.db")
    with SQLiteLedger(path) as ledger:
        ledger.write([event(tenant_id="acme", cost=D("0.5"))])  # priced and attributed
    assert "no unpriced events in this window" in _run("report", "unpriced", *WINDOW, "--ledger", path)
    assert "no unattributed events in this window" in _run(
        "report", "unattributed", *WINDOW, "--ledger", path
    )
    empty = ["--from", "2026-05-01", "--to", "2026-06-01", "--ledger", path]
    assert "no events in this window" in _run("report", "tenants", *empty)
    # the summary line: no unattributed spend is a known 0, and no Python "None" is printed
    summary = _run("report", "concentration", *empty).strip().splitlines()[-1]
    assert "unattributed: 0" in summary and "None" not in summary, summary
    assert json.loads(_run("report", "unpriced", *WINDOW, "--format", "json", "--ledger", path)) == []


@pytest.mark.parametrize(
    "report",
    [["tenants"], ["unattributed"], ["unpriced"], ["concentration"], ["breakdown", "--by", "model,day"]],
)
def test_an_empty_csv_has_the_header_a_full_one_has(ledger_path: str, report: list[str]) -> None:
    full = _run("report", *report, *WINDOW, "--format", "csv", "--ledger", ledger_path)
    empty = _run("report", *report, "--from", "2026-06-01", "--to", "2026-07-01", "--format", "csv",
                 "--ledger", ledger_path)  # fmt: skip
    assert full.count("\n") > 1
    assert empty == full.split("\n")[0] + "\n"


@pytest.mark.parametrize("name", ["[/]", "[bold]acme", "a[red]b[/red]c", "x\\"])
def test_names_that_look_like_markup_are_shown_as_written(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenants, features, origins, agents and run ids are recorded data: a table or a run tree
    shows them as written; "[/]" in a tenant's name must not crash every table it appears in."""
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that no name is folded
    path = str(tmp_path / "outlay.db")
    with SQLiteLedger(path) as ledger:
        ledger.write(
            [
                event(
                    tenant_id=name, feature=name, agent=name, run_id=f"run{name}", root_run_id=f"run{name}"
                ),
                event(tenant_id=None, origin=name, cost=D("0.5")),
                unpriced(tenant_id=name, model=name, unpriced_reason=f"no price for {name}"),
            ]
        )
    for report in (
        ["tenants"],
        ["breakdown", "--by", "tenant,feature,agent,model"],
        ["unattributed"],
        ["unpriced"],
        ["concentration"],
    ):
        table = _run("report", *report, *WINDOW, "--ledger", path)
        assert name in table, (report, table)
    tree = _run("report", "run", f"run{name}", "--ledger", path)
    assert f"run{name} {name}  own 0.0125" in tree


@pytest.mark.parametrize(
    ("report", "columns"),
    [
        (["concentration"], ("events", "cost", "share", "vs_median")),
        (["breakdown", "--by", "tenant,feature,model,day"], ("events", "cost", "unpriced_events")),
        (["unpriced"], ("unpriced_events", "input_tokens")),
    ],
)
def test_a_narrow_terminal_never_splits_a_number(
    ledger_path: str, monkeypatch: pytest.MonkeyPatch, report: list[str], columns: tuple[str, ...]
) -> None:
    """On a narrow terminal names fold, but every number (a share, a ratio, a count) stays whole
    on its line, as amounts do: "0.94" over "5046" would be read as two numbers."""
    data = json.loads(_run("report", *report, *WINDOW, "--format", "json", "--ledger", ledger_path))
    monkeypatch.setenv("COLUMNS", "40")
    table = _run("report", *report, *WINDOW, "--ledger", ledger_path)
    for row in data["rows"] if isinstance(data, dict) else data:
        for name in columns:
            value = row[name]
            text = f"{value:,}" if isinstance(value, int) else value
            assert text is None or text in table, (name, text, table)


def test_python_dash_m_outlay_is_the_outlay_command(ledger_path: str) -> None:
    """Where the venv's bin is not on PATH, ``python -m outlay`` is how the command is run."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "outlay",
            "report",
            "tenants",
            *WINDOW,
            "--format",
            "json",
            "--ledger",
            ledger_path,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(
        _run("report", "tenants", *WINDOW, "--format", "json", "--ledger", ledger_path)
    )
    env = {**os.environ, "PYTHONPATH": src}
    usage = subprocess.run(
        [sys.executable, "-m", "outlay", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2 and "Usage: outlay " in usage.stderr


def test_a_ledger_path_naming_the_event_log_is_an_error(tmp_path: Path) -> None:
    from outlay.stream import SQLiteEventLog

    with SQLiteEventLog(tmp_path / "events.db") as log:
        log.append([b"{}"])
    before = (tmp_path / "events.db").read_bytes()
    result = CliRunner().invoke(main, ["report", "tenants", "--ledger", str(tmp_path / "events.db")])
    assert result.exit_code == 2
    assert "is an outlay event log, not a ledger" in result.output
    assert (tmp_path / "events.db").read_bytes() == before  # no ledger tables added to it


def test_default_ledger_comes_from_outlay_url(ledger_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAY_URL", f"sqlite://{ledger_path}")
    assert "acme" in _run("report", "tenants", *WINDOW)


def test_outlay_ledger_url_comes_before_outlay_url_as_help_says(
    ledger_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.db"
    with SQLiteLedger(other) as ledger:
        ledger.write([event(tenant_id="only-in-other")])
    monkeypatch.setenv("OUTLAY_URL", ledger_path)
    monkeypatch.setenv("OUTLAY_LEDGER_URL", str(other))
    assert "only-in-other" in _run("report", "tenants", *WINDOW)
    assert "$OUTLAY_LEDGER_URL, else $OUTLAY_URL" in " ".join(_run("report", "tenants", "--help").split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "breakdown", "--by", "tenant,colour", *WINDOW], "by: unknown group-by key 'colour'"),
        (["report", "tenants", "--from", "2026-04-01", "--to", "2026-03-01"], "end: must be after start"),
        (["report", "tenants", "--from", "March"], "start: not an ISO date"),
        (["report", "tenants", "--environment", "prod"], "environment: must be one of"),
        (["report", "run", "missing-run"], "no events recorded for run 'missing-run'"),
        (["report", "tenants", "--format", "xml"], "Invalid value for '--format'"),
        (
            ["report", "tenants", "--from", "2026-01-01", "--to", "9999-12-31"],
            "end: must be between 1970-01-01",
        ),
        (["report", "unattributed", "--from", "0001-01-01", "--to", "2026-01-01"], "start: must be between"),
        (["rerate", "--from", "2026-01-01", "--to", "9998-12-31T23:00:00-05:00"], "end: must be between"),
        # an empty value (a script's unset variable) is not the default, nor the empty tenant
        (["report", "tenants", "--from", "2026-03-01", "--to", ""], "end: not an ISO date"),
        (["report", "concentration", "--from", "", "--to", "2026-04-01"], "start: not an ISO date"),
        (["report", "breakdown", "--tenant", "", *WINDOW], "tenant: must be a non-empty"),
        (["report", "unpriced", "--tenant", "", *WINDOW], "tenant: must be a non-empty"),
    ],
)
def test_bad_input_is_a_clear_usage_error(ledger_path: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [*args, "--ledger", ledger_path])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_ledger_is_an_error_not_an_empty_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", "tenants", "--ledger", str(tmp_path / "typo.db")])
    assert result.exit_code == 2
    assert "no ledger at" in result.output
    assert not (tmp_path / "typo.db").exists()


def test_a_ledger_in_a_directory_we_cannot_write_says_so(ledger_path: str) -> None:
    """The file is readable, but SQLite must make its -shm file beside it: the error says that,
    not that the ledger "is not a readable SQLite ledger"."""
    shared = Path(tempfile.mkdtemp(prefix="outlay-ro-"))  # pytest's tmp is 0700: nobody could not reach it
    try:
        shutil.copy(ledger_path, shared / "outlay.db")
        shared.chmod(0o555)
        args = ["report", "tenants", *WINDOW, "--ledger", str(shared / "outlay.db")]
        if os.geteuid() != 0:
            result = CliRunner().invoke(main, args)
            code, output = result.exit_code, result.output
        else:  # root writes anywhere: ask as nobody
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv to drop privileges")
            src = str(Path(__file__).resolve().parents[2] / "src")
            nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
            done = subprocess.run(
                [*nobody, sys.executable, "-m", "outlay.cli", *args],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": src},
                timeout=60,
                check=False,
            )
            code, output = done.returncode, done.stdout + done.stderr
            if "Error: " not in output:  # nobody cannot run this interpreter or reach the temp dir
                pytest.skip(f"cannot run the command as nobody here: {output[-200:]}")
        assert code == 2, output
        assert "its directory is not writable" in output, output
        assert "not a readable SQLite ledger" not in output
        assert "Traceback" not in output
    finally:
        shared.chmod(0o755)
        shutil.rmtree(shared)


def test_rerate_prices_what_the_catalog_now_knows(tmp_path: Path) -> None:
    path = str(tmp_path / "outlay.db")
    usage = Usage(input_tokens=12_345, cache_read_tokens=1_000, output_tokens=678)
    events = [
        unpriced(
            tenant_id="acme", provider="openai", model="gpt-4o", usage=usage, unpriced_reason="no price then"
        ),
        unpriced(
            tenant_id="globex",
            provider="openai",
            model="gpt-4o",
            usage=usage,
            unpriced_reason="no price then",
        ),
        unpriced(tenant_id="globex", provider="nobody", model="imaginary-1", usage=usage),
        event(tenant_id="acme", provider=None, model=None, operation="tool", cost=D("0.01")),
    ]
    with SQLiteLedger(path) as ledger:
        ledger.write(events)
    expected = PriceCatalog.load().rate(usage, provider="openai", model="gpt-4o", at=T0).cost
    assert expected is not None
    assert expected > 0
    result = CliRunner().invoke(main, ["rerate", *WINDOW, "--format", "json", "--ledger", path])
    rows = json.loads(result.stdout)  # stdout: the rows alone, for scripts
    delta = money_str(expected)
    assert rows == [{"tenant": "acme", "delta": delta}, {"tenant": "globex", "delta": delta}]
    assert "adjusted 2 (2 newly priced)" in result.stderr
    assert f"total delta {money_str(2 * expected)}" in result.stderr
    summary = _run("rerate", *WINDOW, "--ledger", path)  # again: nothing changes
    assert "adjusted 0" in summary
    assert "no cost changed: nothing to adjust" in summary
    assert "no events in this window" not in summary  # it held four
    assert "still unpriced 1" in summary
    assert "skipped 1" in summary
    with SQLiteLedger(path) as ledger:
        assert len(ledger.adjustments()) == 2
        assert ledger.event_totals(["tenant"], T0, T0.replace(hour=23), unpriced_only=True)[0].key == (
            "globex",
        )


def test_rerate_deltas_are_plain_decimals_in_every_format(tmp_path: Path) -> None:
    """A delta is money: written like every other amount (no exponent, no trailing zeros), never as
    ``str(Decimal)`` would (``8E-7``, ``0.0000040``), in the table, JSON, CSV and the summary."""
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "mystery"\nmodel = "x1"\neffective_from = 2020-01-01\n'
        'input_mtok = "0.1"\noutput_mtok = "0.3"\n'
    )
    tiny, some = Usage(input_tokens=1, output_tokens=1), Usage(input_tokens=5, output_tokens=5)
    events = [
        unpriced(tenant_id="acme", provider="mystery", model="x1", usage=tiny),
        unpriced(tenant_id="acme", provider="mystery", model="x1", usage=tiny),
        unpriced(tenant_id="globex", provider="mystery", model="x1", usage=some),
        unpriced(tenant_id="globex", provider="mystery", model="x1", usage=some),
    ]
    outputs = {}
    for fmt in ("table", "json", "csv"):
        path = str(tmp_path / f"{fmt}.db")
        with SQLiteLedger(path) as ledger:
            ledger.write(events)
        result = CliRunner().invoke(
            main, ["rerate", *WINDOW, "--prices", str(prices), "--format", fmt, "--ledger", path]
        )
        assert result.exit_code == 0, result.output
        outputs[fmt] = result.stdout + result.stderr
    assert json.loads(outputs["json"].split("examined")[0]) == [
        {"tenant": "acme", "delta": "0.0000008"},
        {"tenant": "globex", "delta": "0.000004"},
    ]
    assert "acme,0.0000008" in outputs["csv"] and "globex,0.000004\n" in outputs["csv"]
    for text in outputs.values():
        assert "E-" not in text and "0.0000040" not in text
        assert "total delta 0.0000048" in text


def test_rerate_leaves_caller_prices_and_lower_bounds_alone(tmp_path: Path) -> None:
    """What the catalog did not price is not the catalog's to re-price: a cost the caller gave, and
    a usage known to be a lower bound (a cut stream, or the gateway's estimate of one)."""
    path = str(tmp_path / "outlay.db")
    cut = Usage(input_tokens=1000, output_tokens=10, complete=False, reason="stream ended before usage")
    full = Usage(input_tokens=1000, output_tokens=10)
    events = [
        event(tenant_id="acme", usage=full, cost=D("0.5"), price_version="caller"),
        unpriced(tenant_id="acme", usage=cut, unpriced_reason="usage incomplete: stream ended before usage"),
        event(tenant_id="acme", usage=cut, status="estimated", cost=D("0.25"), price_version="v1"),
        unpriced(tenant_id="globex", usage=full, unpriced_reason="no price then"),  # this one it prices
    ]
    with SQLiteLedger(path) as ledger:
        ledger.write(events)
    rows = json.loads(_run("rerate", *WINDOW, "--format", "json", "--ledger", path))
    assert [row["tenant"] for row in rows] == ["globex"]
    assert "skipped 3" in _run("rerate", *WINDOW, "--ledger", path)
    with SQLiteLedger(path) as ledger:
        [adjustment] = ledger.adjustments()
        assert adjustment.event_id == events[3].event_id
    [acme] = [r for r in json.loads(_run("report", "tenants", *WINDOW, "--format", "json", "--ledger", path))
              if r["tenant"] == "acme"]  # fmt: skip
    assert (acme["cost"], acme["unpriced_events"]) == ("0.75", 1)


def test_rerate_needs_a_window(ledger_path: str) -> None:
    result = CliRunner().invoke(main, ["rerate", "--ledger", ledger_path])
    assert result.exit_code == 2
    assert "--from" in result.output


def test_rerate_charges_a_priority_call_its_tier_price_from_an_overrides_file(tmp_path: Path) -> None:
    path = str(tmp_path / "outlay.db")
    # Anthropic's priority tier has no price in genai-prices 0.2.3: recorded unpriced, with the tier.
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, service_tier="priority")
    with SQLiteLedger(path) as ledger:
        ledger.write(
            [unpriced(tenant_id="acme", provider="anthropic", model="claude-haiku-4-5", usage=usage)]
        )
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "anthropic"\nmodel = "claude-haiku-4-5"\ninput_mtok = "1"\n'
        'output_mtok = "5"\n\n'
        '[[price]]\nprovider = "anthropic"\nmodel = "claude-haiku-4-5"\nservice_tier = "priority"\n'
        'input_mtok = "1.75"\noutput_mtok = "8.75"\n'
    )
    rows = json.loads(_run("rerate", *WINDOW, "--prices", str(prices), "--format", "json", "--ledger", path))
    assert rows == [{"tenant": "acme", "delta": "2.625"}]  # 1M x 1.75 + 100k x 8.75 per million, not 1.5
