"""Prometheus metrics with fixed names (Vector's naming), one registry per app."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class FastHistogram(Collector):
    """A histogram for the ingest hot path: `observe` is a bisect and two additions, about
    a tenth of prometheus_client's (which takes a lock and walks every bucket); the
    registry reads it at scrape time. One event loop updates it, so it needs no lock."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )


class WithoutCreated(Collector):
    """`registry` as /metrics shows it: without the `*_created` series prometheus_client
    adds beside every counter and histogram (when each label set first appeared: a third
    of the page, read by no dashboard). Its own switch, `disable_created_metrics()`, is
    one flag for the whole process; this is per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            created = metric.name + "_created"
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = [s for s in metric.samples if s.name != created]
            yield kept


class Metrics:
    """The collector's metrics. Names are part of the public interface: keep them stable."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "received_events", "Events received, before validation.", ["endpoint"], registry=r
        )
        self.accepted = Counter(
            "accepted_events", "Events committed to the spool.", ["endpoint"], registry=r
        )
        self.duplicates = Counter(
            "duplicate_events",
            "Events acknowledged without storing: messageId seen within the window.",
            ["endpoint"],
            registry=r,
        )
        self.rejected = Counter(
            "rejected_events", "Events refused by validation.", ["endpoint"], registry=r
        )
        self.refused_requests = Counter(
            "refused_requests",
            "Whole requests refused, by HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.errors = Counter("errors", "Errors by pipeline stage.", ["stage"], registry=r)
        self.spool_depth = Gauge("spool_depth", "Entries waiting in the spool.", registry=r)
        self.spool_dead = Gauge("spool_dead_letters", "Dead letters in the spool.", registry=r)
        self.spool_oldest_age = Gauge(
            "spool_oldest_event_age_seconds", "Age of the oldest waiting entry.", registry=r
        )
        self.sent = Counter(
            "sent_events", "Entries Yespo acknowledged (2xx or Duplicated request).", registry=r
        )
        self.delivery_attempts = Counter(
            "delivery_attempts",
            "Delivery attempts by outcome: delivered, rejected, retry, auth.",
            ["outcome"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "events_discarded",
            "Entries moved to dead letters, by reason (rejected, expired). Kept, not lost.",
            ["reason"],
            registry=r,
        )
        self.forwarder_paused = Gauge(
            "forwarder_paused",
            "1 while delivery is paused because Yespo refused the key.",
            registry=r,
        )
        self.breaker_open = Gauge(
            "delivery_breaker_open",
            "1 while delivery is stopped because Yespo is unreachable (one probe at a time).",
            registry=r,
        )
        self.anonymous_held = Gauge(
            "anonymous_held_events",
            "Anonymous visitors' events waiting for the visitor to identify.",
            registry=r,
        )
        self.anonymous_released = Counter(
            "anonymous_released_events",
            "Held events delivered with their contact after the visitor identified.",
            registry=r,
        )
        self.anonymous_expired = Counter(
            "anonymous_expired_events",
            "Held events given up on: age (visitor never identified in time), count (over"
            " the per-visitor bound, oldest first), invalid (not valid with the contact given).",
            ["reason"],
            registry=r,
        )
        self.identified = Counter(
            "identified_visitors",
            "identify calls (browsers', Segment's) that named a contact.",
            registry=r,
        )
        self.segment_calls = Counter(
            "segment_calls", "Segment calls received, by type (track, page, ...).", ["type"],
            registry=r,
        )  # fmt: skip
        self.segment_rejected = Counter(
            "segment_rejected_calls",
            "Segment calls answered with success that could not become Yespo events, by"
            " reason; kept in the rejected log ('collector spool rejected').",
            ["reason"],
            registry=r,
        )
        self.segment_ignored = Counter(
            "segment_ignored_calls",
            "Segment calls left out on purpose: group, and custom events when"
            " COLLECTOR_SEGMENT_CUSTOM_EVENTS is off.",
            ["reason"],
            registry=r,
        )
        self.commit_seconds = FastHistogram(
            "spool_append_seconds",
            "Time from handing events to the spool to their commit.",
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        r.register(self.commit_seconds)
        self.exposed = WithoutCreated(r)  # what /metrics writes out
