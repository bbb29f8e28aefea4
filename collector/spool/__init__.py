"""Spool backends behind one interface, chosen by the scheme of COLLECTOR_SPOOL_URL.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the embedded default),
``redis://[:password@]host:port/db`` or ``rediss://`` (several collectors share one
queue; the `redis` extra) and ``memory://`` (tests; nothing survives a restart). `BACKENDS` is the one table of
them, read by the settings' check and by `open_spool`. A backend is imported only when
chosen, so an optional backend's dependencies stay optional.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import (
    CartStore,
    DeadLetter,
    DeadLetters,
    EntryLike,
    Queue,
    Record,
    Rejected,
    RejectedLog,
    SharedPause,
    Spool,
    SpoolStats,
    StepStream,
    VisitorStore,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "BACKENDS",
    "CartStore",
    "DeadLetter",
    "DeadLetters",
    "EntryLike",
    "Queue",
    "Record",
    "Rejected",
    "RejectedLog",
    "SharedPause",
    "Spool",
    "SpoolStats",
    "StepStream",
    "VisitorStore",
    "backend_for",
    "open_spool",
]


def sqlite_path(url: str) -> str:
    """``sqlite:///data/spool.db`` -> ``data/spool.db``; four slashes for an absolute path."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(f"COLLECTOR_SPOOL_URL: expected sqlite:///path/to/spool.db, got {url!r}")
    return rest[1:]


def _sqlite(settings: Settings) -> Spool:
    from .sqlite import SqliteSpool

    return SqliteSpool(
        sqlite_path(settings.spool_url),
        max_events=settings.spool_max_events,
        dedup_window_ms=settings.dedup_window_s * 1000,
        synchronous=settings.spool_sync,
    )


def _memory(settings: Settings) -> Spool:
    from .memory import MemorySpool

    return MemorySpool(
        max_events=settings.spool_max_events, dedup_window_ms=settings.dedup_window_s * 1000
    )


def _redis(settings: Settings) -> Spool:
    try:
        from .redis import RedisSpool
    except ImportError as exc:  # redis-py is an optional extra
        raise ConfigError(
            f"COLLECTOR_SPOOL_URL: a redis spool needs redis-py ({exc});"
            " install it with: pip install 'yespo-collector[redis]'"
        ) from None
    return RedisSpool(
        settings.spool_url,
        max_events=settings.spool_max_events,
        dedup_window_ms=settings.dedup_window_s * 1000,
    )


# Scheme -> how to build its backend (not yet open), and a URL of the scheme for errors.
BACKENDS: dict[str, Callable[[Settings], Spool]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "memory": _memory,
}
_FORMS = {
    "sqlite": "sqlite:///path/to/spool.db",
    "redis": "redis://[:password@]host:port/db",
    "rediss": "rediss://[:password@]host:port/db",
    "memory": "memory://",
}


def backend_for(url: str) -> Callable[[Settings], Spool]:
    """The builder of the backend `url` names; ConfigError for a scheme no backend has."""
    scheme = url.split(":", 1)[0].lower()
    builder = BACKENDS.get(scheme)
    if builder is None:
        raise ConfigError(
            f"COLLECTOR_SPOOL_URL: unknown spool scheme {scheme!r} in {url!r}"
            f" (use {' or '.join(_FORMS.get(s, s + '://') for s in BACKENDS)})"
        )
    if scheme == "sqlite":
        sqlite_path(url)  # its form too: a malformed URL fails with the settings, not at open
    return builder


def open_spool(settings: Settings) -> Spool:
    """Build (not yet open) the spool named by ``settings.spool_url``."""
    return backend_for(settings.spool_url)(settings)
