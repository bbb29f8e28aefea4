"""Scalar rules shared by the normalizers: numbers, text, JSON strings, ids and dates.

Every checker takes the value as the sender wrote it, the path to report and the list of
errors; it appends a `FieldError` and returns ``None`` when the value is wrong. Nothing
here raises on JSON-shaped input, and nothing here does I/O.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
from collections.abc import Callable
from typing import Any, TypeGuard

import orjson

from ..errors import FieldError

Errors = list[FieldError]
Number = int | float

# Epoch milliseconds of 2000-01-01 and 2100-01-01 (UTC): the window a live event's time must
# fall in. Without a clock (normalization is pure) this still catches the usual mistakes:
# seconds sent where milliseconds are expected, zero, and year-typos.
MIN_EPOCH_MS = 946_684_800_000
MAX_EPOCH_MS = 4_102_444_800_000
_MIN_YEAR = 2000
_MAX_YEAR = 2099

_UTC = datetime.UTC
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_MS = datetime.timedelta(milliseconds=1)

# A numeric string: what a backend writes when it serializes a decimal as text ("45.5").
# Group 1 is set when it is not an integer.
_NUMERIC = re.compile(r"-?\d+((?:\.\d+)?(?:[eE][+-]?\d+)?)", re.ASCII)
# Longest numeric string we parse: a price needs far fewer digits; this bounds the work.
_MAX_NUMERIC_TEXT = 40
# Longest date string we try to parse (ISO 8601 with microseconds and offset is 32).
_MAX_DATE_TEXT = 64
# Ids of products, categories and order items: generous, bounded so that one field cannot
# eat the 20 KB body.
MAX_ID = 300
# The integers JSON (as orjson writes it) can carry; Python's are unbounded.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
# Sender's messageId: long enough for a UUID with a prefix, short enough to index cheaply.
MAX_MESSAGE_ID = 128


def required(path: str, why: str) -> FieldError:
    """The error for a missing field, with what it is needed for."""
    return FieldError(path, f"is required: {why}")


def describe(value: object) -> str:
    """The value as a developer would recognise it in their JSON, shortened."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, float) or (isinstance(value, int) and is_json_int(value)):
        return repr(value)
    if isinstance(value, int):
        return "an integer too large for JSON"
    return type(value).__name__


def is_json_int(value: int) -> bool:
    """Within the 64 bits JSON writers (orjson) carry; str() of a huger one may even raise."""
    return _INT_MIN <= value <= _INT_MAX


def number(value: object) -> Number | None:
    """The value as a finite number, or None. A numeric string counts; a bool does not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if is_json_int(value) else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= _MAX_NUMERIC_TEXT:
        match = _NUMERIC.fullmatch(value)
        if match is None:
            return None
        if not match.group(1):
            parsed_int = int(value)
            return parsed_int if is_json_int(parsed_int) else None
        parsed = float(value)
        return parsed if math.isfinite(parsed) else None
    return None


def is_amount(value: object, positive: bool = False) -> TypeGuard[Number]:
    """Already a plain finite number in range (the common case, checked without paths)."""
    if type(value) is int:
        return (value > 0 if positive else value >= 0) and value <= _INT_MAX
    if type(value) is float:
        return (value > 0 if positive else value >= 0) and value != math.inf
    return False


def is_text(value: object, max_len: int) -> TypeGuard[str]:
    """Already a non-empty string within `max_len` (the common case)."""
    return type(value) is str and 0 < len(value) <= max_len and not value.isspace()


def need_number(
    value: object, path: str, errors: Errors, *, positive: bool = False
) -> Number | None:
    """A number >= 0 (> 0 when `positive`), numeric strings accepted."""
    parsed = number(value)
    bound = "greater than 0" if positive else ">= 0"
    if parsed is None:
        errors.append(FieldError(path, f"must be a number {bound}, got {describe(value)}"))
        return None
    if parsed < 0 or (positive and parsed == 0):
        errors.append(FieldError(path, f"must be {bound}, got {describe(value)}"))
        return None
    return parsed


def number_text(value: Number) -> str:
    """A number for a message: at most two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def json_text(value: object) -> str | None:
    """Compact JSON of the value (keys in the sender's order), or None if it has no JSON form."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: too deep, an int over 64 bits, a lone surrogate
        return None


def param_text(value: object, path: str, errors: Errors) -> str | None:
    """A param value as Yespo wants it: always a string. None for null (the param is left out)."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and is_json_int(value):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(FieldError(path, f"must be a finite number, got {value!r}"))
        return None
    text = json_text(value)
    if text is None:
        errors.append(
            FieldError(
                path,
                "cannot be written as JSON (nested too deeply, or holds a number or text JSON cannot carry)",
            )
        )
    return text


