"""`POST /matches/upload` (and its alias `POST /matches`): a video streamed into UPLOAD_DIR.

The body is never held in memory: Tornado hands it over piece by piece (`data_received`),
`services.intake` parses the form and writes the file off the event loop. The match is
created only once the file is whole and has its final name.
"""

from __future__ import annotations

import logging

import tornado.ioloop
import tornado.web

from handlers import views
from handlers.base import StreamedBodyHandler
from services import faults, intake

log = logging.getLogger(__name__)

REFUSAL_STATUS = {intake.BadForm: 400, intake.TooLarge: 413, intake.NotAVideo: 415}


def http_error(refusal: intake.Refused) -> tornado.web.HTTPError:
    return tornado.web.HTTPError(REFUSAL_STATUS[type(refusal)], "%s", refusal)


@tornado.web.stream_request_body
class UploadHandler(StreamedBodyHandler):
    """Streams a POSTed multipart form to disk; other methods are left to subclasses."""

    intake: intake.UploadIntake | None = None

    async def prepare(self) -> None:
        if self.request.method != "POST":
            return
        max_bytes = self.config.max_upload_bytes
        self.receive(intake.body_limit(max_bytes), http_error(intake.too_large(max_bytes)))
        try:
            self.intake = await intake.UploadIntake.open(
                self.settings["uploads"], self.request.headers.get("Content-Type", ""), max_bytes
            )
        except intake.Refused as refusal:
            raise http_error(refusal) from None
        except OSError as error:
            log.error("could not store an upload: %s", error)
            raise tornado.web.HTTPError(503, "file: cannot be stored now") from None

    async def data_received(self, chunk: bytes) -> None:
        if self.intake is None:  # not a POST, or already refused
            return
        self.body_arriving()
        try:
            await self.intake.feed(chunk)
        except (intake.Refused, OSError) as error:
            await self._stop_intake()
            if isinstance(error, intake.Refused):
                self.refuse_midway(http_error(error))
            else:
                log.error("could not store an upload: %s", error)
                self.refuse_midway(tornado.web.HTTPError(500))

    async def post(self) -> None:
        self.body_received()
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

    async def _stop_intake(self) -> None:
        upload, self.intake = self.intake, None
        if upload is not None:
            await upload.discard()


routes = [(r"/matches/upload", UploadHandler)]
