"""Tokenizers without torch: open_clip's CLIP tokenizer mirrored in ``tokenizers`` (same ids), and a
Hugging Face ``tokenizer.json`` (CLAP's RoBERTa BPE) run by ``tokenizers`` itself (:class:`HubTokenizer`).

:func:`build` (export time, open_clip loaded) turns an open_clip ``SimpleTokenizer`` into a
``tokenizers`` BPE model with the tokenizer's own vocabulary and merges, its pre-tokenizer regex,
byte-level alphabet, ``<start_of_text>``/``<end_of_text>`` template, truncation and zero padding,
and writes it as ``tokenizer.json``. :class:`LightTokenizer` loads that file at query time.

Text cleaning runs first, as open_clip's does (``ftfy.fix_text``, HTML entities unescaped twice,
whitespace collapsed, then lower-cased / punctuation removed per the tokenizer's ``clean`` mode):
``tokenizers`` has no ftfy normaliser, so these few lines call the same libraries open_clip calls.
Parity with open_clip, token for token, is checked at export (the export falls back to open_clip's
tokenizer when it differs) and by the test suite.
"""

from __future__ import annotations

import html
import string
from pathlib import Path
from typing import Any, Sequence

#: open_clip's pre-tokenizer pattern (``SimpleTokenizer.pat`` without the special-token prefix).
_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLEAN_MODES = ("lower", "whitespace", "canonicalize")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean(text: str, mode: str) -> str:
    """open_clip's ``get_clean_fn(mode)`` for one text."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        return " ".join(text.split()).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if mode == "lower" else text


def clean_mode(tokenizer: Any) -> str | None:
    """Which :data:`CLEAN_MODES` an open_clip ``SimpleTokenizer`` (or ``HFTokenizer``) uses, or None if it is
    not one we can mirror."""
    from open_clip.tokenizer import (HFTokenizer, SimpleTokenizer, _clean_canonicalize,  # type: ignore[attr-defined]
                                     _clean_lower, _clean_whitespace)

    if type(tokenizer) is HFTokenizer:
        if tokenizer.tokenizer_mode:  # "clips": ids re-arranged in Python
            return None
    elif type(tokenizer) is not SimpleTokenizer or tokenizer.reduction_fn is not None:
        return None
    modes = {_clean_lower: "lower", _clean_whitespace: "whitespace", _clean_canonicalize: "canonicalize"}
    return modes.get(tokenizer.clean_fn)


def build(tokenizer: Any, out: Path) -> None:
    """Write ``out`` (a ``tokenizer.json``) mirroring an open_clip ``SimpleTokenizer``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    specials = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
    tok = Tokenizer(models.BPE(vocab=dict(tokenizer.encoder), merges=[tuple(m) for m in merges],
                               continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False))
    tok.add_special_tokens(specials)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    sot, eot = specials[0], specials[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, tokenizer.sot_token_id), (eot, tokenizer.eot_token_id)])
    tok.enable_truncation(max_length=tokenizer.context_length)
    tok.enable_padding(pad_id=0, pad_token="!", length=tokenizer.context_length)  # open_clip pads with id 0
    tok.save(str(out))


class LightTokenizer:
    """Texts → (N, context_length) int64 token ids, as open_clip's tokenizer gives them."""

    def __init__(self, path: Path, mode: str) -> None:
        from tokenizers import Tokenizer

        if mode not in CLEAN_MODES:
            raise ValueError(f"unknown clean mode {mode!r}")
        self._tok = Tokenizer.from_file(str(path))
        self._mode = mode

    def __call__(self, texts: Sequence[str]):
        import numpy as np

        encoded = self._tok.encode_batch([clean(t, self._mode) for t in texts])
        return np.asarray([e.ids for e in encoded], dtype=np.int64)


class HubTokenizer:
    """Texts → ``{"ids", "mask"}`` int64 arrays from a Hugging Face ``tokenizer.json`` (a CLAP model's
    RoBERTa BPE), padded to the longest text and cut to ``max_length`` tokens, as transformers' fast
    tokenizer called with ``padding=True, truncation=True`` gives them (the same Rust library runs)."""

    def __init__(self, path: Path, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.no_padding()
        tok.enable_truncation(max_length=max_length)
        pad = tok.id_to_token(pad_id) or "<pad>"
        tok.enable_padding(pad_id=pad_id, pad_token=pad)  # to the longest in each call
        self._tok = tok

    def __call__(self, texts: Sequence[str]) -> dict:
        import numpy as np

        encoded = self._tok.encode_batch(list(texts))
        return {"ids": np.asarray([e.ids for e in encoded], dtype=np.int64),
                "mask": np.asarray([e.attention_mask for e in encoded], dtype=np.int64)}


class ClipHubTokenizer:
    """Texts → (N, context_length) int64 ids as open_clip's ``HFTokenizer`` gives them (multilingual CLIP's
    XLM-RoBERTa, SigLIP's Gemma or T5 sentencepiece), with ``tokenizers`` alone: the text cleaned as
    open_clip cleans it, then the Hugging Face ``tokenizer.json``, cut and padded to ``context_length``
    (``padding="max_length", truncation=True``); ``strip_sep_id``: separator ids replaced by 0."""

    def __init__(self, path: Path, mode: str, context_length: int, pad_id: int, *, strip_sep_id: int | None = None,
                 padding_side: str = "right", truncation_side: str = "right") -> None:
        from tokenizers import Tokenizer

        if mode not in CLEAN_MODES:
            raise ValueError(f"unknown clean mode {mode!r}")
        tok = Tokenizer.from_file(str(path))
        tok.no_padding()
        tok.enable_truncation(max_length=context_length, direction=truncation_side)
        tok.enable_padding(length=context_length, pad_id=pad_id, pad_token=tok.id_to_token(pad_id) or "<pad>",
                           direction=padding_side)
        self._tok, self._mode, self._sep = tok, mode, strip_sep_id

    def __call__(self, texts: Sequence[str]):
        import numpy as np

        encoded = self._tok.encode_batch([clean(t, self._mode) for t in texts])
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        if self._sep is not None:
            ids[ids == self._sep] = 0
        return ids
