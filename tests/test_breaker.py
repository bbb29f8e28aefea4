"""The circuit breaker's state machine (pure): when sending stops, when it goes on, how
often it probes, and which answers say Yespo is down."""

from __future__ import annotations

import pytest

from collector.delivery.breaker import Breaker, Signal, State, signal_of
from collector.delivery.yespo import Reply

SIGNALS = {"D": Signal.DELIVERED, "A": Signal.ANSWERED, "X": Signal.DOWN, "U": Signal.AUTH}
STATES = {State.CLOSED: "C", State.OPEN: "O", State.PAUSED: "P"}


def run(breaker: Breaker, answers: str) -> str:
    """Feed answers such as "Xa Xb Dc" (signal, then the key); the state after each."""
    after = ""
    for t, answer in enumerate(answers.split()):
        breaker.observe(SIGNALS[answer[0]], answer[1:], f"answer {t}", now=t)
        after += STATES[breaker.state]
    return after


@pytest.mark.parametrize(
    ("answers", "states"),
    [
        # four failures in a row of three keys or more: open
        ("Xa Xb Xc Xd", "CCCO"),
        ("Xa Xa Xb Xc", "CCCO"),
        # one key failing again and again is that key's problem, not Yespo's
        ("Xa Xa Xa Xa Xa Xa Xa Xa", "CCCCCCCC"),
        ("Xa Xb Xa Xb Xa Xb Xa Xb", "CCCCCCCC"),
        # an answer from Yespo between failures starts the count again: 2xx, 400, 429
        ("Xa Xb Xc Dd Xe Xf Xg", "CCCCCCC"),
        ("Xa Xb Xc Ad Xe Xf Xg Xh", "CCCCCCCO"),
        # open: failures keep it open; the first answer closes it, a 429 or 400 as well
        ("Xa Xb Xc Xd Xe Xf Da", "CCCOOOC"),
        ("Xa Xb Xc Xd Aa", "CCCOC"),
        # closed again, it needs a whole new run of failures to open
        ("Xa Xb Xc Xd Da Xa Xb Xc Xd", "CCCOCCCCO"),
        # 401/403: paused at once, from closed or open
        ("Ua", "P"),
        ("Xa Xb Xc Xd Ua", "CCCOP"),
        # paused: only a taken entry resumes; outage answers and 429s tell nothing of the key
        ("Ua Xb Xc Xd Xe Xf Ab Da", "PPPPPPPC"),
    ],
)
def test_state_after_each_answer(answers: str, states: str) -> None:
    assert run(Breaker(open_after=4, open_keys=3), answers) == states


def test_observe_reports_changes_only_so_each_is_logged_once() -> None:
    breaker = Breaker(open_after=2, open_keys=2)
    reported = [
        breaker.observe(s, key, "", now=0)
        for s, key in [(Signal.DOWN, "a"), (Signal.DOWN, "b"), (Signal.DOWN, "c"),
                       (Signal.DOWN, "d"), (Signal.DELIVERED, "a"), (Signal.DELIVERED, "b")]
    ]  # fmt: skip
    assert reported == [None, State.OPEN, None, None, State.CLOSED, None]


def test_held_shows_why_with_the_last_answer() -> None:
    breaker = Breaker(open_after=2, open_keys=2)
    breaker.observe(Signal.DOWN, "a", "refused", now=1)
    breaker.observe(Signal.DOWN, "b", "HTTP 503", now=2)
    assert (breaker.held, breaker.state, breaker.since, breaker.reason) == (
        True, State.OPEN, 2, "HTTP 503"
    )  # fmt: skip
    breaker.observe(Signal.DOWN, "c", "timeout", now=3)
    assert (breaker.since, breaker.reason) == (2, "timeout")
    breaker.observe(Signal.DELIVERED, "c", "", now=4)
    assert not breaker.held


def test_probes_back_off_doubling_to_a_cap_and_start_again_at_each_hold() -> None:
    breaker = Breaker(open_after=1, open_keys=1, outage_probe_ms=(1000, 5000),
                      auth_probe_ms=(2000, 60_000))  # fmt: skip
    breaker.observe(Signal.DOWN, "a", "", now=0)
    assert [breaker.next_probe_ms() for _ in range(5)] == [1000, 2000, 4000, 5000, 5000]
    breaker.observe(Signal.AUTH, "a", "", now=1)  # a probe got 401: Yespo is back, the key not
    assert [breaker.next_probe_ms() for _ in range(7)] == [
        2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000
    ]  # fmt: skip
    breaker.observe(Signal.DELIVERED, "a", "", now=2)
    breaker.observe(Signal.DOWN, "a", "", now=3)
    assert breaker.next_probe_ms() == 1000


def test_another_collectors_pause_is_followed_and_only_its_end_resumes() -> None:
    breaker = Breaker(open_after=1, open_keys=1, auth_probe_ms=(2000, 60_000))
    assert breaker.follow(None, now=1) is None  # no pause to end: stays closed
    assert breaker.follow("HTTP 401 (shared)", now=2) is State.PAUSED
    assert (breaker.status(), breaker.since, breaker.next_probe_ms()) == (
        "paused: HTTP 401 (shared)", 2, 2000
    )  # fmt: skip
    assert breaker.follow("HTTP 401 (shared)", now=3) is None  # paused already: no news
    breaker.observe(Signal.DOWN, "a", "HTTP 503", now=4)  # tells nothing of the key
    assert breaker.state is State.PAUSED
    assert breaker.follow(None, now=5) is State.CLOSED  # another's probe was delivered
    breaker.observe(Signal.DOWN, "a", "HTTP 503", now=6)  # an outage here...
    assert breaker.follow("HTTP 401", now=7) is State.PAUSED  # ...gives way to the pause
    assert breaker.was_open(6) and not breaker.was_open(8)


def test_the_breaker_remembers_when_it_was_open() -> None:
    breaker = Breaker(open_after=1, open_keys=1)
    breaker.observe(Signal.DOWN, "a", "", now=100)
    breaker.observe(Signal.DELIVERED, "a", "", now=200)
    breaker.observe(Signal.AUTH, "a", "", now=300)  # a pause is not an outage
    breaker.observe(Signal.DELIVERED, "a", "", now=400)
    breaker.observe(Signal.DOWN, "a", "", now=500)
    assert [breaker.was_open(t) for t in (99, 100, 150, 200, 201, 350, 499, 500, 10**12)] == [
        False, True, True, True, False, False, False, True, True
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "signal"),
    [
        (Reply(200, ""), Signal.DELIVERED),
        (Reply(400, '{"message": "Duplicated request"}'), Signal.DELIVERED),
        (Reply(400, '{"message": "bad"}'), Signal.ANSWERED),
        (Reply(404, "no such path"), Signal.ANSWERED),
        (Reply(429, "slow down", 2.0), Signal.ANSWERED),  # up, and asking for less: no trip
        (Reply(401, ""), Signal.AUTH),
        (Reply(403, ""), Signal.AUTH),
        (Reply(408, ""), Signal.DOWN),
        (Reply(500, ""), Signal.DOWN),
        (Reply(503, ""), Signal.DOWN),
        (Reply(None, "ClientConnectorError: connection refused"), Signal.DOWN),
        (Reply(None, "TimeoutError: "), Signal.DOWN),
    ],
)
def test_what_each_answer_says_about_yespo(reply: Reply, signal: Signal) -> None:
    assert signal_of(reply) is signal
