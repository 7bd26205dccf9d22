"""Approximate nearest neighbour indexes (FAISS). A cache of the database, never the truth."""
