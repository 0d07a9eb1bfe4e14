"""Video intake: POST /matches/upload and its aliases, over real HTTP, against Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest

from handlers import base
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


@pytest.fixture(autouse=True)
def lingering(io_loop, monkeypatch) -> Iterator[set]:
    """The connections this test's refusals linger on; each must be let go by the end."""
    connections: set = set()
    monkeypatch.setattr(base, "_lingering", connections)
    yield connections
    io_loop.run_sync(lambda: wait_until(lambda: not connections))


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
    return parse_answer(await in_thread(raw_exchange, port, upload_head(headers), body))


def send_then_read(port: int, head: bytes, body: bytes) -> bytes:
    """Sends the whole request, then reads the answer until the server closes, as browsers
    and most HTTP libraries do (they read only once they have sent everything). A reset
    connection fails, on the send or on the read."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = bytearray()
        while data := sock.recv(65536):
            answer += data
    return bytes(answer)


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], dict]:
    header_block, _, document = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
    answer_headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), answer_headers, json.loads(document)


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


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
        (
            b"x",
            {"Content-Type": "multipart/form-data; boundary=" + "b" * 300},
            "Content-Type: boundary longer than 200",
        ),
    ],
    ids=[
        "missing",
        "empty",
        "twice",
        "long-title",
        "nul-title",
        "truncated",
        "json",
        "garbage",
        "long-boundary",
    ],
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


# A refusal answered while the client still sends its body: the server reads and drops the
# rest (lingering close), so that the client, reading only once it has sent everything,
# gets the answer rather than a reset connection.

# Far more than the kernel's socket buffers take in on loopback, well within LINGER_MAX_BYTES.
LARGE_BODY_BYTES = 24 * 2**20


def file_start(content: bytes) -> bytes:
    """The start of a form whose `file` field begins with `content` (the rest follows)."""
    return part("file", b"", "notes.mp4").removesuffix(b"\r\n") + content


@pytest.mark.gen_test
async def test_a_large_non_video_sent_whole_gets_its_415(http_client, base_url, port, upload_dir):
    """A 24 MiB text file sent without `Expect: 100-continue`: 415, read after the send."""
    body = file_start(b"just some notes, not a video\n" * (LARGE_BODY_BYTES // 29))
    head = upload_head({"Content-Length": str(len(body))})

    status, headers, error = parse_answer(await in_thread(send_then_read, port, head, body))

    assert status == 415
    assert error["message"].startswith("file: not a video")
    assert headers["Connection"] == "close"
    assert files_in(upload_dir) == []
    assert await list_matches(http_client, base_url) == []


@pytest.mark.config(MAX_UPLOAD_BYTES="4KiB")
@pytest.mark.gen_test
async def test_an_oversize_content_length_sent_whole_gets_its_413(
    http_client, base_url, port, upload_dir
):
    """A Content-Length over the limit, the body sent anyway: 413, read after the send."""
    body = file_start(bytes(LARGE_BODY_BYTES))
    head = upload_head({"Content-Length": str(len(body))})

    status, _, error = parse_answer(await in_thread(send_then_read, port, head, body))

    assert status == 413
    assert error["message"] == "file: larger than the upload limit of 4096 bytes"
    assert files_in(upload_dir) == []
    assert await list_matches(http_client, base_url) == []


@pytest.mark.config(MAX_UPLOAD_BYTES="4KiB")
@pytest.mark.gen_test
async def test_a_chunked_body_growing_past_the_limit_sent_whole_gets_its_413(port, upload_dir):
    """The same for a chunked body refused midway."""
    body = file_start(SAMPLE_MP4.read_bytes() + bytes(LARGE_BODY_BYTES))
    step = 1 << 20
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
        for i in range(0, len(body), step)
    )
    chunked += b"0\r\n\r\n"
    head = upload_head({"Transfer-Encoding": "chunked"})

    status, _, error = parse_answer(await in_thread(send_then_read, port, head, chunked))

    assert status == 413
    assert error["message"] == "file: larger than the upload limit of 4096 bytes"
    assert files_in(upload_dir) == []


def send_until_cut_off(port: int, head: bytes, limit: int) -> tuple[int, Exception | None]:
    """Sends the head, then zeros without end (up to `limit` bytes), never reading.

    Returns how many bytes of body were sent, and the error that stopped the sending.
    """
    zeros = bytes(1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            while sent < limit:
                sent += sock.send(zeros)
        except (BrokenPipeError, ConnectionResetError) as error:
            return sent, error
    return sent, None


@pytest.mark.gen_test
async def test_a_client_sending_past_the_linger_cap_is_cut_off(
    port, upload_dir, lingering, monkeypatch
):
    """The server stops reading a refused body after LINGER_MAX_BYTES and closes."""
    monkeypatch.setattr(base, "LINGER_MAX_BYTES", 4 * 2**20)
    monkeypatch.setattr(base, "LINGER_MAX_SECONDS", 60.0)  # the byte cap ends it
    head = upload_head({"Content-Length": str(2**40)}) + file_start(b"%PDF-1.7\n" * 1000)

    sent, error = await in_thread(send_until_cut_off, port, head, 2**30)

    assert isinstance(error, (BrokenPipeError, ConnectionResetError))
    assert sent < 2**30
    assert files_in(upload_dir) == []
    await wait_until(lambda: not lingering)


def silent_after_refusal(port: int, head: bytes) -> tuple[bytes, bytes]:
    """Sends a request that is refused before its end, then sends nothing more but keeps
    the connection open. Returns the answer and what follows it until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = bytearray()
        while b"}" not in answer:
            answer += sock.recv(65536)
        # The server half-closes after its answer (EOF here), then closes once it gives up
        # waiting for the rest of the body: a reset, as the body was never finished.
        rest = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                rest += data
        return bytes(answer), bytes(rest)


