"""Image type detection by magic number (SPEC 2.4): the Content-Type header is not trusted."""

from typing import Optional

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


def image_type(data: bytes) -> Optional[str]:
    """The MIME type of an accepted image format, or None."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:2] == b"BM" and len(head) >= 26:
        return "image/bmp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "image/avif" if head[8:12] in (b"avif", b"avis") else "image/heic"
    return None


def describe(data: bytes) -> str:
    """What non-image content looks like, for the failure reason: 'not an image (<this>)'."""
    head = bytes(data[:512]).lstrip(b"\xef\xbb\xbf").lstrip()
    lowered = head.lower()
    if not data:
        return "empty body"
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
