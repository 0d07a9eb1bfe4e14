"""A video upload read as it streams in: a multipart form whose `file` field goes to disk.

`UploadIntake.open()`, then `feed()` each piece of the body as it arrives, then `finish()`
to get the stored video, and `keep()` once its match is committed; `discard()` removes
whatever was written. Whatever the size, only the title, the first bytes of the file (to
recognise its container) and the write batches are held in memory. Each refusal is raised
as soon as it is known: a text file is refused after its first few KB, an oversize one as
soon as it passes the limit.
"""

from __future__ import annotations

import dataclasses
import unicodedata

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from services import containers
from services.partial_uploads import PartialUpload, UploadFolder

FILE_FIELD = "file"
TITLE_FIELD = "title"
BOUNDARY_MAX_CHARS = 200
TITLE_MAX_CHARS = 200
ORIGINAL_NAME_MAX_CHARS = 255

# Room for the boundaries, part headers and small fields around the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024


class Refused(Exception):
    """The upload cannot be accepted; the message says which field and why."""


class BadForm(Refused):
    """Not a multipart form with one non-empty `file`, or a field with a bad value."""


class TooLarge(Refused):
    """The file (or the whole body) is over the configured limit."""


class NotAVideo(Refused):
    """The file does not start like any known video container."""


def too_large(max_file_bytes: int) -> TooLarge:
    return TooLarge(f"file: larger than the upload limit of {max_file_bytes} bytes")


def body_limit(max_file_bytes: int) -> int:
    """The largest body that can carry a file of `max_file_bytes`."""
    return max_file_bytes + FORM_OVERHEAD_BYTES


@dataclasses.dataclass(frozen=True)
class Upload:
    stored_name: str
    original_name: str | None
    title: str | None


class UploadIntake:
    def __init__(self, boundary: bytes, file: PartialUpload, max_file_bytes: int) -> None:
        self._file = file
        self._max_file_bytes = max_file_bytes
        self._received = 0
        self._file_bytes = 0
        self._pending: list[memoryview] = []
        self._head = bytearray()
        self._container: containers.Container | None = None
        self._original_name: str | None = None
        self._title_bytes = bytearray()
        self._title: str | None = None
        self._fields_seen: set[str] = set()
        self._field: str | None = None
        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._complete = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    @classmethod
    async def open(
        cls, folder: UploadFolder, content_type: str, max_file_bytes: int
    ) -> UploadIntake:
        """Checks the request's Content-Type and creates the temp file."""
        media_type, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if media_type != b"multipart/form-data" or not boundary:
            raise BadForm(
                "Content-Type: expected multipart/form-data with a boundary, "
                "the video in a field named `file`"
            )
        # RFC 2046 5.1.1 allows 70 characters; python-multipart refuses more than 256.
        if len(boundary) > BOUNDARY_MAX_CHARS:
            raise BadForm(f"Content-Type: boundary longer than {BOUNDARY_MAX_CHARS} characters")
        file = await folder.receive()
        try:
            return cls(boundary, file, max_file_bytes)
        except BaseException:
            await file.discard()
            raise

    async def feed(self, chunk: bytes) -> None:
        """Parses the next piece of the body and queues the file's bytes for the disk."""
        self._received += len(chunk)
        if self._received > body_limit(self._max_file_bytes):
            raise too_large(self._max_file_bytes)
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:
            raise BadForm(f"body: not a valid multipart form ({error})") from None
        pending, self._pending = self._pending, []
        for data in pending:
            await self._file.write(data)

    async def finish(self) -> Upload:
        """Once the body is complete: checks the form, renames the file into place."""
        if not self._complete:
            raise BadForm("body: the multipart form ends before its closing boundary")
        if FILE_FIELD not in self._fields_seen:
            raise BadForm("file: missing; send the video in a multipart field named `file`")
        if self._container is None:
            raise BadForm("file: empty")
        placed = await self._file.place(self._container.extension)
        return Upload(placed.name, self._original_name, self._title)

    async def keep(self) -> None:
        """Once the match naming the stored video is committed."""
        await self._file.keep()

    async def discard(self) -> None:
        """Removes the file, whether still a temp file or already placed (unless kept)."""
        self._pending = []
        await self._file.discard()

    # Parser callbacks. They run inside `self._parser.write`; what they raise leaves `feed`.

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._field = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        # Latin-1 keeps the raw bytes: parse_options_header only accepts Latin-1 text, and
        # the file name inside is decoded as UTF-8 (what browsers send) afterwards.
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        field = options.get(b"name", b"").decode("latin-1")
        if field in (FILE_FIELD, TITLE_FIELD):
            if field in self._fields_seen:
                raise BadForm(f"{field}: sent more than once")
            self._fields_seen.add(field)
        self._field = field
        if field == FILE_FIELD:
            self._original_name = _original_name(options.get(b"filename"))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field == FILE_FIELD:
            self._on_file_data(memoryview(data)[start:end])
        elif self._field == TITLE_FIELD:
            self._title_bytes += data[start:end]
            if len(self._title_bytes) > 4 * TITLE_MAX_CHARS:
                raise self._title_too_long()
        # Other fields are read past and dropped.

    def _on_file_data(self, data: memoryview) -> None:
        self._file_bytes += len(data)
        if self._file_bytes > self._max_file_bytes:
            raise too_large(self._max_file_bytes)
        if self._container is None:
            self._head += data[: containers.SNIFF_BYTES - len(self._head)]
            if len(self._head) >= containers.SNIFF_BYTES:
                self._sniff()
        self._pending.append(data)

    def _on_part_end(self) -> None:
        if self._field == FILE_FIELD and self._container is None and self._head:
            self._sniff()  # a file shorter than SNIFF_BYTES
        elif self._field == TITLE_FIELD:
            self._title = self._parse_title()
        self._field = None

    def _on_end(self) -> None:
        self._complete = True

    def _sniff(self) -> None:
        self._container = containers.sniff(bytes(self._head))
        if self._container is None:
            known = ", ".join(container.extension for container in containers.ALL)
            raise NotAVideo(f"file: not a video (recognised containers: {known})")

    def _parse_title(self) -> str | None:
        try:
            title = self._title_bytes.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BadForm("title: not UTF-8 text") from None
        if len(title) > TITLE_MAX_CHARS:
            raise self._title_too_long()
        if "\0" in title:
            raise BadForm("title: must not contain NUL characters")
        return title or None

    def _title_too_long(self) -> BadForm:
        return BadForm(f"title: longer than {TITLE_MAX_CHARS} characters")


def _original_name(raw: bytes | None) -> str | None:
    """The client's file name, kept only as data: no folders, no control characters."""
    if not raw:
        return None
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C").strip()
    return name[:ORIGINAL_NAME_MAX_CHARS] or None
