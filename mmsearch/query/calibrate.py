"""Scores comparable across spaces.

Raw cosines of two models are not comparable: one model's "good match" may be 0.3, another's 0.8.
Where a search merges several spaces, each hit also gets a *calibrated* score, and the merge orders
by it. A :class:`Calibration` maps raw scores of one (space, modality) for one query to calibrated ones.

The default, :class:`BackgroundZ`, standardises a raw score against the background: the query's
cosines to a fixed spread of the space's own stored vectors of that modality (up to ``SAMPLE``). A
calibrated score of 3 means "three standard deviations above what this query scores against the
typical item of this space", whatever the model. Other calibrations (e.g. against a set of generic
prompts, as audio spaces want) plug in through the same protocol.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from mmsearch.store.schema import Space
from mmsearch.store.store import Store

SAMPLE = 512


class Calibration(Protocol):
    def __call__(self, space: Space, modality: str, query: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Calibrated scores for raw ``scores`` of ``query`` against items of ``modality`` in ``space``."""
        ...


class BackgroundZ:
    """z-score of a raw cosine against the query's cosines to a sample of the space's own vectors."""

    def __init__(self, store: Store, sample: int = SAMPLE) -> None:
        self.store = store
        self.sample = sample
        self._background: dict[tuple[int, str], tuple[int, np.ndarray]] = {}

    def background(self, space: Space, modality: str) -> np.ndarray:
        gen = self.store.generation()
        cached = self._background.get((space.id, modality))
        if cached is None or cached[0] != gen:
            cached = (gen, self.store.spread_vectors(space.id, modality, self.sample))
            self._background[(space.id, modality)] = cached
        return cached[1]

    def __call__(self, space: Space, modality: str, query: np.ndarray, scores: np.ndarray) -> np.ndarray:
        sims = self.background(space, modality) @ np.asarray(query, np.float32)
        if len(sims) < 2:  # nothing to compare with: neutral, never a raw cosine among z-scores
            return np.zeros(len(scores))
        return (np.asarray(scores, np.float64) - float(sims.mean())) / max(float(sims.std()), 1e-6)
