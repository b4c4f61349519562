"""``outlay demo``: a month of a simulated multi-tenant agent platform, through the real pipeline.

::

    from pathlib import Path
    from outlay.demo import DemoConfig, run_demo, render_report

    result = run_demo(Path(".outlay-demo"), DemoConfig(seed=7, tenants=8, runs=160))
    result.report["concentration"]["max_vs_median"]   # '40.267377'

See docs/demo.md.
"""

from ._platform import START
from ._render import money, render_report
from ._report import END, build_report, ledger_total
from ._run import DEFAULT_HOME, DemoRun, run_demo, wipe
from ._simulate import DemoConfig, Simulation, simulate
from ._tenants import MIN_TENANTS, Tenant, roster

__all__ = [
    "DEFAULT_HOME",
    "END",
    "MIN_TENANTS",
    "START",
    "DemoConfig",
    "DemoRun",
    "Simulation",
    "Tenant",
    "build_report",
    "ledger_total",
    "money",
    "render_report",
    "roster",
    "run_demo",
    "simulate",
    "wipe",
]
