"""The OpenAPI 3.1 description of every endpoint, served at /openapi.json.

Written by hand, beside the code it describes: the schemas say what a request must look
like to be read at all and what every answer looks like; the finer rules (Yespo's, in
collector/normalize) come back as the precise errors the schemas describe. The suite runs
schemathesis against a live collector with this document (tests/test_openapi.py): no
5xx, and every answer matches it.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..config import Settings

JSON = "application/json"
# Segment's call types, each with its own endpoint beside /v1/batch.
_SEGMENT_TYPES = ("track", "page", "screen", "identify", "alias", "group")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def _refusals(form: str, *statuses: int) -> dict[str, Any]:
    """The refusals of an endpoint whose errors are `{form: "..."}`."""
    error = _ref("Message" if form == "message" else "Error")
    why = {
        400: "the body is not JSON, or not of this endpoint's shape",
        401: "missing or unknown key",
        403: "the site key is unknown or not allowed on the page's origin",
        413: "the body or the batch is over its limit",
        429: "this client sent more than its request ceiling: retry after Retry-After",
        503: "nothing was stored: the spool or the collector cannot take it now; retry later",
    }
    out: dict[str, Any] = {}
    for status in statuses:
        if status in (429, 503):
            out[str(status)] = _json(error, why[status], **{"Retry-After": "seconds to wait"})
        elif status == 401:
            out["401"] = _json(error, why[401], **{"WWW-Authenticate": "the scheme to use"})
        else:
            out[str(status)] = _json(error, why[status])
    return out


def _schemas() -> dict[str, Any]:
    text = {"type": "string"}
    field_error = {
        "type": "object",
        "required": ["field", "message"],
        "properties": {"field": text, "message": text},
    }
    rejected = {
        "type": "object",
        "required": ["index", "errors"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "messageId": text,
            "errors": {"type": "array", "items": _ref("FieldError")},
        },
    }
    contact = {
        "type": "object",
        "description": "Who the event is about: one or more identifiers.",
        "properties": {
            name: {"type": ["string", "null"]}
            for name in ("email", "phone", "externalCustomerId", "contactId", "contactKey")
        }
        | {"pushToken": {"type": ["string", "null"]}},
    }
    event = {
        "type": "object",
        "description": "An event in the collector's own form (docs/normalization.md).",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "minLength": 1},
            "messageId": {"type": ["string", "null"]},
            "timestamp": {"type": ["string", "integer", "null"]},
            "contact": contact,
            "properties": {"type": "object"},
            "context": {"type": "object"},
            "anonymousId": {"type": ["string", "null"]},
        },
    }
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": text}},
        "Message": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": text, "errors": {"type": "array", "items": field_error}},
        },
        "FieldError": field_error,
        "Rejected": rejected,
        "Event": event,
        "Batch": {
            "type": "object",
            "required": ["batch"],
            "additionalProperties": False,
            "properties": {"batch": {"type": "array", "minItems": 1, "items": _ref("Event")}},
        },
        "EventsReply": {
            "type": "object",
            "required": ["accepted", "duplicates", "rejected"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0},
                "rejected": {"type": "array", "items": _ref("Rejected")},
            },
        },
        "YespoEvent": {
            "type": "object",
            "description": "Yespo's Generate-event body.",
            "required": ["eventTypeKey", "keyValue"],
            "properties": {
                "eventTypeKey": text,
                "keyValue": text,
                "params": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "value"],
                        "properties": {"name": text, "value": {}},
                    },
                },
            },
        },
        "Orders": {
            "type": "object",
            "description": "Yespo's Add-orders body.",
            "required": ["orders"],
            "properties": {
                "orders": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {}}
            },
        },
        "OrdersReply": {
            "type": "object",
            "required": ["failedOrders"],
            "properties": {
                "failedOrders": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "message", "errors"],
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "externalOrderId": {"type": ["string", "integer"]},
                            "message": text,
                            "errors": {"type": "array", "items": field_error},
                        },
                    },
                }
            },
        },
        "BrowserBatch": {
            "type": "object",
            "required": ["siteKey", "batch"],
            "additionalProperties": False,
            "properties": {
                "siteKey": {"type": "string", "minLength": 1},
                "anonymousId": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{8,100}$"},
                "batch": {"type": "array", "minItems": 1, "maxItems": 100, "items": {}},
                "v": text,
                "sentAt": {"type": ["string", "integer"]},
            },
        },
        "BrowserReply": {
            "type": "object",
            "required": ["accepted", "duplicates", "held", "rejected", "anonymousId"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0},
                "held": {"type": "integer", "minimum": 0},
                "rejected": {"type": "array", "items": _ref("Rejected")},
                "anonymousId": text,
            },
        },
        "SegmentCall": {
            "type": "object",
            "description": "One Segment call (track, page, screen, identify, alias or group),"
            " as Segment's HTTP Tracking API takes it: docs/segment.md.",
            "properties": {
                "type": {"enum": list(_SEGMENT_TYPES)},
                "messageId": text,
                "userId": {"type": ["string", "number"]},
                "anonymousId": {"type": ["string", "number"]},
                "previousId": {"type": ["string", "number"]},
                "groupId": {"type": ["string", "number"]},
                "event": text,
                "name": text,
                "properties": {"type": "object"},
                "traits": {"type": "object"},
                "context": {"type": "object"},
                "integrations": {"type": "object"},
                "timestamp": text,
                "originalTimestamp": text,
                "sentAt": text,
            },
        },
        "SegmentBatch": {
            "type": "object",
            "required": ["batch"],
            "properties": {
                "batch": {"type": "array", "items": _ref("SegmentCall")},
                "sentAt": text,
                "writeKey": text,
                "context": {"type": "object"},
                "integrations": {"type": "object"},
            },
        },
        "SegmentSuccess": {
            "type": "object",
            "required": ["success"],
            "properties": {"success": {"const": True}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "version"],
            "properties": {"status": {"const": "ok"}, "version": text},
        },
        "Ready": {
            "type": "object",
            "required": ["ready", "spool"],
            "properties": {
                "ready": {"type": "boolean"},
                "spool": text,
                "depth": {"type": "integer"},
                "dead_letters": {"type": "integer"},
                "forwarder": text,
            },
        },
    }


def _segment() -> dict[str, Any]:
    """Segment's HTTP Tracking API: /v1/batch and one endpoint per call type."""
    writekey: list[dict[str, list[str]]] = [{"writekey": []}]
    answers = {
        "200": _json(
            _ref("SegmentSuccess"),
            "taken; a call that cannot become a Yespo event is kept in the rejected log",
        ),
        "400": _json(_ref("Message"), "not JSON, not a call or a batch, or over Segment's limits"),
        **_refusals("message", 401, 503),
    }
    gzip = "Content-Encoding: gzip is taken; the body inflates to at most 500 KB."
    paths = {
        "/v1/batch": {
            "post": {
                "summary": "Segment's batch: calls of any type, at most 500 KB, 32 KB each",
                "description": gzip,
                "security": writekey,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("SegmentBatch")}},
                },
                "responses": answers,
            }
        }
    }
    for call in _SEGMENT_TYPES:
        paths[f"/v1/{call}"] = {
            "post": {
                "summary": f"One Segment {call} call, at most 32 KB",
                "description": gzip,
                "security": writekey,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("SegmentCall")}},
                },
                "responses": answers,
            }
        }
    return paths


