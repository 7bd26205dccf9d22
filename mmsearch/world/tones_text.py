"""The text side of ``builtin:tones``: a RoBERTa-style byte-level BPE trained on the tones world's
captions, and the ``ClapProcessor`` (tokenizer + feature extractor) saved beside the model.

Used by :mod:`mmsearch.world.train_tones` (there is no hub to fetch a tokenizer from).
"""
from __future__ import annotations

from pathlib import Path

from mmsearch.world import tones as T

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]   # RoBERTa order: ids 0..4
MODEL_MAX_LENGTH = 64            # tokens incl. <s> and </s>; positions table = this + 2

FEATURE_EXTRACTOR_KW = dict(feature_size=64, sampling_rate=T.SAMPLE_RATE, hop_length=160, max_length_s=2,
                            fft_window_size=512, truncation="rand_trunc", padding="repeatpad",
                            frequency_min=50, frequency_max=8000)

def caption_variants(caption: str) -> list[str]:
    """Surface variants a user may type: as is, Capitalised, with a full stop, lower case."""
    cap = caption[:1].upper() + caption[1:]
    out = [caption, cap, caption + ".", cap + ".", caption.lower()]
    return list(dict.fromkeys(out))


def tokenizer_corpus() -> list[str]:
    return [v for c in T.caption_corpus() for v in caption_variants(c)]


def build_tokenizer(corpus: list[str], vocab_size: int = 2000):
    """RoBERTa-style byte-level BPE trained on ``corpus``, as a ``RobertaTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE())
    # No normaliser: transformers rebuilds a RoBERTa tokenizer from vocab + merges with this
    # exact pipeline, and the CPU query path loads tokenizer.json with `tokenizers` alone;
    # both must give the same ids.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3, 4], ids
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    return RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                model_max_length=MODEL_MAX_LENGTH)


def build_processor(tokenizer):
    from transformers import ClapFeatureExtractor, ClapProcessor

    fe = ClapFeatureExtractor(**FEATURE_EXTRACTOR_KW)
    return ClapProcessor(feature_extractor=fe, tokenizer=tokenizer)


def check_tokenizer(folder: Path, processor, texts: list[str]) -> dict:
    """The saved tokenizer: sensible ids, round trip, same ids from plain `tokenizers`."""
    from tokenizers import Tokenizer

    tok = processor.tokenizer
    enc = processor(text=["a rising whistle", "a pure tone at A4"], padding=True, return_tensors="pt")
    ids = enc["input_ids"]
    assert ids.shape[0] == 2 and int(ids[0, 0]) == 0, ids
    n_unk = int((ids == tok.unk_token_id).sum())
    assert n_unk == 0, ids
    inner = [i for i in ids[0].tolist() if i > 4]
    assert len(inner) >= 1 and len(set(inner)) == len(inner), ids
    back = tok.decode(tok("a rising whistle")["input_ids"], skip_special_tokens=True)
    assert back == "a rising whistle", back
    plain = Tokenizer.from_file(str(folder / "tokenizer.json"))
    mismatches = 0
    for t in texts:
        if plain.encode(t).ids != tok(t)["input_ids"]:
            mismatches += 1
    assert mismatches == 0, f"{mismatches} texts tokenise differently with plain tokenizers"
    return {"vocab_size": len(tok), "rising_whistle_ids": tok("a rising whistle")["input_ids"],
            "decode_round_trip": back, "plain_tokenizers_match": len(texts), "unk_in_probe": n_unk,
            "max_caption_tokens": max(len(tok(t)["input_ids"]) for t in texts)}
