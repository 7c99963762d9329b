"""Card Markdown as a terminal shows it: entities decoded, emphasis marks dropped, lines wrapped.

CDS Hooks card details are GitHub-flavoured Markdown for the EHR to render; in a terminal the raw
`**`, `&gt;` and long lines get in a reviewer's way. Colour only when writing to a terminal.
"""

from __future__ import annotations

import html
import re
import shutil
import textwrap

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)(?=\S)(.+?)(?<=\S)\1")
_COLOURS = {"CRITICAL": "\033[1;31m", "WARNING": "\033[1;33m", "INFO": "\033[1;36m"}
_RESET = "\033[0m"


def plain(markdown: str) -> str:
    """One Markdown line as plain text: [label](url) -> label <url>, emphasis and entities decoded."""
    text = _LINK.sub(r"\1 <\2>", markdown)
    text = _EMPHASIS.sub(r"\2", text)
    return html.unescape(text)


def detail_lines(markdown: str, indent: str = "    ", width: int | None = None) -> list[str]:
    """The card detail wrapped to the terminal; bullets hang, blank lines collapse to one."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    out: list[str] = []
    for raw in markdown.splitlines():
        line = plain(raw.rstrip())
        if not line.strip():
            if out and out[-1] != "":
                out.append("")
            continue
        bullet = re.match(r"\s*([-*]|\d+\.)\s+", line)
        hang = indent + " " * (bullet.end() if bullet else 0)
        out += textwrap.wrap(line, width=width, initial_indent=indent, subsequent_indent=hang,
                             break_on_hyphens=False, break_long_words=False) or [indent]
    while out and out[-1] == "":
        out.pop()
    return out


def indicator(tag: str, colour: bool) -> str:
    """`[WARNING]`, coloured by severity when the output is a terminal."""
    label = f"[{tag}]"
    return f"{_COLOURS[tag]}{label}{_RESET}" if colour and tag in _COLOURS else label
