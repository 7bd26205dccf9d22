"""Procedural "shapes world": a reproducible synthetic image/caption domain.

`mmsearch.world.shapes` draws coloured shapes with structured records and natural
captions; `mmsearch.world.train` trains the small built-in ``builtin:shapes`` CLIP
model on it; `mmsearch.world.sample` writes a small demo folder; `mmsearch.world.videos` writes videos of
shapes-world shots with tones-world sounds and their ground truth (``--samples samples/videos``).
"""
