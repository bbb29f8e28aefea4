"""Settings: one frozen object, built once from the environment and CLI flags.

This module is the only reader of ``os.environ``: everything else receives a
`Settings`. Every limit has a name, a default and a reason next to it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError
from .normalize.contact import CONTACT_FIELDS, IDENTIFYING_FIELDS
from .normalize.routing import ORDERS_API_MODES
from .spool import backend_for

# The body cap must hold the documented minimum batch (500 events and 1 MB) with room to
# spare; 4 MiB also fits 1000 typical orders for /api/v1/orders.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# At least 500 events per batch is promised; 1000 matches Yespo's own Add-orders limit.
DEFAULT_MAX_BATCH_EVENTS = 1000
# messageId deduplication window: long enough to cover a client's retries across a day.
DEFAULT_DEDUP_WINDOW_S = 24 * 3600
# Ingest requests in hand at once (reading, normalizing, waiting for the commit); past it a
# request is answered 503 + Retry-After at once. Far above what one process commits
# concurrently (64 connections saturate it), low enough that an overload gets fast
# answers and /healthz is not queued behind seconds of work.
DEFAULT_MAX_IN_FLIGHT = 256
# Spool bound: about 1 GB of typical 1 KB events; past it ingest answers 503 instead of
# filling the disk.
DEFAULT_SPOOL_MAX_EVENTS = 1_000_000


# Requests in flight to Yespo at once; each is one keep-alive connection.
DEFAULT_YESPO_CONCURRENCY = 32
# Yespo publishes no rate limit; 200 requests/s is ~17 million events a day, far above a
# typical shop, and low enough not to look like a flood. 0 lifts the ceiling.
DEFAULT_YESPO_MAX_RPS = 200.0
# An entry that still fails after a week is dead-lettered ("expired") instead of retried.
DEFAULT_MAX_EVENT_AGE_S = 7 * 24 * 3600


# Browsers: an anonymous visitor's events wait in the spool until the visitor identifies.
# 200 covers a long browsing session; past it the oldest go (and are counted).
DEFAULT_ANONYMOUS_MAX_EVENTS = 200
# A week: most shoppers who identify at all do so within days of browsing.
DEFAULT_ANONYMOUS_MAX_AGE_S = 7 * 24 * 3600
# How long the collector remembers who an identified visitor is: the visitor cookie's life.
DEFAULT_VISITOR_TTL_S = 365 * 24 * 3600
# A dead collector's leases go to the others after this: short enough that a contact's
# events are late by half a minute at most, three default request timeouts long.
DEFAULT_LEASE_S = 30
# The browser endpoint's ceiling per client address. The script sends about one request
# per page (batches of up to 20 events), so a shopper stays far below 20 a second; a burst
# of 200 leaves room for many shoppers behind one address (an office, a carrier's NAT) and
# for the demo and tests. One machine flooding the endpoint is held to 20 a second.
DEFAULT_WEB_RATE = 20.0
DEFAULT_WEB_BURST = 200
# Segment: a remembered cart is forgotten this long after its last change. A month covers
# Yespo's abandoned-cart flows, which act within days.
DEFAULT_CART_TTL_S = 30 * 24 * 3600
# The live inspector's ring buffer: 2000 steps are the last minutes of a small shop (a page
# opened now shows them) and a few MB at most, since a step is kept as references.
DEFAULT_INSPECT_BUFFER = 2000
# A quarter of an hour: what happened "just now" while someone wires their tracking.
DEFAULT_INSPECT_AGE_S = 900


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the collector can be told. See the README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 8080
    spool_url: str = "sqlite:///data/spool.db"
    spool_sync: str = "full"
    spool_max_events: int = DEFAULT_SPOOL_MAX_EVENTS
    dedup_window_s: int = DEFAULT_DEDUP_WINDOW_S
    api_keys: tuple[str, ...] = ()
    yespo_api_url: str = "https://yespo.io/api"
    yespo_api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    timezone: str = "UTC"
    key_value_order: tuple[str, ...] = CONTACT_FIELDS
    identifying_params: tuple[str, ...] = IDENTIFYING_FIELDS
    check_order_total: bool = True
    phone_region: str | None = None
    log_level: str = "info"
    # Delivery (the forwarder).
    forward: bool = True
    yespo_event_api: str = "v1"
    yespo_orders_api: str = "event"
    yespo_concurrency: int = DEFAULT_YESPO_CONCURRENCY
    yespo_max_rps: float = DEFAULT_YESPO_MAX_RPS
    yespo_timeout_s: float = 10.0
    retry_base_ms: int = 1000
    retry_max_delay_s: int = 300
    max_event_age_s: int = DEFAULT_MAX_EVENT_AGE_S
    shutdown_timeout_s: float = 10.0
    # How long an entry stays leased to a forwarder: a collector that dies holding leases
    # (Redis: several share one queue) has them taken over by the others after this. At
    # least twice YESPO_TIMEOUT, so that a request still on its way keeps its lease.
    lease_s: int = DEFAULT_LEASE_S
    # Browsers (collector/sources/browser.py).
    web_path: str = "/lib/y"
    site_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    demo: bool = False
    visitor_cookie: str = "yc_aid"
    cookie_domain: str | None = None
    anonymous_max_events: int = DEFAULT_ANONYMOUS_MAX_EVENTS
    anonymous_max_age_s: int = DEFAULT_ANONYMOUS_MAX_AGE_S
    visitor_ttl_s: int = DEFAULT_VISITOR_TTL_S
    static_dir: str | None = None  # None: the package's own collector/static/
    web_rate: float = DEFAULT_WEB_RATE  # requests a second per client address; 0: no ceiling
    web_burst: int = DEFAULT_WEB_BURST
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For names the client
    # Segment's HTTP Tracking API (collector/sources/segment/).
    segment_write_keys: tuple[str, ...] = ()
    segment_custom_events: bool = True
    cart_ttl_s: int = DEFAULT_CART_TTL_S
    # The live inspector (collector/inspect/): off (and every /inspect path 404) without a key.
    inspect_key: str | None = None
    inspect_buffer: int = DEFAULT_INSPECT_BUFFER  # steps kept; 0: only while someone watches
    inspect_age_s: int = DEFAULT_INSPECT_AGE_S
    # Keys generated at start-up because none were configured (printed in the banner).
    generated_key: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.spool_sync not in ("full", "normal"):
            raise ConfigError(
                f"COLLECTOR_SPOOL_SYNC must be 'full' or 'normal', got {self.spool_sync!r}"
            )
        if self.yespo_event_api not in ("v1", "v2"):
            raise ConfigError(f"YESPO_EVENT_API must be v1 or v2, got {self.yespo_event_api!r}")
        if self.yespo_orders_api not in ORDERS_API_MODES:
            raise ConfigError(
                f"YESPO_ORDERS_API must be event, orders or both, got {self.yespo_orders_api!r}"
            )
        if self.yespo_max_rps < 0 or self.shutdown_timeout_s < 0 or self.web_rate < 0:
            raise ConfigError(
                "YESPO_MAX_RPS, COLLECTOR_SHUTDOWN_TIMEOUT and COLLECTOR_WEB_RATE must be >= 0"
            )
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"COLLECTOR_TRUSTED_PROXIES: {proxy!r} is not an address or a network"
                    " such as 10.0.0.0/8"
                ) from None
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"COLLECTOR_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        object.__setattr__(self, "log_level", self.log_level.lower())  # uvicorn's spelling
        backend_for(self.spool_url)  # the spool's own table of backends
        for name in (
            "port", "spool_max_events", "max_body_bytes", "max_batch_events", "max_in_flight",
            "yespo_concurrency", "yespo_timeout_s", "retry_base_ms", "retry_max_delay_s",
            "max_event_age_s", "anonymous_max_events", "anonymous_max_age_s", "visitor_ttl_s",
            "lease_s",
            "web_burst",
            "cart_ttl_s",
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV[name]} must be positive, got {getattr(self, name)}")
        if self.lease_s < 2 * self.yespo_timeout_s:
            raise ConfigError(
                f"COLLECTOR_LEASE ({self.lease_s}) must be at least twice YESPO_TIMEOUT"
                f" ({self.yespo_timeout_s:g}): a lease must outlast the request it covers"
            )
        if self.max_batch_events < 500:
            raise ConfigError(
                "COLLECTOR_MAX_BATCH_EVENTS must be at least 500 (the documented batch size)"
            )
        if self.max_body_bytes < 1_000_000:
            raise ConfigError(
                "COLLECTOR_MAX_BODY_BYTES must be at least 1 MB (the documented batch size)"
            )
        if self.inspect_buffer < 0 or self.inspect_age_s <= 0:
            raise ConfigError(
                "COLLECTOR_INSPECT_BUFFER must be zero or positive, COLLECTOR_INSPECT_AGE positive"
            )
        if self.inspect_key is not None:
            others = {*self.api_keys, *self.site_keys, *self.segment_write_keys}
            if self.demo:
                others.add(DEMO_SITE_KEY)
            if self.inspect_key in others:
                raise ConfigError(
                    "COLLECTOR_INSPECT_KEY must differ from every API key, site key and Segment"
                    " write key: whoever sends events must not be able to watch them"
                )
        if self.dedup_window_s < 0:
            raise ConfigError("COLLECTOR_DEDUP_WINDOW must be zero or positive")
        for name in ("key_value_order", "identifying_params"):
            unknown = [f for f in getattr(self, name) if f not in CONTACT_FIELDS]
            if unknown or not getattr(self, name):
                raise ConfigError(
                    f"{ENV[name]} takes a non-empty list of {', '.join(CONTACT_FIELDS)};"
                    f" got {unknown}"
                )
        self.tz()  # fail at start-up, not on the first order
        if self.phone_region is not None:
            import phonenumbers

            region = self.phone_region.upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ConfigError(
                    "COLLECTOR_PHONE_REGION must be a two-letter region code such as UA or"
                    f" PL, got {self.phone_region!r}"
                )
            object.__setattr__(self, "phone_region", region)
        if not _WEB_PATH.fullmatch(self.web_path):
            raise ConfigError(
                "COLLECTOR_WEB_PATH must be a path such as /lib/y (letters, digits, - _ . /),"
                f" got {self.web_path!r}"
            )
        if not _COOKIE_NAME.fullmatch(self.visitor_cookie):
            raise ConfigError(
                f"COLLECTOR_VISITOR_COOKIE: not a cookie name: {self.visitor_cookie!r}"
            )
        for key, origins in self.site_keys.items():
            for origin in origins:
                if origin not in ("self", "*") and not _ORIGIN.fullmatch(origin):
                    raise ConfigError(
                        f"COLLECTOR_SITE_KEYS: site key {key!r}: {origin!r} is not an origin"
                        " such as https://shop.example (scheme, host, optional port; no path),"
                        " 'self' or '*'"
                    )

    def site_origins(self) -> dict[str, tuple[str, ...]]:
        """Site key -> allowed origins, the demo's key included when the demo is on."""
        keys = dict(self.site_keys)
        if self.demo:
            keys.setdefault(DEMO_SITE_KEY, ("self",))
        return keys

    def tz(self) -> tzinfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"COLLECTOR_TIMEZONE: unknown zone {self.timezone!r}") from exc

    @property
    def dry_run(self) -> bool:
        """No Yespo key: events are validated and spooled, delivery only logs them."""
        return not self.yespo_api_key

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from environment variables, then apply non-None overrides."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            spec = ENV.get(f.name)
            if spec is None:
                continue
            raw = env.get(spec)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, spec, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.get("api_keys"):
            # A first run without keys still works: one key is made up and printed.
            values["api_keys"] = (secrets.token_urlsafe(18),)
            values["generated_key"] = True
        return cls(**values)


