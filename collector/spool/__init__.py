"""Spool backends behind one interface, chosen by the scheme of COLLECTOR_SPOOL_URL.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the embedded default)
and ``memory://`` (tests; nothing survives a restart). Backends are imported only when
chosen, so an optional backend's dependencies stay optional.
"""

from __future__ import annotations

from ..config import ConfigError, Settings
from .base import DeadLetter, EntryLike, Record, Spool, SpoolStats

__all__ = ["DeadLetter", "EntryLike", "Record", "Spool", "SpoolStats", "open_spool"]


def sqlite_path(url: str) -> str:
    """``sqlite:///data/spool.db`` -> ``data/spool.db``; four slashes for an absolute path."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(f"COLLECTOR_SPOOL_URL: expected sqlite:///path/to/spool.db, got {url!r}")
    return rest[1:]


def open_spool(settings: Settings) -> Spool:
    """Build (not yet open) the spool named by ``settings.spool_url``."""
    url = settings.spool_url
    scheme = url.split(":", 1)[0].lower()
    window_ms = settings.dedup_window_s * 1000
    if scheme == "sqlite":
        from .sqlite import SqliteSpool

        return SqliteSpool(
            sqlite_path(url),
            max_events=settings.spool_max_events,
            dedup_window_ms=window_ms,
            synchronous=settings.spool_sync,
        )
    if scheme == "memory":
        from .memory import MemorySpool

        return MemorySpool(max_events=settings.spool_max_events, dedup_window_ms=window_ms)
    raise ConfigError(
        f"COLLECTOR_SPOOL_URL: unknown spool scheme {scheme!r} (use sqlite or memory)"
    )
