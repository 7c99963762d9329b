"""Feedback (`POST /cds-services/{id}/feedback`): validation and a durable, idempotent store.

SQLite (embedded default) or PostgreSQL (cds_service/state/). Tables, joined on the card uuid:
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, Float, bindparam, case, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cds_service.protocol.errors import InvalidRequest
from cds_service.protocol.snooze import CardSubject
from cds_service.state import migrate
from cds_service.state import tables as t
from cds_service.state.db import Database

OUTCOMES = ("accepted", "overridden")


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


class FeedbackStore:
    """Feedback, card index, snooze and audit rows in the state database (SQLite or PostgreSQL).

    Every hook call that returns a card writes the card index, so writes are short transactions
    on pooled connections kept open (cds_service/state/db.py). Statements are SQLAlchemy Core on
    `cds_service.state.tables`, built once: the same code runs on both databases, and the
    idempotent inserts are each dialect's INSERT ... ON CONFLICT DO NOTHING.

    Built from a path (the embedded SQLite default) the schema is migrated to the current revision
    on the spot; built from a `Database`, the caller has checked or migrated it (app.py).
    """

    def __init__(self, db: Database | Path, store_comments: bool = False) -> None:
        if isinstance(db, Path):
            db = Database(db)
            migrate.upgrade(db)
        self.db = db
        self.path = db.path  # the SQLite file; None on PostgreSQL
        self.store_comments = store_comments
        insert = sqlite_insert if db.dialect == "sqlite" else pg_insert
        self._index_card = insert(t.card_index).on_conflict_do_nothing()
        self._index_subject = insert(t.card_subject).on_conflict_do_nothing()
        # rowcount of an INSERT is read (new or repeated item): SQLAlchemy keeps it only when asked
        self._add_feedback = (
            insert(t.feedback).on_conflict_do_nothing().execution_options(preserve_rowcount=True)
        )
        self._audit = t.audit.insert()
        # built once: statement construction and its cache key cost more than the lookup itself
        z = t.snooze.c
        self._snoozed = select(z.patient_key, z.order_codes, z.rule_id, z.verdict).where(
            z.patient_key == bindparam("patient_key"), z.snoozed_at >= bindparam("since", type_=Float)
        )
        # A new override snoozes its card's subject; a later override of the same subject moves
        # the snooze forward, never back (max of both times).
        upsert = insert(t.snooze).from_select(
            ["patient_key", "order_codes", "rule_id", "verdict", "snoozed_at"],
            select(t.card_subject.c.patient_key, t.card_subject.c.order_codes, t.card_subject.c.rule_id,
                   t.card_subject.c.verdict, bindparam("snooze_at", type_=Float))
            .where(t.card_subject.c.card_uuid == bindparam("card"),
                   t.card_subject.c.service_id == bindparam("service")),
        )
        self._snooze = upsert.on_conflict_do_update(
            index_elements=[t.snooze.c.patient_key, t.snooze.c.order_codes, t.snooze.c.rule_id,
                            t.snooze.c.verdict],
            set_={"snoozed_at": case((upsert.excluded.snoozed_at > t.snooze.c.snoozed_at,
                                      upsert.excluded.snoozed_at), else_=t.snooze.c.snoozed_at)},
        ).execution_options(preserve_rowcount=True)
        # PostgreSQL hook path (db.hot): the same statements as SQL text, compiled once
        self._hot = db.dialect == "postgresql"
        if self._hot:
            self._sql_index = db.compiled(self._index_card, [c.key for c in t.card_index.c])
            self._sql_subject = db.compiled(self._index_subject, [c.key for c in t.card_subject.c])
            self._sql_audit = db.compiled(self._audit, [c.key for c in t.audit.c])
            self._sql_snoozed = db.compiled(self._snoozed)

    @property
    def engine(self) -> Engine:
        """This process's SQLAlchemy engine on the state database (reads through
        `cds_service.state.tables`, e.g. the governance view)."""
        return self.db.engine

    def ready(self) -> str | None:
        """None when the database answers at the current schema revision with every table this
        code writes; else why not."""
        return migrate.problem(self.db)

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
        if card_index:
            self._write(_index_rows(service_id, hook_instance, card_index),
                        _subject_rows(service_id, subjects, at), None)

    def audit(
        self,
        entry: AuditEntry,
        card_index: Mapping[str, Mapping[str, str]] | None = None,
        subjects: Mapping[str, CardSubject] | None = None,
        at: float | None = None,
    ) -> None:
        """One row per hook call: what advice was given, from which rules and knowledge version;
        with `card_index` (and `subjects`, `at`: see index_cards) the response's cards are indexed
        in the same round trip (PostgreSQL) or transaction (SQLite).

        Codes and ids of rules only: no patient, user or order identifier, no token, no card text.
        """
        index = _index_rows(entry.service_id, entry.hook_instance, card_index) if card_index else []
        self._write(index, _subject_rows(entry.service_id, subjects, at) if card_index else [],
                    _audit_row(entry))

    def _write(self, index: list[dict[str, Any]], subjects: list[dict[str, Any]],
               audit: dict[str, Any] | None) -> None:
        """Idempotent inserts, each whole on its own: a card's feedback link without its snooze
        subject (should the second fail) only means that card's dismissal does not snooze."""
        if self._hot:
            # one pipeline: every statement sent at once, one wait for all their results
            with self.db.hot() as conn, conn.cursor() as cur, conn.pipeline():
                if index:
                    cur.executemany(self._sql_index, index)
                if subjects:
                    cur.executemany(self._sql_subject, subjects)
                if audit is not None:
                    cur.execute(self._sql_audit, audit)
            return
        with self.db.autocommit() as db:  # SQLite: one short transaction on the thread's connection
            if index:
                db.execute(self._index_card, index)
            if subjects:
                db.execute(self._index_subject, subjects)
            if audit is not None:
                db.execute(self._audit, audit)

    def audit_rows(self) -> list[dict[str, Any]]:
        with self.db.connect() as db:
            return [dict(r) for r in db.execute(select(t.audit).order_by(t.audit.c.at)).mappings()]

    def prune_older_than(self, days: float) -> dict[str, int]:
        """Retention: forget audit rows, card links and snooze subjects older than `days`.

        Feedback itself is kept (the governance record); a card's index row goes with its age, so
        feedback arriving later for such an old card is counted as unknown.
        """
        cutoff = datetime.now(UTC) - timedelta(days=days)
        iso, epoch = cutoff.isoformat(timespec="milliseconds"), cutoff.timestamp()
        index = t.card_index
        with self.db.begin() as db:
            return {
                "audit": db.execute(delete(t.audit).where(t.audit.c.at < iso)).rowcount,
                "card_index": db.execute(delete(index).where(index.c.created_at < iso)).rowcount,
                "card_subject": db.execute(
                    delete(t.card_subject).where(t.card_subject.c.created_at < epoch)
                ).rowcount,
            }

    def snoozed(self, subjects: Iterable[CardSubject], since: float) -> set[CardSubject]:
        wanted = set(subjects)
        found: set[CardSubject] = set()
        keys = sorted({s.patient_key for s in wanted})  # one patient per call in practice
        if self._hot:
            with self.db.hot() as conn, conn.cursor() as cur:
                for key in keys:
                    cur.execute(self._sql_snoozed, {"patient_key": key, "since": since})
                    found.update(CardSubject._make(row) for row in cur.fetchall())
            return found & wanted
        with self.db.autocommit() as db:
            for key in keys:
                found.update(CardSubject._make(row) for row in db.execute(
                    self._snoozed, {"patient_key": key, "since": since}))
        return found & wanted

    def prune(self, snoozed_before: float, subjects_before: float) -> None:
        """Forget expired snoozes and the subjects of cards too old to be dismissed usefully."""
        with self.db.begin() as db:
            db.execute(delete(t.snooze).where(t.snooze.c.snoozed_at < snoozed_before))
            db.execute(delete(t.card_subject).where(t.card_subject.c.created_at < subjects_before))

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
        c = t.card_index.c
        with self.db.begin(durable=True) as db:
            cards = sorted({item.card for item in items})
            known: set[str] = set(db.scalars(
                select(c.card_uuid).where(c.service_id == service_id, c.card_uuid.in_(cards))
            ))
            issued = [item for item in items if item.card in known]
            for item in issued:
                inserted = db.execute(self._add_feedback, {
                    "item_key": item.key(service_id), "service_id": service_id, "card_uuid": item.card,
                    "outcome": item.outcome,
                    "accepted_suggestions": json.dumps(sorted(item.accepted_suggestions))
                    if item.accepted_suggestions else None,
                    "override_system": item.override_system, "override_code": item.override_code,
                    "override_display": item.override_display, "has_comment": int(bool(item.user_comment)),
                    "user_comment": item.user_comment if self.store_comments else None,
                    "outcome_timestamp": item.outcome_timestamp, "client_iss": client_iss,
                    "received_at": now,
                }).rowcount
                new += inserted
                if inserted and item.outcome == "overridden" and snooze_at is not None:
                    snoozes += db.execute(
                        self._snooze, {"snooze_at": snooze_at, "card": item.card, "service": service_id}
                    ).rowcount
        return Recorded(stored=new, unknown=len(items) - len(issued), snoozed=snoozes)

    def rows(self) -> list[dict[str, Any]]:
        """Feedback joined to the rule that produced each card (for review and tests)."""
        f, c = t.feedback, t.card_index.c
        query = (
            select(f, c.rule_id, c.scenario_id, c.knowledge_version, c.procedure_id)
            .select_from(f.outerjoin(t.card_index, c.card_uuid == f.c.card_uuid))
            .order_by(f.c.received_at, f.c.item_key)
        )
        with self.db.connect() as db:
            return [dict(r) for r in db.execute(query).mappings()]


