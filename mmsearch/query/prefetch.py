"""Start loading a query's text model before the rest of mmsearch has imported (cold queries).

A text query on the CPU spends about a second creating its ONNX Runtime session and tokenizer, and
about as long importing SQLAlchemy, FAISS and the store. :func:`text_model` reads the store's
``manifest.json`` (a hint only: the query itself still resolves its spaces from the database) and
starts :func:`mmsearch.encoders.registry.prefetch` for each text-capable model, so both happen at
once. This module imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmsearch.config import Settings
from mmsearch.encoders.registry import prefetch


def text_model(store: str | os.PathLike | None = None, **explicit: object) -> None:
    """Prefetch the text tower(s) a text query on ``store`` will load (``explicit``: model, device, runtime, precision)."""
    try:
        s = Settings.resolve(store=os.fspath(store) if store is not None else None,
                             **{k: v for k, v in explicit.items() if v is not None})
        manifest = json.loads((Path(s.store).expanduser() / "manifest.json").read_text(encoding="utf-8"))
        given = [s.model] if isinstance(s.model, str) else list(s.model or ())
        specs = given or [sp["spec"] for sp in manifest.get("spaces", []) if "text" in sp.get("modalities", ())]
    except Exception:  # no hint, or a bad setting: the query loads its model (or reports the setting) itself
        return
    for spec in specs:
        prefetch(spec, "text", device=s.device, batch_size=s.batch_size, runtime=s.runtime, precision=s.precision)
