from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import Settings
from collector.errors import ConfigError
from collector.spool import BACKENDS, backend_for, open_spool, sqlite_path
from collector.spool.memory import MemorySpool
from collector.spool.sqlite import SqliteSpool


def test_environment_and_flags_end_in_one_settings_object() -> None:
    env = {
        "COLLECTOR_API_KEYS": "k1, k2,,",
        "COLLECTOR_PORT": "9000",
        "COLLECTOR_SPOOL_URL": "sqlite:////var/lib/collector/spool.db",
        "COLLECTOR_CHECK_ORDER_TOTAL": "off",
        "COLLECTOR_KEY_VALUE_ORDER": "phone,email",
        "YESPO_API_KEY": "secret",
        "COLLECTOR_WEB_RATE": "2.5",
        "COLLECTOR_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
    }
    s = Settings.from_env(env, port=9100, host=None)
    assert (s.web_rate, s.web_burst, s.trusted_proxies) == (2.5, 200, ("10.0.0.0/8", "::1"))
    assert s.api_keys == ("k1", "k2")
    assert s.port == 9100  # the flag wins over the environment
    assert s.host == "127.0.0.1"
    assert s.check_order_total is False
    assert s.key_value_order == ("phone", "email")
    assert not s.dry_run and not s.generated_key
    assert sqlite_path(s.spool_url) == "/var/lib/collector/spool.db"


def test_no_keys_configured_makes_one_up() -> None:
    s = Settings.from_env({})
    assert s.generated_key and len(s.api_keys) == 1 and len(s.api_keys[0]) >= 20
    assert s.dry_run


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COLLECTOR_PORT": "eighty"}, "COLLECTOR_PORT must be a whole number"),
        ({"COLLECTOR_SPOOL_SYNC": "maybe"}, "COLLECTOR_SPOOL_SYNC"),
        ({"COLLECTOR_TIMEZONE": "Mars/Olympus"}, "unknown zone"),
        ({"COLLECTOR_CHECK_ORDER_TOTAL": "perhaps"}, "true or false"),
        ({"COLLECTOR_KEY_VALUE_ORDER": "email,fax"}, "COLLECTOR_KEY_VALUE_ORDER .*fax"),
        ({"COLLECTOR_MAX_BATCH_EVENTS": "100"}, "COLLECTOR_MAX_BATCH_EVENTS must be at least 500"),
        ({"COLLECTOR_PORT": "0"}, "COLLECTOR_PORT must be positive"),
        ({"YESPO_TIMEOUT": "0"}, "YESPO_TIMEOUT must be positive"),
        ({"COLLECTOR_LOG_LEVEL": "loud"}, "COLLECTOR_LOG_LEVEL must be one of debug"),
        ({"COLLECTOR_SPOOL_URL": "postgres://x"}, "COLLECTOR_SPOOL_URL: unknown spool scheme"),
        ({"COLLECTOR_WEB_RATE": "-1"}, "COLLECTOR_WEB_RATE must be >= 0"),
        ({"COLLECTOR_WEB_BURST": "0"}, "COLLECTOR_WEB_BURST must be positive"),
        ({"COLLECTOR_TRUSTED_PROXIES": "10.0.0.1, proxy.local"}, "'proxy.local' is not an address"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_log_level_is_read_in_any_case() -> None:
    assert Settings.from_env({"COLLECTOR_LOG_LEVEL": "WARNING"}).log_level == "warning"


def test_spool_url_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_spool(Settings(spool_url="memory://")), MemorySpool)
    sqlite = open_spool(Settings(spool_url=f"sqlite:///{tmp_path}/s.db"))
    assert isinstance(sqlite, SqliteSpool) and sqlite.path == f"{tmp_path}/s.db"
    assert sqlite_path("sqlite:///data/spool.db") == "data/spool.db"
    with pytest.raises(ConfigError, match="sqlite:///"):
        sqlite_path("sqlite://data.db")


def test_settings_and_open_spool_read_one_table_of_backends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both refuse a scheme the table lacks, with the same words...
    with pytest.raises(ConfigError, match="unknown spool scheme 'postgres'"):
        backend_for("postgres://x")
    with pytest.raises(ConfigError, match="unknown spool scheme 'postgres'"):
        Settings(spool_url="postgres://x")
    # ...and both take one that is added to it: there is no second list to forget.
    made = MemorySpool(max_events=1, dedup_window_ms=0)
    monkeypatch.setitem(BACKENDS, "postgres", lambda settings: made)
    assert open_spool(Settings(spool_url="postgres://x")) is made


@pytest.mark.parametrize(
    "env",
    [
        {"COLLECTOR_API_KEYS": "k1,same"},
        {"COLLECTOR_API_KEYS": "k1", "COLLECTOR_SITE_KEYS": "same=self"},
        {"COLLECTOR_API_KEYS": "k1", "COLLECTOR_SEGMENT_WRITE_KEYS": "same"},
    ],
)
def test_the_inspector_key_must_differ_from_every_sending_key(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="COLLECTOR_INSPECT_KEY must differ"):
        Settings.from_env({**env, "COLLECTOR_INSPECT_KEY": "same"})


def test_the_inspector_is_off_until_it_has_a_key() -> None:
    assert Settings.from_env({}).inspect_key is None
    settings = Settings.from_env({"COLLECTOR_INSPECT_KEY": "op", "COLLECTOR_INSPECT_BUFFER": "0"})
    assert (settings.inspect_key, settings.inspect_buffer, settings.inspect_age_s) == ("op", 0, 900)
    with pytest.raises(ConfigError, match="COLLECTOR_INSPECT_BUFFER"):
        Settings.from_env({"COLLECTOR_INSPECT_BUFFER": "-1"})
