"""Temp files of uploads in progress: ordered batched writes, commit, discard, start-up sweep."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import sys
import threading
import uuid
from pathlib import Path

import pytest

from services import partial_uploads
from services.partial_uploads import UploadFolder

ROOT = Path(__file__).parent.parent


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.gen_test
async def test_batches_reach_the_disk_in_order(upload_dir, monkeypatch):
    """Pieces of every size, crossing batch edges and writev's piece limit, come out as one
    file in order."""
    monkeypatch.setattr(partial_uploads, "BATCH_BYTES", 1000)
    monkeypatch.setattr(partial_uploads, "IOV_MAX", 3)
    pieces = [bytes([index % 256]) * (index * 37 % 2500) for index in range(200)]
    upload = await UploadFolder(str(upload_dir)).receive()
    assert upload.path.name.startswith(".partial-")

    for piece in pieces:
        await upload.write(memoryview(piece))
    stored = await upload.place("mp4")

    assert stored == upload_dir / f"{uuid.UUID(hex=upload.id)}.mp4"
    assert stored.read_bytes() == b"".join(pieces)
    assert names(upload_dir) == sorted([upload.path.name, stored.name])
    await upload.keep()
    assert names(upload_dir) == [stored.name]


@pytest.mark.gen_test
async def test_a_folder_without_hard_links_still_takes_uploads(upload_dir, monkeypatch):
    """Guards UPLOAD_DIR on FAT or a network mount that refuses links: renamed instead."""

    def refuse(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    upload = await UploadFolder(str(upload_dir)).receive()
    await upload.write(b"video")
    stored = await upload.place("mp4")
    await upload.keep()
    assert names(upload_dir) == [stored.name]
    assert stored.read_bytes() == b"video"


@pytest.mark.gen_test
async def test_discard_removes_every_name_until_the_upload_is_kept(upload_dir):
    folder = UploadFolder(str(upload_dir))
    pending, placed, kept = [await folder.receive() for _ in range(3)]
    for upload in (pending, placed, kept):
        await upload.write(b"video")
    await placed.place("mp4")
    stored = await kept.place("mp4")
    await kept.keep()

    for upload in (pending, placed, placed, kept):
        await upload.discard()

    assert names(upload_dir) == [stored.name]


@pytest.mark.gen_test
async def test_discard_waits_for_the_write_running_on_the_file(upload_dir, monkeypatch):
    """Guards the descriptor's life: a discard (client gone) while one batch is being written
    and the next waits for it closes the file only after the write ended, never under it."""
    release = threading.Event()
    happened = []
    write_batch, remove = partial_uploads._write_batch, partial_uploads._remove

    def slow_write(fd, pieces, offset):
        assert release.wait(10)
        write_batch(fd, pieces, offset)
        happened.append("written")

    def recorded_remove(path, fd):
        happened.append("removed")
        remove(path, fd)

    monkeypatch.setattr(partial_uploads, "_write_batch", slow_write)
    monkeypatch.setattr(partial_uploads, "_remove", recorded_remove)
    monkeypatch.setattr(partial_uploads, "BATCH_BYTES", 4)
    upload = await UploadFolder(str(upload_dir)).receive()
    await upload.write(b"first")  # its write starts and blocks
    second = asyncio.ensure_future(upload.write(b"second"))  # waits for the first
    discarded = asyncio.ensure_future(upload.discard())
    asyncio.get_running_loop().call_soon(release.set)  # after both took their first step

    await asyncio.gather(second, discarded)
    assert happened[0] == "written"
    assert happened[-1] == "removed" and happened.count("removed") == 1
    assert names(upload_dir) == []


@pytest.mark.gen_test
async def test_shutdown_discards_only_the_unfinished_uploads(upload_dir):
    """Guards against half files left by a shutdown that cut uploads off (this process's lock
    on them keeps the start-up sweep of another process away)."""
    folder = UploadFolder(str(upload_dir))
    cut = await folder.receive()
    await cut.write(b"half")
    stored = await folder.receive()
    await stored.write(b"whole")
    placed = await stored.place("mp4")
    await stored.keep()

    assert await folder.discard_unfinished() == 1
    assert await folder.discard_unfinished() == 0
    assert names(upload_dir) == [placed.name]


@pytest.mark.gen_test
async def test_sweep_removes_only_temp_files_no_live_process_holds(upload_dir, tmp_path):
    """Abandoned temp files go; a live writer's file, other files, folders, nested files
    and whatever a symlink points to stay."""
    (upload_dir / ".partial-abandoned").write_bytes(b"left by a killed process")
    live = await UploadFolder(str(upload_dir)).receive()
    (upload_dir / "video.mp4").write_bytes(b"stored")
    (upload_dir / ".partial-folder").mkdir()
    (upload_dir / "reels").mkdir()
    (upload_dir / "reels" / ".partial-nested").write_bytes(b"not directly in UPLOAD_DIR")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    (upload_dir / ".partial-link").symlink_to(outside)

    removed = await UploadFolder(str(upload_dir)).sweep(nothing_committed)

    assert removed == 1
    assert names(upload_dir) == sorted(
        [live.path.name, ".partial-folder", ".partial-link", "reels", "video.mp4"]
    )
    assert (upload_dir / "reels" / ".partial-nested").exists()
    assert outside.read_bytes() == b"outside"
    await live.discard()


async def nothing_committed(names: list[str]) -> set[str]:
    return set()


@pytest.mark.gen_test
async def test_sweep_keeps_a_placed_video_only_if_its_match_was_committed(upload_dir):
    """Guards a kill between placing a video and forgetting its temp name: the video stays
    with its committed match, or goes when no match names it; the temp names go."""
    committed_id, orphan_id = uuid.uuid4(), uuid.uuid4()
    for upload_id in (committed_id, orphan_id):
        (upload_dir / f".partial-{upload_id.hex}").write_bytes(b"video")
        os.link(upload_dir / f".partial-{upload_id.hex}", upload_dir / f"{upload_id}.mp4")
    asked = []

    async def committed(names: list[str]) -> set[str]:
        asked.extend(names)
        return {f"{committed_id}.mp4"}

    removed = await UploadFolder(str(upload_dir)).sweep(committed)

    assert removed == 2
    assert sorted(asked) == sorted([f"{committed_id}.mp4", f"{orphan_id}.mp4"])
    assert names(upload_dir) == [f"{committed_id}.mp4"]


@pytest.mark.gen_test
async def test_serve_sweeps_abandoned_uploads_at_start(database_url, upload_dir):
    """`python orchestrator.py` removes what a killed process left, before it listens, and
    leaves the file another live process (here: this test, holding the lock) is writing."""
    abandoned = upload_dir / ".partial-abandoned"
    abandoned.write_bytes(b"x" * 1000)
    held = upload_dir / ".partial-held"
    with open(held, "wb") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "UPLOAD_DIR": str(upload_dir),
            "HOST": "127.0.0.1",
            "PORT": "0",
            "INFERENCE_URL": "http://127.0.0.1:9",
            "LOG_LEVEL": "INFO",
        }
        server = await asyncio.create_subprocess_exec(
            sys.executable, "orchestrator.py", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            log = await asyncio.wait_for(_read_until(server.stderr, b"listening on"), 30)
        finally:
            server.terminate()
            await server.wait()

    assert b"removed 1 partial uploads" in log
    assert not abandoned.exists()
    assert held.exists()


async def _read_until(stream: asyncio.StreamReader, marker: bytes) -> bytes:
    lines = b""
    while marker not in lines:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"server exited before logging {marker!r}:\n{lines.decode()}")
        lines += line
    return lines
