"""SQLite through SQLAlchemy: the source of truth for items, vectors and spaces."""
