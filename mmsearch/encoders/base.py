"""The encoder contract: batch-first, L2-normalised float32, one space per model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # heavy imports stay lazy
    import numpy as np

Modality = Literal["image", "text", "audio"]
MODALITIES: tuple[str, ...] = ("image", "text", "audio")

#: Bumped whenever our decode/preprocess path changes what pixels reach a model, so vectors made
#: by an older path are never silently mixed with new ones (it is part of the space key).
PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class SpaceInfo:
    """What identifies an embedding space: vectors are comparable only within one space."""

    spec: str  # how to load it again, e.g. "ViT-B-32:laion2b_s34b_b79k" or "local-dir:/models/b32"
    family: str  # the architecture or source, e.g. "ViT-B-32", "open_clip-local-dir"
    weights: str  # a tag or content fingerprint of the weights actually loaded
    dim: int
    modalities: tuple[str, ...]
    metric: str = "ip"  # inner product over L2-normalised vectors = cosine
    preprocess_version: int = PREPROCESS_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Identity of the space. A local model moved to another folder keeps its key."""
        return f"{self.family}|{self.weights}|pp{self.preprocess_version}"


@runtime_checkable
class Encoder(Protocol):
    """A model that embeds one or more modalities into one space.

    Source-side calls (``embed_image_batch``) take pixels already preprocessed by
    :meth:`image_recipe` in decode workers; query-side calls take raw inputs.
    """

    space: SpaceInfo

    def image_recipe(self) -> dict[str, Any]:
        """A picklable description of the image preprocessing, rebuilt in worker processes."""
        ...

    def embed_image_batch(self, pixels: "np.ndarray") -> "np.ndarray":
        """Embed an (N, C, H, W) float32 batch made by the recipe → (N, dim) unit vectors."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> "np.ndarray":
        """Embed texts → (N, dim) unit float32 vectors."""
        ...
