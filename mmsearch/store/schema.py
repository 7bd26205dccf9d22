"""SQLAlchemy 2.0 models.

Vectors are keyed by *content* (sha256 of the bytes) and space, never by path: ``sources`` are the
paths (or added texts) that point at content, so moves, renames and copies cost no encoder call.
Ids are never reused (``sqlite_autoincrement``), so a FAISS id always means one content.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 4  # 2: sounds (duration, rate, channels, info on contents; segments); 3: photo metadata (EXIF);
# 4 (revision 0002): errors recorded per (path, space)
# (Schema changes after 3 are Alembic revisions, mmsearch/store/migrations; each bumps SCHEMA_VERSION, which a
# release before Alembic reads from ``meta`` to refuse a store newer than it.)

#: 64-bit integers (sizes, nanosecond times) on PostgreSQL, whose INTEGER is 32-bit; SQLite's INTEGER is 64-bit.
BIG = BigInteger().with_variant(Integer(), "sqlite")

#: What :mod:`mmsearch.ingest.exif` reads, recorded on contents as ``meta_version``: a content whose
#: value is older (or NULL: indexed before schema 3) has its metadata read again by the next ``index``.
META_VERSION = 1


#: Segment vectors of videos (frames in an image space, soundtrack windows in a sound space) are indexed
#: as their own kind, "moment", with ids ``content_id * MOMENT_SLOTS + idx`` (:data:`mmsearch.util.MOMENT_SLOTS`:
#: a video keeps at most that many segments per space): an index of moments finds *where* in which video
#: a query matches.
MOMENT = "moment"


def item_kinds(space: "Space") -> list[str]:
    """What a space holds and indexes, by kind: its model's modalities, and for a model that sees or hears,
    videos (a ``video`` vector each: the mean of its segments) and their moments (:data:`MOMENT`)."""
    mods = space.modalities.split(",")
    return mods + (["video", MOMENT] if "image" in mods or "audio" in mods else [])


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Space(Base):
    """One embedding space = one model (+ weights + preprocessing version)."""

    __tablename__ = "spaces"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    spec: Mapped[str] = mapped_column(Text)
    family: Mapped[str] = mapped_column(String(256))
    weights: Mapped[str] = mapped_column(String(256))
    dim: Mapped[int]
    metric: Mapped[str] = mapped_column(String(16))
    modalities: Mapped[str] = mapped_column(String(64))  # comma separated
    preprocess_version: Mapped[int]
    info: Mapped[str] = mapped_column(Text, default="{}")  # JSON: preprocessing etc.
    created_gen: Mapped[int]


class Content(Base):
    """One distinct piece of content (bytes of a file, or an added text)."""

    __tablename__ = "contents"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    byte_size: Mapped[int] = mapped_column(BIG)
    width: Mapped[int | None]
    height: Mapped[int | None]
    text: Mapped[str | None] = mapped_column(Text)
    created_gen: Mapped[int]
    duration: Mapped[float | None] = mapped_column(Float)  # seconds (sounds)
    sample_rate: Mapped[int | None]  # the file's own rate (sounds)
    channels: Mapped[int | None]
    info: Mapped[str | None] = mapped_column(Text)  # JSON of what else ingest learnt (e.g. {"truncated": 600.0})
    # photo metadata (schema 3, EXIF; NULL when the file has none or it could not be read)
    taken_at: Mapped[str | None] = mapped_column(String(19))  # "YYYY-MM-DD HH:MM:SS", the camera's wall clock
    taken_offset: Mapped[str | None] = mapped_column(String(6))  # "+02:00" when the file says (OffsetTimeOriginal)
    camera_make: Mapped[str | None] = mapped_column(Text)
    camera_model: Mapped[str | None] = mapped_column(Text)
    gps_lat: Mapped[float | None] = mapped_column(Float)  # decimal degrees, north positive
    gps_lon: Mapped[float | None] = mapped_column(Float)  # decimal degrees, east positive
    orientation: Mapped[int | None]  # EXIF orientation 1..8 as stored (pixels are shown turned upright)
    meta_version: Mapped[int | None]  # META_VERSION that read the metadata; NULL: not read (before schema 3)
    sources: Mapped[list["Source"]] = relationship(back_populates="content")


class Source(Base):
    """Where content comes from: a file path (``kind='file'``) or an added text (``kind='text'``)."""

    __tablename__ = "sources"
    __table_args__ = (Index("ix_sources_content", "content_id"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(Text, unique=True)  # absolute path, or "text:<key>"
    kind: Mapped[str] = mapped_column(String(8))
    content_id: Mapped[int] = mapped_column(ForeignKey("contents.id"))
    size: Mapped[int] = mapped_column(BIG)
    mtime_ns: Mapped[int] = mapped_column(BIG)
    updated_gen: Mapped[int]
    content: Mapped[Content] = relationship(back_populates="sources")


class Vector(Base):
    """A content's embedding in one space, as an fp16 blob (the index is rebuilt from these)."""

    __tablename__ = "vectors"
    __table_args__ = (Index("ix_vectors_space_mod_gen", "space_id", "modality", "gen"),)
    content_id: Mapped[int] = mapped_column(ForeignKey("contents.id", ondelete="CASCADE"), primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id"), primary_key=True)
    modality: Mapped[str] = mapped_column(String(16))
    vec: Mapped[bytes] = mapped_column(LargeBinary)
    gen: Mapped[int]


class Segment(Base):
    """A stretch of a content embedded in one space: a sound's window, a video's sampled frame (in an image
    space: it stands for ``start``..``end``) or a window of its soundtrack (in a sound space).

    The content's own vector (in :class:`Vector`) is the normalised mean of its segments; these are kept
    so a hit can name the best-matching stretch (``start``/``end`` in seconds), and a video's are indexed
    as moments (:data:`MOMENT`).
    """

    __tablename__ = "segments"
    content_id: Mapped[int] = mapped_column(ForeignKey("contents.id", ondelete="CASCADE"), primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(primary_key=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    vec: Mapped[bytes] = mapped_column(LargeBinary)


class Tombstone(Base):
    """A vector that was deleted at generation ``gen``: lets an index catch up without a rebuild."""

    __tablename__ = "tombstones"
    __table_args__ = (Index("ix_tomb_space_mod_gen", "space_id", "modality", "gen"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    content_id: Mapped[int]
    space_id: Mapped[int]
    modality: Mapped[str] = mapped_column(String(16))
    gen: Mapped[int]


class ErrorRecord(Base):
    """The last problem seen with one path in one space (cleared when the path later indexes fine there).

    ``space_id`` 0: a problem with the file itself, found before any space (a folder that cannot be read),
    or for a model whose space does not exist yet; a success in any space clears it. Otherwise the space
    whose model could not embed the file: a video whose frames index but whose soundtrack fails keeps
    that error while its image vectors are written (revision 0002)."""

    __tablename__ = "errors"
    __table_args__ = (UniqueConstraint("uri", "space_id", name="uq_errors_uri_space"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    space_id: Mapped[int] = mapped_column(default=0, server_default="0")
    reason: Mapped[str] = mapped_column(Text)
    gen: Mapped[int]
    at: Mapped[float]
