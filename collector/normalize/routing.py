"""Which Yespo endpoint an accepted order event goes to (YESPO_ORDERS_API). Pure.

``event`` (default): order events go to Generate event, like every other event.
``orders``: an order event that carries everything Yespo's Add orders requires goes
there instead, as an order; one that does not (an orderDelivered with only its id, say)
still goes as an event, since Add orders would refuse it.
``both``: complete order events go to Generate event and to Add orders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .core import Normalized, Rules, normalize_order
from .orders import ORDER_EVENT_TYPES

ORDERS_API_MODES = ("event", "orders", "both")
# The status an event type implies when the event does not name one.
_IMPLIED_STATUS = {"orderDelivered": "DELIVERED", "orderCancelled": "CANCELLED"}
_ORDER_CONTACT = ("externalCustomerId", "email", "phone")


def add_order_from_event(event_type: str, raw: dict[str, Any]) -> dict[str, Any]:
    """An inbound order event as an Add-orders order: its properties and its contact."""
    props = raw.get("properties")
    contact = raw.get("contact")
    order: dict[str, Any] = dict(props) if isinstance(props, dict) else {}
    if isinstance(contact, dict):
        for name in _ORDER_CONTACT:
            if contact.get(name) is not None:
                order[name] = contact[name]
    if event_type in _IMPLIED_STATUS and "status" not in order:
        order["status"] = _IMPLIED_STATUS[event_type]
    return order


def route(event: Normalized, raw: object, mode: str, rules: Rules) -> list[Normalized]:
    """The spool entries for one accepted event: itself, its Add-orders form, or both."""
    if mode == "event" or event.event_type not in ORDER_EVENT_TYPES or not isinstance(raw, dict):
        return [event]
    order_id: Callable[[], str] = lambda: event.message_id + "#order"  # noqa: E731
    order = normalize_order(add_order_from_event(event.event_type, raw), rules, order_id)
    if not isinstance(order, Normalized):
        return [event]
    # Deduplicated like the event it came from: a retried event repeats both entries. It
    # waits for the same contact's events as the event does.
    order = dataclasses.replace(order, client_id=event.client_id, after=event.after)
    return [order] if mode == "orders" else [event, order]