def _index_rows(service_id: str, hook_instance: str,
                card_index: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    now = _now()
    return [
        {"card_uuid": uuid, "service_id": service_id, "hook_instance": hook_instance,
         "rule_id": meta.get("rule_id"), "scenario_id": meta.get("scenario_id"),
         "knowledge_version": meta.get("knowledge_version"), "procedure_id": meta.get("procedure_id"),
         "created_at": now, "indicator": meta.get("indicator")}
        for uuid, meta in card_index.items()
    ]


def _subject_rows(service_id: str, subjects: Mapping[str, CardSubject] | None,
                  at: float | None) -> list[dict[str, Any]]:
    if not subjects or at is None:
        return []
    return [
        {"card_uuid": uuid, "service_id": service_id, "patient_key": s.patient_key,
         "order_codes": s.order_codes, "rule_id": s.rule_id, "verdict": s.verdict, "created_at": at}
        for uuid, s in subjects.items()
    ]


def _audit_row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "hook_instance": entry.hook_instance, "service_id": entry.service_id, "hook": entry.hook,
        "at": _now(), "knowledge_version": entry.knowledge_version,
        "rule_ids": json.dumps(list(entry.rule_ids)),
        "ratings": json.dumps([dict(r) for r in entry.ratings]),
        "card_uuids": json.dumps(list(entry.card_uuids)), "fhir_calls": entry.fhir_calls,
        "client_iss": entry.client_iss, "site_config_version": entry.site_config_version,
        "orders": entry.orders, "missing_facts": json.dumps(list(entry.missing_facts)),
        "unreadable": json.dumps(list(entry.unreadable)),
        "unknown_codes": json.dumps(list(entry.unknown_codes)),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
