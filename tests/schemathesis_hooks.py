"""Schemathesis hooks for tests/test_server_contract.py (loaded through SCHEMATHESIS_HOOKS).

The upload endpoints declare their part ``file`` as ``image/*`` or ``audio/*`` (multipart
``encoding.contentType``); these strategies teach schemathesis what such a file is, so a
schema-valid upload is a real image or sound (random bytes sent as image/png are not a PNG).
"""

from __future__ import annotations

import io
import wave

import numpy as np
import schemathesis
from hypothesis import strategies as st


@st.composite
def _png(draw) -> bytes:
    from PIL import Image

    w, h = draw(st.integers(8, 96)), draw(st.integers(8, 96))
    rgb = tuple(draw(st.integers(0, 255)) for _ in range(3))
    out = io.BytesIO()
    Image.new("RGB", (w, h), rgb).save(out, "PNG")
    return out.getvalue()


@st.composite
def _wav(draw) -> bytes:
    rate = draw(st.sampled_from([8000, 16000, 44100]))
    seconds = draw(st.floats(0.2, 2.0))
    freq = draw(st.floats(50.0, 3000.0))
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


schemathesis.openapi.media_type("image/png", _png())
schemathesis.openapi.media_type("audio/wav", _wav())
