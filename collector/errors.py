"""One exception tree for the collector.

    CollectorError
    ├── RequestError            the whole request is refused (-> 4xx)
    │   ├── Unauthorized        missing or unknown key (-> 401)
    │   ├── Forbidden           a site key used from an origin it is not tied to (-> 403)
    │   ├── PayloadTooLarge     body or batch over its limit (-> 413)
    │   ├── TooManyRequests     a browser client over its request ceiling (-> 429 + Retry-After)
    │   └── BadRequest          body is not JSON, or not of the endpoint's shape (-> 400)
    └── Unavailable             nothing of the request was taken: later (-> 503 + Retry-After)
        ├── SpoolError          the spool cannot take the events
        │   ├── SpoolFull       the configured bound is reached
        │   └── DeliveryClaimed another process delivers from this spool (start-up only)
        └── Overloaded          as many requests in hand as the collector takes at once

Two kinds of failure are values, not exceptions: a single bad event inside a batch
(normalization returns a list of `FieldError`s for it, and the good events beside it go
on), and Yespo's answer to a delivery (`collector.yespo.Outcome`: delivered, rejected,
retry, auth), which the forwarder acts on per entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """What is wrong with one field of one event.

    `field` is a path into the event as the sender wrote it, e.g.
    ``properties.items[0].cost`` or ``contact.email``; `message` says why.
    """

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class RequestError(CollectorError):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(RequestError):
    status_code = 401


class Forbidden(RequestError):
    status_code = 403


class PayloadTooLarge(RequestError):
    status_code = 413


class BadRequest(RequestError):
    status_code = 400


class TooManyRequests(RequestError):
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(CollectorError):
    """Nothing of the request was taken; the sender should try again after `retry_after`
    seconds."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class SpoolError(Unavailable):
    """The spool could not store events; nothing of the request was stored."""


class Overloaded(Unavailable):
    """The collector has as many requests in hand as it takes at once
    (COLLECTOR_MAX_IN_FLIGHT): it answers at once instead of queueing without end."""


class SpoolFull(SpoolError):
    """The spool holds as many events as it is allowed to."""


class DeliveryClaimed(SpoolError):
    """Another process already delivers from this spool, and the backend cannot let two
    share it. Raised when delivery starts; `holder` names the other process as it wrote
    itself down ("pid 1234", "pid 1234 on host web-2"), `hint` says what to do."""

    def __init__(self, spool: str, holder: str, hint: str = "stop it first") -> None:
        super().__init__(f"another collector ({holder}) is already delivering from {spool}; {hint}")
        self.spool = spool
        self.holder = holder
        self.hint = hint


class ConfigError(ValueError):
    """A setting has a value the collector cannot use (start-up only, never a request)."""
