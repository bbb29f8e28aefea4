"""The live inspector's recording: the journal of events' journeys (see docs/inspector.md)."""

from .journal import OFF, Filter, Journal, Watcher, render

__all__ = ["OFF", "Filter", "Journal", "Watcher", "render"]
