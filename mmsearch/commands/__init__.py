"""The `mmsearch` commands other than `query` (see :mod:`mmsearch.cli`)."""
