"""The readable text of a DiagnosticReport: `conclusion`, and `presentedForm` attachments.

presentedForm carries the report as base64 `data`: text/plain is decoded (charset from the
content type, UTF-8 by default); text/html is reduced to its text with the standard library's HTML
parser (no markup reaches the NLP); RTF, PDF and other formats are not read, and the caller is told
so (a report we could not read should leave a trace, not silently count as "no findings").
Attachments by `url` are not fetched: the service reads only what the EHR sent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

from cds_service.model import Resource

MAX_ATTACHMENT_BYTES = 200_000  # a radiology report is a few kB; beyond this it is not a report text
_BLOCK_TAGS = frozenset(
    {"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
)


class _TextOnly(HTMLParser):
    """Collects text content; block elements become line breaks (sentence and section borders)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _media_type(content_type: Any) -> tuple[str, str]:
    """("text/html", "utf-8") from "text/html; charset=UTF-8"."""
    if not isinstance(content_type, str):
        return "", "utf-8"
    parts = [p.strip() for p in content_type.split(";")]
    charset = "utf-8"
    for p in parts[1:]:
        key, _, value = p.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    return parts[0].lower(), charset


def _decode(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:  # unknown charset name
        return raw.decode("utf-8", errors="replace")


def attachment_text(attachment: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(text, None) or (None, why it was not read)."""
    media, charset = _media_type(attachment.get("contentType"))
    data = attachment.get("data")
    if not isinstance(data, str) or not data:
        return None, "presentedForm without inline data (url not fetched)" if attachment.get("url") else None
    if media in ("text/rtf", "application/rtf"):
        return None, "presentedForm in RTF is not read"
    if media and media not in ("text/plain", "text/html", "application/xhtml+xml"):
        return None, f"presentedForm of type {media} is not read"
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None, "presentedForm data is not valid base64"
    if len(raw) > MAX_ATTACHMENT_BYTES:
        return None, "presentedForm is too large to be a report text"
    if not media:
        # no content type: read it only if it is plainly text (valid UTF-8, no control bytes)
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "presentedForm without contentType is not text"
        if "\x00" in decoded or decoded.lstrip().startswith("{\\rtf"):
            return None, "presentedForm without contentType is not plain text"
        media = "text/html" if decoded.lstrip().startswith("<") else "text/plain"
        text = decoded
    else:
        text = _decode(raw, charset)
    if media != "text/plain":
        text = html_to_text(text)
    return (text, None) if text.strip() else (None, None)


def report_texts(report: Resource) -> tuple[list[str], list[str]]:
    """The texts to read (conclusion first, then presentedForm) and the reasons any were skipped."""
    texts: list[str] = []
    skipped: list[str] = []
    conclusion = report.get("conclusion")
    if isinstance(conclusion, str) and conclusion.strip():
        texts.append(conclusion)
    for attachment in report.get("presentedForm") or ():
        if not isinstance(attachment, Mapping):
            continue
        text, why = attachment_text(attachment)
        if text is not None and text not in texts:
            texts.append(text)
        elif why:
            skipped.append(why)
    return texts, skipped
