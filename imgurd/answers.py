"""Imgur's error answers in every shape real answers use (IMGUR-API: error shapes), as one line of text.

Imgur's documentation shows one envelope (``data.error``, a string); real answers also carry an
object there, a JSON:API-like ``errors`` list, a top-level ``detail``, or an HTML page from its
cache layer. The user is told Imgur's own words whichever it was.
"""

import json
from typing import Any, Optional

MAX_MESSAGE = 300


def _text(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("message") or value.get("detail")
    if isinstance(value, str) and value.strip():
        return " ".join(value.split())[:MAX_MESSAGE]
    return None


def error_message(body: bytes) -> Optional[str]:
    """Imgur's own error text from any of its JSON error shapes, or None when the body holds none."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    data = document.get("data")
    if isinstance(data, dict) and _text(data.get("error")):
        return _text(data.get("error"))
    errors = document.get("errors")
    if isinstance(errors, list):
        for entry in errors:
            if isinstance(entry, dict):
                found = _text(entry.get("detail")) or _text(entry.get("title")) or _text(entry.get("status"))
                if found:
                    return found
    return _text(document.get("detail")) or _text(document.get("error")) or _text(document.get("message"))


def looks_like_html(body: bytes, content_type: Optional[str]) -> bool:
    """An answer from Imgur's edge or cache layer rather than from its API."""
    if content_type and "html" in content_type.lower():
        return True
    return body.lstrip()[:1] == b"<"
