"""Photo metadata for images indexed before the store kept it (schema 3): read during the next ``index``.

Images indexed by an older mmsearch have their vectors but no EXIF fields (``meta_version`` NULL).
Re-embedding them would cost a model pass per file; their metadata needs only the file's header.
So once ``index`` has synced a folder (every source row below it is current, so a file still holds
its content), the images below it that lack metadata are opened — header only, no pixel decode, no
model — on a few threads, and their fields written in batches. A file that cannot be opened is left
as it is (tried again next time); it never fails the run.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from mmsearch.ingest.exif import read_exif
from mmsearch.store.store import Store

THREADS = 4  # header reads are I/O bound
BATCH = 512  # contents per lookup and per write


def backfill_metadata(store: Store, roots: Sequence[str | os.PathLike]) -> int:
    """Read and record the photo metadata of images at or below ``roots`` that lack it. Returns how many got it."""
    done = 0
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for root in roots:
            after = 0
            while todo := store.missing_metadata(os.path.abspath(os.fspath(root)), limit=BATCH, after=after):
                after = todo[-1][0]
                found = list(pool.map(lambda item: (item[0], header_metadata(item[1])), todo))
                done += store.set_metadata([(cid, cols) for cid, cols in found if cols is not None])
    return done


def header_metadata(paths: Sequence[str]) -> dict | None:
    """The metadata columns of the first of ``paths`` (copies of one content) that opens; None if none does."""
    import warnings

    from PIL import Image

    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    return read_exif(im).columns()
        except Exception:  # gone, unreadable, or a format this Pillow does not open by itself
            continue
    return None
