"""Phone numbers as people write them: with COLLECTOR_PHONE_REGION, national numbers
become the international digits Yespo keys on, and numbers no country has are refused
with the reason; without it, only international numbers are taken."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.config import Settings
from collector.errors import ConfigError, FieldError
from collector.normalize import (
    Normalized,
    Rules,
    normalize_event,
    normalize_order,
    normalize_yespo_event,
)

UA = Rules(phone_region="UA")
PL = Rules(phone_region="PL")


def new_id() -> str:
    return "generated"


def page_viewed(phone: object) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "contact": {"phone": phone},
        "properties": {"location": "https://shop.example/"},
    }


def phone_of(raw: dict[str, Any], rules: Rules) -> str:
    out = normalize_event(raw, rules, new_id)
    assert isinstance(out, Normalized), out
    params = {p["name"]: p["value"] for p in orjson.loads(out.body)["params"]}
    return params["phone"]


def errors_of(raw: dict[str, Any], rules: Rules) -> list[FieldError]:
    out = normalize_event(raw, rules, new_id)
    assert isinstance(out, list), out
    return out


@pytest.mark.parametrize(
    "written",
    [
        "050 123 45 67",
        "(050) 123-45-67",
        "0501234567",
        "+38 050 123 45 67",
        "+380501234567",
        "00380501234567",
        "380501234567",  # already the digits Yespo keys on
        380501234567,
    ],
)
def test_a_ukrainian_number_as_people_write_it_becomes_its_international_digits(
    written: object,
) -> None:
    assert phone_of(page_viewed(written), UA) == "380501234567"


def test_a_number_of_another_country_written_internationally_is_taken() -> None:
    assert phone_of(page_viewed("+48 512 345 678"), UA) == "48512345678"
    assert phone_of(page_viewed("512 345 678"), PL) == "48512345678"


def test_the_key_value_is_the_normalized_number() -> None:
    out = normalize_event(page_viewed("050 123 45 67"), UA, new_id)
    assert isinstance(out, Normalized)
    assert orjson.loads(out.body)["keyValue"] == "380501234567"
    assert out.key == "contact:380501234567"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("050 123 45", "not a valid phone number for UA (+380): too short"),
        ("050 123 45 67 89 01", "not a valid phone number for UA (+380)"),
        ("+999 123 456 789", "no country has its country code"),
        ("+48 000 000 000", "not a valid phone number for PL (+48)"),
        ("call me", "must be a phone number"),
    ],
)
def test_a_number_no_country_has_is_refused_with_the_reason(written: str, reason: str) -> None:
    [error] = errors_of(page_viewed(written), UA)
    assert error.field == "contact.phone"
    assert reason in error.message
    assert repr(written) in error.message or written in error.message


def test_without_a_region_a_national_number_is_refused_and_the_error_names_the_setting() -> None:
    [error] = errors_of(page_viewed("050 123 45 67"), Rules())
    assert "not a national one" in error.message
    assert "COLLECTOR_PHONE_REGION" in error.message


def test_without_a_region_international_numbers_are_taken_as_before() -> None:
    assert phone_of(page_viewed("+38 (050) 123-45-67"), Rules()) == "380501234567"


def test_the_region_applies_to_yespo_form_events_and_orders() -> None:
    yespo = {
        "eventTypeKey": "wishlistAdded",
        "keyValue": "050 123 45 67",
        "params": [{"name": "phone", "value": "050 123 45 67"}],
    }
    out = normalize_yespo_event(yespo, UA, new_id)
    assert isinstance(out, Normalized), out
    body = orjson.loads(out.body)
    assert {"name": "phone", "value": "380501234567"} in body["params"]

    order = {
        "externalOrderId": "1001",
        "externalCustomerId": "c-1",
        "totalCost": 10,
        "status": "INITIALIZED",
        "date": "2026-12-03T10:00:00",
        "phone": "050 123 45 67",
    }
    placed = normalize_order(order, UA, new_id)
    assert isinstance(placed, Normalized), placed
    assert orjson.loads(placed.body)["phone"] == "380501234567"


def test_normalizing_a_normalized_event_again_changes_nothing() -> None:
    once = normalize_event(page_viewed("050 123 45 67"), UA, new_id)
    assert isinstance(once, Normalized)
    again = normalize_yespo_event(orjson.loads(once.body), UA, new_id)
    assert isinstance(again, Normalized), again
    assert orjson.loads(again.body)["params"] == orjson.loads(once.body)["params"]


def test_the_region_setting_is_checked_at_start_up() -> None:
    assert Settings.from_env({"COLLECTOR_PHONE_REGION": "ua"}).phone_region == "UA"
    with pytest.raises(ConfigError, match="COLLECTOR_PHONE_REGION must be a two-letter"):
        Settings.from_env({"COLLECTOR_PHONE_REGION": "Ukraine"})
