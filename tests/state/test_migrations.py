"""Schema migrations (Alembic, cds_service/state/migrations): old databases upgrade in place, the
scripts build exactly the schema of cds_service/state/tables.py, PostgreSQL refuses an old schema."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cds_service import cli
from cds_service.app import create_app
from cds_service.config import ConfigError, Settings
from cds_service.protocol.auth import DatabaseReplayCache
from cds_service.protocol.feedback import AuditEntry, FeedbackStore, parse_feedback
from cds_service.state import migrate
from cds_service.state.db import Database
from cds_service.state.tables import metadata

# The schema as the service created it before migrations existed (git history of
# protocol/feedback.py and protocol/auth.py): last week's file, and this morning's.
LAST_WEEK = """
CREATE TABLE card_index (card_uuid TEXT PRIMARY KEY, service_id TEXT NOT NULL, hook_instance TEXT,
    rule_id TEXT, scenario_id TEXT, knowledge_version TEXT, procedure_id TEXT, created_at TEXT NOT NULL);
CREATE TABLE feedback (item_key TEXT PRIMARY KEY, service_id TEXT NOT NULL, card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL, accepted_suggestions TEXT, override_system TEXT, override_code TEXT,
    override_display TEXT, has_comment INTEGER NOT NULL DEFAULT 0, user_comment TEXT,
    outcome_timestamp TEXT NOT NULL, client_iss TEXT, received_at TEXT NOT NULL);
CREATE INDEX feedback_card ON feedback(card_uuid);
CREATE TABLE seen_jti (iss TEXT, jti TEXT, exp REAL, PRIMARY KEY (iss, jti));
INSERT INTO card_index VALUES ('old-card', 'imaging-appropriateness', 'h', 'old-rule', 's', '2026.10',
    'ct-cap', '2026-11-20T10:00:00.000+00:00');
INSERT INTO feedback (item_key, service_id, card_uuid, outcome, outcome_timestamp, received_at)
    VALUES ('k1', 'imaging-appropriateness', 'old-card', 'accepted', '2026-11-20T10:01:00Z',
    '2026-11-20T10:01:00Z');
