"""Video intake: POST /matches/upload and its aliases, over real HTTP, against Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest

from tests.conftest import SAMPLE_MP4, wait_until

BOUNDARY = "matcha-test-boundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
WEBM_HEAD = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d")


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def video_form(video: bytes | None = None, filename: str = "match.mp4", **fields: str) -> bytes:
    video = SAMPLE_MP4.read_bytes() if video is None else video
    fields_parts = [part(name, value.encode()) for name, value in fields.items()]
    return form(*fields_parts, part("file", video, filename))


async def post(http_client, url: str, body: bytes, headers=MULTIPART):
    response = await http_client.fetch(
        url, method="POST", body=body, headers=headers, raise_error=False
    )
    return response.code, json.loads(response.body)


async def list_matches(http_client, base_url: str) -> list:
    return json.loads((await http_client.fetch(base_url + "/matches")).body)


async def handed_off(http_client, base_url: str, match: dict) -> None:
    """Waits until inference has accepted the match's job (status PROCESSING).

    Also keeps a dispatch from being in flight when the test's services shut down.
    """

    async def processing() -> bool:
        response = await http_client.fetch(f"{base_url}/matches/{match['id']}")
        return json.loads(response.body)["status"] == "PROCESSING"

    await wait_until(processing)


@pytest.fixture
def port(http_server, http_port) -> int:
    """The port of the app's test server, for clients that speak HTTP over a plain socket."""
    return http_port


def files_in(upload_dir: Path) -> list[str]:
    return sorted(path.name for path in upload_dir.iterdir())


def raw_exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Sends a request as a plain socket client would, then reads until the server closes.

    The send may fail halfway (the server answered early and closed); the answer is read
    anyway. A server that never closes makes the read time out and the test fail.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body)
        answer = bytearray()
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return bytes(answer)


def upload_head(headers: dict[str, str]) -> bytes:
    """The request line and headers of a multipart POST /matches/upload."""
    lines = [f"{name}: {value}" for name, value in {**MULTIPART, **headers}.items()]
    return "\r\n".join(
        ["POST /matches/upload HTTP/1.1", "Host: localhost", *lines, "", ""]
    ).encode()


async def raw_post(port: int, headers: dict[str, str], body: bytes = b""):
    """POST /matches/upload from a plain socket; returns (status, headers, JSON error)."""
    answer = await asyncio.get_running_loop().run_in_executor(
        None, raw_exchange, port, upload_head(headers), body
    )
    header_block, _, document = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
    answer_headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), answer_headers, json.loads(document)


@pytest.mark.gen_test
async def test_upload_stores_the_video_and_hands_it_to_inference(
    http_client, base_url, upload_dir, inference
):
    """The whole intake path: 201 with the Match, the file in place, the job sent."""
    status, match = await post(
        http_client, base_url + "/matches/upload", video_form(title="Cup final")
    )

    assert status == 201
    stored_name = match["uploadUrl"].removeprefix("/uploads/")
    assert match["uploadUrl"] == f"/uploads/{stored_name}"
    assert stored_name.endswith(".mp4") and stored_name != "match.mp4"
    assert match["originalName"] == "match.mp4"
    assert match["title"] == "Cup final"
    assert match["status"] == "UPLOADED"
    assert files_in(upload_dir) == [stored_name]
    assert (upload_dir / stored_name).read_bytes() == SAMPLE_MP4.read_bytes()
    jobs = await inference.wait_for_jobs(1)
    assert jobs[0]["match_id"] == match["id"]
    assert jobs[0]["video_url"] == str((upload_dir / stored_name).resolve())
    await handed_off(http_client, base_url, match)


