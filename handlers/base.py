"""What every HTTP handler shares: CORS, JSON answers, JSON errors, validated JSON bodies."""

from __future__ import annotations

import http.client
import logging
import re
import sys
from typing import Any

import orjson
import tornado.web

import schema

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

# The default when CORS_ORIGIN is empty: any local development frontend.
LOCAL_ORIGIN = re.compile(r"http://(localhost|127\.0\.0\.1)(:\d{1,5})?")

ALLOWED_HEADERS = "Content-Type, Authorization, X-Requested-With, Range"
EXPOSED_HEADERS = "Content-Range, Content-Length"


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser at `origin` may call this service (CORS_ORIGIN, or local by default)."""
    origin = origin.rstrip("/")
    if allowed:
        return "*" in allowed or origin in allowed
    return LOCAL_ORIGIN.fullmatch(origin) is not None


def with_api_prefix(routes: list[tuple]) -> list[tuple]:
    """Each route at its bare path and again under /api/v1 (the contract serves both)."""
    return routes + [(API_PREFIX + route[0], *route[1:]) for route in routes]


class CorsMixin:
    """CORS headers on every answer, and a preflight that answers OPTIONS."""

    def set_default_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin and origin_allowed(origin, self.settings["config"].cors_origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
        self.add_header("Vary", "Origin")

    def options(self, *args: str) -> None:
        self.set_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, PATCH, DELETE, OPTIONS")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


class APIHandler(CorsMixin, tornado.web.RequestHandler):
    """Base of every JSON route.

    Errors are answered as `{"statusCode", "error", "message"}`, the shape the frontend reads.
    Raise `tornado.web.HTTPError(status, message)` to stop with a client error: the message is
    shown as is. Anything else becomes a 500 with a generic message, never a stack trace.
    """

    @property
    def db(self):
        return self.settings["db"]

    @property
    def config(self):
        return self.settings["config"]

    def write_json(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(document))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif status_code >= 500:
            message = "Internal server error"
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(
            orjson.dumps(
                {
                    "statusCode": status_code,
                    "error": http.client.responses.get(status_code, "Error"),
                    "message": message,
                }
            )
        )

    def json_body(self, schema_name: str) -> Any:
        """The request body parsed as JSON and checked against `schema/<schema_name>.json`."""
        try:
            document = orjson.loads(self.request.body or b"null")
        except orjson.JSONDecodeError as error:
            raise tornado.web.HTTPError(400, "body: not valid JSON (%s)", error) from None
        try:
            schema.validate(schema_name, document)
        except schema.InvalidBody as error:
            raise tornado.web.HTTPError(400, "%s", error) from None
        # JSON can only carry a NUL as the escape \u0000: a quick look at the bytes spares
        # walking large bodies that have none.
        if b"\\u0000" in self.request.body:
            path = schema.nul_character_path(document)
            if path is not None:
                raise tornado.web.HTTPError(400, "%s: must not contain NUL characters", path)
        return document

    def not_found(self, what: str = "Match") -> tornado.web.HTTPError:
        return tornado.web.HTTPError(404, "%s not found", what)


class StreamedBodyHandler(APIHandler):
    """Base of `@stream_request_body` routes that cap their own body size, so that a body
    over the cap is answered 413 with the contract's JSON error. (Tornado's own cap answers a
    plain-text 400, and for a Content-Length over it, after `prepare()` has already answered.)

    Call `receive(limit, refusal)` from `prepare()`: a Content-Length over `limit` is refused
    before the body is read (a client sending `Expect: 100-continue` never sends it); after
    that, `refuse_midway(error)` answers from `data_received`, where an exception would drop
    the connection without an answer.
    """

    # True while the body is still arriving: an answer now leaves the rest of it unread.
    receiving = False

    def receive(self, limit: int, refusal: tornado.web.HTTPError) -> None:
        self.request.connection.set_max_body_size(sys.maxsize)
        self.receiving = True
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise refusal

    def refuse_midway(self, error: tornado.web.HTTPError) -> None:
        self.send_error(error.status_code, exc_info=(type(error), error, None))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.receiving:
            # Tornado closes the connection after this answer rather than read the rest.
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)


class NotFoundHandler(APIHandler):
    """Unknown paths answer a JSON 404 like every other error."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(
            404, "No route for %s %s", self.request.method, self.request.path
        )
