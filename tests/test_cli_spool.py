"""Operator commands against a real SQLite spool file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from click.testing import CliRunner

from collector.cli import main
from collector.spool.sqlite import SqliteSpool

from .spool.conftest import T0, Entry
from .spool.test_visitors import V1, V2, held


def make_spool(path: Path) -> str:
    async def fill() -> None:
        s = SqliteSpool(str(path), max_events=100, dedup_window_ms=60_000)
        await s.open()
        await s.append(
            [
                Entry("a1", key="A"),
                Entry("b1", key="B", event_type="orderCreated"),
                Entry("c1", key="C"),
            ],
            T0,
        )
        leased = {r.message_id: r.seq for r in await s.lease(10, 1, T0)}
        await s.dead_letter([leased["a1"]], "rejected", 400, "bad param page", T0)
        await s.dead_letter([leased["b1"]], "expired", 503, "gave up", T0)
        await s.close()

    asyncio.run(fill())
    return f"sqlite:///{path}"


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_status_shows_depth_and_dead_letters_by_reason(tmp_path: Path) -> None:
    url = make_spool(tmp_path / "s.db")
    out = run("spool", "status", "--spool-url", url)
    assert "waiting:      1" in out
    assert "dead letters: 2" in out and "rejected: 1" in out and "expired: 1" in out


def test_dead_lists_with_filters_and_json(tmp_path: Path) -> None:
    url = make_spool(tmp_path / "s.db")
    lines = run("spool", "dead", "--spool-url", url, "--json").splitlines()
    assert [orjson.loads(line)["messageId"] for line in lines] == ["a1", "b1"]
    first = orjson.loads(lines[0])
    assert (first["reason"], first["status"], first["detail"]) == (
        "rejected",
        400,
        "bad param page",
    )
    assert first["body"] == {"eventTypeKey": "pageViewed"}
    out = run("spool", "dead", "--spool-url", url, "--type", "orderCreated")
    assert "b1" in out and "a1" not in out


def test_replay_by_reason_then_purge_the_rest(tmp_path: Path) -> None:
    url = make_spool(tmp_path / "s.db")
    assert "requeued 1" in run("spool", "replay", "--spool-url", url, "--reason", "rejected")
    assert "waiting:      2" in run("spool", "status", "--spool-url", url)
    assert "deleted 1" in run("spool", "purge", "--spool-url", url, "--all", "--yes")
    assert "dead letters: 0" in run("spool", "status", "--spool-url", url)


def test_replay_and_purge_refuse_to_guess_what_to_act_on(tmp_path: Path) -> None:
    url = make_spool(tmp_path / "s.db")
    result = CliRunner().invoke(main, ["spool", "purge", "--spool-url", url])
    assert result.exit_code == 2 and "--all" in result.output
    result = CliRunner().invoke(main, ["spool", "purge", "--spool-url", url, "--all"], input="n\n")
    assert result.exit_code == 1
    assert "dead letters: 2" in run("spool", "status", "--spool-url", url)


def test_status_shows_events_held_for_anonymous_visitors(tmp_path: Path) -> None:
    async def fill() -> None:
        s = SqliteSpool(str(tmp_path / "s.db"), max_events=100, dedup_window_ms=60_000)
        await s.open()
        await s.hold([held("a1"), held("a2"), held("b1", V2)], T0, 10)
        await s.append([Entry("c1")], T0)
        await s.close()

    asyncio.run(fill())
    out = run("spool", "status", "--spool-url", f"sqlite:///{tmp_path / 's.db'}")
    assert "waiting:      1" in out
    assert "held (anonymous, waiting for identify): 3" in out
    assert V1 not in out  # counts, not visitors


def test_dead_says_there_are_none_and_json_prints_nothing(tmp_path: Path) -> None:
    url = make_spool(tmp_path / "s.db")
    assert run("spool", "dead", "--spool-url", url, "--type", "cartUpdated") == (
        "none of the 2 dead letters match\n"
    )
    assert run("spool", "dead", "--spool-url", url, "--type", "cartUpdated", "--json") == ""
    run("spool", "purge", "--spool-url", url, "--all", "--yes")
    assert run("spool", "dead", "--spool-url", url) == "no dead letters\n"
    assert run("spool", "dead", "--spool-url", url, "--json") == ""  # scripts read no line


def test_rejected_lists_the_calls_with_their_reason_and_purges_them(tmp_path: Path) -> None:
    from collector.spool import Rejected

    path = tmp_path / "r.db"

    async def fill() -> None:
        s = SqliteSpool(str(path), max_events=100, dedup_window_ms=60_000)
        await s.open()
        await s.keep_rejected(
            [
                Rejected("segment", "no_url", "page has no properties.url", "m1", b'{"a":1}', T0),
                Rejected("segment", "bad_contact", "traits.email: bad", "m2", b'{"b":2}', T0),
            ],
            keep=100,
        )
        await s.close()

    asyncio.run(fill())
    url = f"sqlite:///{path}"
    assert "rejected calls: 2" in run("spool", "status", "--spool-url", url)
    lines = run("spool", "rejected", "--spool-url", url, "--json").splitlines()
    assert [orjson.loads(line)["call"] for line in lines] == [{"a": 1}, {"b": 2}]
    assert orjson.loads(lines[0])["reason"] == "no_url"
    out = run("spool", "rejected", "--spool-url", url, "--reason", "bad_contact")
    assert "m2" in out and "m1" not in out
    assert "deleted 1" in run(
        "spool", "rejected", "--spool-url", url, "--purge", "--reason", "no_url"
    )
    assert "m1" not in run("spool", "rejected", "--spool-url", url)
