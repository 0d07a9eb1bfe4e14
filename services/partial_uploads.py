"""Files being received into UPLOAD_DIR, and the ones a killed process left behind.

An upload is written under a temp name (`.partial-<id>`) directly in UPLOAD_DIR, so that the
final name stays on one filesystem, and it holds an exclusive `flock` on that file while it is
open. The lock dies with its process, which is what lets `sweep` tell a file that a live
process (this one or another sharing UPLOAD_DIR) is still writing from a file that a killed
process abandoned, without guessing from ages.

A whole upload gets its final name `<id>.<ext>` as a second link to the same file (`place`)
before the match naming it is committed, and loses the temp name only after (`keep`). So a
process killed at any point leaves either no final name, or the temp name beside it, which
tells `sweep` to ask the database whether that match was committed: the file stays with its
match, or goes with the temp name.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import stat
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TEMP_PREFIX = ".partial-"

# Bytes gathered before one write goes to the executor. Large batches keep thread hand-offs
# rare; at most two are held per upload (one filling, one being written).
BATCH_BYTES = 4 << 20

CREATE_ATTEMPTS = 3

# Most pieces one writev() takes (the IOV_MAX of Linux and the BSDs).
IOV_MAX = 1024

SYNC_FILE_RANGE_WRITE = 2


def _libc_sync_file_range() -> Callable[..., int] | None:
    """Linux's sync_file_range(2), which Python's os module does not offer."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function


_sync_file_range = _libc_sync_file_range()


class PartialUpload:
    """One file being received: written in order, one batch at a time, off the event loop.

    `write` returns at once while the batch fills, and waits only when a full batch must
    go to disk while the previous one is still being written. A caller that awaits it
    (a `data_received` coroutine) thereby stops reading the socket, which slows the client
    down instead of growing memory. Pieces are kept as they came and written with one
    writev(), without first being copied into one buffer.

    Then `place(extension)` once the upload is whole, and `keep()` once its match is committed;
    `discard()` at any point before `keep()` removes every name the file has.
    """

    def __init__(self, path: Path, fd: int, finished: Callable[[PartialUpload], None]) -> None:
        self.path = path
        self.id = path.name.removeprefix(TEMP_PREFIX)
        self.placed: Path | None = None
        self._finished = finished
        self._kept = False
        self.size = 0
        self._fd: int | None = fd
        self._batch: list[bytes | memoryview] = []
        self._batch_bytes = 0
        self._on_disk = 0
        self._writing: asyncio.Future[Any] | None = None

    async def write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            return  # discarded while the body was still arriving: nothing more is kept
        self._batch.append(data)
        self._batch_bytes += len(data)
        self.size += len(data)
        if self._batch_bytes >= BATCH_BYTES:
            await self._hand_over()

    async def place(self, extension: str) -> Path:
        """Writes what is left, syncs, and gives the file its final name `<id as UUID>.<ext>`
        in the same folder, keeping the temp name (and the lock) until `keep()`."""
        await self._hand_over()
        await self._wait_for_disk()
        target = self.path.with_name(f"{uuid.UUID(hex=self.id)}.{extension}")
        await _in_executor(_sync_and_link, self._fd, self.path, target)
        self.placed = target
        # From here the upload is its handler's to keep or discard, not shutdown's.
        self._finished(self)
        return target

    async def keep(self) -> None:
        """The match naming the placed file is committed: drops the temp name and the lock."""
        fd, self._fd = self._fd, None
        self._kept = True
        await _in_executor(_remove, self.path, fd)

    async def discard(self) -> None:
        """Removes the file by every name it has, unless kept. Safe to call more than once."""
        if self._kept:
            return
        with contextlib.suppress(OSError):  # a failed write: the file goes all the same
            await self._wait_for_disk()
        fd, self._fd = self._fd, None
        self._batch = []
        self._finished(self)
        if self.placed is not None:
            await _in_executor(_remove, self.placed, None)
        await _in_executor(_remove, self.path, fd)

    async def _hand_over(self) -> None:
        """Starts writing the gathered batch as soon as the previous one is on disk."""
        await self._wait_for_disk()
        if self._fd is None or not self._batch:
            return
        batch, offset = self._batch, self._on_disk
        self._batch, self._on_disk = [], self._on_disk + self._batch_bytes
        self._batch_bytes = 0
        self._writing = _in_executor(_write_batch, self._fd, batch, offset)

    async def _wait_for_disk(self) -> None:
        """Until no write is running on the file: a discard that closed the descriptor under
        a running write could send its bytes to whatever file next gets the number."""
        while self._writing is not None:
            writing = self._writing
            try:
                await writing
            finally:
                if self._writing is writing:
                    self._writing = None


Committed = Callable[[list[str]], Awaitable[set[str]]]


