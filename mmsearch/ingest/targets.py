"""Which spaces a write embeds into: the models given, and for each kind of file none of them reads, the
store's model of that kind, else the default one (:data:`mmsearch.config.DEFAULT_MODELS`)."""

from __future__ import annotations

from typing import Callable, Sequence

from mmsearch.config import DEFAULT_MODELS
from mmsearch.encoders.base import Encoder
from mmsearch.encoders.registry import Portable
from mmsearch.ingest.sync import Target, with_videos
from mmsearch.store.schema import Space
from mmsearch.store.store import Store


def choose(store: Store, given: Sequence[str], encoder: Callable[[str], Encoder],
           load: Callable[[str], tuple[Encoder, Space]], portable: Callable[[str], Portable | None], *,
           files: bool = True) -> list[Target]:
    """The spaces a write embeds into: the given models; for each kind of file none of them embeds,
    the store's model of that kind, else the default (:data:`DEFAULT_MODELS`). Models not given are
    loaded only when files need them; texts go into every chosen space with a text tower (into a
    space not given only when its model loads anyway). ``files=False`` (added texts): the given
    models, else the store's, else the default image model."""
    targets: list[Target] = []
    for spec in given:
        enc = encoder(spec)
        t = Target(spec, lambda enc=enc: (enc, store.ensure_space(enc.space)), with_videos(enc.space.modalities),
                   portable=portable(spec))
        t.get()
        targets.append(t)
    spaces, named = store.spaces(), bool(targets)
    for modality, default in DEFAULT_MODELS.items():
        if any(modality in t.modalities for t in targets) or (not files and named):
            continue
        sp = next((sp for sp in spaces if modality in sp.modalities.split(",")), None)
        if sp is None and not files and (targets or modality != "image"):
            continue
        spec = sp.spec if sp is not None else default
        mods = tuple(sp.modalities.split(",")) if sp is not None else (modality, "text")
        # a sound model nobody named reads soundtracks once its space exists (it loads for sound files)
        optional = (("text",) + (("video",) if modality == "audio" and sp is None else ())) if files else ()
        targets.append(Target(spec, lambda spec=spec: load(spec), with_videos(mods), space=sp,
                              optional=optional, portable=portable(spec)))
    first = next((t for t in targets if "text" in t.modalities), None)
    if first is not None and all("text" in t.optional for t in targets if "text" in t.modalities):
        first.optional = ()  # texts must land somewhere: in the first model that reads them
    seen: set[str] = set()
    for t in targets:  # each kind of file is counted once, in the first space that takes it
        t.counted = tuple(m for m in t.modalities if m not in seen)
        seen.update(t.modalities)
    return targets

