"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text, update

from api.nc_facts import COLUMNS as FACT_COLUMNS
from api.nc_facts import fact_flags
from api.reports.figures import kept_facts
from api.service import Filters, filtered_ncs
from api.store import (
    DERIVED_FROM,
    EPOCH_TIMES,
    Base,
    Database,
    Nonconformance,
    alembic_config,
    compared_on,
    epochs,
)
from tests.reports_seed import Spec, seed

FILL = importlib.import_module("api.migrations.versions.0012_nc_facts").FILL
EPOCH_FILL = importlib.import_module("api.migrations.versions.0019_nc_epoch_times").fill
FLAGS_FILL = importlib.import_module("api.migrations.versions.0020_nc_facts_flags").fill


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    database = Database(database_url)  # runs the migrations
    try:
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True,
                "include_object": compared_on(connection.dialect.name)})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        database.close()


def test_each_database_has_its_own_newest_first_index(database_url: str) -> None:
    """SQLite gets `ix_nc_newest` (with the searched texts) and not `ix_nc_detected`,
    PostgreSQL the reverse (migration 0021); on SQLite a search of the NC list reads that
    index, not every NC row."""
    database = Database(database_url)
    try:
        indexes = {index["name"] for index in
                   inspect(database.engine).get_indexes("nonconformances")}
        sqlite = database.engine.dialect.name == "sqlite"
        assert ("ix_nc_newest" in indexes, "ix_nc_detected" in indexes) == (sqlite, not sqlite)
        if sqlite:
            query = filtered_ncs(Filters(text="chiller A-01"), datetime.now(UTC)).limit(51)
            compiled = query.compile(database.engine, compile_kwargs={"literal_binds": True})
            with database.engine.connect() as connection:
                plan = " ".join(row[-1] for row in connection.execute(
                    text(f"EXPLAIN QUERY PLAN {compiled}")))
            assert "USING INDEX ix_nc_newest" in plan, plan
    finally:
        database.close()


def test_opening_twice_migrates_once(database_url: str) -> None:
    Database(database_url).close()
    database = Database(database_url)
    try:
        with database.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
            head = ScriptDirectory.from_config(alembic_config(connection)).get_current_head()
        assert revision == head
    finally:
        database.close()


def test_the_facts_migration_fills_what_the_lifecycle_keeps(database_url: str) -> None:
    """Migration 0012 fills the report's facts from the history of NCs recorded before
    it; here the seed's every path, whose facts `kept_facts` kept as they were written,
    is cleared and filled again: both ways must agree on every NC."""
    database = Database(database_url)
    try:
        seed(database, Spec(days=30, assets=20, standards_per_asset=3, ncs_per_pair=6.0))
        columns = [getattr(Nonconformance, name) for name in FACT_COLUMNS]

        def facts() -> dict[int, tuple[Any, ...]]:
            with database.session() as session:
                rows = session.execute(select(Nonconformance.pk, *columns)).all()
            return {row[0]: tuple(row[1:]) for row in rows}

        kept = facts()
        assert {row[1] for row in kept.values()} == {None, "pass", "fail"}
        assert {row[2] for row in kept.values()} == {False, True}
        assert {row[3] for row in kept.values()} == {False, True}
        with database.engine.begin() as connection:
            connection.execute(update(Nonconformance).values(
                acknowledged_at=None, first_verification=None, closed_by_sensor=False,
                chattered=False))
            connection.execute(text(FILL))
        assert facts() == kept
    finally:
        database.close()


def test_the_epoch_migration_fills_the_times_exactly(database_url: str) -> None:
    """Migration 0019 fills each NC's `<time>_us` from its time, to the microsecond, as
    the seed's inserts (api.store.epochs) and the ORM's writes set them."""
    database = Database(database_url)
    try:
        seed(database, Spec(days=30, assets=20, standards_per_asset=3, ncs_per_pair=6.0))
        names = [getattr(Nonconformance, name) for name in EPOCH_TIMES]
        columns = [getattr(Nonconformance, name) for name in epochs({})]

        def kept() -> dict[int, tuple[Any, ...]]:
            with database.session() as session:
                rows = session.execute(select(Nonconformance.pk, *names, *columns)).all()
            times = {row[0]: dict(zip(EPOCH_TIMES, row[1:5], strict=True)) for row in rows}
            assert all(tuple(epochs(times[row[0]]).values()) == tuple(row[5:])
                       for row in rows)
            return {row[0]: tuple(row[5:]) for row in rows}

        written = kept()
        assert all(values[0] is not None for values in written.values())
        with database.engine.begin() as connection:
            connection.execute(update(Nonconformance).values(dict.fromkeys(epochs({}))))
            connection.execute(text(EPOCH_FILL(connection.dialect.name)))
        assert kept() == written
    finally:
        database.close()


def test_the_flags_are_one_definition_in_python_in_sql_and_in_the_migration(
        database_url: str) -> None:
    """An NC's `facts` (api.nc_facts.fact_flags, kept by the seed's inserts and the ORM's
    writes), the reports' SQL for an NC without them, and migration 0020's fill agree on
    every NC of the seed's every path, on both databases."""
    database = Database(database_url)
    try:
        seed(database, Spec(days=30, assets=20, standards_per_asset=3, ncs_per_pair=6.0))
        n = Nonconformance
        computed = kept_facts(kept=False)[0]
        columns = [getattr(n, name) for name in DERIVED_FROM]

        def flags() -> dict[int, int]:
            with database.session() as session:
                rows = session.execute(select(n.pk, n.facts, computed, *columns)).all()
            for row in rows:
                assert row[1] == row[2] == fact_flags(dict(zip(DERIVED_FROM, row[3:],
                                                               strict=True))), row
            return {row[0]: row[1] for row in rows}

        written = flags()
        assert len({value & 7 for value in written.values()}) >= 5  # most states
        assert len({value >> 3 for value in written.values()}) >= 20  # many facts
        with database.engine.begin() as connection:
            connection.execute(update(n).values(facts=None))
            connection.execute(text(FLAGS_FILL()))
        assert flags() == written
    finally:
        database.close()
