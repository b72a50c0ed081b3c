"""Image type detection by magic number (SPEC 2.4): the Content-Type header is not trusted.

A magic number alone is not enough: each format must also show a plausible header (a marker
after JPEG's SOI, PNG's IHDR chunk, a known BMP header size, a TIFF first directory inside the
body, an ISO-BMFF ``ftyp`` box naming an image brand) and a minimum size, so a truncated body or
a text that happens to start with "BM" is not taken for an image.
"""

import struct
from typing import Optional

# What Imgur takes as it is; the other image types found here are converted first (imgurd/convert.py).
IMGUR_TAKES = frozenset(("image/jpeg", "image/png", "image/gif", "image/tiff", "image/bmp"))

# Smallest plausible sizes in bytes: below them no decoder could make an image of the body.
_MIN_JPEG = 100  # SOI, quantisation and Huffman tables, frame and scan headers, EOI (valid 1x1 files: ~125)
_MIN_PNG = 57  # signature, IHDR, a non-empty IDAT, IEND (valid 1x1 files: 67)
_MIN_GIF = 26  # header, screen descriptor, image descriptor, a data block, trailer
_MIN_WEBP = 26  # RIFF header, WEBP, one chunk header and a few bytes of it
_BMP_HEADER_SIZES = frozenset((12, 16, 40, 52, 56, 64, 108, 124))  # BITMAPCOREHEADER ... BITMAPV5HEADER, OS/2 2.x

_AVIF_BRANDS = frozenset((b"avif", b"avis"))
_HEIC_BRANDS = frozenset((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"))
_HEIF_BRANDS = frozenset((b"mif1", b"msf1", b"miaf"))  # HEIF structure brands that name no codec
_MAX_FTYP = 4096  # an ftyp box holds a few dozen brands at most


def image_type(data: bytes) -> Optional[str]:
    """The MIME type of a recognised image format, or None."""
    head = bytes(data[:32])
    size = len(data)
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg" if size >= _MIN_JPEG and head[3] >= 0xC0 else None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png" if size >= _MIN_PNG and head[8:16] == b"\x00\x00\x00\x0dIHDR" else None
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif" if size >= _MIN_GIF else None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp" if size >= _MIN_WEBP and head[12:16] in (b"VP8 ", b"VP8L", b"VP8X") else None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff" if _plausible_tiff(data) else None
    if head[:2] == b"BM":
        return "image/bmp" if _plausible_bmp(data) else None
    if head[4:8] == b"ftyp":
        return _heif_type(data)
    return None


def _plausible_tiff(data: bytes) -> bool:
    """A TIFF or BigTIFF header whose first directory (IFD) starts inside the body."""
    order = "<" if data[:2] == b"II" else ">"
    if data[2:4] in (b"*\x00", b"\x00*"):  # classic TIFF: 32-bit offset, 16-bit entry count
        if len(data) < 8:
            return False
        (offset,) = struct.unpack(order + "I", bytes(data[4:8]))
        return offset >= 8 and offset + 2 <= len(data)
    if len(data) < 16:  # BigTIFF: offset size 8, reserved 0, 64-bit offset, 64-bit entry count
        return False
    bytesize, reserved, offset = struct.unpack(order + "HHQ", bytes(data[4:16]))
    return bytesize == 8 and reserved == 0 and offset >= 16 and offset + 8 <= len(data)


def _plausible_bmp(data: bytes) -> bool:
    """A BMP file header followed by a DIB header of a known size (text starting "BM" has none)."""
    if len(data) < 18:
        return False
    (header_size,) = struct.unpack("<I", bytes(data[14:18]))
    return header_size in _BMP_HEADER_SIZES and len(data) > 14 + header_size


def _heif_type(data: bytes) -> Optional[str]:
    """AVIF or HEIC/HEIF from the ISO-BMFF ``ftyp`` box: its major brand, else its compatible brands
    (an AVIF may say mif1 or miaf first and avif only among the compatible brands)."""
    (box_size,) = struct.unpack(">I", bytes(data[:4]))
    if not 16 <= box_size <= _MAX_FTYP or box_size % 4 or len(data) < box_size + 8:
        return None
    major = bytes(data[8:12])
    compatible = [bytes(data[i:i + 4]) for i in range(16, box_size, 4)]
    for brands in ([major], compatible):
        if any(brand in _AVIF_BRANDS for brand in brands):
            return "image/avif"
        if any(brand in _HEIC_BRANDS for brand in brands):
            return "image/heic"
    if major in _HEIF_BRANDS or any(brand in _HEIF_BRANDS for brand in compatible):
        return "image/heif"
    return None


_DAMAGED = (
    (b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"), (b"II+\x00", "image/tiff"),
    (b"MM\x00+", "image/tiff"),
)


def describe(data: bytes) -> str:
    """What non-image content looks like, for the failure reason: 'not an image (<this>)'."""
    head = bytes(data[:512]).lstrip(b"\xef\xbb\xbf").lstrip()
    lowered = head.lower()
    if not data:
        return "empty body"
    for magic, mime in _DAMAGED:
        if data[:len(magic)] == magic:
            return "content looks like a truncated or damaged %s, %d bytes" % (mime, len(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "content looks like a truncated or damaged image/webp, %d bytes" % len(data)
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in lowered:
        return "content looks like text/html"
    if lowered.startswith(b"<?xml") or lowered.startswith(b"<svg"):
        return "content looks like image/svg+xml" if b"<svg" in lowered else "content looks like application/xml"
    if lowered[:1] in (b"{", b"["):
        return "content looks like application/json"
    if head.startswith(b"%PDF"):
        return "content looks like application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return "content looks like application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "content looks like application/gzip"
    if head[4:8] == b"ftyp":
        return "content looks like video/mp4"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary content"
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return "unrecognised binary content"
    return "content looks like text/plain"
