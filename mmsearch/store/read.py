"""Read queries: what ingest looks up, what the index is built from, what a result shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import distinct, func, select

from mmsearch.store.schema import Content, ErrorRecord, Meta, Segment, Source, Space, Tombstone, Vector
from mmsearch.util import chunks, under_bounds

if TYPE_CHECKING:
    from mmsearch.store.filtering import Cond
    from mmsearch.store.session import Database

#: Vectors read per block when an index is (re)built: bounded memory, whatever the store's size.
BLOCK = 65_536


@dataclass(frozen=True)
class SourceState:
    id: int
    content_id: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ContentMeta:
    id: int
    modality: str
    text: str | None
    width: int | None
    height: int | None
    uris: tuple[str, ...]
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    taken_at: str | None = None  # "YYYY-MM-DD HH:MM:SS" (EXIF, the camera's clock)
    taken_offset: str | None = None  # "+02:00" when the file says
    camera_make: str | None = None
    camera_model: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    orientation: int | None = None


#: ContentMeta's fields after ``uris``, as columns of ``contents``
_META_FIELDS = ("duration", "sample_rate", "channels", "taken_at", "taken_offset", "camera_make", "camera_model",
                "gps_lat", "gps_lon", "orientation")


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """fp16 blobs as stored → an (N, dim) float32 array."""
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), dim).astype(np.float32)


def under_clause(column, root: str):
    """SQL for ``column`` equal to ``root`` or below it, as an index-friendly range (no LIKE escaping)."""
    low, high = under_bounds(root)
    return (column == root) | ((column >= low) & (column < high))


def _where(space_id: int, modality: str, after: int = 0, until: int | None = None, table=Vector):
    cond = [table.space_id == space_id, table.modality == modality]
    if after:
        cond.append(table.gen > after)
    if until is not None:
        cond.append(table.gen <= until)
    return cond


class Reads:
    """Read methods of :class:`mmsearch.store.store.Store` (``self.db`` is its :class:`Database`)."""

    db: "Database"
    _held: dict[tuple[int, int, str], bool]  # has_vectors per (generation, space, modality)

    def generation(self) -> int:
        return self.db.generation()

    def meta_value(self, key: str) -> str | None:
        """A value of the ``meta`` table (what layers above keep with the store, e.g. score calibration)."""
        with self.db.read() as s:
            return s.execute(select(Meta.value).where(Meta.key == key)).scalar_one_or_none()

    def spaces(self) -> list[Space]:
        with self.db.read() as s:
            return list(s.scalars(select(Space).order_by(Space.id)))

    def _dim(self, s, space_id: int) -> int:
        return int(s.execute(select(Space.dim).where(Space.id == space_id)).scalar_one())

    # ---- lookups used by ingest --------------------------------------------------------------------
    def lookup_sources(self, uris: Sequence[str]) -> dict[str, SourceState]:
        out: dict[str, SourceState] = {}
        with self.db.read() as s:
            for part in chunks(list(uris)):
                rows = s.execute(select(Source.uri, Source.id, Source.content_id, Source.size, Source.mtime_ns)
                                 .where(Source.uri.in_(part)))
                out.update((uri, SourceState(sid, cid, size, mtime)) for uri, sid, cid, size, mtime in rows)
        return out

    def contents_with_vectors(self, content_ids: Iterable[int], space_id: int) -> set[int]:
        out: set[int] = set()
        with self.db.read() as s:
            for part in chunks(list(content_ids)):
                out.update(s.scalars(select(Vector.content_id)
                                     .where(Vector.space_id == space_id, Vector.content_id.in_(part))))
        return out

    def contents_by_sha(self, shas: Iterable[str], space_id: int) -> dict[str, tuple[int, bool]]:
        """sha256 → (content id, has a vector in ``space_id``)."""
        out: dict[str, tuple[int, bool]] = {}
        with self.db.read() as s:
            for part in chunks(list(set(shas))):
                rows = s.execute(
                    select(Content.sha256, Content.id, Vector.space_id)
                    .outerjoin(Vector, (Vector.content_id == Content.id) & (Vector.space_id == space_id))
                    .where(Content.sha256.in_(part)))
                out.update((sha, (cid, sp is not None)) for sha, cid, sp in rows)
        return out

    def uris_under(self, root: str, *, kind: str = "file") -> list[str]:
        """All source uris equal to ``root`` or below it (``root`` is an absolute path)."""
        with self.db.read() as s:
            return list(s.scalars(select(Source.uri).where(Source.kind == kind, under_clause(Source.uri, root))))

    def error_uris_under(self, root: str) -> list[str]:
        """Paths with a recorded error equal to ``root`` or below it."""
        with self.db.read() as s:
            return list(s.scalars(select(ErrorRecord.uri).distinct().where(under_clause(ErrorRecord.uri, root))))

    def file_uris(self) -> list[str]:
        with self.db.read() as s:
            return list(s.scalars(select(Source.uri).where(Source.kind == "file")))

    def error_uris(self) -> list[str]:
        with self.db.read() as s:
            return list(s.scalars(select(ErrorRecord.uri).distinct()))

    # ---- vectors: what indexes are built from ----------------------------------------------------
    def filtered_ids(self, conds: Sequence["Cond"], space_id: int, modality: str) -> np.ndarray:
        """Sorted ids of the contents of one modality with a vector in a space that every condition holds
        for: the candidates of a filtered search. The conditions run over ``contents`` (small rows); the
        vector is only looked up in its primary key (its blob is never read)."""
        from mmsearch.store.filtering import where

        has_vector = select(Vector.content_id).where(Vector.content_id == Content.id, Vector.space_id == space_id)
        with self.db.read() as s:
            q = select(Content.id).where(Content.modality == modality, has_vector.exists(), where(conds))
            return np.fromiter(s.scalars(q.order_by(Content.id)), np.int64)

    def filtered_vectors(self, conds: Sequence["Cond"], space_id: int, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the same candidates as :meth:`filtered_ids`, in id order, in one query: the
        exact scan of a small filtered set."""
        from mmsearch.store.filtering import where

        with self.db.read() as s:
            rows = s.execute(select(Content.id, Vector.vec)
                             .join(Vector, (Vector.content_id == Content.id) & (Vector.space_id == space_id))
                             .where(Content.modality == modality, where(conds)).order_by(Content.id)).all()
            dim = self._dim(s, space_id)
        return np.fromiter((r[0] for r in rows), np.int64, len(rows)), decode_vectors([r[1] for r in rows], dim)

    def missing_metadata(self, root: str, limit: int = 1000, after: int = 0) -> list[tuple[int, list[str]]]:
        """Image contents at or below ``root`` whose metadata was never read (indexed before schema 3),
        with their file paths: what the next ``index`` of that folder backfills. Up to ``limit``, by id > ``after``."""
        from mmsearch.store.schema import META_VERSION

        below = (Source.kind == "file") & under_clause(Source.uri, root)
        with self.db.read() as s:
            ids = list(s.scalars(select(Content.id).where(
                Content.modality == "image", Content.id > after,
                Content.meta_version.is_(None) | (Content.meta_version < META_VERSION),
                select(Source.id).where(Source.content_id == Content.id, below).exists(),
            ).order_by(Content.id).limit(limit)))
            rows = s.execute(select(Source.content_id, Source.uri).where(Source.content_id.in_(ids), below)
                             .order_by(Source.content_id, Source.uri)).all() if ids else []
        out: dict[int, list[str]] = {}
        for cid, uri in rows:
            out.setdefault(cid, []).append(uri)
        return list(out.items())

    def iter_vectors(self, space_id: int, modality: str, *, since_gen: int = 0, until_gen: int | None = None,
                     block: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32) blocks of one space and modality, in id order (keyset paging).

        Run it inside :meth:`snapshot` when the blocks must all come from one state.
        """
        return self._blocks(space_id, lambda last: select(Vector.content_id, Vector.vec).where(
            *_where(space_id, modality, since_gen, until_gen), Vector.content_id > last).order_by(Vector.content_id), block)

    def _blocks(self, space_id: int, page: Callable[[int], Any], block: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) blocks of a keyset-paged select of (id, fp16 blob) rows: ``page(last)`` selects
        the rows after id ``last``, in id order."""
        last = -1
        while True:
            with self.db.read() as s:
                rows = s.execute(page(last).limit(block)).all()
                dim = self._dim(s, space_id)
            if not rows:
                return
            last = rows[-1][0]
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), decode_vectors([r[1] for r in rows], dim)
            if len(rows) < block:
                return

    def vectors(self, space_id: int, modality: str, *, since_gen: int = 0,
                until_gen: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of one space and modality (optionally those added after ``since_gen``) at once."""
        parts = list(self.iter_vectors(space_id, modality, since_gen=since_gen, until_gen=until_gen))
        if not parts:
            with self.db.read() as s:
                return np.zeros(0, np.int64), np.zeros((0, self._dim(s, space_id)), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def vector_ids(self, space_id: int, modality: str) -> np.ndarray:
        with self.db.read() as s:
            return np.fromiter(s.scalars(select(Vector.content_id).where(*_where(space_id, modality))
                                         .order_by(Vector.content_id)), np.int64)

    def sample_vectors(self, space_id: int, modality: str, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` vectors drawn at random (all when there are fewer): training data for IVF/PQ, no full load."""
        ids = self.vector_ids(space_id, modality)
        if len(ids) > n:
            ids = np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))
        found = self.vectors_for(ids.tolist(), space_id)
        with self.db.read() as s:
            dim = self._dim(s, space_id)
        return np.stack([found[int(i)] for i in ids if int(i) in found]) if found else np.zeros((0, dim), np.float32)

    def spread_vectors(self, space_id: int, modality: str, n: int) -> np.ndarray:
        """About ``n`` vectors spread evenly over the space's rows of one modality (every ``count // n``-th
        by id): deterministic, and only the chosen vectors are read."""
        with self.db.read() as s:
            count = int(s.execute(select(func.count()).select_from(Vector).where(*_where(space_id, modality))).scalar_one())
            step = max(1, count // max(n, 1))
            numbered = select(Vector.content_id, func.row_number().over(order_by=Vector.content_id).label("rn")) \
                .where(*_where(space_id, modality)).subquery()
            ids = list(s.scalars(select(numbered.c.content_id).where((numbered.c.rn - 1) % step == 0).limit(n)))
        found = self.vectors_for(ids, space_id)
        with self.db.read() as s:
            return np.stack([found[i] for i in ids]) if found else np.zeros((0, self._dim(s, space_id)), np.float32)

    def tombstones(self, space_id: int, modality: str, *, since_gen: int, until_gen: int | None = None) -> np.ndarray:
        with self.db.read() as s:
            q = select(Tombstone.content_id).where(*_where(space_id, modality, since_gen, until_gen, Tombstone))
            return np.fromiter(s.scalars(q), dtype=np.int64)

    def count_vectors(self, space_id: int, modality: str, *, until_gen: int | None = None) -> int:
        with self.db.read() as s:
            q = select(func.count()).select_from(Vector).where(*_where(space_id, modality, 0, until_gen))
            return int(s.execute(q).scalar_one())

    def has_vectors(self, space_id: int, modality: str) -> bool:
        """Whether a space holds any vector of a modality (an index probe, not a count); asked by every
        search without a type, so kept per generation (only a write, which commits a new one, changes it)."""
        with self.db.snapshot(), self.db.read() as s:  # the generation and the probe from one state
            key = (self.generation(), space_id, modality)
            found = self._held.get(key)
            if found is None:
                found = s.execute(select(Vector.content_id).where(*_where(space_id, modality)).limit(1)).first() \
                    is not None
                if len(self._held) > 256:  # older generations' answers
                    self._held.clear()
                self._held[key] = found
            return found

    def changes(self, space_id: int, modality: str, after: int, until: int | None = None) -> tuple[int, int]:
        """(vectors added, vectors removed) in one space and modality in generations ``after < gen <= until``."""
        with self.db.read() as s:
            added = s.execute(select(func.count()).select_from(Vector)
                              .where(*_where(space_id, modality, after, until))).scalar_one()
            removed = s.execute(select(func.count()).select_from(Tombstone)
                                .where(*_where(space_id, modality, after, until, Tombstone))).scalar_one()
        return int(added), int(removed)

    def vectors_for(self, content_ids: Sequence[int], space_id: int) -> dict[int, np.ndarray]:
        """The stored (fp16 → float32) vectors of some contents in one space: exact re-ranking."""
        out: dict[int, np.ndarray] = {}
        with self.db.read() as s:
            dim = self._dim(s, space_id)
            for part in chunks([int(i) for i in content_ids]):
                rows = s.execute(select(Vector.content_id, Vector.vec)
                                 .where(Vector.space_id == space_id, Vector.content_id.in_(part))).all()
                out.update(zip((r[0] for r in rows), decode_vectors([r[1] for r in rows], dim)))
        return out

    # ---- what results show ---------------------------------------------------------------------------
    def content_meta(self, content_ids: Sequence[int]) -> dict[int, ContentMeta]:
        """Metadata and every source uri of some contents, in one query (the per-search join)."""
        fields: dict[int, tuple] = {}
        uris: dict[int, list[str]] = {}
        columns = [Content.modality, Content.text, Content.width, Content.height,
                   *(getattr(Content, f) for f in _META_FIELDS)]
        with self.db.read() as s:
            for part in chunks([int(i) for i in content_ids]):
                rows = s.execute(select(Content.id, Source.uri, *columns)
                                 .outerjoin(Source, Source.content_id == Content.id)
                                 .where(Content.id.in_(part)).order_by(Content.id, Source.uri))
                for cid, uri, *values in rows:
                    fields.setdefault(cid, tuple(values))
                    bucket = uris.setdefault(cid, [])
                    if uri is not None:
                        bucket.append(uri)
        return {cid: ContentMeta(cid, *f[:4], tuple(uris[cid]), *f[4:]) for cid, f in fields.items()}

    def segments(self, content_ids: Sequence[int], space_id: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """content id → ((n, 2) start/end seconds, (n, dim) vectors) of the windows kept for it in a space."""
        out: dict[int, tuple[list, list]] = {}
        with self.db.read() as s:
            dim = self._dim(s, space_id)
            for part in chunks([int(i) for i in content_ids]):
                rows = s.execute(select(Segment.content_id, Segment.start, Segment.end, Segment.vec)
                                 .where(Segment.space_id == space_id, Segment.content_id.in_(part))
                                 .order_by(Segment.content_id, Segment.idx))
                for cid, a, b, vec in rows:
                    spans, vecs = out.setdefault(cid, ([], []))
                    spans.append((a, b))
                    vecs.append(vec)
        return {cid: (np.asarray(sp, np.float64).reshape(-1, 2), decode_vectors(v, dim)) for cid, (sp, v) in out.items()}

    def errors(self) -> list[ErrorRecord]:
        with self.db.read() as s:
            return list(s.scalars(select(ErrorRecord).order_by(ErrorRecord.uri, ErrorRecord.space_id)))

    def errors_by_path(self) -> list[tuple[str, str, float, str | None]]:
        """(path, reason, when, model spec) per path and reason: the model is named only where it tells
        something, i.e. the store has several and the path failed so in just one of them (a damaged file
        fails alike in every model: one row, no model)."""
        specs = {sp.id: sp.spec for sp in self.spaces()}
        groups: dict[tuple[str, str], list[ErrorRecord]] = {}
        for e in self.errors():
            groups.setdefault((e.uri, e.reason), []).append(e)
        return [(uri, why, max(e.at for e in g), specs.get(g[0].space_id) if len(specs) > 1 and len(g) == 1 else None)
                for (uri, why), g in groups.items()]

    def stats(self) -> dict:
        with self.db.read() as s:
            return {
                "contents": dict(s.execute(select(Content.modality, func.count()).group_by(Content.modality)).all()),
                "sources": dict(s.execute(select(Source.kind, func.count()).group_by(Source.kind)).all()),
                "vectors_per_space": dict(s.execute(select(Vector.space_id, func.count()).group_by(Vector.space_id)).all()),
                "errors": s.execute(select(func.count(distinct(ErrorRecord.uri)))).scalar_one(),  # paths
                "generation": int(s.execute(select(Meta.value).where(Meta.key == "generation")).scalar_one()),
                "spaces": list(s.scalars(select(Space).order_by(Space.id))),
            }

    # ---- what doctor looks at --------------------------------------------------------------------------
    def orphan_contents(self) -> list[int]:
        """Contents no file or text points at any more."""
        with self.db.read() as s:
            return list(s.scalars(select(Content.id).where(
                ~select(Source.id).where(Source.content_id == Content.id).exists())))

    def stray_segments(self) -> list[tuple[int, int]]:
        """(content id, space id) of windows kept for a content that has no vector in that space."""
        with self.db.read() as s:
            return [tuple(r) for r in s.execute(select(Segment.content_id, Segment.space_id).distinct().where(
                ~select(Vector.content_id).where(Vector.content_id == Segment.content_id,
                                                 Vector.space_id == Segment.space_id).exists()))]

    def missing_vectors(self, space: Space) -> int:
        """How many items of the space's modalities have no vector in it (videos too in an image space: every
        video has frames; a silent one has nothing for a sound space)."""
        mods = space.modalities.split(",")
        with self.db.read() as s:
            return int(s.execute(select(func.count()).select_from(Content).where(
                Content.modality.in_(mods + (["video"] if "image" in mods else [])),
                ~select(Vector.content_id).where(Vector.content_id == Content.id, Vector.space_id == space.id).exists(),
            )).scalar_one())