def is_scalar(value: object) -> bool:
    """A string, number, boolean or null, as JSON can carry it."""
    if isinstance(value, int):
        return is_json_int(value)
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) or value is None


def scalar_text(value: object) -> str:
    """A scalar (not null) as text: the way `param_text` writes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return orjson.dumps(value).decode()


# Scalars kept as they are inside items (a float needs a finiteness check first).
_PLAIN = frozenset({str, int, bool})


def flat_item(
    item: dict[Any, Any], path: str, errors: Errors, *, keep_scalar_arrays: bool
) -> dict[str, Any]:
    """One element of `items`/`products`, flattened to the two levels Yespo keeps.

    An object or array inside the item becomes a compact JSON string; with
    `keep_scalar_arrays` an array of scalars becomes an array of strings instead (the cart's
    `someProductProperty`). Null values are left out.
    """
    out: dict[str, Any] = {}
    for key, value in item.items():
        if type(value) in _PLAIN:
            out[key] = value
        elif value is None:
            continue
        elif isinstance(value, float):
            if math.isfinite(value):
                out[key] = value
            else:
                errors.append(
                    FieldError(f"{path}.{key}", f"must be a finite number, got {value!r}")
                )
        elif (
            keep_scalar_arrays
            and isinstance(value, list)
            and all(is_scalar(v) and v is not None for v in value)
        ):
            out[key] = [scalar_text(v) for v in value]
        elif isinstance(value, (dict, list)):
            text = json_text(value)
            if text is None:
                errors.append(FieldError(f"{path}.{key}", "cannot be written as JSON"))
            else:
                out[key] = text
        else:
            out[key] = value  # a str or int subclass; anything else fails at the JSON dump
    return out


def identifier(
    value: object, path: str, errors: Errors, *, max_len: int, numbers: bool = True
) -> str | None:
    """A non-empty id: a string, or (when `numbers`) an integer written as its digits."""
    if isinstance(value, str):
        if not value.strip():
            errors.append(FieldError(path, "must not be empty"))
            return None
        if len(value) > max_len:
            errors.append(
                FieldError(path, f"must be at most {max_len} characters, got {len(value)}")
            )
            return None
        return value
    if numbers and isinstance(value, int) and not isinstance(value, bool) and is_json_int(value):
        return identifier(str(value), path, errors, max_len=max_len)
    kinds = "a string or an integer" if numbers else "a string"
    errors.append(FieldError(path, f"must be {kinds}, got {describe(value)}"))
    return None


def text(value: object, path: str, errors: Errors, *, max_len: int | None = None) -> str | None:
    """A non-empty string."""
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be a string, got {describe(value)}"))
        return None
    if not value.strip():
        errors.append(FieldError(path, "must not be empty"))
        return None
    if max_len is not None and len(value) > max_len:
        errors.append(FieldError(path, f"must be at most {max_len} characters, got {len(value)}"))
        return None
    return value


def currency(value: object, path: str, errors: Errors) -> str | None:
    """An ISO 4217 code: three Latin letters, written upper-case."""
    if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha():
        return value.upper()
    errors.append(
        FieldError(path, f"must be a three-letter currency code such as USD, got {describe(value)}")
    )
    return None


def is_message_id(value: object) -> bool:
    """`message_id` without a path or errors: the fast paths' check."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_MESSAGE_ID
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def is_currency(value: object) -> TypeGuard[str]:
    """`currency` without a path or errors (the code still needs `.upper()`)."""
    return type(value) is str and len(value) == 3 and value.isascii() and value.isalpha()


def message_id(value: object, path: str, errors: Errors) -> str | None:
    """The sender's id for deduplication: 1..128 printable ASCII characters, no spaces."""
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be a string, got {describe(value)}"))
        return None
    if not 1 <= len(value) <= MAX_MESSAGE_ID:
        errors.append(
            FieldError(path, f"must be 1 to {MAX_MESSAGE_ID} characters, got {len(value)}")
        )
        return None
    if not (value.isascii() and value.isprintable()) or " " in value:
        errors.append(FieldError(path, "must be printable ASCII without spaces (a UUID is ideal)"))
        return None
    return value


def _parse_datetime(value: str) -> datetime.datetime | None:
    if len(value) > _MAX_DATE_TEXT:
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        return None


def _epoch_ms_problem(value: Number) -> str | None:
    if MIN_EPOCH_MS <= value < MAX_EPOCH_MS:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    hint = (
        "; it looks like seconds: multiply by 1000"
        if MIN_EPOCH_MS / 1000 <= value < MAX_EPOCH_MS / 1000
        else ""
    )
    return (
        f"must be epoch milliseconds between the years 2000 and 2100, got {describe(value)}{hint}"
    )


