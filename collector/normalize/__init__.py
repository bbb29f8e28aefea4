"""Transform stage: an inbound event becomes a Yespo request body, or a precise error.

Pure: no I/O, no clock, ids injected. One module per concern:

    core         the entry points and `Normalized`, what the spool stores
    inbound      /v1/events bodies decoded straight into structs (the fast path's input)
    event_types  Yespo's event types and their properties; custom types
    orders       order events, Add-orders orders
    carts        cartUpdated: the whole cart, its recycleStateId
    contact      contact fields, identifiers and keyValue
    values       the value checks every other module shares
    routing      which Yespo endpoint an accepted order event goes to
"""

from __future__ import annotations

from .core import (
    MAX_BODY_BYTES,
    Normalized,
    Rules,
    normalize_event,
    normalize_inbound,
    normalize_order,
    normalize_yespo_event,
)

__all__ = [
    "MAX_BODY_BYTES",
    "Normalized",
    "Rules",
    "normalize_event",
    "normalize_inbound",
    "normalize_order",
    "normalize_yespo_event",
]
