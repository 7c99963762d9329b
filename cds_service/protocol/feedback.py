"""Feedback (`POST /cds-services/{id}/feedback`): validation and a durable, idempotent store.

SQLite (stdlib). Tables, joined on the card uuid:
  card_index    card uuid -> rule, scenario, knowledge version, procedure (written at response time)
  feedback      one row per distinct feedback item (a repeat of the same item is ignored)
  card_subject  card uuid -> what makes it "the same card" later (protocol/snooze.py), response time
  snooze        subjects overridden or dismissed, with the time: such cards are not shown again
No patient identifiers are stored: a subject holds an HMAC of the patient id, never the id.
Free-text override comments may carry PHI and are stored only when CDS_FEEDBACK_STORE_COMMENTS is on.

Only feedback on cards this service issued is stored: an item whose card uuid is not in the card
index (for this service) is counted in the answer's `unknown` and dropped, so a client cannot fill
the store with made-up items. The request still succeeds (200) because a valid item for a card
that was indexed on another replica, or before the database was reset, is not the client's error.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from cds_service.protocol.errors import InvalidRequest
from cds_service.protocol.snooze import CardSubject

OUTCOMES = ("accepted", "overridden")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS card_index (
    card_uuid TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    hook_instance TEXT,
    rule_id TEXT,
    scenario_id TEXT,
    knowledge_version TEXT,
    procedure_id TEXT,
    created_at TEXT NOT NULL,
    indicator TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    item_key TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    accepted_suggestions TEXT,
    override_system TEXT,
    override_code TEXT,
    override_display TEXT,
    has_comment INTEGER NOT NULL DEFAULT 0,
    user_comment TEXT,
    outcome_timestamp TEXT NOT NULL,
    client_iss TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback(card_uuid);
CREATE TABLE IF NOT EXISTS card_subject (
    card_uuid TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    patient_key TEXT NOT NULL,
    order_codes TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS card_subject_age ON card_subject(created_at);
CREATE TABLE IF NOT EXISTS snooze (
    patient_key TEXT NOT NULL,
    order_codes TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    snoozed_at REAL NOT NULL,
    PRIMARY KEY (patient_key, order_codes, rule_id, verdict)
);
CREATE INDEX IF NOT EXISTS snooze_age ON snooze(snoozed_at);
CREATE TABLE IF NOT EXISTS audit (
    hook_instance TEXT,
    service_id TEXT NOT NULL,
    hook TEXT,
    at TEXT NOT NULL,
    knowledge_version TEXT,
    rule_ids TEXT NOT NULL,
    ratings TEXT NOT NULL,
    card_uuids TEXT NOT NULL,
    fhir_calls INTEGER NOT NULL,
    client_iss TEXT,
    site_config_version TEXT,
    orders INTEGER NOT NULL DEFAULT 0,
    missing_facts TEXT NOT NULL DEFAULT '[]',
    unreadable TEXT NOT NULL DEFAULT '[]',
    unknown_codes TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS audit_age ON audit(at);
"""


