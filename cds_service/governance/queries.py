"""The governance view's tables: pure queries over the state tables (SQLAlchemy Core).

Every table is a list of rows `{"key": str, COL: int | float | None, ...}` (README, Governance
dashboard). Counts over cards and feedback are grouped in SQL (card_index, feedback joined to the
card it answers); the audit's JSON lists (rule ids, ratings, facts, codes) are read in Python, only
over the rows of the filtered range. The same SQL runs on SQLite and PostgreSQL: times are ISO text,
so a day range is a text range on the indexed `at` / `created_at` columns.

Only codes and counts leave here: rule ids, procedure ids, fact names, code systems and codes,
override reason codes and their displays. Never a patient, user or order identifier, a hook
instance, a card uuid or a free-text comment.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal_column, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from cds_service.state.tables import audit, card_index, feedback

try:  # parses the audit's JSON lists ~3x faster; optional like everywhere else (same answers)
    import orjson

    _loads: Callable[[str], Any] = orjson.loads
except ImportError:  # pragma: no cover
    _loads = json.loads

Row = dict[str, Any]

# The hook path's statements run under CDS_DATABASE_STATEMENT_TIMEOUT (~2 s, set per connection:
# guidance is never held up by the database). A dashboard read scans a date range of audit and card
# rows and may take longer on a big database: its transaction gets this timeout instead
# (PostgreSQL; SQLite has none), so the dashboard answers rather than failing with 503.
READ_STATEMENT_TIMEOUT_SECONDS = 60


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for the dashboard's reads: one transaction (rolled back at the end, it only
    reads) with the longer statement timeout, which ends with it."""
    with engine.connect() as db:
        if db.dialect.name == "postgresql":
            db.exec_driver_sql(f"SET LOCAL statement_timeout = {READ_STATEMENT_TIMEOUT_SECONDS * 1000}")
        yield db

# PAMA rating code (audit `ratings[].pama`) -> the rated-share row it counts in
RATED_SHARE = {"appropriate": "appropriate", "not-appropriate": "not-appropriate",
               "no-criteria-apply": "no-criteria"}
SHARE_KEYS = ("appropriate", "not-appropriate", "no-criteria", "not-rated")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "count" (integer) | "percent" (one decimal, shown with %)
    label: str


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    key_label: str
    columns: tuple[Column, ...]
    about: str  # one sentence under the title: what the table counts
    text_columns: tuple[str, ...] = field(default=())  # string columns besides the key (not figures)


def _count(name: str, label: str) -> Column:
    return Column(name, "count", label)


_OUTCOMES = (_count("accepted", "Accepted"), _count("overridden", "Overridden (reason)"),
             _count("dismissed", "Dismissed"), Column("acceptance", "percent", "Acceptance"))

TABLES: tuple[TableSpec, ...] = (
    TableSpec("rules", "Rules", "Rule", (_count("fired", "Fired"), _count("cards", "Cards"), *_OUTCOMES),
              "Per rule: hook calls it fired in, cards it produced, and the feedback on those cards."),
    TableSpec("studies", "Studies", "Procedure", (_count("cards", "Cards"), *_OUTCOMES),
              "Per catalog procedure the cards were about: cards and the feedback on them."),
    TableSpec("override-reasons", "Override reasons", "Rule | system | code", (_count("count", "Overrides"),),
              "Overrides that gave a coded reason, by rule and reason.", ("display",)),
    TableSpec("rated-share", "Rated share", "Outcome",
              (_count("orders", "Orders"), Column("share", "percent", "Share")),
              "Imaging orders by the rating they got; not rated: no rating (missing data, unknown study)."),
    TableSpec("missing-facts", "Missing facts", "Fact", (_count("count", "Hook calls"),),
              "Facts the cards asked to record, by the number of hook calls that lacked them."),
    TableSpec("data-quality", "Data quality", "Kind | item", (_count("count", "Hook calls"),),
              "Chart data that could not be read or retrieved (by kind of fact) and imaging order codes "
              "outside the procedure catalog, by the number of hook calls."),
    TableSpec("alert-burden", "Alert burden", "Service | indicator",
              (_count("cards", "Cards"), Column("per100", "percent", "Cards per 100 orders")),
              "Cards by service and indicator, per 100 imaging orders the service rated."),
    TableSpec("weekly", "Weekly trend", "ISO week",
              (_count("cards", "Cards"), _count("accepted", "Accepted"), _count("overridden", "Overridden"),
               _count("dismissed", "Dismissed")),
              "Cards and the feedback on them, by the ISO week the card was shown."),
)
TABLES_BY_NAME: Mapping[str, TableSpec] = {t.name: t for t in TABLES}


