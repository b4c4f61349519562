"""The ``outlay`` command line. Each command group lives in its own module and is added here.

Optional extras (gateway, postgres, redis, nats) are imported lazily inside the commands that need
them, so ``outlay --help`` works on a bare install and a missing extra fails with a clear message.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

# (module, attribute) of each top-level command; a module that is not there yet is skipped.
_COMMANDS = (
    ("outlay.cli._prices", "prices"),
    ("outlay.cli._report", "report"),
    ("outlay.cli._report", "rerate"),
    ("outlay.cli._demo", "demo"),
    ("outlay.cli._gateway", "gateway"),
    ("outlay.cli._gateway", "keys"),
    ("outlay.cli._api", "api"),
    ("outlay.cli._worker", "worker"),
    ("outlay.cli._serve", "serve"),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="outlay")
def main() -> None:
    """outlay: per-tenant cost attribution, runtime budgets and an auditable ledger for agentic AI."""


def _register() -> None:
    for module_name, attr in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        main.add_command(getattr(module, attr))


_register()
