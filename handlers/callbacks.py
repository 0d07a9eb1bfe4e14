"""The inference engine's callbacks: progress, live-event, tracking-update, complete.

The engine ignores the answer's body; it only needs a fast 2xx (or the 4xx that says why
its report was refused). With CALLBACK_SECRET set, each callback must be signed
(`services.signing`); an unsigned or badly signed one is refused with 401 before anything
is written.
"""

from __future__ import annotations

import uuid

import tornado.web

from handlers.base import JsonBodyHandler
from handlers.matches import UUID
from services import signing
from services.analysis import MatchNotFound, StaleRun


class CallbackHandler(JsonBodyHandler):
    """Checks the body's size, signature and run; maps the service's refusals to 404 and 409.

    Bodies are capped at 1 MiB (`JsonBodyHandler`), `complete`'s at MAX_COMPLETE_BYTES.
    """

    schema_name: str

    def prepare(self) -> None:
        super().prepare()  # sets the body's cap first, so that Tornado's own never answers
        if self.config.callback_secret:
            self._refuse_unless(signing.check_timestamp, self.request.headers)

    @property
    def analysis(self):
        return self.settings["analysis"]

    async def post(self, match_id: str) -> None:
        if self.config.callback_secret:
            self._refuse_unless(
                signing.verify, self.config.callback_secret, self.raw_body(), self.request.headers
            )
        body = self.json_body(self.schema_name)
        try:
            # Lower case, as ids are everywhere else (the update's `matchId` comes from here).
            applied = await self.apply(match_id.lower(), self._run(body), body)
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
            raise tornado.web.HTTPError(400, "analysis_id: expected a UUID") from None


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
