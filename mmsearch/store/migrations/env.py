"""Alembic's environment for mmsearch stores: migrations run on the connection :mod:`mmsearch.store.migrate`
hands over (inside its write transaction), never from a URL in a config file."""

from alembic import context

from mmsearch.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
