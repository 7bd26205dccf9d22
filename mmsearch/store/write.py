"""The write path: one batch in one transaction (contents, vectors, sources, errors, removals)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from mmsearch.errors import StoreError
from mmsearch.store.bulk import copy_insert, usable
from mmsearch.store.session import insert_for
from mmsearch.store.schema import META_VERSION, Content, ErrorRecord, Meta, Segment, Source, Space, Tombstone, Vector
from mmsearch.util import chunks

if TYPE_CHECKING:
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.session import Database


@dataclass
class Upsert:
    """One source to point at one content (with its vector when newly embedded)."""

    uri: str
    kind: str
    size: int
    mtime_ns: int
    sha256: str
    modality: str
    width: int | None = None
    height: int | None = None
    text: str | None = None
    vector: np.ndarray | None = None
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    info: dict | None = None
    #: windows of a sound embedded with ``vector``: ((start, end) seconds, (n, dim) vectors)
    segments: tuple[list[tuple[float, float]], np.ndarray] | None = None
    #: photo metadata read now (columns of :data:`META_COLUMNS`, values may be None); None: not read
    exif: dict | None = None


#: The ``contents`` columns of photo metadata (schema 3), as :class:`Upsert.exif` and :meth:`Writes.set_metadata` take them.
META_COLUMNS = ("taken_at", "taken_offset", "camera_make", "camera_model", "gps_lat", "gps_lon", "orientation")


@dataclass
class ApplyResult:
    added_contents: int = 0
    added_vectors: int = 0
    removed_contents: int = 0
    removed_sources: int = 0
    generation: int = 0


def _total_changes(s: Session) -> int:
    """Rows inserted/updated/deleted so far on this SQLite connection: O(1), unlike counting a table."""
    return int(s.execute(text("SELECT total_changes()")).scalar_one())


def _inserted(s: Session, stmt, rows: list[dict]) -> int:
    """Rows ``stmt`` (an INSERT … ON CONFLICT DO NOTHING) inserted of ``rows``."""
    if s.get_bind().dialect.name != "sqlite":  # the rows it returns are the ones it inserted
        return len(s.execute(stmt.returning(*stmt.table.primary_key.columns), rows).all())
    before = _total_changes(s)
    s.execute(stmt, rows)
    return _total_changes(s) - before


def gc_contents(s: Session, content_ids: Iterable[int], gen: int) -> int:
    """Delete those contents no source points at any more, tombstoning their vectors."""
    ids = list(set(content_ids))
    if not ids:
        return 0
    still: set[int] = set()
    for part in chunks(ids):
        still.update(s.scalars(select(Source.content_id).where(Source.content_id.in_(part))))
    orphans = [c for c in ids if c not in still]
    for part in chunks(orphans):
        vecs = s.execute(select(Vector.content_id, Vector.space_id, Vector.modality).where(Vector.content_id.in_(part))).all()
        if vecs:
            s.execute(insert_for(s, Tombstone), [{"content_id": c, "space_id": sp, "modality": m, "gen": gen}
                                                 for c, sp, m in vecs])
        s.execute(delete(Vector).where(Vector.content_id.in_(part)))
        s.execute(delete(Segment).where(Segment.content_id.in_(part)))
        s.execute(delete(Content).where(Content.id.in_(part)))
    return len(orphans)


class Writes:
    """Write methods of :class:`mmsearch.store.store.Store` (``self.db`` is its :class:`Database`)."""

    db: "Database"

    def write_manifest(self) -> None: ...  # provided by Store

    def ensure_space(self, info: "SpaceInfo") -> Space:
        with self.db.read() as s:
            found = s.scalars(select(Space).where(Space.key == info.key)).first()
        if found is not None:
            if found.dim != info.dim:
                raise StoreError(f"space {info.key} is recorded with dim {found.dim}, model gives {info.dim}")
            return found
        with self.db.write() as (s, gen):
            space = Space(key=info.key, spec=info.spec, family=info.family, weights=info.weights, dim=info.dim,
                          metric=info.metric, modalities=",".join(info.modalities),
                          preprocess_version=info.preprocess_version, info=json.dumps(info.extra), created_gen=gen)
            s.add(space)
        self.write_manifest()
        return space

    def apply(self, upserts: Sequence[Upsert], space_id: int | None, *, errors: Sequence[tuple[str, str]] = (),
              remove_uris: Sequence[str] = (), error_space: int | None = None) -> ApplyResult:
        """Write one batch in one transaction: contents, vectors, sources, errors, removals.

        ``errors`` are recorded in ``error_space`` (default: ``space_id``; 0 or None: about the file itself).
        A path written into a space, or failing there, supersedes its errors there and those about the file;
        removing a path clears all of its errors."""
        result = ApplyResult()
        with self.db.write() as (s, gen):
            result.generation = gen
            if upserts:
                _upsert(s, upserts, space_id, gen, result)
            if remove_uris:
                removed: set[int] = set()
                for part in chunks(list(remove_uris)):
                    removed.update(s.scalars(select(Source.content_id).where(Source.uri.in_(part))))
                    result.removed_sources += s.execute(delete(Source).where(Source.uri.in_(part))).rowcount or 0
                    s.execute(delete(ErrorRecord).where(ErrorRecord.uri.in_(part)))  # a forgotten path keeps no error
                result.removed_contents += gc_contents(s, removed, gen)
            if errors:
                now = time.time()
                where = (error_space if error_space is not None else space_id) or 0
                if where:  # what a space's model found now supersedes an older word about the file itself
                    for part in chunks([uri for uri, _ in errors]):
                        s.execute(delete(ErrorRecord).where(ErrorRecord.uri.in_(part), ErrorRecord.space_id == 0))
                stmt = insert_for(s, ErrorRecord)
                s.execute(stmt.on_conflict_do_update(index_elements=["uri", "space_id"],
                                                     set_={"reason": stmt.excluded.reason, "gen": gen, "at": now}),
                          [{"uri": uri, "space_id": where, "reason": reason, "gen": gen, "at": now}
                           for uri, reason in dict(errors).items()])
        return result

    def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` in the ``meta`` table (a write of its own generation)."""
        if key in ("schema_version", "generation", "created_at"):
            raise ValueError(f"{key!r} is the store's own")
        with self.db.write() as (s, _gen):
            stmt = insert_for(s, Meta)
            s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}),
                      [{"key": key, "value": value}])

    def set_metadata(self, found: Sequence[tuple[int, dict]]) -> int:
        """Record the photo metadata read for contents indexed before it was (``(content id, columns)``;
        the backfill of :mod:`mmsearch.ingest.backfill`). Returns contents updated."""
        if not found:
            return 0
        with self.db.write() as (s, _gen):
            return _set_metadata(s, [{**_meta_row(cols), "cid": int(cid)} for cid, cols in found], "id = :cid")

    def drop_contents(self, content_ids: Iterable[int]) -> int:
        """Drop contents no source points at (doctor's repair of orphans). Returns how many went."""
        with self.db.write() as (s, gen):
            return gc_contents(s, content_ids, gen)

    def drop_segments(self, pairs: Iterable[tuple[int, int]]) -> int:
        """Delete the windows of these (content id, space id) pairs (doctor's repair). Returns rows deleted."""
        gone = 0
        with self.db.write() as (s, _gen):
            for cid, sid in pairs:
                gone += s.execute(delete(Segment).where(Segment.content_id == cid, Segment.space_id == sid)).rowcount or 0
        return gone

    def delete_rows(self, table: str, rowids: Sequence[int]) -> None:
        """Delete rows of ``table`` by rowid (doctor's repair of rows whose parent is gone)."""
        if table not in ("sources", "vectors"):
            raise ValueError(f"refusing to delete rows of {table!r}")
        with self.db.write() as (s, _gen):
            for part in chunks([int(r) for r in rowids]):
                s.execute(text(f"DELETE FROM {table} WHERE rowid IN ({','.join(map(str, part))})"))


