"""Files being received into UPLOAD_DIR, and the ones a killed process left behind.

An upload is written under a temp name (`.partial-<hex>`) directly in UPLOAD_DIR, so the final
rename stays on one filesystem, and it holds an exclusive `flock` on that file while it is
open. The lock dies with its process, which is what lets `sweep` tell a file that a live
process (this one or another sharing UPLOAD_DIR) is still writing from a file that a killed
process abandoned, without guessing from ages.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

TEMP_PREFIX = ".partial-"

# Bytes gathered before one write goes to the executor. Large batches keep thread hand-offs
# rare; at most two are held per upload (one filling, one being written).
BATCH_BYTES = 4 << 20

CREATE_ATTEMPTS = 3


class PartialUpload:
    """One file being received: written in order, one batch at a time, off the event loop.

    `write` returns at once while the batch fills, and waits only when a full batch must
    go to disk while the previous one is still being written. A caller that awaits it
    (a `data_received` coroutine) thereby stops reading the socket, which slows the client
    down instead of growing memory.
    """

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self.size = 0
        self._file: BinaryIO | None = file
        self._buffer = bytearray()
        self._writing: asyncio.Future[Any] | None = None

    @classmethod
    async def create(cls, upload_dir: str) -> PartialUpload:
        return cls(*await _in_executor(_create_locked, Path(upload_dir)))

    async def write(self, data: bytes | memoryview) -> None:
        if self._file is None:
            return  # discarded while the body was still arriving: nothing more is kept
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= BATCH_BYTES:
            await self._hand_over()

    async def commit(self, name: str) -> Path:
        """Writes what is left, syncs, and renames the file to `name` in the same folder."""
        await self._hand_over()
        await self._wait_for_disk()
        target = self.path.with_name(name)
        file, self._file = self._file, None
        await _in_executor(_sync_and_rename, file, self.path, target)
        self.path = target
        await _in_executor(_sync_directory, target.parent)
        return target

    async def discard(self) -> None:
        """Removes the file, committed or not. Safe to call more than once."""
        await self._wait_for_disk()
        file, self._file = self._file, None
        self._buffer = bytearray()
        await _in_executor(_remove, self.path, file)

    async def _hand_over(self) -> None:
        """Starts writing the buffered batch as soon as the previous one is on disk."""
        await self._wait_for_disk()
        if self._file is None or not self._buffer:
            return
        batch, self._buffer = self._buffer, bytearray()
        self._writing = asyncio.get_running_loop().run_in_executor(None, self._file.write, batch)

    async def _wait_for_disk(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing


def sweep(upload_dir: str) -> int:
    """Removes the temp files that no live process holds locked; returns how many.

    Only regular files named with TEMP_PREFIX directly in `upload_dir` are candidates: a
    symlink is never followed (O_NOFOLLOW) and unlinking a name never touches anything
    outside the folder.
    """
    removed = 0
    with os.scandir(upload_dir) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) and _remove_if_abandoned(entry.path):
                removed += 1
    return removed


def _remove_if_abandoned(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # a symlink, gone already, or not ours to open
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
        return True
    except OSError:  # BlockingIOError: a live process is writing it
        return False
    finally:
        os.close(fd)


def _create_locked(directory: Path) -> tuple[Path, BinaryIO]:
    """Creates and locks a new temp file.

    A sweep in another process may lock and remove the file in the instant between its
    creation and our lock; the name then no longer leads to our file, and we start again.
    """
    for _ in range(CREATE_ATTEMPTS):
        path = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        file = open(path, "xb")  # noqa: SIM115 (held open until commit or discard)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.stat(path), os.fstat(file.fileno())):
                return path, file
        except (BlockingIOError, FileNotFoundError):
            pass
        file.close()
    raise OSError(f"could not create a temp file in {directory}")


def _sync_and_rename(file: BinaryIO, path: Path, target: Path) -> None:
    """Makes the data durable before the match that points at it is committed. The lock is
    held until the rename, so a sweep never sees the temp file unlocked."""
    with file:
        file.flush()
        os.fsync(file.fileno())
        os.rename(path, target)


def _sync_directory(path: Path) -> None:
    """Makes a rename in `path` durable."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _remove(path: Path, file: BinaryIO | None) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        log.warning("could not remove %s: %s", path, error)
    if file is not None:
        with contextlib.suppress(OSError):
            file.close()


def _in_executor(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    return asyncio.get_running_loop().run_in_executor(None, function, *args)
