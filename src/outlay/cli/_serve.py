"""``outlay serve``: the gateway, the reporting API and the ledger writer in one process."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from outlay._errors import OutlayError

if TYPE_CHECKING:
    from outlay._serve import CombinedApp
    from outlay.gateway import GatewaySettings

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Gateway config file (TOML).")
@click.option("--tokens", "tokens_file", envvar="OUTLAY_API_TOKENS_FILE", show_envvar=True,
              help="API tokens file (TOML/JSON).")  # fmt: skip
@click.option("--log-level", default="warning", show_default=True)
def serve(host: str, port: int, config_path: str | None, tokens_file: str | None, log_level: str) -> None:
    """Run everything on the embedded default in one process: the gateway (/v1/...), the reporting
    API (/api/v1, /docs) and the ledger writer (reports catch it up before answering).

    The API needs tokens (--tokens FILE or OUTLAY_API_TOKENS); without them only the gateway is
    served, and this says so. For several processes use outlay gateway / worker / api instead.
    """
    try:
        import uvicorn

        from outlay.gateway import load_settings
    except ImportError as exc:
        raise click.ClickException(
            f"outlay serve needs the gateway extra: pip install 'outlay[gateway]' ({exc.name})"
        ) from None
    try:
        settings = load_settings(config_path)
        app, with_api = assemble(settings, tokens_file)
    except OutlayError as exc:
        raise click.ClickException(str(exc)) from None
    if not with_api:
        click.echo("no API tokens (--tokens or OUTLAY_API_TOKENS): serving the gateway only", err=True)
    click.echo(f"outlay serve on http://{host}:{port} (ledger: {_ledger_shown(app, settings)})", err=True)
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False,
        lifespan="on", timeout_graceful_shutdown=30,
    )  # fmt: skip


def _ledger_shown(app: CombinedApp, settings: GatewaySettings) -> str:
    """The ledger the gateway writes: the one configured, else the default it resolved (never "None")."""
    from outlay.gateway import Gateway, OutlayHooks

    gateway = app.gateway
    if isinstance(gateway, Gateway) and isinstance(gateway.hooks, OutlayHooks) and gateway.hooks.outlay:
        return gateway.hooks.outlay.ledger_url
    return settings.ledger or "(default)"


def assemble(settings: GatewaySettings, tokens: str | None) -> tuple[CombinedApp, bool]:
    """The one-process app of ``outlay serve``, and whether the API is in it (it needs tokens).

    The API reports budget status from the gateway's own engine (its store, policies and plans)
    and key store, so both halves show the same counters.
    """
    from outlay import Outlay
    from outlay._serve import CombinedApp
    from outlay.api import create_app as create_api
    from outlay.gateway import OutlayHooks
    from outlay.gateway import create_app as create_gateway

    gateway = create_gateway(settings)
    api = None
    if tokens or os.environ.get("OUTLAY_API_TOKENS"):
        hooks = gateway.hooks
        engine, keys = (hooks.engine, hooks.keys) if isinstance(hooks, OutlayHooks) else (None, None)
        api = create_api(Outlay(settings.ledger), tokens=tokens, budget_store=engine, keys=keys)
    return CombinedApp(gateway, api), api is not None
