"""``outlay prices``: look at the price history of a model and validate an overrides file."""

from __future__ import annotations

import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import orjson

from outlay._errors import ConfigError, InvalidInput
from outlay._money import money_str
from outlay._usage import Usage
from outlay.pricing import PriceCatalog, PriceRecord, TieredPrice, default_catalog, load_overrides
from outlay.pricing._rate import compile_plan

__all__ = ["prices"]


@click.group()
def prices() -> None:
    """Price catalog: genai-prices data plus your overrides (docs/pricing.md)."""


def _price_json(value: Decimal | TieredPrice) -> str | dict[str, Any]:
    if isinstance(value, TieredPrice):
        return {
            "base": money_str(value.base),
            "tiers": [{"above_input_tokens": t.start, "price": money_str(t.price)} for t in value.tiers],
        }
    return money_str(value)


def _price_text(value: Decimal | TieredPrice) -> str:
    if isinstance(value, TieredPrice):
        tiers = ", ".join(f"${money_str(t.price)} above {t.start:,} input tokens" for t in value.tiers)
        return f"${money_str(value.base)} ({tiers})"
    return f"${money_str(value)}"


#: What the table says of a record that a record of higher precedence covers for all its dates.
_SHADOWED = "never in force: a record of higher precedence covers all its dates"


def _when(moment: datetime | None, open_end: str) -> str:
    return open_end if moment is None else moment.isoformat().replace("+00:00", "Z")


def _record_json(record: PriceRecord, in_force: bool) -> dict[str, Any]:
    return {
        "version": record.version,
        "provider": record.provider,
        "model": record.model,
        "source": record.source,
        "effective_from": None if record.effective_from is None else _when(record.effective_from, ""),
        "effective_to": None if record.effective_to is None else _when(record.effective_to, ""),
        "service_tier": record.service_tier,
        "in_force": in_force,  # false: a record of higher precedence covers all its dates
        "prices": {key: _price_json(value) for key, value in record.prices.items()},
        "unit_prices": {kind: _price_json(v) for kind, v in compile_plan(record).unit_prices().items()},
        "note": record.note,
    }


def _print_table(
    provider: str,
    model: str,
    tier: str | None,
    records: list[PriceRecord],
    used: set[int],
    catalog: PriceCatalog,
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Names and notes come from the catalog and the overrides file: data, never rich markup.
    served = f" at the {tier!r} service tier" if tier is not None else ""
    table = Table(title=Text(f"{provider}/{model}{served} — {catalog.version}"), show_lines=True)
    table.add_column("effective from")
    table.add_column("until")
    table.add_column("source / version")
    table.add_column("prices (as published)")
    table.add_column("USD per one unit")
    for record in records:
        published = "\n".join(f"{key} = {_price_text(value)}" for key, value in record.prices.items())
        units = "\n".join(f"units.{name} = ${money_str(p)}" for name, p in record.units.items())
        per_one = compile_plan(record).unit_prices()
        # Its dates alone would say it rates calls from effective_from on: say when it never does.
        shadowed = "" if id(record) in used else f"\n{_SHADOWED}"
        table.add_row(
            _when(record.effective_from, "(always)"),
            _when(record.effective_to, "(open)"),
            Text(record.version + (f"\n{record.note}" if record.note else "") + shadowed),
            Text("\n".join(part for part in (published, units) if part)),
            Text("\n".join(f"{kind}: {_price_text(value)}" for kind, value in per_one.items())),
        )
    # Wide when piped (a file, CliRunner): the version ids must not be wrapped mid-word.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    others = [name for name in catalog.tiers(provider, model) if name != tier]
    if others:
        console.print(
            Text(f"Also priced at service tiers {', '.join(others)}: outlay prices show {model} --tier NAME")
        )


@prices.command("show")
@click.argument("model")
@click.option("--provider", "-p", help="Provider id (openai, anthropic, google, ...); guessed when omitted.")
@click.option(
    "--overrides",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Overrides TOML file (default: $OUTLAY_PRICES, if set).",
)
@click.option(
    "--tier",
    help="The prices of calls served at this service tier (priority, flex, batch...); standard if omitted.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(model: str, provider: str | None, overrides: Path | None, tier: str | None, fmt: str) -> None:
    """Print the price history of MODEL: every record, its dates, source and unit prices (of the
    standard tier, or of --tier's; the table names the other tiers MODEL has prices for)."""
    try:
        catalog = PriceCatalog.load(overrides) if overrides is not None else default_catalog()
        served = Usage(service_tier=tier).service_tier if tier is not None else None
    except (ConfigError, InvalidInput) as exc:
        raise click.ClickException(str(exc)) from None
    provider = provider or catalog.find_provider(model)
    if provider is None:
        raise click.ClickException(f"no provider known for model {model!r}; pass --provider")
    records = catalog.history(provider, model, service_tier=served)
    if served is not None and not any(r.service_tier == served for r in records):
        # Untiered overrides alone would rate it; genai-prices has nothing of the tier's own.
        known = ", ".join(catalog.tiers(provider, model)) or "none"
        if not records:
            raise click.ClickException(
                f"no {served!r} service tier price for {provider}/{model} in {catalog.version}: calls"
                f" served at it are recorded unpriced (tiers priced: {known}); give one in an overrides"
                f' file with service_tier = "{served}"'
            )
    if not records:
        raise click.ClickException(
            f"no price for {provider}/{model} in {catalog.version}; add one to an overrides file"
        )
    used = {id(r) for r in catalog.in_force(provider, model, service_tier=served)}
    if fmt == "json":
        shown = [_record_json(r, id(r) in used) for r in records]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(provider, model, served, records, used, catalog)


@prices.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate a price overrides FILE: print OK and the record count, or every error."""
    try:
        overrides = load_overrides(file)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    count = len(overrides.records)
    click.echo(f"OK: {file}: {count} price record{'s' if count != 1 else ''} ({overrides.source})")
