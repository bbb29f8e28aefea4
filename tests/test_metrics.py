"""The hot path's own histogram reads out like prometheus_client's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from collector.metrics import FastHistogram

BUCKETS = (0.001, 0.01, 0.1)


def lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [
        line for line in text.splitlines() if line.startswith("lat_") and "_created" not in line
    ]


def test_fast_histogram_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("lat", "latency", BUCKETS)
    ours.register(fast)
    reference = Histogram("lat", "latency", buckets=BUCKETS, registry=theirs)
    for value in (0.0005, 0.001, 0.002, 0.01, 0.5, 3.0):
        fast.observe(value)
        reference.observe(value)
    assert lines(ours) == lines(theirs)
