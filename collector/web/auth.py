"""Server keys: a Bearer key on the collector's own endpoints, Basic auth (the key as the
password) on Yespo's compatible ones."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from starlette.requests import Request

from ..errors import Unauthorized

# What an unknown key hears when no COLLECTOR_API_KEYS was set: the key that works is in
# the start-up log, and a newcomer's curl with a key of their own should say so.
_GENERATED = (
    "unknown API key: no COLLECTOR_API_KEYS is set, so this collector made one up and"
    " logged it at start-up; start it with COLLECTOR_API_KEYS=<your key> to choose it"
)


class ApiKeys:
    """The collector keys (COLLECTOR_API_KEYS), checked in constant time. `generated`:
    the one key was made up at start-up (none was configured)."""

    __slots__ = ("_keys", "_unknown")

    def __init__(self, keys: Iterable[str], generated: bool = False) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self._unknown = _GENERATED if generated else "unknown API key"

    def known(self, key: bytes) -> bool:
        found = False
        for k in self._keys:  # compare with every key: time does not tell which matched
            found |= hmac.compare_digest(key, k)
        return found

    def check_bearer(self, header: bytes | None) -> None:
        """An `Authorization` header's raw value: `Bearer <key>` with a known key."""
        scheme, _, cred = (header or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not cred.strip():
            raise Unauthorized("send the server key as 'Authorization: Bearer <key>'")
        if not self.known(cred.strip()):
            raise Unauthorized(self._unknown)

    def check_basic(self, request: Request) -> None:
        """Basic auth whose password is a known key (the user name is not read)."""
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not cred:
            raise Unauthorized("send Basic auth with a collector key as the password")
        try:
            _, _, password = base64.b64decode(cred.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            raise Unauthorized("malformed Basic credentials") from None
        if not self.known(password):
            raise Unauthorized(self._unknown)
