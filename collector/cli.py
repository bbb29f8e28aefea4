"""Command line: ``collector serve`` (also ``python -m collector serve``)."""

from __future__ import annotations

import logging
import os
import sys

import click

from . import __version__
from .config import ConfigError, Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="collector")
def main() -> None:
    """First-party event collector for Yespo.

    Every option can also be set with the environment variable named in its help;
    a flag given on the command line wins.
    """


@main.command()
@click.option("--host", help="Address to listen on [COLLECTOR_HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [COLLECTOR_PORT, default 8080].")
@click.option("--spool-url", help="Spool location [COLLECTOR_SPOOL_URL].")
@click.option("--log-level", help="debug, info, warning, error [COLLECTOR_LOG_LEVEL].")
def serve(host: str | None, port: int | None, spool_url: str | None, log_level: str | None) -> None:
    """Accept events over HTTP and keep them in the spool."""
    import uvicorn

    from .app import create_app

    try:
        settings = Settings.from_env(
            os.environ, host=host, port=port, spool_url=spool_url, log_level=log_level
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # one log line per event request would cost more than the request
        server_header=False,
        timeout_graceful_shutdown=10,
    )