@pytest.mark.gen_test
async def test_an_uploaded_match_reanalyzed_hands_over_its_stored_video_again(
    http_client, base_url, upload_dir, inference
):
    """Guards reanalysis of an upload, after `complete` named the engine's own `videoUrl`:
    the engine gets the stored file's absolute path again; delete removes that file too."""
    _, match = await post(http_client, base_url + "/matches/upload", video_form())
    stored = upload_dir / match["uploadUrl"].removeprefix("/uploads/")
    await inference.wait_for_jobs(1)
    (upload_dir / "engine-copy.mp4").write_bytes(b"the engine's copy")
    complete = {"events": [], "videoUrl": "/uploads/engine-copy.mp4"}
    url = f"{base_url}/matches/{match['id']}"
    await http_client.fetch(f"{url}/complete", method="POST", body=json.dumps(complete))

    await http_client.fetch(f"{url}/reanalyze", method="POST", body=b"")
    jobs = await inference.wait_for_jobs(2)
    assert jobs[1]["video_url"] == jobs[0]["video_url"] == str(stored.resolve())

    await http_client.fetch(url, method="DELETE")
    assert files_in(upload_dir) == []


@pytest.mark.parametrize("path", ["/matches", "/api/v1/matches/upload", "/api/v1/matches"])
@pytest.mark.gen_test
async def test_upload_aliases(http_client, base_url, upload_dir, path):
    """POST /matches and the /api/v1 prefix are the same upload route."""
    status, match = await post(http_client, base_url + path, video_form())

    assert status == 201
    assert files_in(upload_dir) == [match["uploadUrl"].removeprefix("/uploads/")]
    assert [item["id"] for item in await list_matches(http_client, base_url)] == [match["id"]]
    await handed_off(http_client, base_url, match)


@pytest.mark.gen_test
async def test_stored_name_comes_from_the_server_not_the_client(
    http_client, base_url, upload_dir, tmp_path
):
    """A hostile file name is kept as data only; the extension follows the real container."""
    video = WEBM_HEAD + bytes(8192)
    status, match = await post(
        http_client, base_url + "/matches/upload", video_form(video, "../../escape.mp4")
    )

    assert status == 201
    assert match["originalName"] == "escape.mp4"
    assert match["uploadUrl"].endswith(".webm")
    assert files_in(upload_dir) == [match["uploadUrl"].removeprefix("/uploads/")]
    assert not (tmp_path / "escape.mp4").exists()
    await handed_off(http_client, base_url, match)


@pytest.mark.gen_test
async def test_a_large_upload_arrives_whole(http_client, base_url, upload_dir):
    """Several write batches land in order (a 9 MB body spans more than two batches)."""
    video = SAMPLE_MP4.read_bytes() + bytes(range(256)) * 36_000
    status, match = await post(http_client, base_url + "/matches/upload", video_form(video))

    assert status == 201
    assert (upload_dir / match["uploadUrl"].removeprefix("/uploads/")).read_bytes() == video
    await handed_off(http_client, base_url, match)


@pytest.mark.config(MAX_UPLOAD_BYTES="4KiB")
@pytest.mark.gen_test
async def test_oversize_content_length_is_refused_before_the_body(
    http_client, base_url, port, upload_dir
):
    """Content-Length over the limit: 413 JSON and a closed connection, without a byte of
    body sent, and no file or match left behind."""
    status, headers, error = await raw_post(port, {"Content-Length": str(10 * 2**30)})

    assert status == 413
    assert error["statusCode"] == 413
    assert error["message"] == "file: larger than the upload limit of 4096 bytes"
    assert headers["Connection"] == "close"
    assert files_in(upload_dir) == []
    assert await list_matches(http_client, base_url) == []


@pytest.mark.config(MAX_UPLOAD_BYTES="4KiB")
@pytest.mark.gen_test
async def test_oversize_is_refused_to_a_client_expecting_100_continue(
    http_client, base_url, upload_dir
):
    """A client that asks before sending (Expect: 100-continue) gets the 413 instead."""
    request = HTTPRequest(
        base_url + "/matches/upload",
        method="POST",
        headers=MULTIPART,
        body=bytes(1 << 20),
        expect_100_continue=True,
    )
    response = await http_client.fetch(request, raise_error=False)

    assert response.code == 413
    assert json.loads(response.body)["statusCode"] == 413
    assert files_in(upload_dir) == []


