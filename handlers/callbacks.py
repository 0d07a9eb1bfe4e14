"""The inference engine's callbacks: progress, live-event, tracking-update, complete.

The engine ignores the answer's body; it only needs a fast 2xx (or the 4xx that says why
its report was refused). With CALLBACK_SECRET set, each callback must be signed
(`services.signing`); an unsigned or badly signed one is refused with 401 before anything
is written.
"""

from __future__ import annotations

import uuid

import tornado.web

from handlers.base import StreamedBodyHandler
from handlers.matches import UUID
from services import signing
from services.analysis import MatchNotFound, StaleRun

# Bodies other than `complete` are small; `complete` is capped by MAX_COMPLETE_BYTES.
SMALL_BODY_BYTES = 1024 * 1024


@tornado.web.stream_request_body
class CallbackHandler(StreamedBodyHandler):
    """Checks the body's size, signature and run; maps the service's refusals to 404 and 409.

    The body is streamed so that each route sets its own size cap: an oversize body is
    refused (413) from its Content-Length before it is read, or, sent in chunks, as soon as
    it passes the cap.
    """

    schema_name: str

    def max_body_bytes(self) -> int:
        return SMALL_BODY_BYTES

    def prepare(self) -> None:
        if self.config.callback_secret:
            self._refuse_unless(signing.check_timestamp, self.request.headers)
        self._limit = self.max_body_bytes()
        self.receive(self._limit, self._too_large())
        self._chunks: list[bytes] = []
        self._size = 0

    def data_received(self, chunk: bytes) -> None:
        if self._chunks is None:  # refused already
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._chunks = None
            self.refuse_midway(self._too_large())
        else:
            self._chunks.append(chunk)

    def _too_large(self) -> tornado.web.HTTPError:
        return tornado.web.HTTPError(413, "body: larger than the %d bytes allowed", self._limit)

    @property
    def analysis(self):
        return self.settings["analysis"]

    async def post(self, match_id: str) -> None:
        self.receiving = False
        self.request.body = b"".join(self._chunks)
        if self.config.callback_secret:
            self._refuse_unless(
                signing.verify, self.config.callback_secret, self.request.body, self.request.headers
            )
        body = self.json_body(self.schema_name)
        try:
            applied = await self.apply(match_id, self._run(body), body)
        except MatchNotFound:
            raise self.not_found() from None
        except StaleRun as error:
            raise tornado.web.HTTPError(
                409, "analysis_id: %s is not the current analysis of this match", error
            ) from None
        self.write_json({"ok": True, "ignored": applied is False}, status=201)

    async def apply(self, match_id: str, run: str | None, body: dict) -> bool | None:
        raise NotImplementedError

    @staticmethod
    def _refuse_unless(check, *args) -> None:
        """Runs a `services.signing` check; its refusal becomes a 401 saying why."""
        try:
            check(*args)
        except signing.InvalidSignature as error:
            raise tornado.web.HTTPError(401, "%s", error) from None

    def _run(self, body: dict) -> str | None:
        """The analysis run the callback names (body `analysis_id` or `X-Analysis-Id`), if any."""
        run = body.get("analysis_id") or self.request.headers.get("X-Analysis-Id")
        if run is None:
            return None
        try:
            return str(uuid.UUID(str(run)))
        except ValueError:
            raise tornado.web.HTTPError(
                409, "analysis_id: %r is not an analysis run", run
            ) from None


class ProgressHandler(CallbackHandler):
    schema_name = "progress"

    async def apply(self, match_id, run, body):
        return await self.analysis.progress(match_id, run, body)


class LiveEventHandler(CallbackHandler):
    schema_name = "live_event"

    async def apply(self, match_id, run, body):
        await self.analysis.live_event(match_id, run, body)


class TrackingUpdateHandler(CallbackHandler):
    schema_name = "tracking_update"

    async def apply(self, match_id, run, body):
        await self.analysis.tracking_update(match_id, run, body["frames"])


class CompleteHandler(CallbackHandler):
    schema_name = "complete"

    def max_body_bytes(self) -> int:
        return self.config.max_complete_bytes

    async def apply(self, match_id, run, body):
        await self.analysis.complete(match_id, run, body)


routes = [
    (rf"/matches/({UUID})/progress", ProgressHandler),
    (rf"/matches/({UUID})/live-event", LiveEventHandler),
    (rf"/matches/({UUID})/tracking-update", TrackingUpdateHandler),
    (rf"/matches/({UUID})/complete", CompleteHandler),
]
