"""Small server-side SVG charts for the dashboard (no script, no chart library).

Each returns an `<svg>` element as text; every text in it is escaped, and the figures it draws are
the rows of the tables shown under it (the chart adds no number of its own).
"""

from __future__ import annotations

from markupsafe import escape

from cds_service.governance.queries import Row

SHARE_COLOURS = {"appropriate": "#2e7d32", "not-appropriate": "#c62828", "no-criteria": "#9e9e9e",
                 "not-rated": "#f9a825"}


def share_bar(rows: list[Row], width: int = 640, height: int = 26) -> str:
    """One horizontal bar split by the rated-share rows (widths by orders)."""
    total = sum(int(r["orders"]) for r in rows)
    title = "Rated share of imaging orders"
    if not total:
        return (f'<svg id="rated-share-chart" role="img" width="{width}" height="{height}" '
                f'aria-label="{title}: no orders"><text x="4" y="17" font-size="12">no orders</text></svg>')
    parts, x = [], 0.0
    for r in rows:
        w = width * int(r["orders"]) / total
        if w <= 0:
            continue
        label = escape(f"{r['key']}: {r['orders']} ({r['share']:.1f}%)")
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" '
                     f'fill="{SHARE_COLOURS.get(str(r["key"]), "#607d8b")}"><title>{label}</title></rect>')
        x += w
    legend = " · ".join(f"{r['key']} {r['share']:.1f}%" for r in rows if r["share"] is not None)
    for i, r in enumerate(rows):  # a key under the bar: colour square and name
        lx, name = i * width / len(rows), escape(str(r["key"]))
        parts.append(f'<rect x="{lx:.1f}" y="{height + 6}" width="10" height="10" '
                     f'fill="{SHARE_COLOURS.get(str(r["key"]), "#607d8b")}"/>'
                     f'<text x="{lx + 14:.1f}" y="{height + 15}" font-size="11">{name}</text>')
    return (f'<svg id="rated-share-chart" role="img" width="{width}" height="{height + 20}" '
            f'aria-label="{escape(title)}: {escape(legend)}">{"".join(parts)}</svg>')


def weekly_bars(rows: list[Row], width: int = 640, height: int = 120) -> str:
    """Cards per ISO week as bars, the accepted part of each bar darker."""
    if not rows:
        return (f'<svg id="weekly-chart" role="img" width="{width}" height="24" aria-label="no cards">'
                '<text x="4" y="17" font-size="12">no cards</text></svg>')
    top = max(int(r["cards"]) for r in rows) or 1
    plot = height - 18  # room for the week labels
    step = width / len(rows)
    bar = max(2.0, step * 0.7)
    parts = []
    for i, r in enumerate(rows):
        x = i * step + (step - bar) / 2
        h = plot * int(r["cards"]) / top
        ha = plot * int(r["accepted"]) / top
        label = escape(f"{r['key']}: {r['cards']} cards, {r['accepted']} accepted, "
                       f"{r['overridden']} overridden, {r['dismissed']} dismissed")
        parts.append(
            f'<g><title>{label}</title>'
            f'<rect x="{x:.1f}" y="{plot - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="#90caf9"/>'
            f'<rect x="{x:.1f}" y="{plot - ha:.1f}" width="{bar:.1f}" height="{ha:.1f}" fill="#1565c0"/></g>'
        )
    # label the first and last week only: a year of weeks does not fit under the bars
    first, last = escape(str(rows[0]["key"])), escape(str(rows[-1]["key"]))
    parts.append(f'<text x="0" y="{height - 4}" font-size="11">{first}</text>')
    if len(rows) > 1:
        parts.append(f'<text x="{width}" y="{height - 4}" font-size="11" text-anchor="end">{last}</text>')
    parts.append(f'<text x="{width / 2:.0f}" y="{height - 4}" font-size="11" text-anchor="middle">'
                 'light: cards · dark: accepted</text>')
    return (f'<svg id="weekly-chart" role="img" width="{width}" height="{height}" '
            f'aria-label="Cards per week (dark: accepted), {first} to {last}">{"".join(parts)}</svg>')
