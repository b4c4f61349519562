"""``run_demo``: a fresh embedded outlay home, the simulated month through it, and its report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Final

from rich.progress import Progress

from outlay._errors import InvalidInput
from outlay._money import ZERO
from outlay._recording import MODES
from outlay._runtime import Outlay

from ._report import build_report, ledger_total
from ._simulate import DemoConfig, Simulation, simulate

__all__ = ["DEFAULT_HOME", "DemoRun", "run_demo", "wipe"]

DEFAULT_HOME: Final = Path(".outlay-demo")
LEDGER_FILE: Final = "outlay.db"
LOG_FILE: Final = "events.db"
# Only the files outlay creates are removed, so a --home pointing at a directory with other things
# in it never loses them.
_SQLITE_SUFFIXES: Final = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class DemoRun:
    report: dict[str, Any]
    simulation: Simulation
    home: Path
    mode: str
    simulate_seconds: float
    report_seconds: float


def wipe(home: Path) -> None:
    """Delete the demo's ledger and event log under ``home`` (nothing else)."""
    for name in (LEDGER_FILE, LOG_FILE):
        for suffix in _SQLITE_SUFFIXES:
            (home / f"{name}{suffix}").unlink(missing_ok=True)


def run_demo(
    home: Path = DEFAULT_HOME,
    config: DemoConfig | None = None,
    *,
    mode: str = "batching",
    keep: bool = False,
    progress: Progress | None = None,
) -> DemoRun:
    """Simulate into ``home`` (wiped first unless ``keep``) and build the report from its ledger."""
    config = config or DemoConfig()
    if mode not in MODES:
        raise InvalidInput(f"must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
    if home.exists() and not home.is_dir():
        raise InvalidInput(f"{home} exists and is not a directory", field="home")
    home.mkdir(parents=True, exist_ok=True)
    if not keep:
        wipe(home)
    with as_file(files("outlay.demo") / "prices.toml") as prices:
        pipeline = Outlay(
            str(home / LEDGER_FILE), stream_url=str(home / LOG_FILE), ledger_url=str(home / LEDGER_FILE),
            mode=mode, prices=prices, service="outlay-demo",
        )  # fmt: skip
    try:
        baseline: Decimal = ledger_total(pipeline.reports())[0] if keep else ZERO
        started = time.perf_counter()
        simulation = simulate(pipeline, config, progress)
        simulated = time.perf_counter()
        report = build_report(pipeline.reports(), simulation, baseline=baseline)
        reported = time.perf_counter()
    finally:
        pipeline.close()
    return DemoRun(report, simulation, home, mode, simulated - started, reported - simulated)