# Setting name -> environment variable.
ENV: dict[str, str] = {
    "host": "COLLECTOR_HOST",
    "port": "COLLECTOR_PORT",
    "spool_url": "COLLECTOR_SPOOL_URL",
    "spool_sync": "COLLECTOR_SPOOL_SYNC",
    "spool_max_events": "COLLECTOR_SPOOL_MAX_EVENTS",
    "dedup_window_s": "COLLECTOR_DEDUP_WINDOW",
    "api_keys": "COLLECTOR_API_KEYS",
    "yespo_api_url": "YESPO_API_URL",
    "yespo_api_key": "YESPO_API_KEY",
    "max_body_bytes": "COLLECTOR_MAX_BODY_BYTES",
    "max_batch_events": "COLLECTOR_MAX_BATCH_EVENTS",
    "max_in_flight": "COLLECTOR_MAX_IN_FLIGHT",
    "timezone": "COLLECTOR_TIMEZONE",
    "key_value_order": "COLLECTOR_KEY_VALUE_ORDER",
    "identifying_params": "COLLECTOR_IDENTIFYING_PARAMS",
    "check_order_total": "COLLECTOR_CHECK_ORDER_TOTAL",
    "phone_region": "COLLECTOR_PHONE_REGION",
    "log_level": "COLLECTOR_LOG_LEVEL",
    "forward": "COLLECTOR_FORWARD",
    "yespo_event_api": "YESPO_EVENT_API",
    "yespo_orders_api": "YESPO_ORDERS_API",
    "yespo_concurrency": "YESPO_CONCURRENCY",
    "yespo_max_rps": "YESPO_MAX_RPS",
    "yespo_timeout_s": "YESPO_TIMEOUT",
    "retry_base_ms": "COLLECTOR_RETRY_BASE_MS",
    "retry_max_delay_s": "COLLECTOR_RETRY_MAX_DELAY",
    "max_event_age_s": "COLLECTOR_MAX_EVENT_AGE",
    "shutdown_timeout_s": "COLLECTOR_SHUTDOWN_TIMEOUT",
    "lease_s": "COLLECTOR_LEASE",
    "web_path": "COLLECTOR_WEB_PATH",
    "site_keys": "COLLECTOR_SITE_KEYS",
    "demo": "COLLECTOR_DEMO",
    "visitor_cookie": "COLLECTOR_VISITOR_COOKIE",
    "cookie_domain": "COLLECTOR_COOKIE_DOMAIN",
    "anonymous_max_events": "COLLECTOR_ANONYMOUS_MAX_EVENTS",
    "anonymous_max_age_s": "COLLECTOR_ANONYMOUS_MAX_AGE",
    "visitor_ttl_s": "COLLECTOR_VISITOR_TTL",
    "static_dir": "COLLECTOR_STATIC_DIR",
    "web_rate": "COLLECTOR_WEB_RATE",
    "web_burst": "COLLECTOR_WEB_BURST",
    "trusted_proxies": "COLLECTOR_TRUSTED_PROXIES",
    "segment_write_keys": "COLLECTOR_SEGMENT_WRITE_KEYS",
    "segment_custom_events": "COLLECTOR_SEGMENT_CUSTOM_EVENTS",
    "cart_ttl_s": "COLLECTOR_CART_TTL",
    "inspect_key": "COLLECTOR_INSPECT_KEY",
    "inspect_buffer": "COLLECTOR_INSPECT_BUFFER",
    "inspect_age_s": "COLLECTOR_INSPECT_AGE",
}

