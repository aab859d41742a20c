"""Opening a store: URLs and paths, SQLite durability settings, refusals with a clear ConfigError."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from baselines.common.errors import ConfigError
from rlhf.store import SCHEMA_VERSION, PreferenceStore
from tests.store.helpers import DISCRETE_ACTIONS, OBS_SHAPE, SEGMENT_LENGTH, open_store, populate


def test_path_means_sqlite_file_and_creates_tables(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path) as store:
        assert store.url == f"sqlite:///{path}"
        assert store.queue_size() == 0
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"rlhf_meta", "rlhf_segments", "rlhf_queries", "rlhf_labels", "rlhf_labelers"} <= tables


def test_sqlite_runs_in_wal_with_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    with PreferenceStore(f"sqlite:///{tmp_path / 'prefs.sqlite'}") as store, store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_normal_sync_is_an_explicit_choice(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path, sqlite_synchronous="NORMAL") as store, store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    with pytest.raises(ConfigError, match="FULL or NORMAL"):
        PreferenceStore(path, sqlite_synchronous="OFF")  # type: ignore[arg-type]


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with open_store(path) as store:
        store.set_meta("note", {"owner": "me"})
        labeler_id, token = store.add_labeler("alice")
    with PreferenceStore(path) as store:
        assert store.get_meta("note") == {"owner": "me"}
        labeler = store.labeler_for_token(token)
        assert labeler is not None and labeler.id == labeler_id
        binding = store.env()
        assert binding is not None and binding.env_id == "CartPole-v1"


def test_in_memory_url_works_for_one_process() -> None:
    with PreferenceStore("sqlite://") as store:
        store.bind_env("CartPole-v1", OBS_SHAPE, DISCRETE_ACTIONS, SEGMENT_LENGTH)
        assert store.env() is not None


def test_nonexistent_directory_is_a_config_error_naming_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'prefs.sqlite'}"
    with pytest.raises(ConfigError, match="does not exist") as error:
        PreferenceStore(url)
    assert url in str(error.value)
    assert not (tmp_path / "missing").exists()


def test_directory_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot open"):
        PreferenceStore(f"sqlite:///{tmp_path / 'file' / 'prefs.sqlite'}")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only directories")
def test_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="cannot open the preference store at sqlite:///"):
            PreferenceStore(f"sqlite:///{locked / 'prefs.sqlite'}")
    finally:
        locked.chmod(0o700)


def test_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    path.write_bytes(b"this is not an sqlite database, just text that is long enough to have a header" * 20)
    with pytest.raises(ConfigError, match="cannot open the preference store"):
        PreferenceStore(path)


@pytest.mark.parametrize(
    "url", ["nosuchdriver://host/db", "sqlite+nosuchdbapi:///x.sqlite", "://x", "postgresql://u@host:notaport/db"]
)
def test_unusable_urls_are_config_errors(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        PreferenceStore(url)


def test_unreachable_server_is_a_config_error_without_the_password() -> None:
    # Either the driver is missing or port 1 refuses the connection; both must read as a ConfigError.
    with pytest.raises(ConfigError, match="cannot open the preference store at postgresql") as error:
        PreferenceStore("postgresql://labeler:hunter2@127.0.0.1:1/prefs?connect_timeout=2")
    assert "hunter2" not in str(error.value) and "\n" not in str(error.value)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    PreferenceStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE rlhf_meta SET value = '99' WHERE key = 'rlhf.schema_version'")
    with pytest.raises(ConfigError, match="schema version 99"):
        PreferenceStore(path)


def test_schema_1_store_is_migrated_with_counted_labels(tmp_path: Path) -> None:
    # A schema-1 store has no labels_done column: opening it adds the column, counts the effective labels into it
    # and builds the open-queries index, so the queue reads the same before and after.
    path = tmp_path / "prefs.sqlite"
    with open_store(path) as store:
        _, query_ids = populate(store, np.random.default_rng(0), n_queries=4, labels_wanted=2)
        alice, bob = (store.get_or_create_labeler(name).id for name in ("alice", "bob"))
        store.add_label(query_ids[0], alice, "a", 1.0)
        store.add_label(query_ids[0], bob, "b", 1.0)
        store.add_label(query_ids[1], alice, "skip", 1.0)
        store.add_label(query_ids[2], bob, "tie", 1.0)
        store.undo_last(bob)
        pending_before = [query.id for query in store.pending_queries()]
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX ix_rlhf_queries_open")
        conn.execute("ALTER TABLE rlhf_queries DROP COLUMN labels_done")
        conn.execute("UPDATE rlhf_meta SET value = '1' WHERE key = 'rlhf.schema_version'")
    with PreferenceStore(path) as store:
        assert [query.id for query in store.pending_queries()] == pending_before
        assert pending_before == [query_ids[3], query_ids[2], query_ids[1]]
        assert store.get_meta("rlhf.schema_version") == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        done = dict(conn.execute("SELECT id, labels_done FROM rlhf_queries").fetchall())
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert [done[query_id] for query_id in query_ids] == [2, 1, 0, 0]
    assert "ix_rlhf_queries_open" in indexes


def test_a_schema_2_store_loses_its_status_table_and_keeps_its_labels(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with open_store(path) as store:
        _, query_ids = populate(store, np.random.default_rng(0), n_queries=2, labels_wanted=1)
        store.add_label(query_ids[0], store.get_or_create_labeler("alice").id, "a", 1.0)
    with sqlite3.connect(path) as conn:  # as version 2 left it: the loop's status in a table of its own
        conn.execute("CREATE TABLE rlhf_status (key VARCHAR PRIMARY KEY, value TEXT)")
        conn.execute("UPDATE rlhf_meta SET value = '2' WHERE key = 'rlhf.schema_version'")
    with PreferenceStore(path) as store:
        assert store.get_meta("rlhf.schema_version") == SCHEMA_VERSION
        assert [pair.choice for pair in store.effective_labels()] == ["a"] and store.loop_status() is None
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "rlhf_status" not in tables


def test_a_schema_3_store_gains_the_labeler_quality_table(tmp_path: Path) -> None:
    path = tmp_path / "prefs.sqlite"
    with open_store(path) as store:
        _, query_ids = populate(store, np.random.default_rng(0), n_queries=2, labels_wanted=1)
        store.add_label(query_ids[0], store.get_or_create_labeler("alice").id, "a", 1.0)
    with sqlite3.connect(path) as conn:  # as version 3 left it: no labeler quality
        conn.execute("DROP TABLE rlhf_labeler_quality")
        conn.execute("UPDATE rlhf_meta SET value = '3' WHERE key = 'rlhf.schema_version'")
    with PreferenceStore(path) as store:
        assert store.get_meta("rlhf.schema_version") == SCHEMA_VERSION
        assert [pair.choice for pair in store.effective_labels()] == ["a"]
        assert store.labeler_quality() == {} and store.labeler_weight_overrides() == {}
        store.set_labeler_weight("alice", 0.5)
    with PreferenceStore(path) as reopened:
        assert reopened.labeler_weight_overrides() == {reopened.get_or_create_labeler("alice").id: 0.5}


def test_a_schema_4_store_gains_closable_queries_and_keeps_its_queue(tmp_path: Path) -> None:
    # Version 4 had no closed_at and an open-queries index on the label count alone: opening it adds the column
    # (no query closed) and rebuilds the index with the new predicate, so the queue reads the same.
    path = tmp_path / "prefs.sqlite"
    with open_store(path) as store:
        _, query_ids = populate(store, np.random.default_rng(0), n_queries=3, labels_wanted=1)
        store.add_label(query_ids[0], store.get_or_create_labeler("alice").id, "a", 1.0)
        pending_before = [query.id for query in store.pending_queries()]
    with sqlite3.connect(path) as conn:  # as version 4 left it
        conn.execute("DROP INDEX ix_rlhf_queries_open")
        conn.execute("ALTER TABLE rlhf_queries DROP COLUMN closed_at")
        conn.execute(
            "CREATE INDEX ix_rlhf_queries_open ON rlhf_queries (priority DESC, id) WHERE labels_done < labels_wanted"
        )
        conn.execute("UPDATE rlhf_meta SET value = '4' WHERE key = 'rlhf.schema_version'")
    with PreferenceStore(path) as store:
        assert store.get_meta("rlhf.schema_version") == SCHEMA_VERSION == 5
        assert [query.id for query in store.pending_queries()] == pending_before == [query_ids[2], query_ids[1]]
        assert store.close_open_queries() == 2 and store.pending_queries() == []
    with sqlite3.connect(path) as conn:
        index_sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'ix_rlhf_queries_open'").fetchone()[0]
    assert "closed_at IS NULL" in index_sql
