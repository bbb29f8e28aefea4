"""The SQLite spool, the embedded default: `spool` (the backend and its writer thread),
`jobs` (what the writer is given), `sql` (its statements), `leases` (kept in memory), `carts` and `rejected` (the
remembered carts and the rejected calls)."""

from __future__ import annotations

from .spool import SqliteSpool

__all__ = ["SqliteSpool"]
