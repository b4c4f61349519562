"""The default budget engine records its decisions in the default pipeline, as the README says."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from outlay.ledger import LedgerWriter, SQLiteLedger
from outlay.stream import SQLiteEventLog

SCRIPT = textwrap.dedent(
    """
    import outlay
    from outlay import Budget, BudgetExceeded

    with outlay.attribute(tenant="acme"), outlay.run("agent", budget=Budget("0.0001")):
        try:
            with outlay.meter(provider="openai", model="gpt-4o", input_tokens=100_000) as call:
                raise SystemExit("admitted a call over the run's budget")
        except BudgetExceeded:
            pass
    outlay.flush()
    """
)


def test_a_refusal_by_the_default_engine_is_in_the_ledger(tmp_path: Path) -> None:
    env = {**os.environ, "OUTLAY_URL": str(tmp_path / "home")}
    env.pop("OUTLAY_BUDGET_URL", None)
    command = [sys.executable, "-c", SCRIPT]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ledger = SQLiteLedger(tmp_path / "home" / "outlay.db")
    log = SQLiteEventLog(tmp_path / "home" / "events.db")
    try:
        LedgerWriter(log, ledger).catch_up()
        today = datetime.now(UTC).date()
        window = (today - timedelta(days=1), today + timedelta(days=2))
        operations = [t.key for t in ledger.rollup_totals(("tenant", "operation"), *window)]
    finally:
        log.close()
        ledger.close()
    # The refused call cost nothing and left its decision, attributed to the tenant.
    assert operations == [("acme", "decision:denied")]
