"""Video containers: telling one from its first bytes, and the file names and types they get.

An upload is accepted only when its opening bytes carry the signature of a video container;
the extension of the stored file comes from that signature, never from the client's name.
"""

from __future__ import annotations

from typing import NamedTuple

# Enough for every check below (MPEG-TS needs several 188-byte packets, Matroska its DocType).
SNIFF_BYTES = 4096


class Container(NamedTuple):
    extension: str
    mime_type: str


MP4 = Container("mp4", "video/mp4")
MOV = Container("mov", "video/quicktime")
THREE_GP = Container("3gp", "video/3gpp")
THREE_G2 = Container("3g2", "video/3gpp2")
MKV = Container("mkv", "video/x-matroska")
WEBM = Container("webm", "video/webm")
AVI = Container("avi", "video/x-msvideo")
FLV = Container("flv", "video/x-flv")
WMV = Container("wmv", "video/x-ms-wmv")
MPEG_TS = Container("ts", "video/mp2t")
M2TS = Container("m2ts", "video/mp2t")
MPEG_PS = Container("mpg", "video/mpeg")
OGV = Container("ogv", "video/ogg")
REAL_MEDIA = Container("rm", "application/vnd.rn-realmedia")
MXF = Container("mxf", "application/mxf")

ALL = (
    MP4, MOV, THREE_GP, THREE_G2, MKV, WEBM, AVI, FLV, WMV,
    MPEG_TS, M2TS, MPEG_PS, OGV, REAL_MEDIA, MXF,
)  # fmt: skip

# Content-Type by extension. The system's MIME table is not trusted for these: on many hosts
# it maps `.ts` to a Qt translation file.
MIME_TYPES = {container.extension: container.mime_type for container in ALL}

# ISO base media brands (ftyp) that are still images or audio, not video.
NOT_VIDEO_BRANDS = frozenset(
    {
        b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1",
        b"avif", b"avis", b"jp2 ", b"crx ", b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ",
    }
)  # fmt: skip

# Top-level QuickTime atoms a .mov may start with when it has no `ftyp`.
QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})

ASF_HEADER_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
EBML_MAGIC = bytes.fromhex("1a45dfa3")
MXF_PARTITION_KEY = bytes.fromhex("060e2b34")
MPEG_PS_PACK_START = bytes.fromhex("000001ba")
TS_SYNC_BYTE = 0x47


def sniff(head: bytes) -> Container | None:
    """The video container `head` (the first SNIFF_BYTES of a file, or all of a shorter
    file) starts with, or None if it is not one."""
    if head[4:8] == b"ftyp":
        return _iso_base_media(head[8:12])
    if head[4:8] in QUICKTIME_ATOMS:
        return MOV
    if head.startswith(EBML_MAGIC):
        return _matroska(head[:64])
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return AVI
    if head.startswith(b"FLV\x01"):
        return FLV
    if head.startswith(ASF_HEADER_GUID):
        return WMV
    if head.startswith(MPEG_PS_PACK_START):
        return MPEG_PS
    if head.startswith(b"OggS") and b"\x80theora" in head:
        return OGV
    if head.startswith(b".RMF"):
        return REAL_MEDIA
    if head.startswith(MXF_PARTITION_KEY):
        return MXF
    if _packets_in_sync(head, offset=0, stride=188):
        return MPEG_TS
    if _packets_in_sync(head, offset=4, stride=192):
        return M2TS
    return None


def _iso_base_media(brand: bytes) -> Container | None:
    if brand in NOT_VIDEO_BRANDS:
        return None
    if brand == b"qt  ":
        return MOV
    if brand.startswith(b"3g2"):
        return THREE_G2
    if brand.startswith(b"3g"):
        return THREE_GP
    return MP4


def _matroska(header: bytes) -> Container | None:
    """Matroska and WebM share the EBML header and differ in its DocType."""
    if b"webm" in header:
        return WEBM
    if b"matroska" in header:
        return MKV
    return None


def _packets_in_sync(head: bytes, offset: int, stride: int, wanted: int = 8) -> bool:
    """Whether `head` holds at least two transport-stream packets, each starting with the
    sync byte (`stride` 188 for plain MPEG-TS, 192 for Blu-ray M2TS with its timecode)."""
    packets = min((len(head) - offset) // stride, wanted)
    return packets >= 2 and all(
        head[offset + index * stride] == TS_SYNC_BYTE for index in range(packets)
    )
