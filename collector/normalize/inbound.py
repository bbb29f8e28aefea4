"""The fast reading of a `/v1/events` body: msgspec decodes it straight into structs.

orjson builds a dict for every object of a batch, `context` included, and frees them all
after the reply; for a batch of typical events that was about a quarter of the CPU time
of a request. `decode` instead makes one small struct per event, keeps `context` (which
the collector checks is an object and otherwise ignores) as an empty struct, its fields
skipped unread, and builds dicts only for `contact` and `properties`.

It takes only the plain shapes: one event object, or `{"batch": [...]}` of event objects,
each with only the inbound event's fields. Anything else (malformed JSON, an unknown field,
a batch element that is not an object) makes it return None, and the caller reads the
body with orjson and reports exactly what is wrong; both readings give the same events.
"""

from __future__ import annotations

from typing import Any

import msgspec

_FIELDS = ("type", "messageId", "timestamp", "contact", "properties", "anonymousId")


class Context(msgspec.Struct, gc=False):
    """An event's `context`: it must be an object; its fields are skipped, not decoded."""


class Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One inbound event (README: "Inbound event format"); a missing field is None.

    gc=False: a struct decoded from JSON cannot be part of a reference cycle."""

    type: Any = None
    messageId: Any = None
    timestamp: Any = None
    contact: Any = None
    properties: Any = None
    context: Context | None = None
    anonymousId: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The event as orjson would have read it (null fields left out, as absent ones), but
        for `context`, which is empty: nothing reads what is in it."""
        out = {name: value for name in _FIELDS if (value := getattr(self, name)) is not None}
        if self.context is not None:
            out["context"] = {}
        return out


class Batch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    batch: list[Event]


_EVENT = msgspec.json.Decoder(Event)
_BATCH = msgspec.json.Decoder(Batch)


def decode(body: bytes) -> Event | list[Event] | None:
    """One event, a batch's events, or None when the body is not plainly either."""
    if not body.isascii():
        # msgspec does not look inside what it skips (`context`), where orjson would refuse
        # bytes that are not UTF-8; the check costs little next to the parse.
        try:
            body.decode()
        except UnicodeDecodeError:
            return None
    # Try first the shape the body seems to have; the other attempt fails at its first key.
    first, second = (_BATCH, _EVENT) if b'"batch"' in body[:64] else (_EVENT, _BATCH)
    for decoder in (first, second):
        try:
            value = decoder.decode(body)
        except (msgspec.DecodeError, RecursionError):  # too deep: orjson will say so
            continue
        return value.batch if isinstance(value, Batch) else value
    return None
