"""Command line: ``collector serve`` (also ``python -m collector serve``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import click
import orjson

from . import __version__
from .config import ENV, LOG_LEVELS, Settings
from .errors import CollectorError, ConfigError
from .spool import Spool, SpoolStats

T = TypeVar("T")

# The settings a newcomer needs first, one line each; docs/configuration.md has them all.
ESSENTIALS = (
    ("COLLECTOR_API_KEYS", "keys senders give as Bearer (unset: one is made up)"),
    ("YESPO_API_KEY", "your Yespo API key (unset: dry run, logged only)"),
    ("YESPO_API_URL", "Yespo's API base (default https://yespo.io/api)"),
    ("COLLECTOR_SITE_KEYS", "browsers' site keys: shop-web=https://shop.example"),
    ("COLLECTOR_DEMO", "true: serve the demo shop at /demo/"),
)
REFERENCE = "Every setting: docs/configuration.md in the collector's repository."


def _settings_help(intro: str) -> str:
    # \b keeps click from rewrapping the table.
    width = max(len(name) for name, _ in ESSENTIALS)
    rows = "\n".join(f"  {name.ljust(width)}  {what}" for name, what in ESSENTIALS)
    return f"{intro}\n\n\b\n{rows}\n\n{REFERENCE}"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_settings_help(
        "Settings are environment variables; a command's flags, where it has them, win."
        " The ones to know first:"
    ),
)
@click.version_option(__version__, prog_name="collector")
def main() -> None:
    """First-party event collector for Yespo: takes e-commerce events over HTTP, checks
    them, keeps them in a spool on disk and delivers them to Yespo's API."""


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with the flags given (`overrides`, None where
    not given) over them. A bad flag is reported by its flag, a bad variable by its name."""
    for name, value in overrides.items():
        if value is None:
            continue
        try:
            Settings(**{name: value})  # the flag alone, beside valid defaults
        except ConfigError as exc:
            # Every ConfigError names its variable; here the value came from the flag.
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(str(exc).replace(ENV[name], flag)) from None
    try:
        settings = Settings.from_env(os.environ, **overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return settings


spool_url_option = click.option(
    "--spool-url",
    help="Where accepted events wait [COLLECTOR_SPOOL_URL, default sqlite:///data/spool.db].",
)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="[COLLECTOR_LOG_LEVEL, default info]",
)


@main.command(
    short_help="Take events over HTTP, spool them, deliver them to Yespo.",
    epilog=_settings_help("Settings to know first (environment variables):"),
)
@click.option("--host", help="Address to listen on [COLLECTOR_HOST, default 127.0.0.1].")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port to listen on [COLLECTOR_PORT, default 8080].",
)
@spool_url_option
@log_level_option
@click.option(
    "--forward/--no-forward",
    default=None,
    help="Deliver to Yespo from this process [COLLECTOR_FORWARD, default on].",
)
def serve(
    host: str | None,
    port: int | None,
    spool_url: str | None,
    log_level: str | None,
    forward: bool | None,
) -> None:
    """Accept events over HTTP, keep them in the spool, deliver them to Yespo.

    Without YESPO_API_KEY it runs in dry run: events are checked and spooled, and
    delivery writes them to the log in their Yespo form."""
    import uvicorn

    from .app import create_app
    from .web.server import UVICORN_OPTIONS, tune_runtime

    settings = load_settings(
        host=host, port=port, spool_url=spool_url, log_level=log_level, forward=forward
    )
    app = create_app(settings)
    tune_runtime()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        **UVICORN_OPTIONS,
    )


@main.command(
    short_help="Only deliver the spool to Yespo (beside 'serve --no-forward').", epilog=REFERENCE
)
@spool_url_option
@log_level_option
def forward(spool_url: str | None, log_level: str | None) -> None:
    """Only deliver: drain the spool into Yespo (YESPO_API_URL, YESPO_API_KEY).

    \b
    Run it beside a collector that takes the events without delivering them:
      collector serve --no-forward"""
    settings = load_settings(spool_url=spool_url, log_level=log_level)
    try:
        run_loop(_forward(settings))
    except CollectorError as exc:  # a spool that cannot open, or that another one delivers from
        raise click.ClickException(str(exc)) from None


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed (it comes with uvicorn[standard]): the
    forwarder's aiohttp client does about twice the requests per second on it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _forward(settings: Settings) -> None:
    from .delivery import Delivery
    from .inspect import Journal
    from .inspect.journal import running as recording
    from .metrics import Metrics
    from .spool import open_spool

    spool = open_spool(settings)
    await spool.open()
    log = logging.getLogger("collector")
    log.info("collector %s forward: spool %s", __version__, settings.spool_url)
    # With the inspector on and a spool whose steps every collector shares (Redis), the
    # deliveries' steps go there, to the pages of the collectors that take events in.
    # Another spool keeps steps in the process: nobody could read this one's.
    shared = spool.step_stream() if settings.inspect_key is not None else None
    journal = Journal(
        shared is not None, settings.inspect_buffer, settings.inspect_age_s, shared=shared
    )
    delivery = Delivery(settings, spool, Metrics(), journal)
    try:
        await delivery.start()
    except BaseException:
        await spool.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with recording(journal):
        await stop.wait()
        log.info("stopping: finishing in-flight sends (at most %gs)", settings.shutdown_timeout_s)
        await delivery.stop()
        if shared is not None:
            await journal.publish()  # the last steps
    await spool.close()


# -- operator commands --------------------------------------------------------------------


@main.group(short_help="Look into the spool; replay or purge dead letters.")
def spool() -> None:
    """Look into the spool and act on dead letters (safe while the collector runs)."""


def _with_spool(spool_url: str | None, work: Callable[[Spool], Awaitable[T]]) -> T:
    settings = load_settings(spool_url=spool_url, log_level="warning")

    async def run() -> T:
        from .spool import open_spool

        s = open_spool(settings)
        await s.open()
        try:
            return await work(s)
        finally:
            await s.close()

    return asyncio.run(run())


@spool.command(short_help="Waiting events, oldest age, dead letters by reason.")
@spool_url_option
def status(spool_url: str | None) -> None:
    """Waiting events, oldest event age, held events, dead letters and rejected calls by reason.

    (What is in flight lives in the forwarder's memory, not in the file.)"""

    async def work(s: Spool) -> tuple[SpoolStats, dict[str, int], dict[str, int]]:
        return await s.stats(), await s.dead_counts(), await s.rejected_counts()

    stats, dead, rejected = _with_spool(spool_url, work)
    age = "-"
    if stats.oldest_received_at is not None:
        age = f"{max(0.0, time.time() - stats.oldest_received_at / 1000):.1f}s"
    click.echo(f"waiting:      {stats.depth}")
    click.echo(f"oldest age:   {age}")
    click.echo(f"held (anonymous, waiting for identify): {stats.held}")
    click.echo(f"dead letters: {stats.dead}")
    for reason, count in sorted(dead.items()):
        click.echo(f"  {reason}: {count}")
    if rejected:
        click.echo(f"rejected calls: {sum(rejected.values())}")
        for reason, count in sorted(rejected.items()):
            click.echo(f"  {reason}: {count}")


@spool.command(short_help="List dead letters, oldest first, with Yespo's answer.")
@spool_url_option
@click.option("--reason", help="Only this reason (rejected, expired).")
@click.option("--type", "event_type", help="Only this event type.")
@click.option("--limit", default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dead(
    spool_url: str | None, reason: str | None, event_type: str | None, limit: int, as_json: bool
) -> None:
    """List dead letters, oldest first, with Yespo's answer.

    With none to list, says so, except with --json (which then prints nothing)."""
    letters = _with_spool(spool_url, lambda s: s.dead_letters(10**9))
    shown = 0
    for d in letters:
        if (reason and d.reason != reason) or (event_type and d.record.event_type != event_type):
            continue
        if shown == limit:
            break
        shown += 1
        if as_json:
            line = {
                "seq": d.record.seq,
                "messageId": d.record.message_id,
                "eventType": d.record.event_type,
                "reason": d.reason,
                "status": d.status,
                "detail": d.detail,
                "deadAt": d.dead_at,
                "body": orjson.Fragment(d.record.body),
            }
            click.echo(orjson.dumps(line))
        else:
            click.echo(
                f"{d.record.seq}\t{d.reason}\t{d.status}\t{d.record.event_type}"
                f"\t{d.record.message_id}\t{d.detail[:120]}"
            )
    if not shown and not as_json:
        click.echo(
            "no dead letters" if not letters else f"none of the {len(letters)} dead letters match"
        )


@spool.command(short_help="List calls that could not become Yespo events (Segment's).")
@spool_url_option
@click.option("--reason", help="Only this reason (see docs/segment.md).")
@click.option("--limit", default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the call.")
@click.option("--purge", is_flag=True, help="Delete them instead (those of --reason, or all).")
def rejected(
    spool_url: str | None, reason: str | None, limit: int, as_json: bool, purge: bool
) -> None:
    """List, oldest first, the calls a source answered with success (as Segment's protocol
    wants) but could not make into Yespo events, each with why; or --purge them."""
    if purge:
        removed = _with_spool(spool_url, lambda s: s.purge_rejected(reason))
        click.echo(f"deleted {removed} rejected call(s)")
        return
    for call in _with_spool(spool_url, lambda s: s.rejected(limit, reason)):
        if as_json:
            line = {
                "seq": call.seq,
                "source": call.source,
                "reason": call.reason,
                "detail": call.detail,
                "messageId": call.message_id,
                "at": call.at,
                "call": orjson.Fragment(call.body),
            }
            click.echo(orjson.dumps(line))
        else:
            click.echo(
                f"{call.seq}\t{call.source}\t{call.reason}\t{call.message_id}\t{call.detail[:160]}"
            )


def _selection(seqs: tuple[int, ...], reason: str | None, everything: bool) -> list[int] | None:
    if not (seqs or reason or everything):
        raise click.UsageError("say which: --seq N (repeatable), --reason R, or --all")
    return list(seqs) if seqs else None


@spool.command(short_help="Requeue dead letters for delivery.")
@spool_url_option
@click.option("--seq", "seqs", type=int, multiple=True, help="A dead letter's seq (repeatable).")
@click.option("--reason", help="Every dead letter with this reason.")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
def replay(
    spool_url: str | None, seqs: tuple[int, ...], reason: str | None, everything: bool
) -> None:
    """Requeue dead letters for delivery (at the end of the queue)."""
    chosen = _selection(seqs, reason, everything)
    moved = _with_spool(spool_url, lambda s: s.replay(chosen, reason))
    click.echo(f"requeued {moved} dead letter(s)")


@spool.command(short_help="Delete dead letters for good (never waiting events).")
@spool_url_option
@click.option("--seq", "seqs", type=int, multiple=True, help="A dead letter's seq (repeatable).")
@click.option("--reason", help="Every dead letter with this reason.")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(
    spool_url: str | None, seqs: tuple[int, ...], reason: str | None, everything: bool, yes: bool
) -> None:
    """Delete dead letters for good. Waiting events are never purged."""
    chosen = _selection(seqs, reason, everything)
    if not yes:
        click.confirm("Delete the selected dead letters for good?", abort=True)
    removed = _with_spool(spool_url, lambda s: s.purge(chosen, reason))
    click.echo(f"deleted {removed} dead letter(s)")


@main.command(short_help="Print the live inspector's steps, one line each.")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The collector.")
@click.option(
    "--key", envvar="COLLECTOR_INSPECT_KEY", help="The inspector key [env COLLECTOR_INSPECT_KEY]."
)
@click.option("--journey", help="Only this messageId's steps.")
@click.option("--contact", help="Only contacts whose key or keyValue contains this.")
@click.option("--order", help="Only this order id.")
@click.option("--type", "event_type", help="Only these event types (comma-separated).")
@click.option("--source", help="Only these sources: events, yespo, browser, segment, delivery.")
@click.option("--step", help="Only these steps: received, normalized, refused, delivered, ...")
@click.option("--json", "as_json", is_flag=True, help="Each step's JSON on a line.")
@click.option("--no-mask", is_flag=True, help="Show emails and phones unmasked.")
def tail(
    url: str,
    key: str | None,
    journey: str | None,
    contact: str | None,
    order: str | None,
    event_type: str | None,
    source: str | None,
    step: str | None,
    as_json: bool,
    no_mask: bool,
) -> None:
    """Follow the live inspector's stream of steps (docs/inspector.md): what came in, what
    it became, what Yespo answered. Reconnects when the collector restarts."""
    from .inspect.tail import Tail, TailError

    if not key:
        raise click.UsageError("give the inspector key: --key or COLLECTOR_INSPECT_KEY")
    given = {"journey": journey, "contact": contact, "order": order, "type": event_type,
             "source": source, "step": step}  # fmt: skip
    query = {name: value for name, value in given.items() if value}
    if no_mask:
        query["mask"] = "0"
    try:
        asyncio.run(Tail(url, key, query, as_json).run())
    except TailError as exc:
        click.echo(f"collector tail: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