class UploadFolder:
    """UPLOAD_DIR as this process receives videos into it: creates the temp files, keeps
    track of those not yet placed nor discarded, for shutdown to remove, and sweeps what
    killed processes left."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._unfinished: set[PartialUpload] = set()

    async def receive(self) -> PartialUpload:
        """A new locked temp file to write an upload into."""
        path, fd = await _in_executor(_create_locked, Path(self.path))
        upload = PartialUpload(path, fd, finished=self._unfinished.discard)
        self._unfinished.add(upload)
        return upload

    async def discard_unfinished(self) -> int:
        """Removes the uploads still being received; returns how many.

        For shutdown, once the connections are closed: what is still unfinished then will
        never be finished, and the lock this process holds on it would keep `sweep` off it.
        """
        unfinished = list(self._unfinished)
        await asyncio.gather(*(upload.discard() for upload in unfinished))
        return len(unfinished)

    async def sweep(self, committed: Committed) -> int:
        """Removes the temp files that no live process holds locked; returns how many.

        A final name beside an abandoned temp file goes too, unless `committed(names)` says
        a match names it (its process died between the commit and `keep()`).
        """
        abandoned = await _in_executor(_abandoned, Path(self.path))
        placed = [path.name for _, names in abandoned for path in names]
        kept = await committed(placed) if placed else set()
        removed = [path for temp, names in abandoned for path in (temp, *names)]
        await _in_executor(_remove_all, [path for path in removed if path.name not in kept])
        return len(abandoned)


def _abandoned(directory: Path) -> list[tuple[Path, list[Path]]]:
    """The temp files directly in `directory` that no live process holds, each with the final
    names it was placed under.

    Only regular files are candidates: a symlink is never followed (O_NOFOLLOW), and nothing
    outside the folder is ever named.
    """
    with os.scandir(directory) as scan:
        entries = list(scan)
    found = []
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX) and _is_abandoned(entry.path):
            prefix = _placed_prefix(entry.name.removeprefix(TEMP_PREFIX))
            placed = [
                Path(other.path)
                for other in entries
                if prefix and other.name.startswith(prefix) and other.is_file(follow_symlinks=False)
            ]
            found.append((Path(entry.path), placed))
    return found


def _placed_prefix(upload_id: str) -> str | None:
    """How the final name of upload `upload_id` starts (`<uuid>.`); None for another name."""
    try:
        return f"{uuid.UUID(hex=upload_id)}."
    except ValueError:
        return None


def _is_abandoned(path: str) -> bool:
    """A regular file (not a symlink) that no process holds locked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # a symlink, gone already, or not ours to open
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # BlockingIOError: a live process is writing it
        return False
    finally:
        os.close(fd)


def _create_locked(directory: Path) -> tuple[Path, int]:
    """Creates and locks a new temp file.

    A sweep in another process may lock and remove the file in the instant between its
    creation and our lock; the name then no longer leads to our file, and we start again.
    """
    for _ in range(CREATE_ATTEMPTS):
        path = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                return path, fd
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)
    raise OSError(f"could not create a temp file in {directory}")


def _write_batch(fd: int, pieces: list[bytes | memoryview], offset: int) -> None:
    """Writes the pieces in order, then has the kernel start putting them on disk, so that
    the disk works while the next batch arrives and the final fsync has little left to do."""
    views = collections.deque(memoryview(piece) for piece in pieces if len(piece))
    size = sum(len(view) for view in views)
    while views:
        written = os.writev(fd, list(itertools.islice(views, IOV_MAX)))
        while written:
            if written >= len(views[0]):
                written -= len(views.popleft())
            else:
                views[0] = views[0][written:]
                written = 0
    _start_writeback(fd, offset, size)


def _start_writeback(fd: int, offset: int, size: int) -> None:
    """sync_file_range(SYNC_FILE_RANGE_WRITE): starts the write-out without waiting for it.
    Where libc has no such call, the final fsync does all the work."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, size, SYNC_FILE_RANGE_WRITE)


# What os.link raises on a filesystem without hard links (FAT, exFAT, some network mounts).
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def _sync_and_link(fd: int, path: Path, target: Path) -> None:
    """Makes the data, then its final name, durable before the match naming it is committed.
    The temp name keeps its lock, so a sweep never sees it unlocked while this process lives.

    Without hard links the file is renamed instead: uploads work, but a process killed
    before the commit leaves a video that no sweep can tell from its match's.
    """
    os.fsync(fd)
    try:
        os.link(path, target)
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        os.rename(path, target)
    _sync_directory(target.parent)


def _sync_directory(path: Path) -> None:
    """Makes a new name in `path` durable."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _remove(path: Path, fd: int | None) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        log.warning("could not remove %s: %s", path, error)
    if fd is not None:
        os.close(fd)


def _remove_all(paths: list[Path]) -> None:
    for path in paths:
        _remove(path, None)


def _in_executor(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    return asyncio.get_running_loop().run_in_executor(None, function, *args)
