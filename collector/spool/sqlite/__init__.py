"""The SQLite spool, the embedded default: `spool` (the backend and its writer thread),
`jobs` (what the writer is given), `sql` (its statements), `leases` (kept in memory)."""

from __future__ import annotations

from .spool import SqliteSpool

__all__ = ["SqliteSpool"]