LOG_LEVELS = ("debug", "info", "warning", "error")
# The demo shop's site key, allowed for the collector's own origin.
DEMO_SITE_KEY = "demo"
_WEB_PATH = re.compile(r"(/[A-Za-z0-9_.-]+)+")
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")

_INT = {
    "port", "spool_max_events", "dedup_window_s", "max_body_bytes", "max_batch_events",
    "max_in_flight",
    "yespo_concurrency", "retry_base_ms", "retry_max_delay_s", "max_event_age_s",
    "anonymous_max_events", "anonymous_max_age_s", "visitor_ttl_s", "web_burst", "cart_ttl_s",
    "lease_s", "inspect_buffer", "inspect_age_s",
}  # fmt: skip
_FLOAT = {"yespo_max_rps", "yespo_timeout_s", "shutdown_timeout_s", "web_rate"}
_LIST = {
    "api_keys",
    "key_value_order",
    "identifying_params",
    "trusted_proxies",
    "segment_write_keys",
}
_BOOL = {"check_order_total", "forward", "demo", "segment_custom_events"}


def _parse(name: str, var: str, raw: str) -> Any:
    if name in _INT:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var} must be a whole number, got {raw!r}") from None
    if name in _FLOAT:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var} must be a number, got {raw!r}") from None
    if name == "site_keys":
        return parse_site_keys(raw)
    if name in _LIST:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if name in _BOOL:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{var} must be true or false, got {raw!r}")
    return raw.strip()


def parse_site_keys(raw: str) -> dict[str, tuple[str, ...]]:
    """``key=https://a.example https://b.example; key2=self`` -> {key: (origins)}."""
    keys: dict[str, tuple[str, ...]] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        key, sep, origins = part.partition("=")
        key = key.strip()
        listed = tuple(o.rstrip("/") for o in origins.split())
        if not sep or not key or not listed:
            raise ConfigError(
                f"COLLECTOR_SITE_KEYS takes 'key=origin origin; key2=origin', got {part.strip()!r}"
            )
        keys[key] = listed
    return keys