def _meta_row(exif: dict | None) -> dict:
    cols = {c: (exif or {}).get(c) for c in META_COLUMNS}
    cols["meta_version"] = META_VERSION if exif is not None else None
    return cols


def _set_metadata(s: Session, rows: list[dict], where: str) -> int:
    """Metadata onto contents that have none yet (one statement, many rows)."""
    sets = ", ".join(f"{c} = :{c}" for c in (*META_COLUMNS, "meta_version"))
    older = f"(meta_version IS NULL OR meta_version < {META_VERSION})"
    return s.execute(text(f"UPDATE contents SET {sets} WHERE {where} AND {older}"), rows).rowcount or 0


def _complete_videos(s: Session, videos: Sequence[Upsert]) -> None:
    """A video's row as every space read it: the first space to write it (its frames or its soundtrack)
    leaves what only the other knows (sample rate, channels, a cut soundtrack) for the second to fill."""
    given = {u.sha256: u for u in videos if u.sample_rate is not None or u.info}
    if not given:
        return
    rows = []
    for part in chunks(list(given)):
        for sha, rate, ch, info in s.execute(select(Content.sha256, Content.sample_rate, Content.channels, Content.info)
                                             .where(Content.sha256.in_(part))):
            u = given[sha]
            rows.append({"sha": sha, "rate": rate if rate is not None else u.sample_rate,
                         "ch": ch if ch is not None else u.channels,
                         "info": json.dumps(_merged(json.loads(info) if info else {}, u.info or {}))})
    s.execute(text("UPDATE contents SET sample_rate = :rate, channels = :ch, info = :info WHERE sha256 = :sha"), rows)


