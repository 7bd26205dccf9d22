"""Many rows into PostgreSQL at once: ``COPY`` into a staging table, then one ``INSERT … SELECT … ON CONFLICT``.

A batch of 256 files writes ~256 rows into each of contents, vectors and sources. Through SQLAlchemy's
``insertmanyvalues`` each becomes one long multi-row ``VALUES`` statement whose text psycopg splits and
converts on every call (too long for its query cache) and whose parameters (a 1 KB fp16 vector each) travel
as bound values: profiled, the client spent as long on that as the server on the rows. ``COPY … FROM STDIN``
streams the rows in PostgreSQL's own copy format instead; the staging table (a session's temporary table,
emptied at commit, made once per connection) keeps the conflict rules of the real insert, so what lands is
exactly what :func:`mmsearch.store.write._upsert`'s statements would have written (the PostgreSQL tests run
through it). SQLite keeps its plain executemany: it is in-process, with no wire to save.
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy.orm import Session

#: batches smaller than this go through the ordinary statements (a COPY's set-up costs a round trip or two)
MIN_ROWS = 32


def usable(s: Session, rows: Sequence[dict]) -> bool:
    """Whether ``rows`` go through COPY here: a PostgreSQL session and enough rows to be worth it."""
    return len(rows) >= MIN_ROWS and s.get_bind().dialect.name == "postgresql"


def copy_insert(s: Session, table: str, rows: Sequence[dict], conflict: Sequence[str], *,
                update: Sequence[str] = (), returning: str | None = None) -> int:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the session's transaction.

    ``conflict``: the unique columns; a row that conflicts is skipped, or with ``update`` has those columns
    set from it. Returns the rows inserted (``returning``: the key column counted; with ``update``, rows
    inserted or updated). Table and column names come from the store's own models, never from input.
    """
    cols = list(rows[0])
    stage = f"mm_stage_{table}"
    raw = s.connection().connection  # the DBAPI (psycopg) connection of this transaction
    names = ", ".join(f'"{c}"' for c in cols)  # quoted: segments have a column named end
    with raw.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                    f"SELECT {names} FROM {table} WITH NO DATA")
        with cur.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in cols])
        action = ("DO UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in update)) if update else "DO NOTHING"
        back = f" RETURNING {returning}" if returning else ""
        cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} "
                    f"ON CONFLICT ({', '.join(conflict)}) {action}{back}")
        done = len(cur.fetchall()) if returning else cur.rowcount
        cur.execute(f"TRUNCATE {stage}")  # the next batch of this transaction stages afresh
    return int(done)
