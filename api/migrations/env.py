"""Alembic environment: migrations run on the connection `api.store.Database` hands over."""

from __future__ import annotations

from alembic import context

from api.store import Base, compared_on

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True,
                  include_object=compared_on(connection.dialect.name))
with context.begin_transaction():
    context.run_migrations()
