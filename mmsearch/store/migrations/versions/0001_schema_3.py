"""Schema 3, the first Alembic revision: the schema mmsearch stores had when migrations moved to Alembic.

A SQLite store made before then (``meta.schema_version`` 1 to 3, no ``alembic_version`` table) is brought to
schema 3 by :data:`mmsearch.store.migrate.LEGACY` and stamped with this revision; a new database (SQLite or
PostgreSQL) is created by it. Sizes and modification times are 64-bit on PostgreSQL (``BIGINT``; SQLite's
``INTEGER`` already is), and PostgreSQL gets ``mm_fold``, the case folding text filters compare with (SQLite
registers it per connection: :mod:`mmsearch.store.session`).

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: 64-bit where the database has a narrower INTEGER (PostgreSQL); SQLite's INTEGER is 64-bit already.
BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

MM_FOLD = ("CREATE OR REPLACE FUNCTION mm_fold(value text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
           "AS $$ SELECT lower(value) $$")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(MM_FOLD)
    op.create_table('contents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('byte_size', BIG, nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('created_gen', sa.Integer(), nullable=False),
    sa.Column('duration', sa.Float(), nullable=True),
    sa.Column('sample_rate', sa.Integer(), nullable=True),
    sa.Column('channels', sa.Integer(), nullable=True),
    sa.Column('info', sa.Text(), nullable=True),
    sa.Column('taken_at', sa.String(length=19), nullable=True),
    sa.Column('taken_offset', sa.String(length=6), nullable=True),
    sa.Column('camera_make', sa.Text(), nullable=True),
    sa.Column('camera_model', sa.Text(), nullable=True),
    sa.Column('gps_lat', sa.Float(), nullable=True),
    sa.Column('gps_lon', sa.Float(), nullable=True),
    sa.Column('orientation', sa.Integer(), nullable=True),
    sa.Column('meta_version', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('contents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contents_modality'), ['modality'], unique=False)

    op.create_table('errors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('gen', sa.Integer(), nullable=False),
    sa.Column('at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uri'),
    sqlite_autoincrement=True
    )
    op.create_table('meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('spaces',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('family', sa.String(length=256), nullable=False),
    sa.Column('weights', sa.String(length=256), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('modalities', sa.String(length=64), nullable=False),
    sa.Column('preprocess_version', sa.Integer(), nullable=False),
    sa.Column('info', sa.Text(), nullable=False),
    sa.Column('created_gen', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key'),
    sqlite_autoincrement=True
    )
    op.create_table('tombstones',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('content_id', sa.Integer(), nullable=False),
    sa.Column('space_id', sa.Integer(), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('gen', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.create_index('ix_tomb_space_mod_gen', ['space_id', 'modality', 'gen'], unique=False)

    op.create_table('segments',
    sa.Column('content_id', sa.Integer(), nullable=False),
    sa.Column('space_id', sa.Integer(), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('vec', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['content_id'], ['contents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], ),
    sa.PrimaryKeyConstraint('content_id', 'space_id', 'idx')
    )
    op.create_table('sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('content_id', sa.Integer(), nullable=False),
    sa.Column('size', BIG, nullable=False),
    sa.Column('mtime_ns', BIG, nullable=False),
    sa.Column('updated_gen', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['content_id'], ['contents.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uri'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.create_index('ix_sources_content', ['content_id'], unique=False)

    op.create_table('vectors',
    sa.Column('content_id', sa.Integer(), nullable=False),
    sa.Column('space_id', sa.Integer(), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('vec', sa.LargeBinary(), nullable=False),
    sa.Column('gen', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['content_id'], ['contents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], ),
    sa.PrimaryKeyConstraint('content_id', 'space_id')
    )
    with op.batch_alter_table('vectors', schema=None) as batch_op:
        batch_op.create_index('ix_vectors_space_mod_gen', ['space_id', 'modality', 'gen'], unique=False)



def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS mm_fold(text)")
    with op.batch_alter_table('vectors', schema=None) as batch_op:
        batch_op.drop_index('ix_vectors_space_mod_gen')

    op.drop_table('vectors')
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_index('ix_sources_content')

    op.drop_table('sources')
    op.drop_table('segments')
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.drop_index('ix_tomb_space_mod_gen')

    op.drop_table('tombstones')
    op.drop_table('spaces')
    op.drop_table('meta')
    op.drop_table('errors')
    with op.batch_alter_table('contents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contents_modality'))

    op.drop_table('contents')
