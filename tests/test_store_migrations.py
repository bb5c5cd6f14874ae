from __future__ import annotations

import psycopg
import pytest

from quartier.store.migrate import available_migrations, migrate

pytestmark = pytest.mark.services


def test_migrations_apply_twice_without_error(db_url: str) -> None:
    # db_url is already migrated once (cloned from the template); a second run applies nothing
    path, applied = migrate(db_url)
    assert path == "postgres"
    assert applied == []
    with psycopg.connect(db_url) as conn:
        versions = [r[0] for r in conn.execute("select version from schema_migrations order by 1")]
    assert versions == [m.version for m in available_migrations(path)]


def test_fresh_database_gets_every_table(service_urls, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tables = {
            r[0]
            for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")
        }
        kind = conn.execute("select relkind from pg_class where relname = 'observation'").fetchone()
    for t in (
        "thing",
        "location",
        "sensor",
        "observed_property",
        "datastream",
        "feature_of_interest",
        "device",
        "ingest_reject",
        "schema_migrations",
    ):
        assert t in tables
    assert kind == ("p",)  # natively partitioned on plain PostgreSQL


def test_partitions_take_over_rows_from_default(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "insert into observation (datastream_id, phenomenon_time, result) "
            "values (1, '2020-03-15T12:00:00Z', 1.5)"
        )
        assert conn.execute("select count(*) from observation_default").fetchone() == (1,)
        made = conn.execute(
            "select quartier_ensure_observation_partitions("
            "'2020-03-01T00:00:00Z', '2020-05-01T00:00:00Z')"
        ).fetchone()
        assert made == (2,)
        assert conn.execute("select count(*) from observation_default").fetchone() == (0,)
        assert conn.execute("select count(*) from observation_p202003").fetchone() == (1,)
        # idempotent
        assert conn.execute(
            "select quartier_ensure_observation_partitions("
            "'2020-03-01T00:00:00Z', '2020-05-01T00:00:00Z')"
        ).fetchone() == (0,)
