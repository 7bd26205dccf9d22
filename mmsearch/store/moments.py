"""Reads of the moment kind: videos' segments as an index sees them (:data:`~mmsearch.store.schema.MOMENT`).

A video's segments in a space (its sampled frames in an image space, its soundtrack's windows in a
sound space) are written with its vector, in the same transaction, and deleted with it; so the
generation a moment was added in is its video vector's, and a moment is removed when its video's
vector is (the video's tombstone stands for all its slots). The index layer asks these questions of
any kind; for moments :class:`MomentReads` answers them from ``segments`` joined to ``vectors``, with
ids ``content_id * MOMENT_SLOTS + idx``.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import and_, func, select, tuple_

from mmsearch.store.read import BLOCK, Reads, _where, decode_vectors
from mmsearch.store.schema import MOMENT, Content, Segment, Tombstone, Vector
from mmsearch.util import MOMENT_SLOTS, chunks

_SEGMENT_ID = Segment.content_id * MOMENT_SLOTS + Segment.idx


def _of_videos(space_id: int, after: int = 0, until: int | None = None):
    """The join and conditions of a space's video segments whose video vector is in ``after < gen <= until``."""
    on = and_(Vector.content_id == Segment.content_id, Vector.space_id == Segment.space_id)
    return on, [Segment.space_id == space_id, *_where(space_id, "video", after, until)]


class MomentReads(Reads):
    """:class:`~mmsearch.store.read.Reads` that also answer for the moment kind (other kinds: as before)."""

    def iter_vectors(self, space_id: int, modality: str, *, since_gen: int = 0, until_gen: int | None = None,
                     block: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if modality != MOMENT:
            yield from super().iter_vectors(space_id, modality, since_gen=since_gen, until_gen=until_gen, block=block)
            return
        on, cond = _of_videos(space_id, since_gen, until_gen)
        yield from self._blocks(space_id, lambda last: select(_SEGMENT_ID, Segment.vec).join(Vector, on).where(
            *cond, _SEGMENT_ID > last).order_by(Segment.content_id, Segment.idx), block)

    def vector_ids(self, space_id: int, modality: str) -> np.ndarray:
        if modality != MOMENT:
            return super().vector_ids(space_id, modality)
        on, cond = _of_videos(space_id)
        with self.db.read() as s:
            return np.fromiter(s.scalars(select(_SEGMENT_ID).join(Vector, on).where(*cond)
                                         .order_by(Segment.content_id, Segment.idx)), np.int64)

    def count_vectors(self, space_id: int, modality: str, *, until_gen: int | None = None) -> int:
        if modality != MOMENT:
            return super().count_vectors(space_id, modality, until_gen=until_gen)
        on, cond = _of_videos(space_id, 0, until_gen)
        with self.db.read() as s:
            return int(s.execute(select(func.count()).select_from(Segment).join(Vector, on).where(*cond)).scalar_one())

    def has_vectors(self, space_id: int, modality: str) -> bool:
        if modality != MOMENT:
            return super().has_vectors(space_id, modality)
        return super().has_vectors(space_id, "video")

    def tombstones(self, space_id: int, modality: str, *, since_gen: int, until_gen: int | None = None) -> np.ndarray:
        """For moments: every slot of each video whose vector was removed (its segments went with it)."""
        if modality != MOMENT:
            return super().tombstones(space_id, modality, since_gen=since_gen, until_gen=until_gen)
        videos = super().tombstones(space_id, "video", since_gen=since_gen, until_gen=until_gen)
        slots = np.arange(MOMENT_SLOTS, dtype=np.int64)
        return (videos[:, None] * MOMENT_SLOTS + slots[None, :]).ravel() if len(videos) else videos

    def changes(self, space_id: int, modality: str, after: int, until: int | None = None) -> tuple[int, int]:
        """For moments: (segments added, videos removed) in ``after < gen <= until``."""
        if modality != MOMENT:
            return super().changes(space_id, modality, after, until)
        on, cond = _of_videos(space_id, after, until)
        with self.db.read() as s:
            added = s.execute(select(func.count()).select_from(Segment).join(Vector, on).where(*cond)).scalar_one()
            removed = s.execute(select(func.count()).select_from(Tombstone)
                                .where(*_where(space_id, "video", after, until, Tombstone))).scalar_one()
        return int(added), int(removed)

    def vectors_for(self, content_ids: Sequence[int], space_id: int, modality: str | None = None) -> dict[int, np.ndarray]:
        """As :meth:`Reads.vectors_for`; with ``modality`` :data:`MOMENT`, the ids are moments'."""
        if modality != MOMENT:
            return super().vectors_for(content_ids, space_id)
        out: dict[int, np.ndarray] = {}
        with self.db.read() as s:
            dim = self._dim(s, space_id)
            for part in chunks([int(i) for i in content_ids]):
                keys = [(i // MOMENT_SLOTS, i % MOMENT_SLOTS) for i in part]  # by primary key, only these rows
                rows = s.execute(select(_SEGMENT_ID, Segment.vec).where(
                    Segment.space_id == space_id, tuple_(Segment.content_id, Segment.idx).in_(keys))).all()
                out.update(zip((r[0] for r in rows), decode_vectors([r[1] for r in rows], dim)))
        return out

    def sample_vectors(self, space_id: int, modality: str, n: int, *, seed: int = 0) -> np.ndarray:
        if modality != MOMENT:
            return super().sample_vectors(space_id, modality, n, seed=seed)
        return self._picked(space_id, self.vector_ids(space_id, MOMENT), n, seed)

    def spread_vectors(self, space_id: int, modality: str, n: int) -> np.ndarray:
        if modality != MOMENT:
            return super().spread_vectors(space_id, modality, n)
        ids = self.vector_ids(space_id, MOMENT)
        return self._picked(space_id, ids[:: max(1, len(ids) // max(n, 1))][:n], len(ids))

    def _picked(self, space_id: int, ids: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
        if len(ids) > n:
            ids = np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))
        found = self.vectors_for(ids.tolist(), space_id, MOMENT)
        if not found:
            with self.db.read() as s:
                return np.zeros((0, self._dim(s, space_id)), np.float32)
        return np.stack([found[int(i)] for i in ids if int(i) in found])

    def moment_ids(self, content_ids: Sequence[int], space_id: int) -> np.ndarray:
        """The moment ids of some videos in a space (a filtered moment search's candidates)."""
        with self.db.read() as s:
            out = [np.fromiter(s.scalars(select(_SEGMENT_ID).where(Segment.space_id == space_id,
                                                                   Segment.content_id.in_(part))), np.int64)
                   for part in chunks([int(i) for i in content_ids])]
        return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def contents_lacking(self, content_ids: Iterable[int], tower: str) -> set[int]:
        """Those of some contents read from video files that hold nothing for a model's ``tower``: for
        "audio", videos with no soundtrack; for "image", sounds in a video container (no picture)."""
        out: set[int] = set()
        with self.db.read() as s:
            for part in chunks([int(i) for i in content_ids]):
                rows = s.execute(select(Content.id, Content.modality, Content.info).where(Content.id.in_(part))).all()
                for cid, modality, info in rows:
                    if tower == "image" and modality == "audio":
                        out.add(cid)
                    elif tower == "audio" and modality == "video" and not _video_info(info).get("audio", True):
                        out.add(cid)
        return out


def _video_info(info: str | None) -> dict:
    try:
        found = json.loads(info).get("video") if info else None
    except (ValueError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}
