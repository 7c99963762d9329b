"""Revision 1: the state schema as the service wrote it before migrations existed.

card_index, feedback, card_subject, snooze, audit (protocol/feedback.py) and seen_jti
(protocol/auth.py), frozen here as they were: later revisions change them, never this script.
Every table and index is created only if missing, so a database made by that code (which may lack
the later tables: snooze, audit) is adopted as it is and completed.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_schema = MetaData()
Table(
    "card_index", _schema,
    Column("card_uuid", Text, primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("hook_instance", Text),
    Column("rule_id", Text),
    Column("scenario_id", Text),
    Column("knowledge_version", Text),
    Column("procedure_id", Text),
    Column("created_at", Text, nullable=False),
)
_feedback = Table(
    "feedback", _schema,
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
Index("feedback_card", _feedback.c.card_uuid)
_card_subject = Table(
    "card_subject", _schema,
    Column("card_uuid", Text, primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("patient_key", Text, nullable=False),
    Column("order_codes", Text, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("verdict", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("card_subject_age", _card_subject.c.created_at)
_snooze = Table(
    "snooze", _schema,
    Column("patient_key", Text, primary_key=True),
    Column("order_codes", Text, primary_key=True),
    Column("rule_id", Text, primary_key=True),
    Column("verdict", Text, primary_key=True),
    Column("snoozed_at", Float, nullable=False),
)
Index("snooze_age", _snooze.c.snoozed_at)
_audit = Table(
    "audit", _schema,
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
)
Index("audit_age", _audit.c.at)
Table(
    "seen_jti", _schema,
    Column("iss", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("exp", Float, nullable=False),
)


def upgrade() -> None:
    for table in _schema.sorted_tables:
        op.execute(CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            op.execute(CreateIndex(index, if_not_exists=True))


def downgrade() -> None:
    for table in reversed(_schema.sorted_tables):
        op.execute(DropTable(table, if_exists=True))