@dataclass(frozen=True)
class FeedbackItem:
    card: str
    outcome: str
    outcome_timestamp: str
    accepted_suggestions: tuple[str, ...] = ()
    override_system: str | None = None
    override_code: str | None = None
    override_display: str | None = None
    user_comment: str | None = None

    def key(self, service_id: str) -> str:
        """Identity of a feedback item: the same item sent twice is stored once."""
        canonical = json.dumps(
            [service_id, self.card, self.outcome, sorted(self.accepted_suggestions),
             self.override_system, self.override_code, self.outcome_timestamp],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    service_id: str
    hook_instance: str
    hook: str
    knowledge_version: str
    rule_ids: tuple[str, ...]
    ratings: tuple[Mapping[str, str], ...]  # per rated order: pama, category, sourceKind, scenario, rule
    card_uuids: tuple[str, ...]
    fhir_calls: int
    client_iss: str | None
    site_config_version: str | None = None
    orders: int = 0
    missing_facts: tuple[str, ...] = ()  # facts a card asked for
    unreadable: tuple[str, ...] = ()  # facts present in the chart but unreadable
    unknown_codes: tuple[str, ...] = ()  # "system|code" of codes not understood


class Recorded(NamedTuple):
    stored: int  # new items written (repeats are ignored)
    unknown: int  # items for card uuids this service never issued: counted, not stored
    snoozed: int = 0  # new overrides that snooze their card (protocol/snooze.py)


def parse_feedback(body: Any, max_items: int = 100, max_comment_chars: int = 2000) -> list[FeedbackItem]:
    if not isinstance(body, dict):
        raise InvalidRequest("The feedback body must be a JSON object")
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("feedback must be a non-empty array")
    if len(items) > max_items:
        raise InvalidRequest(f"feedback has {len(items)} items; at most {max_items} are accepted per request")
    return [_item(item, f"feedback[{i}]", max_comment_chars) for i, item in enumerate(items)]


def _item(item: Any, path: str, max_comment_chars: int) -> FeedbackItem:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{path} must be an object")
    card = item.get("card")
    if not isinstance(card, str) or not card:
        raise InvalidRequest(f"{path}.card (the card uuid) is required")
    outcome = item.get("outcome")
    if outcome not in OUTCOMES:
        raise InvalidRequest(f"{path}.outcome must be 'accepted' or 'overridden' (cds-fb-1)")
    timestamp = item.get("outcomeTimestamp")
    if not isinstance(timestamp, str) or not _is_datetime(timestamp):
        raise InvalidRequest(f"{path}.outcomeTimestamp must be an ISO 8601 date-time")
    accepted: tuple[str, ...] = ()
    raw_accepted = item.get("acceptedSuggestions")
    if outcome == "accepted":
        if not isinstance(raw_accepted, list) or not raw_accepted:
            raise InvalidRequest(f"{path}.acceptedSuggestions is required for accepted outcomes (cds-fb-2)")
        ids = [s.get("id") if isinstance(s, dict) else None for s in raw_accepted]
        if not all(isinstance(i, str) and i for i in ids):
            raise InvalidRequest(f"{path}.acceptedSuggestions entries need an 'id' (the suggestion uuid)")
        accepted = tuple(ids)  # type: ignore[arg-type]
    system = code = display = comment = None
    reason = item.get("overrideReason")
    if reason is not None:
        if not isinstance(reason, dict):
            raise InvalidRequest(f"{path}.overrideReason must be an object")
        coding, comment = reason.get("reason"), reason.get("userComment")
        if coding is None and not comment:
            raise InvalidRequest(f"{path}.overrideReason needs a reason or a userComment (cds-fb-3)")
        if coding is not None:
            if not isinstance(coding, dict) or not coding.get("code") or not coding.get("system"):
                raise InvalidRequest(f"{path}.overrideReason.reason must be a Coding with system and code")
            system, code = str(coding["system"]), str(coding["code"])
            display = coding.get("display") if isinstance(coding.get("display"), str) else None
        if comment is not None and not isinstance(comment, str):
            raise InvalidRequest(f"{path}.overrideReason.userComment must be a string")
        if isinstance(comment, str) and len(comment) > max_comment_chars:
            raise InvalidRequest(
                f"{path}.overrideReason.userComment has {len(comment)} characters; at most "
                f"{max_comment_chars} are accepted"
            )
    return FeedbackItem(card, outcome, timestamp, accepted, system, code, display, comment or None)


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


_TABLES = ("card_index", "feedback", "card_subject", "snooze", "audit")


class FeedbackStore:
    """One connection per thread and process, kept open: safe across threads and forked workers.

    Every hook call that returns a card writes the card index. Opening, committing with a full
    sync and closing a connection per call cost 5-30 ms of blocking I/O, more than the rest of the
    request; a kept connection in WAL mode with synchronous=NORMAL commits in well under a
    millisecond. NORMAL keeps the database consistent after a crash of the process; a power loss
    may lose the last transactions (a few card-index rows or feedback items), never corrupt it.
    """

    def __init__(self, path: Path, store_comments: bool = False) -> None:
        self.path = path
        self.store_comments = store_comments
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @property
    def engine(self) -> Any:
        """A SQLAlchemy engine on the same database, for reads through `cds_service.state.tables`
        (the governance view). Built on first use, one per process."""
        if getattr(self, "_engine_pid", None) != os.getpid():
            from sqlalchemy import create_engine

            self._engine = create_engine(f"sqlite:///{self.path}")
            self._engine_pid = os.getpid()
        return self._engine

    def _db(self) -> sqlite3.Connection:
        local = self._local
        # a connection must never cross a fork (gunicorn forks workers after the app is built)
        if getattr(local, "pid", None) != os.getpid():
            local.db = sqlite3.connect(self.path, timeout=5.0)
            local.db.execute("PRAGMA synchronous=NORMAL")
            local.pid = os.getpid()
        db: sqlite3.Connection = local.db
        return db

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        with db:  # commit on success, roll back on error
            yield db

    def ready(self) -> str | None:
        """None when the database answers and holds every table this code writes; else why not."""
        try:
            rows = self._db().execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            tables = {row[0] for row in rows}
        except sqlite3.Error as exc:
            return f"database unreachable ({type(exc).__name__})"
        missing = set(_TABLES) - tables
        return f"database schema is missing {sorted(missing)}" if missing else None

    def index_cards(
        self,
        service_id: str,
        hook_instance: str,
        card_index: Mapping[str, Mapping[str, str]],
        subjects: Mapping[str, CardSubject] | None = None,
        at: float | None = None,
    ) -> None:
        """Remember the cards of a response; `subjects` (with the time `at`) lets a later override
        of one of them snooze it."""
        if not card_index:
            return
        now = _now()
        rows = [
            (uuid, service_id, hook_instance, meta.get("rule_id"), meta.get("scenario_id"),
             meta.get("knowledge_version"), meta.get("procedure_id"), now, meta.get("indicator"))
            for uuid, meta in card_index.items()
        ]
        with self._connect() as db:
            db.executemany("INSERT OR IGNORE INTO card_index VALUES (?,?,?,?,?,?,?,?,?)", rows)
            if subjects and at is not None:
                db.executemany(
                    "INSERT OR IGNORE INTO card_subject VALUES (?,?,?,?,?,?,?)",
                    [(uuid, service_id, *subject, at) for uuid, subject in subjects.items()],
                )

    def audit(self, entry: AuditEntry) -> None:
        """One row per hook call: what advice was given, from which rules and knowledge version.

        Codes and ids of rules only: no patient, user or order identifier, no token, no card text.
        """
        with self._connect() as db:
            db.execute(
                "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (entry.hook_instance, entry.service_id, entry.hook, _now(), entry.knowledge_version,
                 json.dumps(list(entry.rule_ids)), json.dumps([dict(r) for r in entry.ratings]),
                 json.dumps(list(entry.card_uuids)), entry.fhir_calls, entry.client_iss,
                 entry.site_config_version, entry.orders, json.dumps(list(entry.missing_facts)),
                 json.dumps(list(entry.unreadable)), json.dumps(list(entry.unknown_codes))),
            )

    def audit_rows(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY at")]
            finally:
                db.row_factory = None

    def prune_older_than(self, days: float) -> dict[str, int]:
        """Retention: forget audit rows, card links and snooze subjects older than `days`.

        Feedback itself is kept (the governance record); a card's index row goes with its age, so
        feedback arriving later for such an old card is counted as unknown.
        """
        cutoff = datetime.now(UTC) - timedelta(days=days)
        iso, epoch = cutoff.isoformat(timespec="milliseconds"), cutoff.timestamp()
        with self._connect() as db:
            return {
                "audit": db.execute("DELETE FROM audit WHERE at < ?", (iso,)).rowcount,
                "card_index": db.execute("DELETE FROM card_index WHERE created_at < ?", (iso,)).rowcount,
                "card_subject": db.execute(
                    "DELETE FROM card_subject WHERE created_at < ?", (epoch,)
                ).rowcount,
            }

    def snoozed(self, subjects: Iterable[CardSubject], since: float) -> set[CardSubject]:
        wanted = set(subjects)
        found: set[CardSubject] = set()
        with self._connect() as db:
            for key in sorted({s.patient_key for s in wanted}):  # one patient per call in practice
                found.update(
                    CardSubject(*row) for row in db.execute(
                        "SELECT patient_key, order_codes, rule_id, verdict FROM snooze "
                        "WHERE patient_key = ? AND snoozed_at >= ?",
                        (key, since),
                    )
                )
        return found & wanted

    def prune(self, snoozed_before: float, subjects_before: float) -> None:
        """Forget expired snoozes and the subjects of cards too old to be dismissed usefully."""
        with self._connect() as db:
            db.execute("DELETE FROM snooze WHERE snoozed_at < ?", (snoozed_before,))
            db.execute("DELETE FROM card_subject WHERE created_at < ?", (subjects_before,))

    def record(
        self,
        service_id: str,
        items: list[FeedbackItem],
        client_iss: str | None = None,
        snooze_at: float | None = None,
    ) -> Recorded:
        """Store the items on cards this service issued; returns how many were new and how many
        named a card uuid it never issued (those are not stored). With `snooze_at` (unix time;
        None: snoozing is off), a new `overridden` item snoozes its card's subject from then on;
        `accepted` never does, and a repeat of an item does not extend the snooze."""
        now = _now()
        new = snoozes = 0
        with self._connect() as db:
            cards = sorted({item.card for item in items})
            marks = ",".join("?" * len(cards))
            known = {row[0] for row in db.execute(
                f"SELECT card_uuid FROM card_index WHERE service_id = ? AND card_uuid IN ({marks})",
                (service_id, *cards),
            )}
            issued = [item for item in items if item.card in known]
            for item in issued:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (item.key(service_id), service_id, item.card, item.outcome,
                     json.dumps(sorted(item.accepted_suggestions)) if item.accepted_suggestions else None,
                     item.override_system, item.override_code, item.override_display,
                     int(bool(item.user_comment)),
                     item.user_comment if self.store_comments else None,
                     item.outcome_timestamp, client_iss, now),
                )
                new += cursor.rowcount
                if cursor.rowcount and item.outcome == "overridden" and snooze_at is not None:
                    snoozes += db.execute(
                        "INSERT INTO snooze SELECT patient_key, order_codes, rule_id, verdict, ? "
                        "FROM card_subject WHERE card_uuid = ? AND service_id = ? AND true "
                        "ON CONFLICT DO UPDATE SET snoozed_at = max(snoozed_at, excluded.snoozed_at)",
                        (snooze_at, item.card, service_id),
                    ).rowcount
        return Recorded(stored=new, unknown=len(items) - len(issued), snoozed=snoozes)

    def rows(self) -> list[dict[str, Any]]:
        """Feedback joined to the rule that produced each card (for review and tests)."""
        with self._connect() as db:
            cursor = db.cursor()
            cursor.row_factory = sqlite3.Row
            cursor.execute(
                "SELECT f.*, c.rule_id, c.scenario_id, c.knowledge_version, c.procedure_id "
                "FROM feedback f LEFT JOIN card_index c ON c.card_uuid = f.card_uuid "
                "ORDER BY f.received_at, f.item_key"
            )
            return [dict(row) for row in cursor.fetchall()]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
