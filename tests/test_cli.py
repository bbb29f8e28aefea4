"""The command line's help and its errors, as a newcomer meets them (click's CliRunner)."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner, Result

from collector.cli import main
from collector.config import ENV

from .conftest import ROOT

# What a newcomer needs before anything else: keys in, Yespo out, browsers, the demo.
NEWCOMER_SETTINGS = (
    "COLLECTOR_API_KEYS",
    "YESPO_API_KEY",
    "YESPO_API_URL",
    "COLLECTOR_DEMO",
    "COLLECTOR_SITE_KEYS",
)


def invoke(args: list[str], env: dict[str, str] | None = None, width: int = 80) -> Result:
    return CliRunner().invoke(main, args, env=env, terminal_width=width)


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"]])
def test_help_names_the_settings_a_newcomer_needs_and_where_the_rest_are(args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 0, result.output
    for name in NEWCOMER_SETTINGS:
        # one line each: the name, then what it is for
        assert re.search(rf"^ +{name} +\S", result.output, re.M), name
    assert "docs/configuration.md" in result.output
    assert (ROOT / "docs" / "configuration.md").is_file()


def test_the_settings_the_help_names_are_real_and_documented() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for name in NEWCOMER_SETTINGS:
        assert name in ENV.values()
        assert f"| `{name}` |" in reference


def commands(group: click.Group, path: list[str]) -> list[list[str]]:
    """The path of every group under `group`, itself included."""
    found = [path]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            found += commands(cmd, [*path, name])
    return found


@pytest.mark.parametrize("width", [80, 60])
def test_command_summaries_are_whole_sentences(width: int) -> None:
    for path in commands(main, []):
        result = invoke([*path, "--help"], width=width)
        section = result.output.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
        # A row starts at the name column; a wrapped summary goes on, further in.
        rows = re.split(r"\n(?=  \S)", section.strip("\n"))
        for row in rows:
            summary = " ".join(row.split()[1:])
            assert summary.endswith(".") and not summary.endswith("..."), (path, summary)


@pytest.mark.parametrize(
    ("args", "env", "named", "not_named"),
    [
        (["serve", "--log-level", "loud"], {}, "'--log-level'", "COLLECTOR_LOG_LEVEL"),
        (["forward", "--log-level", "loud"], {}, "'--log-level'", "COLLECTOR_LOG_LEVEL"),
        (["serve"], {"COLLECTOR_LOG_LEVEL": "loud"}, "COLLECTOR_LOG_LEVEL", "--log-level"),
        (["serve", "--port", "0"], {}, "'--port'", "COLLECTOR_PORT"),
        (["serve", "--spool-url", "foo://x"], {}, "--spool-url: unknown spool scheme",
         "COLLECTOR_SPOOL_URL"),
        (["serve"], {"COLLECTOR_SPOOL_URL": "foo://x"}, "COLLECTOR_SPOOL_URL: unknown spool",
         "--spool-url"),
        (["serve", "--spool-url", "sqlite://spool.db"], {}, "--spool-url: expected sqlite:///",
         "COLLECTOR_SPOOL_URL"),
        (["spool", "status"], {"COLLECTOR_SPOOL_URL": "sqlite://spool.db"},
         "COLLECTOR_SPOOL_URL: expected sqlite:///", "--spool-url"),
    ],
)  # fmt: skip
def test_a_bad_flag_is_reported_as_the_flag_and_a_bad_variable_as_the_variable(
    args: list[str], env: dict[str, str], named: str, not_named: str
) -> None:
    result = invoke(args, env)
    assert result.exit_code == 2, result.output  # a usage error, not a traceback
    error = result.output.split("Error: ", 1)[1]
    assert named in error and not_named not in error, error
