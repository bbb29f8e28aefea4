"""The Yespo stand-in's fault plan: how it misbehaves on demand.

A plan is one `Faults` value; every fault in it is independent, so they combine (a delay
and a 503 rate, a drop rate and duplicate detection). The empty plan, `Faults()`, is a
healthy Yespo. Plans arrive as JSON on ``POST /_standin/faults`` (`Faults.from_json`) or
are assigned directly by in-process tests (``standin.faults = Faults(status=503)``).

Randomness comes from the plan's own `random.Random`, seeded with `seed`, so a plan built
with a seed gives the same sequence of outcomes for the same sequence of requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


class FaultsError(ValueError):
    """A fault plan in JSON that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class RejectIf:
    """Refuse the events and orders carrying `param` equal to `value`.

    For an event, `param` is a param name (exact case), and the event gets `status` (400;
    a 5xx makes one event fail on its own while others pass). For an order, a top-level
    field: the order goes into failedOrders, or with `whole_request` the whole Add-orders
    request gets `status`, as Yespo refuses a batch that one bad order spoils.
    """

    param: str
    value: str
    message: str = "rejected by the stand-in's reject_if fault"
    status: int = 400
    whole_request: bool = False


@dataclass(slots=True)
class Faults:
    """What the stand-in does wrong, checked in this order for each Yespo request.

    hang:         fraction of requests (True = all) never answered; the connection is
                  held until the client gives up, so the client sees its own timeout.
    delay_ms:     wait this long before answering (then answer normally).
    throttle_every: answer 429 (Retry-After from `retry_after`) to every n-th request,
                  counted over both endpoints: a rate limit met at a steady pace, beside
                  the status fault's random failures.
    status:       answer this status to a `rate` fraction of requests, without checking
                  or recording them; a 400 carries ``{"message": ...}``. At most `times`
                  requests when `times` is set, then the status fault turns itself off.
    retry_after:  seconds for a ``Retry-After`` header on the status fault's answers.
    reject_if:    400 for events (failedOrders entry for orders) that match it.
    duplicate_detection: 400 "Duplicated request" for an event body byte-identical to
                  one already recorded, as Yespo answers a repeated request.
    drop_reply:   fraction of accepted requests (True = all) that are recorded, but whose
                  connection is then closed without a reply: a lost reply.
    seed:         seed for the plan's random numbers, for reproducible runs.
    """

    status: int | None = None
    rate: float = 1.0
    retry_after: int | None = None
    times: int | None = None
    throttle_every: int | None = None
    delay_ms: float = 0.0
    hang: float = 0.0
    drop_reply: float = 0.0
    duplicate_detection: bool = False
    reject_if: RejectIf | None = None
    seed: int | None = None
    rng: random.Random = field(init=False, repr=False, compare=False)
    requests: int = field(init=False, default=0, compare=False)  # seen, for throttle_every

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self, fraction: float) -> bool:
        """True for a `fraction` of calls; draws a random number only for 0 < fraction < 1."""
        if fraction >= 1.0:
            return True
        return fraction > 0.0 and self.rng.random() < fraction

    def take_status(self) -> int | None:
        """The status the throttle or the status fault answers this request with, or None
        to go on."""
        self.requests += 1
        if self.throttle_every and self.requests % self.throttle_every == 0:
            return 429
        if self.status is None or not self.roll(self.rate):
            return None
        status = self.status
        if self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.status = self.times = None
        return status

    def to_json(self) -> dict[str, Any]:
        reject = self.reject_if
        return {
            "status": self.status,
            "rate": self.rate,
            "retry_after": self.retry_after,
            "times": self.times,
            "throttle_every": self.throttle_every,
            "delay_ms": self.delay_ms,
            "hang": float(self.hang),
            "drop_reply": float(self.drop_reply),
            "duplicate_detection": self.duplicate_detection,
            "reject_if": None
            if reject is None
            else {
                "param": reject.param,
                "value": reject.value,
                "message": reject.message,
                "status": reject.status,
                "whole_request": reject.whole_request,
            },
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """A plan from its JSON form; unknown fields are an error, so typos do not pass."""
        if not isinstance(data, dict):
            raise FaultsError("the fault plan must be a JSON object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise FaultsError(f"unknown fault(s) {unknown}; known: {sorted(_FIELDS)}")
        status = _optional_int(data, "status", 200, 599)
        rate = _fraction(data, "rate", 1.0)
        if "rate" in data and status is None:
            raise FaultsError("rate applies to the status fault: give status too")
        return cls(
            status=status,
            rate=rate,
            retry_after=_optional_int(data, "retry_after", 0, 86_400),
            times=_optional_int(data, "times", 1, 10**9),
            throttle_every=_optional_int(data, "throttle_every", 1, 10**9),
            delay_ms=_number(data, "delay_ms", 0.0, 600_000.0),
            hang=_fraction(data, "hang", 0.0),
            drop_reply=_fraction(data, "drop_reply", 0.0),
            duplicate_detection=_flag(data, "duplicate_detection"),
            reject_if=_reject_if(data.get("reject_if")),
            seed=_optional_int(data, "seed", -(2**63), 2**63),
        )


_FIELDS = frozenset(
    {
        "status",
        "rate",
        "retry_after",
        "times",
        "throttle_every",
        "delay_ms",
        "hang",
        "drop_reply",
        "duplicate_detection",
        "reject_if",
        "seed",
    }
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional_int(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise FaultsError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float:
    value = data.get(name, low)
    if not _is_number(value) or not low <= value <= high:
        raise FaultsError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _fraction(data: dict[str, Any], name: str, default: float) -> float:
    """A probability: a number from 0 to 1, or true (always) / false (never)."""
    value = data.get(name, default)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise FaultsError(f"{name} must be true, false or a fraction from 0 to 1, got {value!r}")
    return float(value)


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise FaultsError(f"{name} must be true or false, got {value!r}")
    return value


def _reject_if(value: object) -> RejectIf | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("param"), str)
        or not isinstance(value.get("value"), str)
        or not isinstance(value.get("message", ""), str)
        or not set(value) <= {"param", "value", "message", "status", "whole_request"}
    ):
        raise FaultsError(
            'reject_if must be {"param": str, "value": str, "message"?: str,'
            ' "status"?: 400-599, "whole_request"?: bool}'
        )
    given = {k: value[k] for k in ("message",) if k in value}
    status = _optional_int(value, "status", 400, 599)
    return RejectIf(
        value["param"],
        value["value"],
        **given,
        status=400 if status is None else status,
        whole_request=_flag(value, "whole_request"),
    )