_DATE_FORMS = "an ISO 8601 date or datetime (2020-05-14T10:11:00, 2020-05-14T10:11:00+03:00) or epoch milliseconds"


def epoch_ms(value: object, path: str, errors: Errors) -> int | None:
    """The event's time as epoch milliseconds; a string without a zone is UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        problem = _epoch_ms_problem(value)
        if problem:
            errors.append(FieldError(path, problem))
            return None
        return int(value)
    parsed = _parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        errors.append(FieldError(path, f"must be {_DATE_FORMS}, got {describe(value)}"))
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_UTC)
    try:
        ms = (parsed - _EPOCH) // _MS
    except OverflowError:
        ms = 0
    if not MIN_EPOCH_MS <= ms < MAX_EPOCH_MS:
        errors.append(
            FieldError(path, f"must be between the years 2000 and 2100, got {describe(value)}")
        )
        return None
    return ms


def local_datetime(value: object, path: str, errors: Errors, tz: datetime.tzinfo) -> str | None:
    """An order date as Yespo wants it: ``YYYY-MM-ddTHH:mm:ss`` in `tz`, no zone, no fraction.

    A string with a zone is converted to `tz`; one without is taken as already in `tz`;
    epoch milliseconds are converted to `tz`.
    """
    parsed: datetime.datetime | None
    if isinstance(value, str):
        parsed = _parse_datetime(value)
        if parsed is None:
            errors.append(FieldError(path, f"must be {_DATE_FORMS}, got {describe(value)}"))
            return None
        # Checked before the conversion too: converting year 1 or 9999 can overflow.
        if not _MIN_YEAR - 1 <= parsed.year <= _MAX_YEAR + 1:
            errors.append(
                FieldError(path, f"must be between the years 2000 and 2100, got {describe(value)}")
            )
            return None
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(tz)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        problem = _epoch_ms_problem(value)
        if problem:
            errors.append(FieldError(path, problem))
            return None
        parsed = datetime.datetime.fromtimestamp(value / 1000, tz)
    else:
        errors.append(FieldError(path, f"must be {_DATE_FORMS}, got {describe(value)}"))
        return None
    if not _MIN_YEAR <= parsed.year <= _MAX_YEAR:
        errors.append(
            FieldError(path, f"must be between the years 2000 and 2100, got {describe(value)}")
        )
        return None
    # The year has four digits here, so the first 19 characters are YYYY-MM-DDTHH:MM:SS (the
    # fraction and zone cut off): what replace(tzinfo=None).isoformat(timespec="seconds")
    # writes, at half the cost.
    return parsed.isoformat()[:19]


def pass_through(
    props: dict[Any, Any],
    skip: frozenset[str],
    at: Callable[[str], str],
    errors: Errors,
    out: list[tuple[str, str]],
) -> None:
    """Append every property not in `skip` as a param (stringified; null left out)."""
    for name, value in props.items():
        if name in skip or value is None:
            continue
        value_text = param_text(value, at(name), errors)
        if value_text is not None:
            out.append((name, value_text))


def plain_pass_through(
    props: dict[Any, Any], skip: frozenset[str], out: list[tuple[str, str]]
) -> bool:
    """`pass_through` when no property needs a report; False (`out` half-built) when one does."""
    for name, value in props.items():
        if name in skip or value is None:
            continue
        if type(value) is not str:
            value = param_text(value, "", [])
            if value is None:
                return False
        out.append((name, value))
    return True


def unknown_keys(raw: dict[Any, Any], allowed: tuple[str, ...], what: str, errors: Errors) -> None:
    """An error for each key of `raw` not in `allowed`, with a hint for typos."""
    for key in raw:
        if key not in allowed:
            name = str(key)
            # A hint for typos only: short names, so a huge key costs nothing.
            close = difflib.get_close_matches(name, allowed, n=1) if len(name) <= 40 else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(
                FieldError(name, f"is not a field of {what}{hint}; allowed: {', '.join(allowed)}")
            )


class Paths:
    """Where a property is reported: ``properties.<name>`` or, for Yespo's form, ``params...``."""

    __slots__ = ("base", "overrides")

    def __init__(self, base: str, overrides: dict[str, str] | None = None) -> None:
        self.base = base
        self.overrides = overrides

    def __call__(self, name: str) -> str:
        if self.overrides:
            path = self.overrides.get(name)
            if path is not None:
                return path
        return f"{self.base}.{name}"
