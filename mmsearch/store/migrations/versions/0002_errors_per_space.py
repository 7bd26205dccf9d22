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
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # the copied ids: the next one is past them
        op.execute("SELECT setval(pg_get_serial_sequence('errors', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM errors")
        # the names a new database gives them, for the revisions after this one
        seq = bind.exec_driver_sql("SELECT pg_get_serial_sequence('errors', 'id')").scalar_one()
        if seq.split(".")[-1] != "errors_id_seq":
            op.execute(f"ALTER SEQUENCE {seq} RENAME TO errors_id_seq")
        pkey = bind.exec_driver_sql("SELECT conname FROM pg_constraint WHERE conrelid = 'errors'::regclass "
                                    "AND contype = 'p'").scalar_one()
        if pkey != "errors_pkey":
            op.execute(f'ALTER TABLE errors RENAME CONSTRAINT "{pkey}" TO errors_pkey')