@dataclass(frozen=True)
class Filters:
    start: date | None = None  # inclusive, UTC day
    end: date | None = None  # inclusive, UTC day
    service: str | None = None  # None: every service

    def window(self, col: Any) -> list[ColumnElement[bool]]:
        """Conditions on an ISO-text time column (uses its index: a plain text range)."""
        conds: list[ColumnElement[bool]] = []
        if self.start is not None:
            conds.append(col >= self.start.isoformat())
        if self.end is not None:
            conds.append(col < (self.end + timedelta(days=1)).isoformat())
        return conds

    def on_cards(self) -> list[ColumnElement[bool]]:
        conds = self.window(card_index.c.created_at)
        if self.service is not None:
            conds.append(card_index.c.service_id == self.service)
        return conds

    def on_audit(self) -> list[ColumnElement[bool]]:
        conds = self.window(audit.c.at)
        if self.service is not None:
            conds.append(audit.c.service_id == self.service)
        return conds

    def query(self) -> dict[str, str]:
        """The filters as query parameters (links to CSV / JSON keep the page's filters)."""
        out = {}
        if self.start:
            out["from"] = self.start.isoformat()
        if self.end:
            out["to"] = self.end.isoformat()
        out["service"] = self.service or "all"
        return out


class FilterError(ValueError):
    """A filter value the view cannot use (answered 400)."""


def parse_filters(args: Mapping[str, str], services: Iterable[str]) -> Filters:
    def day(name: str) -> date | None:
        raw = (args.get(name) or "").strip()
        if not raw:
            return None
        try:
            if len(raw) != 10:
                raise ValueError
            return date.fromisoformat(raw)
        except ValueError:
            raise FilterError(f"{name} must be a date YYYY-MM-DD, got {raw[:40]!r}") from None

    start, end = day("from"), day("to")
    if start and end and start > end:
        raise FilterError(f"from ({start}) is after to ({end})")
    service = (args.get("service") or "all").strip()
    known = list(services)
    if service != "all" and service not in known:
        raise FilterError(f"service must be 'all' or one of {', '.join(known)}, got {service[:80]!r}")
    return Filters(start, end, None if service == "all" else service)


def day_of(col: Any) -> Any:
    """The UTC day of an ISO-text time. The bounds are inline constants, not bound parameters, so the
    SELECT and GROUP BY copies of the expression stay one expression for PostgreSQL whatever the
    driver's parameter binding (server-side binding would make them $1, $2 and $3, $4)."""
    return func.substr(col, literal_column("1"), literal_column("10"))


# --- SQL groupings ------------------------------------------------------------------------------

def _feedback_counts() -> list[Any]:
    """accepted / overridden with a coded reason / overridden without one (dismissed), as SUMs."""
    f = feedback.c
    overridden = f.outcome == "overridden"
    return [
        func.sum(case((f.outcome == "accepted", 1), else_=0)).label("accepted"),
        func.sum(case((and_(overridden, f.override_code.is_not(None)), 1), else_=0)).label("overridden"),
        func.sum(case((and_(overridden, f.override_code.is_(None)), 1), else_=0)).label("dismissed"),
    ]


def _cards_by(db: Connection, filters: Filters, *group: Any) -> dict[tuple[Any, ...], int]:
    q = select(*group, func.count()).where(*filters.on_cards()).group_by(*group)
    return {tuple(row[:-1]): int(row[-1]) for row in db.execute(q)}


def _feedback_by(
    db: Connection, filters: Filters, *group: Any
) -> dict[tuple[Any, ...], tuple[int, int, int]]:
    q = (
        select(*group, *_feedback_counts())
        .select_from(feedback.join(card_index, card_index.c.card_uuid == feedback.c.card_uuid))
        .where(*filters.on_cards())
        .group_by(*group)
    )
    n = len(group)
    out: dict[tuple[Any, ...], tuple[int, int, int]] = {}
    for row in db.execute(q):
        out[tuple(row[:n])] = (int(row[n] or 0), int(row[n + 1] or 0), int(row[n + 2] or 0))
    return out


@dataclass
class FeedbackSummary:
    """Feedback counts (accepted, overridden, dismissed) by the card's rule, procedure and day."""

    by_rule: dict[str, list[int]] = field(default_factory=dict)
    by_procedure: dict[str, list[int]] = field(default_factory=dict)
    by_day: dict[str, list[int]] = field(default_factory=dict)