def _merged(into: dict, patch: dict) -> dict:
    """``patch`` merged into ``into``, objects key by key (JSON merge patch, RFC 7396, without deletions)."""
    out = dict(into)
    for key, value in patch.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _upsert(s: Session, upserts: Sequence[Upsert], space_id: int | None, gen: int, result: ApplyResult) -> None:
    unique = {u.sha256: u for u in upserts}.values()
    rows = [{"sha256": u.sha256, "modality": u.modality, "byte_size": u.size, "width": u.width, "height": u.height,
             "text": u.text, "created_gen": gen, "duration": u.duration, "sample_rate": u.sample_rate,
             "channels": u.channels, "info": json.dumps(u.info) if u.info else None, **_meta_row(u.exif)}
            for u in unique]
    result.added_contents = copy_insert(s, "contents", rows, ["sha256"], returning="id") if usable(s, rows) else \
        _inserted(s, insert_for(s, Content).on_conflict_do_nothing(index_elements=["sha256"]), rows)
    _complete_videos(s, [u for u in unique if u.modality == "video"])
    known = [{**_meta_row(u.exif), "sha": u.sha256} for u in unique if u.exif is not None]
    if known:  # content stored before its metadata was read (an older store) gets it now
        _set_metadata(s, known, "sha256 = :sha")
    ids: dict[str, int] = {}
    for part in chunks(list({u.sha256 for u in upserts})):
        ids.update(s.execute(select(Content.sha256, Content.id).where(Content.sha256.in_(part))).all())
    vec_rows = {}
    for u in upserts:
        if u.vector is not None:
            if space_id is None:
                raise ValueError("vector given without a space")
            vec_rows[ids[u.sha256]] = {"content_id": ids[u.sha256], "space_id": space_id, "modality": u.modality,
                                       "vec": np.asarray(u.vector, dtype=np.float16).tobytes(), "gen": gen}
    if usable(s, list(vec_rows.values())):
        result.added_vectors = copy_insert(s, "vectors", list(vec_rows.values()), ["content_id", "space_id"],
                                           returning="content_id")
    elif vec_rows:
        stmt = insert_for(s, Vector).on_conflict_do_nothing(index_elements=["content_id", "space_id"])
        result.added_vectors = _inserted(s, stmt, list(vec_rows.values()))
    seg_rows = {(ids[u.sha256], i): {"content_id": ids[u.sha256], "space_id": space_id, "idx": i, "start": float(a),
                                     "end": float(b), "vec": np.asarray(v, dtype=np.float16).tobytes()}
                for u in upserts if u.vector is not None and u.segments is not None
                for i, ((a, b), v) in enumerate(zip(*u.segments))}
    if usable(s, list(seg_rows.values())):
        copy_insert(s, "segments", list(seg_rows.values()), ["content_id", "space_id", "idx"])
    elif seg_rows:
        stmt = insert_for(s, Segment).on_conflict_do_nothing(index_elements=["content_id", "space_id", "idx"])
        s.execute(stmt, list(seg_rows.values()))
    uris = [u.uri for u in upserts]
    old: dict[str, int] = {}
    for part in chunks(uris):
        old.update(s.execute(select(Source.uri, Source.content_id).where(Source.uri.in_(part))).all())
    src_rows = [{"uri": u.uri, "kind": u.kind, "content_id": ids[u.sha256], "size": u.size, "mtime_ns": u.mtime_ns,
                 "updated_gen": gen} for u in {u.uri: u for u in upserts}.values()]
    changing = ("kind", "content_id", "size", "mtime_ns", "updated_gen")
    if usable(s, src_rows):
        copy_insert(s, "sources", src_rows, ["uri"], update=changing)
    else:
        stmt = insert_for(s, Source)
        s.execute(stmt.on_conflict_do_update(index_elements=["uri"], set_={k: stmt.excluded[k] for k in changing}),
                  src_rows)
    for part in chunks(uris):  # written into this space: its errors here, and those about the file, are past
        s.execute(delete(ErrorRecord).where(ErrorRecord.uri.in_(part), ErrorRecord.space_id.in_((space_id or 0, 0))))
    new_cid = {u.uri: ids[u.sha256] for u in upserts}
    result.removed_contents += gc_contents(s, {cid for uri, cid in old.items() if cid != new_cid[uri]}, gen)
