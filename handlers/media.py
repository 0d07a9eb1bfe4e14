"""`GET`/`HEAD /uploads/<name>`: stored videos and the files inference writes beside them.

Tornado's StaticFileHandler does the HTTP part (Range, 206/416, conditional requests); this
subclass decides which files exist for the web (`services.media.servable_file`), answers
every refusal as the contract's JSON 404, and adds the headers a player on another origin needs.
"""

from __future__ import annotations

import os

import tornado.web

from handlers.base import APIHandler
from services import containers, media


class MediaHandler(APIHandler, tornado.web.StaticFileHandler):
    def initialize(self) -> None:
        super().initialize(path=self.config.upload_dir)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # A <video> on the frontend's origin may embed these files.
        self.set_header("Cross-Origin-Resource-Policy", "cross-origin")
        self.set_header("X-Content-Type-Options", "nosniff")

    async def get(self, path: str, include_body: bool = True) -> None:
        await super().get(path, include_body)
        if self.get_status() == 416 and include_body:
            # Tornado leaves the body of an unsatisfiable range empty.
            refusal = tornado.web.HTTPError(
                416,
                "Range: %s is outside the file (%d bytes)",
                self.request.headers["Range"],
                self.get_content_size(),
            )
            self.write_error(416, exc_info=(type(refusal), refusal, None))

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        # Checked (and resolved) in validate_absolute_path, which answers 404 rather than
        # Tornado's 403 for a path outside the root.
        return os.path.join(root, path)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        found = media.servable_file(root, self.path)
        if found is None:
            raise tornado.web.HTTPError(404, "File not found")
        return str(found)

    def compute_etag(self) -> str | None:
        # From size and modification time, as nginx does: Tornado's default hashes up to
        # 64 MB of the file on the event loop.
        return f'"{int(self.modified.timestamp()):x}-{self.get_content_size():x}"'

    def get_content_type(self) -> str:
        extension = os.path.splitext(self.absolute_path)[1].lstrip(".").lower()
        return containers.MIME_TYPES.get(extension) or super().get_content_type()


routes = [(r"/uploads/(.*)", MediaHandler)]