def _inspect() -> dict[str, Any]:
    """The live inspector's endpoints (docs/inspector.md), there only with COLLECTOR_INSPECT_KEY."""
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"inspectCookie": []}]
    refused = _json(
        _ref("Error"),
        "no inspector key and no login cookie",
        **{"WWW-Authenticate": "the scheme to use"},
    )
    selection = {
        "type": "object",
        "properties": {
            "seqs": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "reason": {"type": "string", "minLength": 1},
            "all": {"type": "boolean"},
        },
    }

    def action(done: str, command: str) -> dict[str, Any]:
        count = {"type": "object", "required": [done], "properties": {done: {"type": "integer"}}}
        return {
            "post": {
                "summary": f"Dead letters {done}, as by 'collector spool {command}'",
                "security": security,
                "requestBody": {"required": True, "content": {JSON: {"schema": selection}}},
                "responses": {
                    "200": _json(count, f"how many were {done}"),
                    "400": _json(_ref("Error"), "the selection is not seqs, a reason or all"),
                    "401": refused,
                    "415": _json(_ref("Error"), "the body is not application/json"),
                },
            }
        }

    see_page = {
        "303": {
            "description": "to /inspect",
            "headers": {"Location": {"schema": {"type": "string"}}},
        }
    }
    letter = {
        "type": "object",
        "required": [
            "seq",
            "journey",
            "type",
            "key",
            "reason",
            "status",
            "detail",
            "dead_at",
            "body",
        ],
        "properties": {
            "seq": {"type": "integer"},
            "journey": {"type": "string"},
            "type": {"type": "string"},
            "key": {"type": "string"},
            "reason": {"type": "string"},
            "status": {"type": ["integer", "null"]},
            "detail": {"type": "string"},
            "dead_at": {"type": "integer"},
            "body": {},
        },
    }
    dead = {
        "type": "object",
        "required": ["dead", "total"],
        "properties": {"dead": {"type": "array", "items": letter}, "total": {"type": "integer"}},
    }
    listed = {"type": "string", "description": "one, or several comma-separated"}
    query = [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in (
            ("journey", {"type": "string"}), ("contact", {"type": "string"}),
            ("order", {"type": "string"}), ("type", listed), ("source", listed),
            ("step", listed), ("mask", {"type": "string", "enum": ["0", "1"]}),
        )
    ]  # fmt: skip
    return {
        "/inspect": {
            "get": {
                "summary": "The inspector's page (a key form until logged in)",
                "responses": {
                    "200": {
                        "description": "the page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "404": _json(_ref("Error"), "the page is not installed here"),
                },
            }
        },
        "/inspect/login": {
            "post": {
                "summary": "Log in with the inspector key: sets the yc_inspect cookie",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "properties": {"key": {"type": "string"}}}
                        },
                        JSON: {
                            "schema": {"type": "object", "properties": {"key": {"type": "string"}}}
                        },
                    },
                },
                "responses": {**see_page, "401": _json(_ref("Error"), "wrong inspector key")},
            }
        },
        "/inspect/logout": {"post": {"summary": "Clear the login cookie", "responses": see_page}},
        "/inspect/stream": {
            "get": {
                "summary": "Server-sent events: `hello`, then each step of events' journeys",
                "description": "The buffered steps first (after Last-Event-ID), then live ones;"
                " `: ping` every 15 s. Personal data masked unless mask=0.",
                "security": security,
                "parameters": [
                    *query,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": refused,
                },
            }
        },
        "/inspect/dead": {
            "get": {
                "summary": "Dead letters, oldest first",
                "security": security,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
                    },
                    {
                        "name": "mask",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["0", "1"]},
                    },
                ],
                "responses": {
                    "200": _json(dead, "the dead letters and how many there are"),
                    "400": _json(_ref("Error"), "limit is not 0 to 1000"),
                    "401": refused,
                },
            }
        },
        "/inspect/dead/replay": action("replayed", "replay"),
        "/inspect/dead/purge": action("purged", "purge"),
    }


