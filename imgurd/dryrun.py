"""Dry run (``dry_run``): the stand-in for the Imgur upload, so everything else can be tried without an
Imgur account, and a list of URLs can be vetted before it spends any of Imgur's upload budget."""

import hashlib

PREFIX = "dry-run:"
DIGITS = 12  # hex digits of the SHA-256 in the link: enough to tell images apart, short to read
# file name extension by the MIME type of the bytes that would be uploaded
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/tiff": "tiff", "image/bmp": "bmp"}


def link(data: "bytes | bytearray", mime: str) -> str:
    """``dry-run:<first 12 hex digits of the SHA-256 of data>.<ext>``: what stands for an Imgur link."""
    extension = EXTENSIONS.get(mime) or mime.rpartition("/")[2]
    return "%s%s.%s" % (PREFIX, hashlib.sha256(data).hexdigest()[:DIGITS], extension)
