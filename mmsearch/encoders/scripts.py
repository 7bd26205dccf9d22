"""Which writing systems a model's text tower can read: measured on its tokenizer when a space is created.

A tokenizer that has no pieces for a script maps its letters to ``<unk>``, to byte-fallback pieces
(``<0xE7>``) or, for a byte-level BPE, to two or three pieces per letter (one per UTF-8 byte): the
model then sees noise, and a query in that script gets a confident-looking but meaningless answer.
:func:`coverage` tokenizes a short sample per script (:data:`SAMPLES`) and keeps the scripts whose
letters mostly become real pieces. OpenAI CLIP's BPE (open_clip's ``SimpleTokenizer``) can spell any
text byte by byte, but its vocabulary and its models' training are English: it is recorded as
covering Latin only (:data:`ENGLISH_BPE`).

What a space records (``SpaceInfo.extra["text"]``, kept in the store's ``spaces.info``)::

    {"tokenizer": "hf:xlm-roberta-base", "multilingual": true, "scripts": ["Latin", "Han", ...]}

:func:`scripts_in` names the scripts of a text's letters (:mod:`mmsearch.query.language` compares
the two). Pure Python: ``unicodedata`` only.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Callable, Sequence

#: A sentence per script (the same few words: "a red bicycle on the street", "a photo of a cat").
SAMPLES: dict[str, str] = {
    "Latin": "a red bicycle on the street, a photo of a cat",
    "Han": "红色的自行车在街上，一只猫的照片",
    "Kana": "あかいじてんしゃ、ねこのしゃしん、カメラ",
    "Hangul": "거리의 빨간 자전거, 고양이 사진",
    "Cyrillic": "красный велосипед на улице, фото кошки",
    "Greek": "κόκκινο ποδήλατο στο δρόμο, φωτογραφία γάτας",
    "Arabic": "دراجة حمراء في الشارع، صورة قطة",
    "Hebrew": "אופניים אדומים ברחוב, תמונה של חתול",
    "Devanagari": "सड़क पर लाल साइकिल, बिल्ली की तस्वीर",
    "Thai": "จักรยานสีแดงบนถนน รูปแมว",
}
#: Unicode character-name words → the script name used here (``CJK UNIFIED IDEOGRAPH-7EA2`` → Han).
_NAME_WORDS = {"LATIN": "Latin", "CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana", "HANGUL": "Hangul",
               "CYRILLIC": "Cyrillic", "GREEK": "Greek", "ARABIC": "Arabic", "HEBREW": "Hebrew",
               "DEVANAGARI": "Devanagari", "THAI": "Thai", "BENGALI": "Bengali", "TAMIL": "Tamil",
               "TELUGU": "Telugu", "GUJARATI": "Gujarati", "GURMUKHI": "Gurmukhi", "KANNADA": "Kannada",
               "MALAYALAM": "Malayalam", "SINHALA": "Sinhala", "GEORGIAN": "Georgian", "ARMENIAN": "Armenian",
               "ETHIOPIC": "Ethiopic", "KHMER": "Khmer", "LAO": "Lao", "MYANMAR": "Myanmar", "TIBETAN": "Tibetan",
               "MONGOLIAN": "Mongolian", "SYRIAC": "Syriac", "THAANA": "Thaana", "BOPOMOFO": "Han"}
#: What an OpenAI CLIP BPE space records: it reads English (Latin script) only.
ENGLISH_BPE: dict[str, Any] = {"tokenizer": "openai-clip-bpe", "multilingual": False, "scripts": ["Latin"]}
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
#: A script is read when at most this share of its pieces are unknown or byte pieces …
MAX_BAD_SHARE = 0.34
#: … and its letters take at most this many pieces each (a byte-level BPE without merges takes ≥ 2).
MAX_PIECES_PER_LETTER = 1.5


def script_of(ch: str) -> str | None:
    """The script of one letter (``"Han"``, ``"Cyrillic"`` …), None for a non-letter or a name we cannot read."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    words = unicodedata.name(ch, "").split()
    for word in words:
        if word in _NAME_WORDS:
            return _NAME_WORDS[word]
    return words[0].title() if words else None


def scripts_in(text: str) -> dict[str, int]:
    """How many letters of each script ``text`` has (letters only: digits, spaces, emoji are left out)."""
    counts: dict[str, int] = {}
    for ch in text:
        script = script_of(ch)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return counts


def reads(pieces: Sequence[str], letters: int, unk: str | None) -> bool:
    """Whether a tokenization into ``pieces`` of a text with ``letters`` letters (and marks) is real
    pieces, not noise."""
    if not pieces or letters == 0:
        return False
    bad = sum(1 for p in pieces if p == unk or _BYTE_PIECE.match(p))
    return bad / len(pieces) <= MAX_BAD_SHARE and len(pieces) / letters <= MAX_PIECES_PER_LETTER


def coverage(pieces: Callable[[str], Sequence[str]], unk: str | None) -> list[str]:
    """The scripts of :data:`SAMPLES` that ``pieces`` (text → token strings, no special tokens) reads."""
    found = []
    for script, sample in SAMPLES.items():
        letters = sum(1 for ch in sample if unicodedata.category(ch)[0] in "LM")  # vowel signs are pieces too
        try:
            if reads(list(pieces(sample)), letters, unk):
                found.append(script)
        except Exception:  # a tokenizer that cannot take this text does not read the script
            continue
    return found


def describe_hf(tokenizer: Any, name: str) -> dict[str, Any]:
    """What a space records for a transformers tokenizer. Pieces are read back from the ids (a Unigram
    tokenizer's ``tokenize`` shows an unknown letter as itself; its id is ``<unk>``'s)."""

    def pieces(text: str) -> list[str]:
        return tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])

    scripts = coverage(pieces, getattr(tokenizer, "unk_token", None))
    non_latin = [s for s in scripts if s != "Latin"]
    return {"tokenizer": f"hf:{name}", "multilingual": len(non_latin) >= 2, "scripts": scripts}


def describe_open_clip(tokenizer: Any, name: str) -> dict[str, Any]:
    """What a space records for an open_clip tokenizer: :data:`ENGLISH_BPE` for OpenAI CLIP's BPE,
    :func:`describe_hf` for one over a Hugging Face tokenizer, nothing known (no notice) for others."""
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(tokenizer, SimpleTokenizer):
        return dict(ENGLISH_BPE)
    inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer, SigLipTokenizer: a transformers tokenizer inside
    if inner is not None and hasattr(inner, "convert_ids_to_tokens"):
        return describe_hf(inner, name)
    return {"tokenizer": type(tokenizer).__name__, "multilingual": None, "scripts": None}
