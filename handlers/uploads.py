"""`POST /matches/upload` (and its alias `POST /matches`): a video streamed into UPLOAD_DIR.

The body is never held in memory: Tornado hands it over piece by piece (`data_received`),
`services.intake` parses the form and writes the file off the event loop. The match is
created only once the file is whole and renamed into place.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import tornado.ioloop
import tornado.web

from handlers import views
from handlers.base import APIHandler
from services import faults, intake

log = logging.getLogger(__name__)

REFUSAL_STATUS = {intake.BadForm: 400, intake.TooLarge: 413, intake.NotAVideo: 415}

# This handler enforces MAX_UPLOAD_BYTES itself, to answer 413. Tornado's own body limit
# answers 400 and, for a Content-Length over it, does so after prepare() has already
# answered, writing a second response onto the connection.
NO_TORNADO_LIMIT = sys.maxsize


def http_error(refusal: intake.Refused) -> tornado.web.HTTPError:
    return tornado.web.HTTPError(REFUSAL_STATUS[type(refusal)], "%s", refusal)


@tornado.web.stream_request_body
class UploadHandler(APIHandler):
    """Streams a POSTed multipart form to disk; other methods are left to subclasses."""

    intake: intake.UploadIntake | None = None
    # True while the body is still arriving: an answer now leaves the rest of it unread.
    receiving = False

    async def prepare(self) -> None:
        if self.request.method != "POST":
            return
        self.request.connection.set_max_body_size(NO_TORNADO_LIMIT)
        self.receiving = True
        max_bytes = self.config.max_upload_bytes
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > intake.body_limit(max_bytes):
            # Refused before reading any of it; a client that sent `Expect: 100-continue`
            # never sends the body at all.
            raise http_error(intake.too_large(max_bytes))
        try:
            self.intake = await intake.UploadIntake.open(
                self.settings["uploads"], self.request.headers.get("Content-Type", ""), max_bytes
            )
        except intake.Refused as refusal:
            raise http_error(refusal) from None

    async def data_received(self, chunk: bytes) -> None:
        if self.intake is None:  # not a POST, or already refused
            return
        try:
            await self.intake.feed(chunk)
        except (intake.Refused, OSError) as error:
            # Answered from here: an exception leaving data_received would drop the
            # connection without any answer.
            await self._stop_intake()
            if isinstance(error, intake.Refused):
                refusal = http_error(error)
            else:
                log.error("could not store an upload: %s", error)
                refusal = tornado.web.HTTPError(500)
            self.send_error(refusal.status_code, exc_info=(type(refusal), refusal, None))

    async def post(self) -> None:
        self.receiving = False
        try:
            upload = await self.intake.finish()
            faults.crash_point("after-upload-placed")
            match = await self.settings["matches"].create_from_upload(
                upload.stored_name, upload.original_name, upload.title
            )
        except BaseException as error:
            await self._stop_intake()
            if isinstance(error, intake.Refused):
                raise http_error(error) from None
            raise
        await self.intake.keep()
        log.info("stored upload %s as match %s", upload.stored_name, match["id"])
        self.write_json(views.match(match), status=201)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.receiving and self.intake is not None:
            # The client left mid-upload: no match, and the temp file goes.
            tornado.ioloop.IOLoop.current().spawn_callback(self._stop_intake)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.receiving:
            # Tornado closes the connection after this answer rather than read the rest.
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    async def _stop_intake(self) -> None:
        upload, self.intake = self.intake, None
        if upload is not None:
            await upload.discard()


routes = [(r"/matches/upload", UploadHandler)]