def openapi(settings: Settings) -> dict[str, Any]:
    """The document for a collector with these settings (the browser path is a setting)."""
    web = settings.web_path
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    basic: list[dict[str, list[str]]] = [{"basic": []}]
    yespo_event = {
        "summary": "Yespo's Generate event, taken as Yespo takes it",
        "security": basic,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("YespoEvent")}}},
        "responses": {
            "200": {"description": "accepted: an empty body, as Yespo answers"},
            "400": _json(_ref("Message"), "refused, with each field's error"),
            **_refusals("message", 401, 413, 503),
        },
    }
    paths: dict[str, Any] = {
        "/v1/events": {
            "post": {
                "summary": "One event, or a batch of up to COLLECTOR_MAX_BATCH_EVENTS",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": {"oneOf": [_ref("Event"), _ref("Batch")]}},
                    },
                },
                "responses": {
                    "200": _json(_ref("EventsReply"), "at least one event accepted"),
                    "400": _json(
                        {"oneOf": [_ref("EventsReply"), _ref("Error")]},
                        "no event accepted (each refused one with its errors), or the body"
                        " is not an event or a batch",
                    ),
                    **_refusals("error", 401, 413, 503),
                },
            }
        },
        "/api/v1/event": {"post": yespo_event},
        "/api/v2/event": {"post": yespo_event},
        "/api/v1/orders": {
            "post": {
                "summary": "Yespo's Add orders: up to 1000 orders",
                "security": basic,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Orders")}}},
                "responses": {
                    "200": _json(
                        _ref("OrdersReply"), "the orders not listed as failed are accepted"
                    ),
                    **_refusals("message", 400, 401, 413, 503),
                },
            }
        },
        **_segment(),
        web: {
            "post": {
                "summary": "The tracking script's events: one visitor's batch",
                "description": "Needs an Origin (or Referer) allowed for the site key.",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": _ref("BrowserBatch")},
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json(_ref("BrowserReply"), "at least one event accepted or held"),
                    "400": _json(
                        {"oneOf": [_ref("BrowserReply"), _ref("Error")]},
                        "nothing accepted, or the body is not a batch",
                    ),
                    **_refusals("error", 403, 413, 429, 503),
                },
            },
            "options": {
                "summary": "CORS preflight (only JSON bodies need one)",
                "responses": {
                    "204": {"description": "the origin is allowed"},
                    "403": _json(_ref("Error"), "the origin is allowed for no site key"),
                    "429": _json(
                        _ref("Error"),
                        "this client sent more than its request ceiling",
                        **{"Retry-After": "seconds to wait"},
                    ),
                },
            },
        },
        web + ".js": {
            "get": {
                "summary": "The tracking script",
                "responses": {
                    "200": {
                        "description": "the script",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "not modified since the ETag given"},
                    "404": _json(_ref("Error"), "the script is not installed here"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "The process answers",
                "responses": {"200": _json(_ref("Health"), "up")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The collector can take events now",
                "responses": {
                    "200": _json(_ref("Ready"), "ready"),
                    "503": _json(_ref("Ready"), "not ready, and why"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "the text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }
    if settings.inspect_key is not None:
        paths.update(_inspect())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Yespo collector",
            "version": __version__,
            "description": "A first-party event collector for Yespo: docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
                "inspectCookie": {"type": "apiKey", "in": "cookie", "name": "yc_inspect"},
                "writekey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "A Segment write key as the user name, no password"
                    " (or writeKey in the body).",
                },
            },
        },
    }