def feedback_summary(db: Connection, filters: Filters) -> FeedbackSummary:
    """One join of feedback to its card, grouped by rule, procedure and day at once (a few rows per
    feedback item at most), folded three ways here: one pass instead of three."""
    c = card_index.c
    out = FeedbackSummary()
    for key, counts in _feedback_by(db, filters, c.rule_id, c.procedure_id,
                                    day_of(c.created_at)).items():
        rule, procedure, day = key
        for table, k in ((out.by_rule, rule), (out.by_procedure, procedure), (out.by_day, day)):
            if k:
                total = table.setdefault(str(k), [0, 0, 0])
                for i, n in enumerate(counts):
                    total[i] += n
    return out


def _percent(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _outcome_row(key: str, counts: Iterable[int], **figures: int) -> Row:
    accepted, overridden, dismissed = counts
    return {"key": key, **figures, "accepted": accepted, "overridden": overridden, "dismissed": dismissed,
            "acceptance": _percent(accepted, accepted + overridden + dismissed)}


# --- the audit rows of the range, read once -----------------------------------------------------

@dataclass
class AuditSummary:
    calls: int = 0
    fired: Counter[str] = field(default_factory=Counter)
    rated: Counter[str] = field(default_factory=Counter)  # rated-share key -> orders
    orders: Counter[str] = field(default_factory=Counter)  # service -> imaging orders rated or not
    missing: Counter[str] = field(default_factory=Counter)
    quality: Counter[str] = field(default_factory=Counter)


def audit_summary(db: Connection, filters: Filters) -> AuditSummary:
    """One pass per list column, grouped by the column's JSON text in SQL: the same list repeats
    across thousands of calls (the same rules fire together), so each distinct text is parsed once
    and counted with its number of calls. A list names each item once per call."""
    a = audit.c
    where = filters.on_audit()
    out = AuditSummary()
    row: Any
    for row in db.execute(
        select(a.service_id, func.count(), func.sum(a.orders)).where(*where).group_by(a.service_id)
    ):
        service, calls, orders = row
        out.calls += int(calls)
        out.orders[str(service)] += int(orders or 0)

    def grouped(col: Any) -> list[tuple[list[Any], int]]:
        q = select(col, func.count()).where(*where, col != "[]").group_by(col)
        found: list[tuple[list[Any], int]] = []
        row: Any
        for row in db.execute(q):
            if row[0]:
                found.append((_loads(row[0]), int(row[1])))
        return found

    for rule_ids, n in grouped(a.rule_ids):
        for rule in set(rule_ids):
            out.fired[str(rule)] += n
    for ratings, n in grouped(a.ratings):
        for rated in ratings:
            share = RATED_SHARE.get(str(rated.get("pama"))) if isinstance(rated, dict) else None
            if share:
                out.rated[share] += n
    for facts, n in grouped(a.missing_facts):
        for fact in set(facts):
            out.missing[str(fact)] += n
    for kinds, n in grouped(a.unreadable):
        for kind in set(kinds):
            out.quality[f"unreadable|{kind}"] += n
    for codes, n in grouped(a.unknown_codes):
        for code in set(codes):
            out.quality[f"code|{code}"] += n
    return out


def _ranked(counter: Counter[str]) -> list[Row]:
    return [{"key": k, "count": n} for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]


# --- the tables ---------------------------------------------------------------------------------

def rules_table(db: Connection, filters: Filters, summary: AuditSummary, fb: FeedbackSummary) -> list[Row]:
    rule = card_index.c.rule_id
    cards = {k[0]: n for k, n in _cards_by(db, filters, rule).items() if k[0]}
    answered = fb.by_rule
    keys = sorted(set(summary.fired) | set(cards) | set(answered))
    rows = [_outcome_row(k, answered.get(k, (0, 0, 0)), fired=summary.fired.get(k, 0),
                         cards=cards.get(k, 0)) for k in keys]
    return sorted(rows, key=lambda r: (-r["fired"], -r["cards"], r["key"]))


def studies_table(db: Connection, filters: Filters, fb: FeedbackSummary) -> list[Row]:
    proc = card_index.c.procedure_id
    cards = {k[0]: n for k, n in _cards_by(db, filters, proc).items() if k[0]}
    answered = fb.by_procedure
    rows = [_outcome_row(k, answered.get(k, (0, 0, 0)), cards=cards.get(k, 0))
            for k in set(cards) | set(answered)]
    return sorted(rows, key=lambda r: (-r["cards"], r["key"]))


def override_reasons_table(db: Connection, filters: Filters) -> list[Row]:
    f, c = feedback.c, card_index.c
    q = (
        select(c.rule_id, f.override_system, f.override_code, func.max(f.override_display), func.count())
        .select_from(feedback.join(card_index, c.card_uuid == f.card_uuid))
        .where(*filters.on_cards(), f.outcome == "overridden", f.override_code.is_not(None))
        .group_by(c.rule_id, f.override_system, f.override_code)
    )
    rows: list[Row] = []
    row: Any
    for row in db.execute(q):
        rule, system, code, display, n = row
        rows.append({"key": f"{rule or ''}|{system or ''}|{code}", "display": display, "count": int(n)})
    return sorted(rows, key=lambda r: (-r["count"], r["key"]))


def rated_share_table(summary: AuditSummary) -> list[Row]:
    rated = sum(summary.rated.values())
    # rows written before the audit counted orders say 0: never a negative "not rated"
    not_rated = max(0, sum(summary.orders.values()) - rated)
    counts = {**{k: summary.rated.get(k, 0) for k in SHARE_KEYS[:3]}, "not-rated": not_rated}
    total = rated + not_rated
    return [{"key": k, "orders": counts[k], "share": _percent(counts[k], total)} for k in SHARE_KEYS]


def alert_burden_table(db: Connection, filters: Filters, summary: AuditSummary) -> list[Row]:
    cards = _cards_by(db, filters, card_index.c.service_id, card_index.c.indicator)
    rows = []
    for key, n in cards.items():
        service, indicator = str(key[0]), key[1]
        rows.append({"key": f"{service}|{indicator or 'none'}", "cards": n,
                     "per100": _percent(n, summary.orders.get(service, 0))})
    return sorted(rows, key=lambda r: r["key"])


def weekly_table(db: Connection, filters: Filters, fb: FeedbackSummary) -> list[Row]:
    day = day_of(card_index.c.created_at)
    weeks: dict[str, list[int]] = {}
    # grouped by day in SQL (the same expression on both databases), folded into ISO weeks here
    for key, n in _cards_by(db, filters, day).items():
        weeks.setdefault(_iso_week(str(key[0])), [0, 0, 0, 0])[0] += n
    for d, counts in fb.by_day.items():
        week = weeks.setdefault(_iso_week(d), [0, 0, 0, 0])
        for i, n in enumerate(counts, start=1):
            week[i] += n
    return [{"key": w, "cards": v[0], "accepted": v[1], "overridden": v[2], "dismissed": v[3]}
            for w, v in sorted(weeks.items())]


def _iso_week(day: str) -> str:
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def site_versions(engine: Engine, filters: Filters) -> list[tuple[str | None, int]]:
    """Which site configuration (CDS_SITE_CONFIG `version`; None: none loaded) was in force for how
    many hook calls of the range: figures before and after a local change are not comparable."""
    a = audit.c
    q = select(a.site_config_version, func.count()).where(*filters.on_audit()).group_by(a.site_config_version)
    with reading(engine) as db:
        found: list[tuple[str | None, int]] = []
        row: Any
        for row in db.execute(q):
            found.append((None if row[0] is None else str(row[0]), int(row[1])))
        # sorted here: the databases disagree on where NULL sorts
        return sorted(found, key=lambda vc: (vc[0] is not None, vc[0] or ""))


def build(engine: Engine, filters: Filters, names: Iterable[str] | None = None) -> dict[str, list[Row]]:
    """The named tables (None: all) for the filters, from one connection and one audit scan."""
    wanted = list(names) if names is not None else [t.name for t in TABLES]
    out: dict[str, list[Row]] = {}
    with reading(engine) as db:
        needs_audit = {"rules", "rated-share", "missing-facts", "data-quality", "alert-burden"}
        summary = audit_summary(db, filters) if needs_audit & set(wanted) else AuditSummary()
        needs_feedback = {"rules", "studies", "weekly"}
        fb = feedback_summary(db, filters) if needs_feedback & set(wanted) else FeedbackSummary()
        makers: dict[str, Callable[[], list[Row]]] = {
            "rules": lambda: rules_table(db, filters, summary, fb),
            "studies": lambda: studies_table(db, filters, fb),
            "override-reasons": lambda: override_reasons_table(db, filters),
            "rated-share": lambda: rated_share_table(summary),
            "missing-facts": lambda: _ranked(summary.missing),
            "data-quality": lambda: _ranked(summary.quality),
            "alert-burden": lambda: alert_burden_table(db, filters, summary),
            "weekly": lambda: weekly_table(db, filters, fb),
        }
        for name in wanted:
            out[name] = makers[name]()
    return out
