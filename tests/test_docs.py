"""The reference cannot drift from the code: the configuration table in
docs/configuration.md lists exactly the settings `collector.config` reads."""

from __future__ import annotations

import re

from collector.config import ENV, Settings

from .conftest import ROOT

CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def documented() -> dict[str, str]:
    """Variable -> default column, from the table's rows."""
    rows: dict[str, str] = {}
    for line in CONFIGURATION.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Z_]+)`", cells[0]) if len(cells) >= 4 else None
        if match:
            rows[match.group(1)] = cells[2]
    return rows


def test_every_setting_is_documented_and_nothing_else() -> None:
    assert sorted(documented()) == sorted(ENV.values())


def test_documented_defaults_are_the_code_defaults() -> None:
    defaults = Settings()
    wrong = []
    for name, var in ENV.items():
        value = getattr(defaults, name)
        cell = documented()[var]
        if cell.startswith("*"):  # a default in words: computed, generated or none
            continue
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if cell != f"`{value}`":
            wrong.append(f"{var}: documented {cell}, code {value!r}")
    assert not wrong
