"""bench/bench_visibility.py keeps working: its quick mode runs end to end on the real services."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nats
import psycopg
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_visibility.py"


def _bench() -> ModuleType:
    """The bench script as a module (registered first: its dataclasses look themselves up there)."""
    name = "bench_visibility"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _streams(url: str) -> set[str]:
    async def go() -> set[str]:
        nc = await nats.connect(url)
        try:
            return {info.config.name or "" for info in await nc.jetstream().streams_info()}
        finally:
            await nc.close()

    return asyncio.run(go())


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_vis\\_%'"
        ).fetchall()
    return {row[0] for row in rows}


@pytest.mark.slow
@pytest.mark.services
def test_quick_mode_measures_every_deployment_and_leaves_nothing_behind(
    nats_url: str, postgres_url: str
) -> None:
    streams, schemas = _streams(nats_url), _schemas(postgres_url)
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--nats", nats_url, "--postgres", postgres_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("\n\n")[-1].splitlines()
    assert table[0].split()[:2] == ["deployment", "load"]
    rows = {" ".join(line.split()[:2]): line.split() for line in table[1:] if line.strip()}
    assert set(rows) == {"sqlite-worker 200", "sqlite-inprocess 200", "nats-postgres x1"}
    for cells in rows.values():
        assert "10/10" in cells  # every probe was counted in the totals
    # The unique stream and schema of the run are deleted afterwards.
    assert _streams(nats_url) <= streams
    assert _schemas(postgres_url) <= schemas


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--deployments", "sqlite-worker,bogus"], "unknown deployment ['bogus']"),
        (["--rates", "1000,0"], "expected integers >= 1"),
        (["--rates", "fast"], "expected comma-separated integers"),
        (["--poll", "0"], "expected a number > 0"),
        (["--probes", "0"], "--probes must be >= 1"),
        (["--nats", "nats://127.0.0.1:4222?stream=X"], "--nats takes the server URL only"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _bench().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
