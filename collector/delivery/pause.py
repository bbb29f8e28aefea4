"""The 401 pause of collectors that share a spool (Redis): one gets a 401, all stop, one
at a time probes, all resume when a probe is delivered.

The spool keeps the pause (`Queue.pause_delivery`) and hands out nothing while it is on
but to the collector that has the turn to probe, so no collector sends once the pause is
recorded, whether it has noticed it yet or not. Each forwarder tells the spool of the
pauses and resumes its own breaker saw, asks at most every `PAUSE_CHECK_MS` whether
another collector paused delivery or ended the pause, and while paused asks for the turn
before each probe. A spool that is one process's (SQLite, memory) answers None to all
of it: the forwarder then pauses and probes on its own, as it always did.
"""

from __future__ import annotations

from ..spool import SharedPause, Spool
from .breaker import Breaker, State

# How often a forwarder asks the spool whether another collector paused delivery or ended
# the pause: a round trip a second is nothing beside the sends, and a collector resumes
# (or says it is paused) within a second of the collector that probed.
PAUSE_CHECK_MS = 1000


class PauseShare:
    """One forwarder's side of the spool's pause."""

    def __init__(self, spool: Spool, breaker: Breaker, turn_ms: int) -> None:
        self.spool = spool
        self.breaker = breaker
        # The turn to probe outlives a probe's send, as a lease does, and passes on to
        # another collector this long after its holder stopped asking (it died).
        self.turn_ms = turn_ms
        self.shared = False  # the breaker's pause is the spool's: probe in turn
        self._news: State | None = None  # a change of the breaker's not yet told
        self._checked: int | None = None

    def saw(self, was: State, new: State) -> None:
        """The breaker moved from `was` to `new` on an answer this forwarder got."""
        if new is State.PAUSED or was is State.PAUSED:
            self._news = new

    async def tell(self) -> None:
        """Tell the spool the pause or resume the breaker saw, if any. The forwarder calls
        this before it writes outcomes: the entries that got the 401 go back to the queue
        only once the pause is on, so no other collector sends them meanwhile."""
        news, self._news = self._news, None
        if news is None:
            return
        try:
            if news is State.PAUSED:
                breaker = self.breaker
                pause = await self.spool.pause_delivery(breaker.reason, breaker.since, self.turn_ms)
                self.shared = pause is not None
            else:
                await self.spool.resume_delivery()
                self.shared = False
        except BaseException:
            if self._news is None:  # nothing newer meanwhile: tell it next time
                self._news = news
            raise

    async def check(self, now: int) -> str | None:
        """At most every PAUSE_CHECK_MS: why another collector paused delivery, when it
        did; None when it did not (or the spool is one process's)."""
        if self._checked is not None and now - self._checked < PAUSE_CHECK_MS:
            return None
        self._checked = now
        pause = await self.spool.delivery_pause()
        if pause is None or pause.reason is None:
            return None
        self.shared = True
        return f"{pause.reason} (delivery is paused for every collector on this spool)"

    async def turn(self) -> SharedPause:
        """While the pause is the spool's: the pause as it is now, taking the turn to
        probe if nobody has it and keeping it if this collector has it."""
        pause = await self.spool.delivery_pause(self.turn_ms)
        if pause is None or pause.reason is None:
            self.shared = False
            return SharedPause(None, 0, False)
        return pause
