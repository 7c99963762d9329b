"""The dashboard's SVG charts draw the table rows under them, nothing else, and escape every text."""

import re

from cds_service.governance import charts


def test_the_share_bar_splits_its_width_by_orders():
    rows = [{"key": "appropriate", "orders": 3, "share": 30.0},
            {"key": "not-appropriate", "orders": 1, "share": 10.0},
            {"key": "no-criteria", "orders": 0, "share": 0.0},
            {"key": "not-rated", "orders": 6, "share": 60.0}]
    svg = charts.share_bar(rows, width=100)
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="0" width="([\d.]+)"', svg)]
    assert widths == [30.0, 10.0, 60.0]  # the empty segment is not drawn
    assert "<script" not in svg and "not-rated: 6 (60.0%)" in svg


def test_no_orders_and_no_weeks_say_so():
    assert "no orders" in charts.share_bar([{"key": "appropriate", "orders": 0, "share": None}])
    assert "no cards" in charts.weekly_bars([])


def test_weekly_bars_scale_to_the_busiest_week_and_escape_keys():
    rows = [{"key": "2026-W01", "cards": 10, "accepted": 5, "overridden": 1, "dismissed": 0},
            {"key": "<b>", "cards": 5, "accepted": 0, "overridden": 0, "dismissed": 0}]
    svg = charts.weekly_bars(rows, width=200, height=118)
    heights = [float(h) for h in re.findall(r'height="([\d.]+)" fill="#90caf9"', svg)]
    assert heights == [100.0, 50.0]
    assert "<b>" not in svg and "&lt;b&gt;" in svg
