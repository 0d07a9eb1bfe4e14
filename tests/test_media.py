"""GET/HEAD /uploads/<name>: Range, types, cross-origin headers, and nothing outside the folder."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SAMPLE_MP4

VIDEO = SAMPLE_MP4.read_bytes()


@pytest.fixture
def stored(upload_dir):
    """A stored video, a folder and a temp file in UPLOAD_DIR, and a secret just outside it."""
    (upload_dir / "clip.mp4").write_bytes(VIDEO)
    (upload_dir / "reels").mkdir()
    (upload_dir / "reels" / "reel.mp4").write_bytes(VIDEO[:100])
    (upload_dir / ".partial-0123abcd").write_bytes(VIDEO)
    (upload_dir.parent / "secret.txt").write_text("not for the web")
    (upload_dir / "escape.mp4").symlink_to(upload_dir.parent / "secret.txt")
    (upload_dir / "alias.mp4").symlink_to(upload_dir / "clip.mp4")
    return upload_dir


async def fetch(http_client, url: str, method: str = "GET", **headers: str):
    return await http_client.fetch(url, method=method, headers=headers, raise_error=False)


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
@pytest.mark.gen_test
async def test_a_stored_video_is_served_whole(http_client, base_url, stored, prefix):
    response = await fetch(http_client, f"{base_url}{prefix}/uploads/clip.mp4")

    assert response.code == 200
    assert response.body == VIDEO
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


@pytest.mark.parametrize(
    ("range_header", "content_range", "expected"),
    [
        ("bytes=0-9", f"bytes 0-9/{len(VIDEO)}", VIDEO[:10]),
        ("bytes=-100", f"bytes {len(VIDEO) - 100}-{len(VIDEO) - 1}/{len(VIDEO)}", VIDEO[-100:]),
        ("bytes=1000-", f"bytes 1000-{len(VIDEO) - 1}/{len(VIDEO)}", VIDEO[1000:]),
    ],
    ids=["first-ten", "suffix", "open-ended"],
)
@pytest.mark.gen_test
async def test_ranges_answer_206(
    http_client, base_url, stored, range_header, content_range, expected
):
    """Video players seek with Range requests."""
    response = await fetch(http_client, base_url + "/uploads/clip.mp4", Range=range_header)

    assert response.code == 206
    assert response.headers["Content-Range"] == content_range
    assert response.body == expected


@pytest.mark.gen_test
async def test_an_unsatisfiable_range_answers_416_in_json(http_client, base_url, stored):
    response = await fetch(http_client, base_url + "/uploads/clip.mp4", Range="bytes=5000-")

    assert response.code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(VIDEO)}"
    error = json.loads(response.body)
    assert error["statusCode"] == 416
    assert error["message"] == f"Range: bytes=5000- is outside the file ({len(VIDEO)} bytes)"


@pytest.mark.gen_test
async def test_head_gives_the_size_without_the_body(http_client, base_url, stored):
    response = await fetch(http_client, base_url + "/uploads/clip.mp4", method="HEAD")

    assert response.code == 200
    assert response.headers["Content-Length"] == str(len(VIDEO))
    assert response.body == b""


@pytest.mark.parametrize(
    ("extension", "content_type"),
    [
        ("mp4", "video/mp4"),
        ("webm", "video/webm"),
        ("mkv", "video/x-matroska"),
        ("mov", "video/quicktime"),
        ("ts", "video/mp2t"),
    ],
)
@pytest.mark.gen_test
async def test_video_content_types(http_client, base_url, upload_dir, extension, content_type):
    """Set by the service, not the host's MIME table (which may call .ts a Qt file)."""
    (upload_dir / f"video.{extension}").write_bytes(VIDEO)

    response = await fetch(http_client, f"{base_url}/uploads/video.{extension}")

    assert response.headers["Content-Type"] == content_type


@pytest.mark.gen_test
async def test_files_in_subfolders_and_symlinks_within_the_folder_are_served(
    http_client, base_url, stored
):
    """Inference may write its outputs below UPLOAD_DIR; a link inside it stays allowed."""
    reel = await fetch(http_client, base_url + "/uploads/reels/reel.mp4")
    alias = await fetch(http_client, base_url + "/uploads/alias.mp4")

    assert (reel.code, reel.body) == (200, VIDEO[:100])
    assert (alias.code, alias.body) == (200, VIDEO)


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "%2e%2e%2fsecret.txt",
        "%2E%2E/secret.txt",
        "reels/..%2f..%2fsecret.txt",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        str(SAMPLE_MP4),
        "reels",
        "reels/",
        "",
        "escape.mp4",
        ".partial-0123abcd",
        "missing.mp4",
        "x" * 300 + ".mp4",
    ],
)
@pytest.mark.gen_test
async def test_anything_but_a_file_in_the_folder_is_a_json_404(http_client, base_url, stored, path):
    """Traversal (plain, encoded, absolute), folders, symlinks out, temp files of uploads in
    progress: all the same JSON 404, never a file's content, never an HTML page."""
    response = await fetch(http_client, f"{base_url}/uploads/{path}")

    assert response.code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.body)["statusCode"] == 404
    assert b"not for the web" not in response.body


@pytest.mark.gen_test
async def test_cors_for_a_player_on_the_frontend_origin(http_client, base_url, stored):
    """The frontend on :3000 may read the video and its Content-Range, and preflight Range."""
    origin = "http://localhost:3000"
    response = await fetch(
        http_client, base_url + "/uploads/clip.mp4", Origin=origin, Range="bytes=0-9"
    )
    preflight = await fetch(
        http_client,
        base_url + "/uploads/clip.mp4",
        method="OPTIONS",
        Origin=origin,
        **{"Access-Control-Request-Headers": "range"},
    )

    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Content-Range" in response.headers["Access-Control-Expose-Headers"]
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "Range" in preflight.headers["Access-Control-Allow-Headers"]
