"""Shared pieces of the governance tests: a clock for the store, and a reader of the dashboard HTML."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from cds_service.protocol import feedback as feedback_module


class Clock:
    """What the store writes as the time of a card, feedback item or audit row (ISO text, UTC)."""

    def __init__(self) -> None:
        self.at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def set(self, iso: str) -> None:
        self.at = datetime.fromisoformat(iso).replace(tzinfo=UTC)

    def __call__(self) -> str:
        return self.at.isoformat(timespec="milliseconds")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    # the store's only clock: rows land on the days a test names, so date filters can be checked
    c = Clock()
    monkeypatch.setattr(feedback_module, "_now", c)
    yield c


class DashboardPage(HTMLParser):
    """tables[id][data-key][data-col] -> cell text; plus the page's flags and links (contract)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        self.csv_links: dict[str, str] = {}
        self.json_links: dict[str, str] = {}
        self.open_mode = False
        self.form_fields: set[str] = set()
        self.has_apply = False
        self._table: str | None = None
        self._row: str | None = None
        self._col: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table or ""] = {}
        elif tag == "tr" and self._table and a.get("data-key") is not None:
            self._row = a["data-key"]
            self.tables[self._table][self._row or ""] = {}
        elif tag == "td" and self._row is not None and a.get("data-col"):
            self._col, self._text = a["data-col"], []
        elif tag == "a" and a.get("data-csv"):
            self.csv_links[a["data-csv"] or ""] = a.get("href") or ""
        elif tag == "a" and a.get("data-json"):
            self.json_links[a["data-json"] or ""] = a.get("href") or ""
        elif tag == "p" and a.get("id") == "open-mode":
            self.open_mode = True
        elif tag in ("input", "select") and a.get("name"):
            self.form_fields.add(f"{tag}:{a['name']}:{a.get('type') or ''}")
        elif tag == "button" and a.get("id") == "apply":
            self.has_apply = True

    def handle_data(self, data: str) -> None:
        if self._col is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._col is not None and self._table and self._row is not None:
            self.tables[self._table][self._row][self._col] = "".join(self._text).strip()
            self._col = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None


def figure(value: Any, percent: bool = False) -> str:
    """The cell text the contract asks for, computed here independently of the service's code."""
    if value is None:
        return "\u2014"
    return f"{value:.1f}%" if percent else str(value)


def pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None
