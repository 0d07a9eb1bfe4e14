"""Recognising a video container from a file's first bytes."""

from __future__ import annotations

import pytest

from services import containers
from tests.conftest import SAMPLE_MP4


def ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x02\x00" + brand + b"isom"


def ebml(doc_type: bytes) -> bytes:
    return bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f3810842") + b"\x82\x84" + doc_type


def transport_stream(packet: int, offset: int = 0) -> bytes:
    return (bytes(offset) + b"\x47" + bytes(packet - offset - 1)) * 8


@pytest.mark.parametrize(
    ("head", "extension"),
    [
        (SAMPLE_MP4.read_bytes(), "mp4"),
        (ftyp(b"mp42"), "mp4"),
        (ftyp(b"qt  "), "mov"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "mov"),
        (ftyp(b"3gp5"), "3gp"),
        (ftyp(b"3g2a"), "3g2"),
        (ebml(b"webm"), "webm"),
        (ebml(b"matroska"), "mkv"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "avi"),
        (b"FLV\x01\x05\x00\x00\x00\x09", "flv"),
        (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c") + bytes(16), "wmv"),
        (transport_stream(188), "ts"),
        (transport_stream(192, offset=4), "m2ts"),
        (bytes.fromhex("000001ba44000400040101") + bytes(100), "mpg"),
        (b"OggS\x00\x02" + bytes(22) + b"\x80theora", "ogv"),
        (b".RMF\x00\x00\x00\x12", "rm"),
        (bytes.fromhex("060e2b34020501010d01020101020400"), "mxf"),
    ],
)
def test_video_containers_are_recognised(head, extension):
    assert containers.sniff(head).extension == extension


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"just some text, named .mp4\n" * 200,
        b"%PDF-1.7\n",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        ftyp(b"heic"),
        ftyp(b"avif"),
        ftyp(b"M4A "),
        b"RIFF\x00\x10\x00\x00WAVEfmt ",
        b"OggS\x00\x02" + bytes(22) + b"\x01vorbis",
        ebml(b"other"),
        b"\x47" + bytes(100),
    ],
    ids=[
        "empty", "text", "pdf", "png", "jpeg", "heic", "avif", "m4a",
        "wav", "ogg-vorbis", "other-ebml", "one-ts-packet",
    ],
)  # fmt: skip
def test_other_files_are_not_videos(head):
    """Images and audio in video-like wrappers, and lone sync bytes, are refused too."""
    assert containers.sniff(head) is None
