"""A text query in a script the space's model cannot read gets a notice, not a silent bad answer.

Each space records at creation which scripts its text tower's tokenizer reads
(``info["text"]``, see :mod:`mmsearch.encoders.scripts`): an OpenAI CLIP BPE space reads Latin only;
a multilingual CLIP (XLM-RoBERTa) or SigLIP 2 (Gemma) space reads many. :func:`language_notice`
compares a query's letters with that record: ``mmsearch query "红色的自行车"`` against an English-only
store still returns its nearest hits, with one line saying why they are probably unrelated and what
to use instead. A space that recorded nothing (a plugin's encoder) gets no notice.
"""

from __future__ import annotations

from typing import Any, Mapping

from mmsearch.encoders.scripts import SAMPLES, scripts_in

#: A query whose letters are at least this share in scripts the space does not read gets the notice.
MIN_SHARE = 0.3
_SUGGEST = ("a multilingual model, e.g. --model xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k "
            "or hf-hub:timm/ViT-B-16-SigLIP2")


def language_notice(text: str, info: Mapping[str, Any] | None) -> str | None:
    """One line for the person asking when ``text`` is mostly written in scripts the space's tokenizer
    does not read, else None. ``info``: the space's info (``Space.info`` parsed, or ``encoder.space.extra``)."""
    record = (info or {}).get("text")
    if not isinstance(record, Mapping) or not isinstance(record.get("scripts"), list):
        return None
    letters = scripts_in(text)
    total = sum(letters.values())
    # A script no sample probed (Bengali, Georgian …) counts as unread only for a model that reads Latin alone.
    unread = {s: n for s, n in letters.items() if s not in record["scripts"]
              and (s in SAMPLES or record.get("multilingual") is False)}
    if not total or sum(unread.values()) / total < MIN_SHARE:
        return None
    names = ", ".join(sorted(unread, key=lambda s: (-unread[s], s)))
    if record.get("tokenizer") == "openai-clip-bpe":
        model = "is English-only (OpenAI CLIP's tokenizer)"
    else:
        model = f"reads only {', '.join(record['scripts']) or 'no'} script"
    return (f"the query is written in {names} script, but this store's model {model}: its results are "
            f"probably unrelated (for other languages, index with {_SUGGEST})")
