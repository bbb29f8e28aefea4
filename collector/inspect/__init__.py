"""The live inspector's recording: the journal of events' journeys (see docs/inspector.md)."""

from .journal import LIVE_STEPS_PER_S, OFF, Filter, Journal, Watcher, render

__all__ = ["LIVE_STEPS_PER_S", "OFF", "Filter", "Journal", "Watcher", "render"]
