"""The tracking script's byte budget (no browser needed)."""

from __future__ import annotations

import gzip

from .conftest import STATIC

# The budget of collector/static/y.js as served: gzip -9, as the collector compresses it.
BUDGET_GZIPPED = 5120


def test_the_script_stays_within_its_gzipped_budget() -> None:
    size = len(gzip.compress((STATIC / "y.js").read_bytes(), 9, mtime=0))
    assert size <= BUDGET_GZIPPED, (
        f"collector/static/y.js is {size} bytes gzipped, over its budget of {BUDGET_GZIPPED}"
    )
