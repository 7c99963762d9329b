"""The state tables as SQLAlchemy Core metadata: one definition for SQLite and PostgreSQL.

Times that are compared or grouped by day are ISO 8601 UTC text with milliseconds
(`2026-11-30T09:55:01.123+00:00`): they sort as text and `substr(at, 1, 10)` is the day on both
databases. Snooze and card-subject times are unix seconds (compared against a clock only).
Lists (rule ids, ratings, card uuids, facts, codes) are JSON text: the audit row is a record
of one call, read back whole; aggregates that need SQL grouping come from `card_index`.
No column holds a patient, user or order identifier, a token or card text.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text

metadata = MetaData()

card_index = Table(
    "card_index", metadata,
    Column("card_uuid", Text, primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("hook_instance", Text),
    Column("rule_id", Text),
    Column("scenario_id", Text),
    Column("knowledge_version", Text),
    Column("procedure_id", Text),
    Column("created_at", Text, nullable=False),
    Column("indicator", Text),  # info / warning / critical, as sent
)
Index("card_index_age", card_index.c.created_at)

feedback = Table(
    "feedback", metadata,
    Column("item_key", Text, primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("card_uuid", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("accepted_suggestions", Text),
    Column("override_system", Text),
    Column("override_code", Text),
    Column("override_display", Text),
    Column("has_comment", Integer, nullable=False, server_default="0"),
    Column("user_comment", Text),
    Column("outcome_timestamp", Text, nullable=False),
    Column("client_iss", Text),
    Column("received_at", Text, nullable=False),
)
Index("feedback_card", feedback.c.card_uuid)

card_subject = Table(
    "card_subject", metadata,
    Column("card_uuid", Text, primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("patient_key", Text, nullable=False),  # HMAC of fhirServer + patient id, never the id
    Column("order_codes", Text, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("verdict", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("card_subject_age", card_subject.c.created_at)

snooze = Table(
    "snooze", metadata,
    Column("patient_key", Text, primary_key=True),
    Column("order_codes", Text, primary_key=True),
    Column("rule_id", Text, primary_key=True),
    Column("verdict", Text, primary_key=True),
    Column("snoozed_at", Float, nullable=False),
)
Index("snooze_age", snooze.c.snoozed_at)

audit = Table(
    "audit", metadata,
    Column("hook_instance", Text),
    Column("service_id", Text, nullable=False),
    Column("hook", Text),
    Column("at", Text, nullable=False),
    Column("knowledge_version", Text),
    Column("rule_ids", Text, nullable=False),
    Column("ratings", Text, nullable=False),
    Column("card_uuids", Text, nullable=False),
    Column("fhir_calls", Integer, nullable=False),
    Column("client_iss", Text),
    Column("site_config_version", Text),  # issue 14: the site file's version, when one is loaded
    Column("orders", Integer, nullable=False, server_default="0"),  # ServiceRequests in the call
    Column("missing_facts", Text, nullable=False, server_default="[]"),  # facts asked for, by name
    Column("unreadable", Text, nullable=False, server_default="[]"),  # facts present but unreadable
    Column("unknown_codes", Text, nullable=False, server_default="[]"),  # "system|code" not understood
)
Index("audit_age", audit.c.at)

seen_jti = Table(
    "seen_jti", metadata,
    Column("iss", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("exp", Float, nullable=False),
)
