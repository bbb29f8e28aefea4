"""What the SQLite spool's writer thread is given: a request's entries for the next group
commit (`Append`), any other transaction (`Call`), or `STOP`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ..base import EntryLike
from . import sql


class Append:
    """One request's entries waiting for the next group commit.

    `per_visitor` is None for the queue; for anonymous visitors' entries (`hold`) it is the
    bound per visitor, and `dropped` says how many older held entries the bound removed.
    `meta`, `start`, `ids` and `claims` come from `sql.Rows.meta`; `size` is the
    bytes of their bodies."""

    __slots__ = (
        "claims",
        "dropped",
        "entries",
        "fut",
        "ids",
        "meta",
        "per_visitor",
        "received_at",
        "size",
        "start",
    )

    def __init__(
        self,
        entries: Sequence[EntryLike],
        received_at: int,
        rows: sql.Rows,
        fut: asyncio.Future[list[bool]],
        per_visitor: int | None = None,
    ) -> None:
        self.entries = entries
        self.received_at = received_at
        self.meta, self.start, self.ids, self.claims = rows.meta(entries, received_at)
        self.size = rows.offset - self.start  # bytes of bodies
        self.fut = fut
        self.per_visitor = per_visitor
        self.dropped = 0


class Call:
    """Any other transaction for the writer: `fn(*args)`, its result for `fut`; `after`,
    if given, gets the result on the writer thread once it is committed."""

    __slots__ = ("after", "args", "fn", "fut")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        fut: asyncio.Future[Any],
        after: Callable[[Any], None] | None = None,
    ):
        self.fn = fn
        self.args = args
        self.fut = fut
        self.after = after


STOP = object()


def join_rows(metas: Sequence[bytes]) -> bytes:
    """Several JSON arrays of rows as one."""
    return metas[0] if len(metas) == 1 else b"[" + b",".join(m[1:-1] for m in metas) + b"]"


def resolve(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # a waiter that was cancelled (its client went away)
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)
