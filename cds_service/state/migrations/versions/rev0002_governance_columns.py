"""Revision 2: what the governance view reads (issue 14).

card_index.indicator (info / warning / critical, as sent) and its age index; audit.site_config_version,
orders, missing_facts, unreadable, unknown_codes (JSON text lists). Columns are added only where
missing: a database written by the code of the day before migrations (tables without
alembic_version, already with these columns) is adopted unchanged.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Index, Integer, MetaData, Table, Text, inspect
from sqlalchemy.schema import CreateIndex, DropIndex

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None



def _columns() -> dict[str, list[Column[object]]]:
    # fresh Column objects per run: a Column belongs to the one table it is added to
    return {
        "card_index": [Column("indicator", Text)],
        "audit": [
            Column("site_config_version", Text),
            Column("orders", Integer, nullable=False, server_default="0"),
            Column("missing_facts", Text, nullable=False, server_default="[]"),
            Column("unreadable", Text, nullable=False, server_default="[]"),
            Column("unknown_codes", Text, nullable=False, server_default="[]"),
        ],
    }

_age = Index("card_index_age", Table("card_index", MetaData(), Column("created_at", Text)).c.created_at)


def upgrade() -> None:
    inspector = inspect(op.get_bind())
    for table, columns in _columns().items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:
                op.add_column(table, column)
    op.execute(CreateIndex(_age, if_not_exists=True))


def downgrade() -> None:
    op.execute(DropIndex(_age, if_exists=True))
    for table, columns in _columns().items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
