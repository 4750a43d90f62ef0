"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from api.store import Base, Database, alembic_config


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    database = Database(database_url)  # runs the migrations
    try:
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
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