INSERT INTO seen_jti VALUES ('https://ehr', 'live-jti', 9999999999.0);
"""
THIS_MORNING = LAST_WEEK + """
CREATE TABLE card_subject (card_uuid TEXT PRIMARY KEY, service_id TEXT NOT NULL, patient_key TEXT NOT NULL,
    order_codes TEXT NOT NULL, rule_id TEXT NOT NULL, verdict TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX card_subject_age ON card_subject(created_at);
CREATE TABLE snooze (patient_key TEXT NOT NULL, order_codes TEXT NOT NULL, rule_id TEXT NOT NULL,
    verdict TEXT NOT NULL, snoozed_at REAL NOT NULL,
    PRIMARY KEY (patient_key, order_codes, rule_id, verdict));
CREATE INDEX snooze_age ON snooze(snoozed_at);
CREATE TABLE audit (hook_instance TEXT, service_id TEXT NOT NULL, hook TEXT, at TEXT NOT NULL,
    knowledge_version TEXT, rule_ids TEXT NOT NULL, ratings TEXT NOT NULL, card_uuids TEXT NOT NULL,
    fhir_calls INTEGER NOT NULL, client_iss TEXT);
CREATE INDEX audit_age ON audit(at);
INSERT INTO audit VALUES ('h', 'imaging-appropriateness', 'order-select', '2026-11-30T08:00:00.000+00:00',
    '2026.11', '[]', '[]', '[]', 0, NULL);
"""
# the first "state: tables" commit: new columns already there, still no alembic_version
_NEW_COLUMNS = {
    "fhir_calls INTEGER NOT NULL, client_iss TEXT)":
        "fhir_calls INTEGER NOT NULL, client_iss TEXT, site_config_version TEXT,"
        " orders INTEGER NOT NULL DEFAULT 0, missing_facts TEXT NOT NULL DEFAULT '[]',"
        " unreadable TEXT NOT NULL DEFAULT '[]', unknown_codes TEXT NOT NULL DEFAULT '[]')",
    "created_at TEXT NOT NULL);": "created_at TEXT NOT NULL, indicator TEXT);",
    "'ct-cap', '2026-11-20T10:00:00.000+00:00');": "'ct-cap', '2026-11-20T10:00:00.000+00:00', NULL);",
    "'2026.11', '[]', '[]', '[]', 0, NULL);":
        "'2026.11', '[]', '[]', '[]', 0, NULL, NULL, 0, '[]', '[]', '[]');",
}
BEFORE_MIGRATIONS = THIS_MORNING
for _old, _new in _NEW_COLUMNS.items():
    BEFORE_MIGRATIONS = BEFORE_MIGRATIONS.replace(_old, _new, 1)


def _differences(db: Database) -> list[tuple]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        found = [d[0] if isinstance(d, list) else d for d in compare_metadata(context, metadata)]
    return [d for d in found if not (d[0] == "remove_table" and d[1].name == "alembic_version")]


def _schema_matches_tables(db: Database) -> None:
    assert _differences(db) == []


def _adopted_schema_matches_tables(db: Database) -> None:
    """A file the old code made differs only where SQLite does not care: its TEXT primary keys
    were declared without NOT NULL (the code never writes NULL there) and its REAL columns are
    FLOAT in tables.py (the same affinity)."""
    for difference in _differences(db):
        kind, table, column = difference[0], difference[2], difference[3]
        if kind == "modify_nullable":
            assert metadata.tables[table].c[column].primary_key, difference
        else:
            assert kind == "modify_type" and str(difference[5]) == "REAL", difference


def test_head_is_the_last_script():
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_current_head() == migrate.HEAD
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == list(migrate.REVISIONS)


@pytest.mark.parametrize("old", [LAST_WEEK, THIS_MORNING, BEFORE_MIGRATIONS],
                         ids=["last-week", "this-morning", "tables-without-alembic-version"])
def test_an_old_sqlite_file_upgrades_in_place_and_keeps_its_rows(tmp_path, old):
    path = tmp_path / "feedback.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(old)
    store = FeedbackStore(path)  # the embedded default migrates on opening
    assert migrate.current(store.db) == migrate.HEAD
    _adopted_schema_matches_tables(store.db)
    assert [(r["card_uuid"], r["rule_id"]) for r in store.rows()] == [("old-card", "old-rule")]
    assert not DatabaseReplayCache(store.db).first_use("https://ehr", "live-jti", 9999999999.0)
    store.index_cards("imaging-appropriateness", "h2", {"new-card": {"rule_id": "r", "indicator": "info"}})
    items = parse_feedback({"feedback": [{"card": "new-card", "outcome": "accepted", "acceptedSuggestions":
                                          [{"id": "s"}], "outcomeTimestamp": "2026-11-30T10:00:00Z"}]})
    assert store.record("imaging-appropriateness", items).stored == 1
    store.audit(AuditEntry("imaging-appropriateness", "h2", "order-select", "v", (), (), (), 0, None,
                           orders=1))
    assert store.audit_rows()[-1]["orders"] == 1
    assert store.ready() is None


def test_a_fresh_database_gets_the_schema_of_tables_py(state_url):
    db = Database(state_url)
    assert migrate.upgrade(db) == (None, migrate.HEAD)
    assert migrate.upgrade(db) == (migrate.HEAD, migrate.HEAD)  # idempotent
    _schema_matches_tables(db)


def test_revision_one_then_two(state_url):
    db = Database(state_url)
    assert migrate.upgrade(db, "0001") == (None, "0001")
    with pytest.raises(migrate.SchemaTooOld, match="cds-service migrate"):
        migrate.check(db)
    assert migrate.upgrade(db) == ("0001", migrate.HEAD)
    _schema_matches_tables(db)


def _pg_settings(url: str, tmp_path: Path, **overrides) -> Settings:
    return replace(Settings(), database_url=url, feedback_db=tmp_path / "unused.sqlite3", **overrides)


def test_postgresql_refuses_to_start_on_an_old_schema_and_names_the_command(pg_url, tmp_path):
    migrate.upgrade(Database(pg_url), "0001")
    with pytest.raises(ConfigError, match="cds-service migrate") as refused:
        create_app(_pg_settings(pg_url, tmp_path))
    assert "0001" in str(refused.value) and migrate.HEAD in str(refused.value)
    create_app(_pg_settings(pg_url, tmp_path, database_auto_migrate=True))  # migrates, then serves
    assert migrate.current(Database(pg_url)) == migrate.HEAD
    assert not (tmp_path / "unused.sqlite3").exists()


def test_postgresql_never_migrated_refuses_too(pg_url, tmp_path):
    with pytest.raises(ConfigError, match="revision none.*cds-service migrate"):
        create_app(_pg_settings(pg_url, tmp_path))


def test_serve_refuses_with_one_line_and_status_2(pg_url, monkeypatch, capsys, tmp_path):
    migrate.upgrade(Database(pg_url), "0001")
    monkeypatch.setenv("CDS_DATABASE_URL", pg_url)
    # `serve` points prometheus_client at a directory through the environment: undone after the test
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    assert cli.main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    refusals = [line for line in err if line.startswith("cds-service: refusing to start:")]
    assert len(refusals) == 1 and "cds-service migrate" in refusals[0], err


def test_migrate_command_on_both_databases(state_url, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CDS_DATABASE_URL", state_url)
    assert cli.main(["migrate"]) == 0
    assert f"revision none -> {migrate.HEAD} (migrated)" in capsys.readouterr().out
    assert cli.main(["migrate"]) == 0
    assert f"revision {migrate.HEAD} -> {migrate.HEAD} (already current)" in capsys.readouterr().out
    assert migrate.current(Database(state_url)) == migrate.HEAD


def test_migrate_default_is_the_sqlite_file(monkeypatch, capsys, tmp_path):
    path = tmp_path / "state" / "feedback.sqlite3"
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(path))
    monkeypatch.delenv("CDS_DATABASE_URL", raising=False)
    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert str(path) in out and f"-> {migrate.HEAD}" in out


def test_the_password_is_never_printed(pg_url, monkeypatch, capsys):
    secret_url = pg_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    monkeypatch.setenv("CDS_DATABASE_URL", secret_url)
    assert cli.main(["migrate"]) == 0
    assert cli.main(["check"]) == 0
    out = capsys.readouterr()
    assert "s3cret-pw" not in out.out + out.err
    assert "postgres:***@" in out.out
    assert f"schema revision {migrate.HEAD} (current)" in out.out


def test_prune_command_on_both_databases(state_url, monkeypatch, capsys):
    migrate.upgrade(Database(state_url))
    store = FeedbackStore(Database(state_url))
    store.audit(AuditEntry("imaging-appropriateness", "h", "order-select", "v", (), (), (), 0, None))
    DatabaseReplayCache(store.db).first_use("https://ehr", "expired", 1.0)
    monkeypatch.setenv("CDS_DATABASE_URL", state_url)
    monkeypatch.setenv("CDS_RETENTION_DAYS", "0")
    assert cli.main(["prune"]) == 0
    assert "1 audit" in (out := capsys.readouterr().out) and "1 seen_jti" in out
    assert store.audit_rows() == []


def test_replicas_migrating_at_once_migrate_once(state_url, tmp_path):
    """Replicas started together, each running `cds-service migrate` (PostgreSQL: advisory lock;
    SQLite: file lock)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATABASE_URL"] = state_url
    runs = [subprocess.Popen([sys.executable, "-m", "cds_service.cli", "migrate"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert all(f"-> {migrate.HEAD}" in out for out, _ in outputs)
    assert sum("(migrated)" in out for out, _ in outputs) >= 1
    _schema_matches_tables(Database(state_url))
