"""The contact an event belongs to: Yespo's identifier fields, normalized.

Yespo attaches an event to a contact by looking for identifier params (names listed in
`IDENTIFIER_PARAMS`, case ignored) and drops the event when it finds no contact. The
collector therefore takes the identifiers in one `contact` object, normalizes them (emails
lower-cased, phones reduced to digits) and writes them as the first params.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import FieldError
from .values import Errors, describe, identifier, is_json_int

# The order in which identifiers are written as params (and the default keyValue order).
CONTACT_FIELDS = ("email", "phone", "externalCustomerId", "contactId", "contactKey", "pushToken")
# Yespo's order contact: an order event must carry one of these (seeds 000-003).
ORDER_CONTACT_FIELDS = ("email", "phone", "externalCustomerId")
# An event other than an order event must name one of these by default: the fields Yespo
# finds a contact by (externalCustomerId is an order's contact only).
IDENTIFYING_FIELDS = ("email", "phone", "contactId", "contactKey", "pushToken")
# Any identifier may become keyValue, which Yespo caps at 300 characters.
MAX_CONTACT_VALUE = 300
# The longest address SMTP can carry (RFC 5321 path limit).
MAX_EMAIL = 254
# E.164: at most 15 digits; 5 keeps short national test numbers, rejects typos like "12".
MIN_PHONE_DIGITS = 5
MAX_PHONE_DIGITS = 15

# The param names Yespo reads as the contact (its default list, case ignored, plus the
# order contact externalCustomerId), each mapped to the contact field it fills.
IDENTIFIER_PARAMS: dict[str, str] = {
    "email": "email",
    "emailaddress": "email",
    "useremail": "email",
    "contactemail": "email",
    "phone": "phone",
    "sms": "phone",
    "phonenumber": "phone",
    "contactid": "contactId",
    "contact_id": "contactId",
    "contactkey": "contactKey",
    "contact_key": "contactKey",
    "pushtoken": "pushToken",
    "externalcustomerid": "externalCustomerId",
}

# Separators people write in phone numbers: "+38 (050) 123-45-67" -> "380501234567".
_PHONE_SEPARATORS = str.maketrans("", "", " +()-.")


def email(value: object, path: str, errors: Errors) -> str | None:
    """An address, trimmed and lower-cased (Yespo matches emails without case)."""
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be an email address, got {describe(value)}"))
        return None
    address = value.strip().lower()
    local, at, domain = address.partition("@")
    if len(address) > MAX_EMAIL:
        problem = f"must be at most {MAX_EMAIL} characters, got {len(address)}"
    elif (
        not at
        or not local
        or "@" in domain
        or " " in address
        or not address.isprintable()
        or "." not in domain
        or domain[0] == "."
        or domain[-1] == "."
        or ".." in domain
    ):
        problem = f"must be an email address like name@example.com, got {describe(value)}"
    else:
        return address
    errors.append(FieldError(path, problem))
    return None


def phone(value: object, path: str, errors: Errors, region: str | None = None) -> str | None:
    """A number as the digits Yespo keys on: the country code and the national number.

    Without a `region`, only international numbers are taken (a national one cannot be
    told from another country's). With one (COLLECTOR_PHONE_REGION), numbers are read
    and checked by libphonenumber: a national number is of that region, and a number
    that is not valid for its country is refused with the reason."""
    if isinstance(value, int) and not isinstance(value, bool) and is_json_int(value):
        value = str(value)
    if not isinstance(value, str):
        errors.append(
            FieldError(path, f"must be a phone number as a string, got {describe(value)}")
        )
        return None
    if region is not None:
        return _phone_in_region(value, path, errors, region)
    # Most numbers come as digits with a leading "+": then there is nothing else to remove.
    digits = value[1:] if value[:1] == "+" else value
    if not (digits.isascii() and digits.isdigit()):
        digits = value.translate(_PHONE_SEPARATORS)
    if not (digits.isascii() and digits.isdigit()):
        wrong = next((c for c in digits if not ("0" <= c <= "9")), "")
        errors.append(
            FieldError(
                path,
                f"must be an international phone number (digits, optionally with + ( ) - . and spaces), "
                f"got {describe(value)} containing {wrong!r}",
            )
        )
        return None
    if digits[:2] == "00":  # the international call prefix of most countries: "00380..."
        digits = digits[2:]
    if digits[:1] == "0":  # no country code starts with 0: a national number
        errors.append(
            FieldError(
                path,
                "must be an international number, with the country code (380501234567), "
                f"not a national one starting with 0: got {describe(value)} (set "
                "COLLECTOR_PHONE_REGION to take national numbers of one country)",
            )
        )
        return None
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        errors.append(
            FieldError(
                path,
                f"must have {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits with the country code "
                f"(380501234567), got {len(digits)}",
            )
        )
        return None
    return digits


# libphonenumber's reasons a number cannot be one, in words.
_NOT_POSSIBLE = {
    "INVALID_COUNTRY_CODE": "no country has its country code",
    "TOO_SHORT": "too short",
    "TOO_LONG": "too long",
    "INVALID_LENGTH": "no number of its country has that length",
    "IS_POSSIBLE_LOCAL_ONLY": "a local number: it needs its area code",
}


# Why libphonenumber could not read a number at all (NumberParseException.error_type).
_UNREADABLE = {
    0: "must be a phone number: no country has its country code",
    1: "must be a phone number",
    2: "must be a phone number: too short after the international prefix",
    3: "must be a phone number: too short",
    4: "must be a phone number: too long",
}


def _phone_in_region(value: str, path: str, errors: Errors, region: str) -> str | None:
    """`phone` with a default region. A number written with + or 00 is international;
    other digits are read as a national number of `region`, else (they may already be
    the international digits Yespo keys on, as this function writes them) as
    international."""
    import phonenumbers  # only collectors with a region pay for its metadata

    text = value.strip()
    if text[:2] == "00":
        text = "+" + text[2:]
    candidates = [text] if text[:1] == "+" else [text, "+" + text]
    first = None  # the first reading, which the reasons are about
    unreadable = "must be a phone number"
    for i, candidate in enumerate(candidates):
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException as exc:
            if i == 0:
                unreadable = _UNREADABLE.get(exc.error_type, unreadable)
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
        if i == 0:
            first = number
    if first is None:
        errors.append(FieldError(path, f"{unreadable}, got {describe(value)}"))
        return None
    code = first.country_code or 0
    reason = phonenumbers.ValidationResult.to_string(
        phonenumbers.is_possible_number_with_reason(first)
    )
    why = _NOT_POSSIBLE.get(reason or "", "")
    errors.append(
        FieldError(
            path,
            f"is not a valid phone number for {phonenumbers.region_code_for_country_code(code)}"
            f" (+{code}){': ' + why if why else ''}: got {describe(value)}",
        )
    )
    return None


def _other(field: str) -> Callable[[object, str, Errors], str | None]:
    numbers = field in ("externalCustomerId", "contactId")

    def check(value: object, path: str, errors: Errors) -> str | None:
        return identifier(value, path, errors, max_len=MAX_CONTACT_VALUE, numbers=numbers)

    return check


# How each identifier is checked and normalized (the others: non-empty ids, Yespo matches
# them exactly).
_CHECKS: dict[str, Callable[[object, str, Errors], str | None]] = {
    "email": email,
    "phone": phone,
    **{field: _other(field) for field in CONTACT_FIELDS[2:]},
}
_PATHS = {field: f"contact.{field}" for field in CONTACT_FIELDS}


def contact_value(field: str, value: object, path: str, errors: Errors) -> str | None:
    """One identifier (a name from `CONTACT_FIELDS`), normalized the way Yespo matches it."""
    return _CHECKS[field](value, path, errors)


def normalize_contact(
    raw: dict[Any, Any],
    errors: Errors,
    paths: dict[str, str] | None = None,
    phone_region: str | None = None,
) -> dict[str, str | None]:
    """The identifiers given (null counts as not given): field -> value, None where invalid.

    Without `paths`, `raw` is the inbound `contact` object: unknown keys are errors and
    paths are ``contact.<field>``. With `paths`, `raw` holds known fields only and each
    error is reported at ``paths[field]``. `phone_region`: see `phone`.
    """
    out: dict[str, str | None] = {}
    for field, value in raw.items():
        if value is None:
            continue
        check = _CHECKS.get(field)
        if check is None:
            errors.append(
                FieldError(
                    f"contact.{field}",
                    f"is not a contact identifier; use {', '.join(CONTACT_FIELDS)}",
                )
            )
            continue
        path = _PATHS[field] if paths is None else paths[field]
        if phone_region is not None and check is phone:
            out[field] = phone(value, path, errors, phone_region)
        else:
            out[field] = check(value, path, errors)
    return out


def contact_params(contact: dict[str, str | None]) -> list[dict[str, str]]:
    """The identifiers as Generate-event params (`{name, value}`), in `CONTACT_FIELDS` order."""
    if len(contact) == 1:  # the usual case, in a third of the time
        for field, value in contact.items():
            return [] if value is None else [{"name": field, "value": value}]
    params = []
    for field in CONTACT_FIELDS:
        value = contact.get(field)
        if value is not None:
            params.append({"name": field, "value": value})
    return params


def _one_of(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def identity_problem(
    contact: dict[str, str | None], order: bool, identifying: tuple[str, ...]
) -> str | None:
    """Why Yespo could not find the event's contact, or None if it can."""
    if order:
        if not contact.keys().isdisjoint(ORDER_CONTACT_FIELDS):
            return None
        given = ", ".join(contact) or "none"
        return (
            f"an order event needs {_one_of(ORDER_CONTACT_FIELDS)} (the identifiers Yespo's "
            f"orders use; Yespo ignores an order without them); given: {given}"
        )
    # An empty `identifying` turns the check off: for accounts that identify contacts by
    # param names of their own.
    if not identifying or not contact.keys().isdisjoint(identifying):
        return None
    given = ", ".join(contact) or "none"
    return (
        "names no contact Yespo can find, and Yespo drops such events; give "
        f"{_one_of(identifying)} (given: {given})"
    )


def key_value(contact: dict[str, str | None], order: tuple[str, ...]) -> str | None:
    """The first identifier of `order` the contact has."""
    for field in order:
        value = contact.get(field)
        if value is not None:
            return value
    return None