@pytest.mark.config(MAX_UPLOAD_BYTES="4KiB")
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
@pytest.mark.gen_test
async def test_a_body_growing_past_the_limit_is_refused(
    http_client, base_url, port, upload_dir, framing
):
    """No (or a small enough) Content-Length, but a file over the limit: 413 once it passes
    the limit, the temp file removed, the connection closed."""
    body = video_form(SAMPLE_MP4.read_bytes() + bytes(8192))
    if framing == "chunked":
        headers = {"Transfer-Encoding": "chunked"}
        body = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
            for i in range(0, len(body), 1000)
        )
    else:
        headers = {"Content-Length": str(len(body))}

    status, _, error = await raw_post(port, headers, body)

    assert status == 413
    assert error["message"] == "file: larger than the upload limit of 4096 bytes"
    assert files_in(upload_dir) == []
    assert await list_matches(http_client, base_url) == []


@pytest.mark.gen_test
async def test_a_text_file_named_mp4_is_refused(http_client, base_url, upload_dir):
    """The extension proves nothing: the container's magic bytes decide (415)."""
    status, error = await post(
        http_client,
        base_url + "/matches/upload",
        video_form(b"just some notes, not a video\n" * 10, "notes.mp4"),
    )

    assert status == 415
    assert error["statusCode"] == 415
    assert error["message"].startswith("file: not a video")
    assert files_in(upload_dir) == []
    assert await list_matches(http_client, base_url) == []


@pytest.mark.gen_test
async def test_a_non_video_is_refused_before_the_whole_body_is_sent(port, upload_dir):
    """415 comes after the first few KB of a large non-video, not after all of it."""
    start = part("file", b"", "notes.mp4").removesuffix(b"\r\n") + b"%PDF-1.7\n" * 1000
    status, _, error = await raw_post(port, {"Content-Length": str(2**30)}, start)

    assert status == 415
    assert error["message"].startswith("file: not a video")
    assert files_in(upload_dir) == []


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (form(part("title", b"No video")), MULTIPART, "file: missing"),
        (video_form(b""), MULTIPART, "file: empty"),
        (
            form(part("file", SAMPLE_MP4.read_bytes(), "a.mp4"), part("file", b"x", "b.mp4")),
            MULTIPART,
            "file: sent more than once",
        ),
        (video_form(title="x" * 201), MULTIPART, "title: longer than 200 characters"),
        (video_form(title="a\0b"), MULTIPART, "title: must not contain NUL"),
        (video_form().removesuffix(f"--{BOUNDARY}--\r\n".encode()), MULTIPART, "body: the"),
        (b'{"file": "x"}', {"Content-Type": "application/json"}, "Content-Type: expected"),
        (b"garbage", MULTIPART, "body: not a valid multipart form"),
    ],
    ids=["missing", "empty", "twice", "long-title", "nul-title", "truncated", "json", "garbage"],
)
@pytest.mark.gen_test
async def test_bad_forms_are_refused_naming_the_field(
    http_client, base_url, upload_dir, body, headers, message
):
    status, error = await post(http_client, base_url + "/matches/upload", body, headers)

    assert status == 400
    assert error["statusCode"] == 400
    assert error["message"].startswith(message)
    assert files_in(upload_dir) == []
    assert await list_matches(http_client, base_url) == []


@pytest.mark.gen_test
async def test_a_client_leaving_mid_upload_leaves_nothing(
    http_client, base_url, port, upload_dir, inference
):
    """Half a body, then the socket closes: no match, and the temp file is removed."""
    body = video_form(SAMPLE_MP4.read_bytes() + bytes(1 << 20))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upload_head({"Content-Length": str(len(body))}) + body[: len(body) // 2])
    await writer.drain()
    await wait_until(lambda: any(name.startswith(".partial-") for name in files_in(upload_dir)))

    writer.close()
    await writer.wait_closed()

    await wait_until(lambda: files_in(upload_dir) == [])
    assert await list_matches(http_client, base_url) == []
    assert inference.attempts == 0
