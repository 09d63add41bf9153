"""What an uploaded image is, read from its own bytes: format, width, height, alpha channel.

A caller's filename and Content-Type are claims; the edit rules are checked against
what the bytes say. Only the headers are read (PNG's IHDR and the chunks before the
image data, JPEG's frame header, WEBP's VP8/VP8L/VP8X header): no decoding, no Pillow.

The bytes are hostile until read, so what a header walk may cost is bounded whatever the
file holds: at most :data:`MAX_STEPS` chunks or markers, and a run of JPEG fill bytes
skipped in C and at most :data:`MAX_FILL` long. A file whose header lies beyond that is
not one this reads (None), whatever its size: a 40 MB upload costs microseconds here.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, Literal

ImageFormat = Literal["png", "jpeg", "webp"]

CONTENT_TYPES: dict[ImageFormat, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS: dict[ImageFormat, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): they carry the size.
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers without a length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
MAX_STEPS = 1024  # PNG chunks before the image data, JPEG markers before the frame header (real files: a few dozen)
MAX_FILL = 4096  # JPEG fill bytes (0xFF) before one marker (real files: none, or a few)
_FILL = re.compile(rb"\xff+")


@dataclass(frozen=True)
class ImageFacts:
    """An image as its header describes it."""

    format: ImageFormat
    width: int
    height: int
    has_alpha: bool

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    def as_record(self) -> dict[str, Any]:
        """The facts as an archive record holds them, beside the image's name and hash."""
        return {"format": self.format, "width": self.width, "height": self.height}


def sniff(data: bytes) -> ImageFacts | None:
    """The image's facts, or None when the bytes are not a PNG, JPEG or WEBP whose header can be read."""
    try:
        if data.startswith(_PNG_SIGNATURE):
            return _png(data)
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
    except (struct.error, IndexError):
        return None  # a header cut short
    return None


def _png(data: bytes) -> ImageFacts | None:
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        return None
    width, height, _depth, color_type = struct.unpack_from(">IIBB", data, 16)
    # Color types 4 (grey + alpha) and 6 (RGBA) carry alpha; others may add it with a tRNS chunk,
    # which must come before the first IDAT.
    has_alpha = color_type in (4, 6) or _png_has_trns(data)
    if has_alpha is None or not (width and height):
        return None
    return ImageFacts("png", width, height, has_alpha)


def _png_has_trns(data: bytes) -> bool | None:
    """Whether a tRNS chunk comes before the image data; None when the chunks before it are too many to walk."""
    offset = 8
    for _ in range(MAX_STEPS):
        if offset + 8 > len(data):
            return False
        length, kind = struct.unpack_from(">I4s", data, offset)
        if kind == b"tRNS":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        offset += 12 + length  # length, type, data, CRC
    return None


def _jpeg(data: bytes) -> ImageFacts | None:
    offset = 2
    for _ in range(MAX_STEPS):
        if offset + 4 > len(data):
            return None
        fill = _FILL.match(data, offset, offset + MAX_FILL + 2)  # the marker's own 0xFF and any fill before it
        if fill is None:
            return None
        offset = fill.end() - 1
        if fill.end() - fill.start() > MAX_FILL or offset + 4 > len(data):
            return None
        marker = data[offset + 1]
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        (length,) = struct.unpack_from(">H", data, offset + 2)
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return ImageFacts("jpeg", width, height, False) if width and height else None
        offset += 2 + length
    return None


def _webp(data: bytes) -> ImageFacts | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        flags = data[20]
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageFacts("webp", width, height, bool(flags & 0x10))
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, 21)
        return ImageFacts("webp", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool(bits >> 28 & 1))
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageFacts("webp", width & 0x3FFF, height & 0x3FFF, False)
    return None
