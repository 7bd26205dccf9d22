"""Encode a query, search the spaces and modalities asked for, merge, join metadata."""
