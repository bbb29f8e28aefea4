"""Masking personal data in a step before a watcher sees it: emails keep their first letter
and domain, phones their country/operator prefix and last two digits."""

from __future__ import annotations

import re
from typing import Any

_EMAIL = re.compile(r"([^@\s]+)@([^@\s]+\.[^@\s]+)")
_PHONE = re.compile(r"\+?[0-9][0-9 ()./-]{6,}[0-9]")
_PHONE_START = frozenset("+0123456789")
# Params and fields whose value is personal whatever it looks like.
PERSONAL = frozenset(
    {"email", "phone", "sms", "mobile", "tel", "telephone", "firstname", "lastname"}
    | {"first_name", "last_name", "address", "keyvalue", "contactkey"}
)


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(value: str) -> str:
    """`+380501234567` -> `+38050*****67`: who it is cannot be told, which one it was can."""
    digits = sum(c.isdigit() for c in value)
    keep_head = 6 if digits > 9 else 2
    head, tail = value[:keep_head], value[-2:]
    return head + "*" * max(1, len(value) - keep_head - 2) + tail


def mask_text(value: str, personal: bool = False) -> str:
    """A string as a watcher sees it: masked when it is an email or phone-like, or when it
    sits where personal data goes (`personal`)."""
    # The cheap tests first: most strings are neither, and a regex costs a microsecond.
    if "@" in value and _EMAIL.fullmatch(value):
        return mask_email(value)
    if value[:1] in _PHONE_START and _PHONE.fullmatch(value):
        return mask_phone(value)
    if personal and value:
        return value[:1] + "***"
    return value


def mask_key(key: str | None) -> str | None:
    """`contact:alice@example.com` -> `contact:a***@example.com`; an order key stays."""
    if key is None or not key.startswith("contact:"):
        return key
    return "contact:" + mask_text(key[8:], personal=True)


def mask_json(value: Any, personal: bool = False) -> Any:
    """A decoded JSON value with every personal string masked."""
    if isinstance(value, str):
        return mask_text(value, personal)
    if isinstance(value, list):
        return [mask_json(v, personal) for v in value]
    if isinstance(value, dict):
        # Yespo's params: {"name": "phone", "value": "..."}: the value is personal.
        named = value.get("name")
        by_name = isinstance(named, str) and named.lower() in PERSONAL
        out = {}
        for k, v in value.items():
            inner = (by_name and k == "value") or (isinstance(k, str) and k.lower() in PERSONAL)
            out[k] = mask_json(v, inner)
        return out
    return value


def mask_step(step: dict[str, Any]) -> dict[str, Any]:
    """A step (its detail's bodies decoded) with its personal data masked."""
    key_value = step["keyValue"]
    return {
        **step,
        "key": mask_key(step["key"]),
        "keyValue": None if key_value is None else mask_text(key_value, True),
        "detail": mask_json(step["detail"]),
    }