@pytest.mark.gen_test
async def test_a_refused_client_gone_silent_is_let_go_after_the_linger_time(
    port, upload_dir, lingering, monkeypatch
):
    """A client that neither sends nor closes holds the connection LINGER_MAX_SECONDS."""
    monkeypatch.setattr(base, "LINGER_MAX_SECONDS", 0.2)
    head = upload_head({"Content-Length": str(2**30)}) + file_start(b"%PDF-1.7\n" * 1000)

    answer, rest = await in_thread(silent_after_refusal, port, head)

    assert parse_answer(answer)[0] == 415
    assert rest == b""
    await wait_until(lambda: not lingering)
    assert files_in(upload_dir) == []


def refused_before_body(port: int, head: bytes) -> tuple[bytes, socket.socket]:
    """Sends only the head and reads the answer until the server closes, keeping its own
    end open (so that the server cannot be waiting for this client to close)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    answer = bytearray()
    while data := sock.recv(65536):
        answer += data
    return bytes(answer), sock


@pytest.mark.config(MAX_UPLOAD_BYTES="4KiB")
@pytest.mark.gen_test
async def test_a_client_expecting_100_continue_is_answered_and_closed_at_once(
    port, upload_dir, lingering
):
    """Refused before it was told to continue, the client sends no body: no lingering."""
    head = upload_head({"Content-Length": str(2**30), "Expect": "100-continue"})

    answer, sock = await in_thread(refused_before_body, port, head)
    try:
        assert parse_answer(answer)[0] == 413
        assert not lingering
    finally:
        sock.close()
    assert files_in(upload_dir) == []


@pytest.mark.config(BODY_IDLE_SECONDS="0.3")
@pytest.mark.gen_test
async def test_an_upload_that_stalls_is_cut_off_and_leaves_nothing(
    http_client, base_url, port, upload_dir
):
    """Guards against a client that stops sending mid-upload holding its connection and
    temp file for ever (enough of them exhaust the process's descriptors)."""
    body = video_form()
    head = upload_head({"Content-Length": str(len(body))})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    await wait_until(lambda: files_in(upload_dir))  # its temp file is there

    assert await reader.read() == b""  # then the server closes, without an answer
    writer.close()
    await wait_until(lambda: not files_in(upload_dir))
    assert await list_matches(http_client, base_url) == []
