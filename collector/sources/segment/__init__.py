"""Segment's HTTP Tracking API, spoken by the collector (`api`), and the people its calls
name (`people`). One source: it imports no other."""

from __future__ import annotations

from .api import PATHS, SEGMENT, Segment

__all__ = ["PATHS", "SEGMENT", "Segment"]
