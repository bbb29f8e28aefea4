"""What every source shares: its counters, message ids, the normalization rules, the
commit to the spool and how a refused event is reported."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence

from ..config import Settings
from ..errors import FieldError
from ..inspect import OFF, Journal
from ..metrics import Metrics
from ..normalize import Normalized, Rules
from ..spool import Spool


def rules_from(settings: Settings) -> Rules:
    return Rules(
        key_value_order=settings.key_value_order,
        identifying=settings.identifying_params,
        timezone=settings.tz(),
        check_order_total=settings.check_order_total,
        phone_region=settings.phone_region,
    )


def id_factory() -> Callable[[], str]:
    """messageIds for events that came without one: a random per-process prefix and a
    counter. Unique across restarts, and ~10x cheaper than uuid4 on the hot path."""
    prefix = "c" + os.urandom(8).hex()
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def join_path(prefix: str, field: str) -> str:
    """`orders[2]` + `items[0].url` -> `orders[2].items[0].url`; an empty field is the whole."""
    if not prefix:
        return field
    return f"{prefix}.{field}" if field else prefix


def field_errors(errors: Sequence[FieldError], prefix: str = "") -> list[dict[str, str]]:
    """A refused event's errors as the reply lists them, paths under `prefix`."""
    return [{"field": join_path(prefix, e.field), "message": e.message} for e in errors]


class Counters:
    """One endpoint's event counts, kept as plain integers on the hot path and added to
    the Prometheus counters when /metrics is read (`flush`): an `inc` takes a lock and
    costs about a microsecond, several per request."""

    __slots__ = ("_children", "_received_before", "accepted", "duplicates", "received", "rejected")

    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        self.received = self.accepted = self.duplicates = self.rejected = 0
        self._received_before = 0  # what `flush` has added to the Prometheus counter
        self._children = (
            metrics.received.labels(endpoint),
            metrics.accepted.labels(endpoint),
            metrics.duplicates.labels(endpoint),
            metrics.rejected.labels(endpoint),
        )

    @property
    def received_in_all(self) -> int:
        """Events received since the start (the inspector tells what it left out by it)."""
        return self._received_before + self.received

    def flush(self) -> None:
        self._received_before += self.received
        counts = (self.received, self.accepted, self.duplicates, self.rejected)
        self.received = self.accepted = self.duplicates = self.rejected = 0
        for child, count in zip(self._children, counts, strict=True):
            if count:
                child.inc(count)


class Source:
    """A way in, bound to one spool: normalization rules, ids, and the commit.

    `on_append` tells the forwarder that entries were committed (it looks at once instead
    of at its next poll). A source sets up what is its own in `setup`."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        metrics: Metrics,
        on_append: Callable[[], None] | None = None,
        journal: Journal = OFF,
    ) -> None:
        self.settings = settings
        self.journal = journal  # the inspector's: `journal.on` is checked once per request
        self.spool = spool
        self.metrics = metrics
        self.rules = rules_from(settings)
        self._on_append = on_append
        self._new_id = id_factory()
        self.counters: tuple[Counters, ...] = ()
        self.setup()

    def setup(self) -> None:
        """What a source adds to the shared parts: its keys, counters, limits."""

    def flush_counters(self) -> None:
        for counters in self.counters:
            counters.flush()

    def appended(self) -> None:
        if self._on_append is not None:
            self._on_append()

    async def _append(
        self, good: Sequence[Normalized], counters: Counters, owners: Sequence[int] | None = None
    ) -> int:
        """Commit `good`; return how many events were duplicates.

        `owners[i]` is the event entry i belongs to, when an event became several entries
        (see normalize/routing.py); an event is a duplicate when none of its entries was
        stored."""
        if not good:
            return 0
        started = time.perf_counter()
        stored = await self.spool.append(good, int(time.time() * 1000))
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        if owners is not None:
            fresh = {owner for owner, flag in zip(owners, stored, strict=True) if flag}
            events, duplicates = owners[-1] + 1, owners[-1] + 1 - len(fresh)
        else:
            events, duplicates = len(stored), len(stored) - sum(stored)
        self.appended()
        counters.accepted += events - duplicates
        counters.duplicates += duplicates
        return duplicates
