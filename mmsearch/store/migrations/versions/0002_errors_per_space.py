"""Errors recorded per (path, space): ``errors`` gains ``space_id`` (0: about the file, or a space not made yet).

A path's one record used to be cleared by a success in any space, so a video whose frames indexed while its
soundtrack failed in the sound space lost the soundtrack's error. The table is made anew (SQLite cannot swap a
unique constraint in place) and its rows are kept, as errors of no particular space (``space_id`` 0): the next
sync of their folders records them again where they belong.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('errors_0002',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('space_id', sa.Integer(), server_default='0', nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('gen', sa.Integer(), nullable=False),
    sa.Column('at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uri', 'space_id', name='uq_errors_uri_space'),
    sqlite_autoincrement=True
    )
    op.execute("INSERT INTO errors_0002 (id, uri, space_id, reason, gen, at) SELECT id, uri, 0, reason, gen, at FROM errors")
    op.drop_table('errors')
    op.rename_table('errors_0002', 'errors')
    _named_as_new(op.get_bind(), unique=None)


def downgrade() -> None:
    """Back to one record per path (revision 0001, schema 3, for an older release): of a path's records, the
    one about the file itself if there is one, else the latest."""
    op.create_table('errors_0001',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('gen', sa.Integer(), nullable=False),
    sa.Column('at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uri'),
    sqlite_autoincrement=True
    )
    op.execute("INSERT INTO errors_0001 (id, uri, reason, gen, at) SELECT id, uri, reason, gen, at FROM errors e "
               "WHERE e.id = (SELECT o.id FROM errors o WHERE o.uri = e.uri "
               "ORDER BY CASE WHEN o.space_id = 0 THEN 0 ELSE 1 END, o.gen DESC, o.id DESC LIMIT 1)")
    op.drop_table('errors')
    op.rename_table('errors_0001', 'errors')
    op.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    _named_as_new(op.get_bind(), unique="errors_uri_key")


def _named_as_new(bind, unique: str | None) -> None:
    """On PostgreSQL, the copied table's sequence (moved past the copied ids), primary key and (``unique``)
    unique constraint named as a new database of that revision names them, for the revisions after."""
    if bind.dialect.name != "postgresql":
        return
    op.execute("SELECT setval(pg_get_serial_sequence('errors', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM errors")
    seq = bind.exec_driver_sql("SELECT pg_get_serial_sequence('errors', 'id')").scalar_one()
    if seq.split(".")[-1] != "errors_id_seq":
        op.execute(f"ALTER SEQUENCE {seq} RENAME TO errors_id_seq")
    for kind, name in (("p", "errors_pkey"), ("u", unique)):
        if name is None:
            continue
        found = bind.exec_driver_sql("SELECT conname FROM pg_constraint WHERE conrelid = 'errors'::regclass "
                                     f"AND contype = '{kind}'").scalar_one()
        if found != name:
            op.execute(f'ALTER TABLE errors RENAME CONSTRAINT "{found}" TO {name}')
