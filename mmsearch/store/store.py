"""One store = one directory: ``mmsearch.sqlite3`` (the truth), ``ann/`` (FAISS caches), ``manifest.json``.

Reads run in a deferred transaction (a WAL snapshot); writes run in ``BEGIN IMMEDIATE`` and bump the
store *generation* once per transaction, so an index file can record exactly which state it reflects.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import create_engine, delete, event, func, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from mmsearch.encoders.base import SpaceInfo
from mmsearch.errors import StoreError, StoreLockedError
from mmsearch.store.safety import db_error, io_error, is_storage_error
from mmsearch.store.schema import (
    SCHEMA_VERSION,
    Base,
    Content,
    ErrorRecord,
    Meta,
    Source,
    Space,
    Tombstone,
    Vector,
)

DB_NAME = "mmsearch.sqlite3"
MANIFEST = "manifest.json"
LOCK_NAME = "writer.lock"
_IN_CHUNK = 500  # keep IN (...) lists well under SQLite's variable limit


@dataclass(frozen=True)
class SourceState:
    id: int
    content_id: int
    size: int
    mtime_ns: int


@dataclass
class Upsert:
    """One source to point at one content (with its vector when newly embedded)."""

    uri: str
    kind: str
    size: int
    mtime_ns: int
    sha256: str
    modality: str
    width: int | None = None
    height: int | None = None
    text: str | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class ContentMeta:
    id: int
    modality: str
    text: str | None
    width: int | None
    height: int | None
    uris: tuple[str, ...]


@dataclass
class ApplyResult:
    added_contents: int = 0
    added_vectors: int = 0
    removed_contents: int = 0
    removed_sources: int = 0
    generation: int = 0


def _chunks(seq: Sequence, n: int = _IN_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _under_clause(column, root: str):
    """SQL for ``column`` equal to ``root`` or below it, as an index-friendly range (no LIKE escaping)."""
    prefix = root.rstrip(os.sep) + os.sep
    return (column == root) | ((column >= prefix) & (column < prefix[:-1] + chr(ord(os.sep) + 1)))


def _total_changes(s: Session) -> int:
    """Rows inserted/updated/deleted so far on this connection: O(1), unlike counting a table."""
    return int(s.execute(text("SELECT total_changes()")).scalar_one())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, permissions: the old file is untouched
        raise io_error(exc, str(path)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # not supported on some platforms/filesystems
        pass


def _make_engine(db: Path, begin: str) -> SAEngine:
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:  # pragma: no cover - exercised implicitly
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # pragma: no cover
        conn.exec_driver_sql(begin)

    return engine


class Store:
    """The database half of a store. Thread-compatible; use one per process."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.db_path = self.root / DB_NAME
        if not self.db_path.exists():
            if not create:
                raise StoreError(
                    "no mmsearch store here", path=str(self.root), hint="run `mmsearch index PATH` first, or pass --store"
                )
            if self.root.exists() and not self.root.is_dir():
                raise StoreError("store path exists and is not a directory", path=str(self.root))
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store directory: {exc.strerror}", path=str(self.root)) from exc
        self._local = threading.local()
        self._reader = _make_engine(self.db_path, "BEGIN")
        self._writer = _make_engine(self.db_path, "BEGIN IMMEDIATE")
        try:
            self._init_schema(create)
        except OperationalError as exc:
            raise StoreError(f"cannot open database: {exc.orig}", path=str(self.db_path)) from exc
        except DatabaseError as exc:  # e.g. "file is not a database": a damaged or foreign file
            raise db_error(exc, str(self.db_path)) from exc

    def close(self) -> None:
        self._reader.dispose()
        self._writer.dispose()

    # ---- schema ------------------------------------------------------------------------------
    def _init_schema(self, create: bool) -> None:
        # Look first with a plain read: opening a current store never waits for a writer or needs write access.
        with self._reader.connect() as conn:
            tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" in tables:
                version = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one_or_none()
                if version is not None and int(version) == SCHEMA_VERSION:
                    return
        with self._writer.begin() as conn:
            tables = set(
                r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
            )
            if "meta" not in tables:
                if not create and tables:
                    raise StoreError("not an mmsearch database", path=str(self.db_path))
                Base.metadata.create_all(conn)
                conn.execute(
                    sqlite_insert(Meta),
                    [
                        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                        {"key": "generation", "value": "0"},
                        {"key": "created_at", "value": str(time.time())},
                    ],
                )
                return
            version = int(conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one())
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store has schema version {version}, this mmsearch knows up to {SCHEMA_VERSION}",
                    path=str(self.db_path),
                    hint="upgrade mmsearch",
                )
            # Future migrations: apply each step and record its version in the same transaction.

    # ---- transactions --------------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session over one consistent snapshot (reused inside :meth:`snapshot`)."""
        current = getattr(self._local, "session", None)
        if current is not None:
            yield current
            return
        try:
            with Session(self._reader, expire_on_commit=False) as session, session.begin():
                yield session
        except DatabaseError as exc:
            if is_storage_error(exc):
                raise db_error(exc, str(self.db_path)) from exc
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make every read in this block (this thread) see one and the same committed state."""
        if getattr(self._local, "session", None) is not None:
            yield
            return
        try:
            with Session(self._reader, expire_on_commit=False) as session, session.begin():
                self._local.session = session
                try:
                    yield
                finally:
                    self._local.session = None
        except DatabaseError as exc:
            if is_storage_error(exc):
                raise db_error(exc, str(self.db_path)) from exc
            raise

    @contextmanager
    def write(self) -> Iterator[tuple[Session, int]]:
        """A write transaction; yields the session and the new generation it commits as."""
        try:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                gen = int(session.execute(select(Meta.value).where(Meta.key == "generation")).scalar_one()) + 1
                session.execute(Meta.__table__.update().where(Meta.key == "generation").values(value=str(gen)))
                yield session, gen
        except DatabaseError as exc:  # disk full, damaged file, I/O error: rolled back, nothing half-written
            if is_storage_error(exc):
                raise db_error(exc, str(self.db_path)) from exc
            raise

    def generation(self) -> int:
        with self.read() as s:
            return int(s.execute(select(Meta.value).where(Meta.key == "generation")).scalar_one())

    # ---- writer lock -----------------------------------------------------------------------------
    @contextmanager
    def writer_lock(self, what: str = "write") -> Iterator[None]:
        """One writer per store. Readers never take it."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / LOCK_NAME), timeout=0)
        holder_file = self.root / (LOCK_NAME + ".json")
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = json.loads(holder_file.read_text())
                who = f"pid {holder['pid']} on {holder['host']} ({holder['what']}, since {time.ctime(holder['since'])})"
            except (OSError, ValueError, KeyError):
                who = "another process"
            raise StoreLockedError(
                f"store is being written by {who}", path=str(self.root), hint="wait for it to finish, or stop it"
            ) from None
        try:
            holder_file.write_text(
                json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": time.time(),
                            "argv": sys.argv[:6]})
            )
            yield
        finally:
            try:
                holder_file.unlink()
            except OSError:
                pass
            lock.release()

    # ---- spaces --------------------------------------------------------------------------------
    def spaces(self) -> list[Space]:
        with self.read() as s:
            return list(s.scalars(select(Space).order_by(Space.id)))

    def ensure_space(self, info: SpaceInfo) -> Space:
        with self.read() as s:
            found = s.scalars(select(Space).where(Space.key == info.key)).first()
        if found is not None:
            if found.dim != info.dim:
                raise StoreError(f"space {info.key} is recorded with dim {found.dim}, model gives {info.dim}")
            return found
        with self.write() as (s, gen):
            space = Space(
                key=info.key, spec=info.spec, family=info.family, weights=info.weights, dim=info.dim,
                metric=info.metric, modalities=",".join(info.modalities),
                preprocess_version=info.preprocess_version, info=json.dumps(info.extra), created_gen=gen,
            )
            s.add(space)
        self.write_manifest()
        return space

    # ---- lookups used by ingest --------------------------------------------------------------------
    def lookup_sources(self, uris: Sequence[str]) -> dict[str, SourceState]:
        out: dict[str, SourceState] = {}
        with self.read() as s:
            for part in _chunks(list(uris)):
                rows = s.execute(
                    select(Source.uri, Source.id, Source.content_id, Source.size, Source.mtime_ns).where(Source.uri.in_(part))
                )
                for uri, sid, cid, size, mtime in rows:
                    out[uri] = SourceState(sid, cid, size, mtime)
        return out

    def contents_with_vectors(self, content_ids: Iterable[int], space_id: int) -> set[int]:
        ids = list(content_ids)
        out: set[int] = set()
        with self.read() as s:
            for part in _chunks(ids):
                out.update(
                    s.scalars(select(Vector.content_id).where(Vector.space_id == space_id, Vector.content_id.in_(part)))
                )
        return out

    def contents_by_sha(self, shas: Iterable[str], space_id: int) -> dict[str, tuple[int, bool]]:
        """sha256 → (content id, has a vector in ``space_id``)."""
        shas = list(set(shas))
        out: dict[str, tuple[int, bool]] = {}
        with self.read() as s:
            for part in _chunks(shas):
                rows = s.execute(
                    select(Content.sha256, Content.id, Vector.space_id)
                    .outerjoin(Vector, (Vector.content_id == Content.id) & (Vector.space_id == space_id))
                    .where(Content.sha256.in_(part))
                )
                for sha, cid, sp in rows:
                    out[sha] = (cid, sp is not None)
        return out

    # ---- the batched write -----------------------------------------------------------------------
    def apply(
        self,
        upserts: Sequence[Upsert],
        space_id: int | None,
        *,
        errors: Sequence[tuple[str, str]] = (),
        remove_uris: Sequence[str] = (),
    ) -> ApplyResult:
        """Write one batch in one transaction: contents, vectors, sources, errors, removals."""
        result = ApplyResult()
        now = time.time()
        with self.write() as (s, gen):
            result.generation = gen
            if upserts:
                shas = list({u.sha256 for u in upserts})
                rows = [
                    {"sha256": u.sha256, "modality": u.modality, "byte_size": u.size, "width": u.width,
                     "height": u.height, "text": u.text, "created_gen": gen}
                    for u in {u.sha256: u for u in upserts}.values()
                ]
                before = _total_changes(s)
                s.execute(sqlite_insert(Content).on_conflict_do_nothing(index_elements=["sha256"]), rows)
                result.added_contents = _total_changes(s) - before
                ids: dict[str, int] = {}
                for part in _chunks(shas):
                    ids.update(s.execute(select(Content.sha256, Content.id).where(Content.sha256.in_(part))).all())
                vec_rows = {}
                for u in upserts:
                    if u.vector is not None:
                        if space_id is None:
                            raise ValueError("vector given without a space")
                        vec_rows[ids[u.sha256]] = {
                            "content_id": ids[u.sha256], "space_id": space_id, "modality": u.modality,
                            "vec": np.asarray(u.vector, dtype=np.float16).tobytes(), "gen": gen,
                        }
                if vec_rows:
                    before_v = _total_changes(s)
                    s.execute(
                        sqlite_insert(Vector).on_conflict_do_nothing(index_elements=["content_id", "space_id"]),
                        list(vec_rows.values()),
                    )
                    result.added_vectors = _total_changes(s) - before_v
                uris = [u.uri for u in upserts]
                old: dict[str, int] = {}
                for part in _chunks(uris):
                    old.update(s.execute(select(Source.uri, Source.content_id).where(Source.uri.in_(part))).all())
                src_rows = [
                    {"uri": u.uri, "kind": u.kind, "content_id": ids[u.sha256], "size": u.size,
                     "mtime_ns": u.mtime_ns, "updated_gen": gen}
                    for u in {u.uri: u for u in upserts}.values()
                ]
                stmt = sqlite_insert(Source)
                s.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["uri"],
                        set_={k: stmt.excluded[k] for k in ("kind", "content_id", "size", "mtime_ns", "updated_gen")},
                    ),
                    src_rows,
                )
                for part in _chunks(uris):
                    s.execute(delete(ErrorRecord).where(ErrorRecord.uri.in_(part)))
                new_cid = {u.uri: ids[u.sha256] for u in upserts}
                replaced = {cid for uri, cid in old.items() if cid != new_cid[uri]}
                result.removed_contents += self._gc(s, replaced, gen)
            if remove_uris:
                removed_cids: set[int] = set()
                for part in _chunks(list(remove_uris)):
                    removed_cids.update(s.scalars(select(Source.content_id).where(Source.uri.in_(part))))
                    result.removed_sources += s.execute(delete(Source).where(Source.uri.in_(part))).rowcount or 0
                    s.execute(delete(ErrorRecord).where(ErrorRecord.uri.in_(part)))  # a forgotten path keeps no error
                result.removed_contents += self._gc(s, removed_cids, gen)
            if errors:
                stmt = sqlite_insert(ErrorRecord)
                s.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["uri"], set_={"reason": stmt.excluded.reason, "gen": gen, "at": now}
                    ),
                    [{"uri": uri, "reason": reason, "gen": gen, "at": now} for uri, reason in errors],
                )
        return result

    @staticmethod
    def _gc(s: Session, content_ids: set[int], gen: int) -> int:
        """Delete contents no source points at any more, tombstoning their vectors."""
        if not content_ids:
            return 0
        ids = list(content_ids)
        still = set()
        for part in _chunks(ids):
            still.update(s.scalars(select(Source.content_id).where(Source.content_id.in_(part))))
        orphans = [c for c in ids if c not in still]
        for part in _chunks(orphans):
            vecs = s.execute(
                select(Vector.content_id, Vector.space_id, Vector.modality).where(Vector.content_id.in_(part))
            ).all()
            if vecs:
                s.execute(
                    sqlite_insert(Tombstone),
                    [{"content_id": c, "space_id": sp, "modality": m, "gen": gen} for c, sp, m in vecs],
                )
            s.execute(delete(Vector).where(Vector.content_id.in_(part)))
            s.execute(delete(Content).where(Content.id.in_(part)))
        return len(orphans)

    def uris_under(self, root: str, *, kind: str = "file") -> list[str]:
        """All source uris equal to ``root`` or below it (``root`` is an absolute path)."""
        with self.read() as s:
            return list(s.scalars(select(Source.uri).where(Source.kind == kind, _under_clause(Source.uri, root))))

    def error_uris_under(self, root: str) -> list[str]:
        """Paths with a recorded error equal to ``root`` or below it."""
        with self.read() as s:
            return list(s.scalars(select(ErrorRecord.uri).where(_under_clause(ErrorRecord.uri, root))))

    def vectors_under(self, space_id: int, root: str, modalities: Sequence[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(content ids, modalities, vectors) of the contents with a file at or below ``root``: the
        candidate set of a folder-filtered search, one indexed range scan instead of an ANN loop."""
        with self.read() as s:
            below = select(Source.content_id).where(Source.kind == "file", _under_clause(Source.uri, root))
            rows = s.execute(
                select(Vector.content_id, Vector.modality, Vector.vec).where(
                    Vector.space_id == space_id, Vector.modality.in_(list(modalities)), Vector.content_id.in_(below)
                ).order_by(Vector.content_id)
            ).all()
            dim = s.execute(select(Space.dim).where(Space.id == space_id)).scalar_one()
        if not rows:
            return np.zeros(0, np.int64), [], np.zeros((0, dim), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16).reshape(len(rows), dim)
        return ids, [r[1] for r in rows], vecs.astype(np.float32)

    # ---- reads for the index and for results -----------------------------------------------------
    def vectors(
        self, space_id: int, modality: str, *, since_gen: int = 0, until_gen: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, vectors float32) of one space and modality, optionally only those added since a gen."""
        with self.read() as s:
            q = select(Vector.content_id, Vector.vec).where(
                Vector.space_id == space_id, Vector.modality == modality, Vector.gen > since_gen
            )
            if until_gen is not None:
                q = q.where(Vector.gen <= until_gen)
            rows = s.execute(q.order_by(Vector.content_id)).all()
            dim = s.execute(select(Space.dim).where(Space.id == space_id)).scalar_one()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), dim)
        return ids, vecs.astype(np.float32)

    def tombstones(self, space_id: int, modality: str, *, since_gen: int, until_gen: int | None = None) -> np.ndarray:
        with self.read() as s:
            q = select(Tombstone.content_id).where(
                Tombstone.space_id == space_id, Tombstone.modality == modality, Tombstone.gen > since_gen
            )
            if until_gen is not None:
                q = q.where(Tombstone.gen <= until_gen)
            return np.fromiter(s.scalars(q), dtype=np.int64)

    def count_vectors(self, space_id: int, modality: str, *, until_gen: int | None = None) -> int:
        with self.read() as s:
            q = select(func.count()).select_from(Vector).where(Vector.space_id == space_id, Vector.modality == modality)
            if until_gen is not None:
                q = q.where(Vector.gen <= until_gen)
            return int(s.execute(q).scalar_one())

    def has_vectors(self, space_id: int, modality: str) -> bool:
        """Whether a space holds any vector of a modality (an index probe, not a count)."""
        with self.read() as s:
            return s.execute(
                select(Vector.content_id).where(Vector.space_id == space_id, Vector.modality == modality).limit(1)
            ).first() is not None

    def changes(self, space_id: int, modality: str, after: int, until: int | None = None) -> tuple[int, int]:
        """(vectors added, vectors removed) in one space and modality in generations ``after < gen <= until``."""
        with self.read() as s:
            qa = select(func.count()).select_from(Vector).where(
                Vector.space_id == space_id, Vector.modality == modality, Vector.gen > after)
            qr = select(func.count()).select_from(Tombstone).where(
                Tombstone.space_id == space_id, Tombstone.modality == modality, Tombstone.gen > after)
            if until is not None:
                qa, qr = qa.where(Vector.gen <= until), qr.where(Tombstone.gen <= until)
            return int(s.execute(qa).scalar_one()), int(s.execute(qr).scalar_one())

    def vectors_for(self, content_ids: Sequence[int], space_id: int) -> dict[int, np.ndarray]:
        """The stored (fp16 → float32) vectors of some contents in one space: exact re-ranking."""
        out: dict[int, np.ndarray] = {}
        with self.read() as s:
            for part in _chunks([int(i) for i in content_ids]):
                rows = s.execute(
                    select(Vector.content_id, Vector.vec).where(Vector.space_id == space_id, Vector.content_id.in_(part))
                )
                for cid, blob in rows:
                    out[cid] = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
        return out

    def content_meta(self, content_ids: Sequence[int]) -> dict[int, ContentMeta]:
        """Metadata and every source uri of some contents, in one query (the per-search join)."""
        ids = [int(i) for i in content_ids]
        out: dict[int, ContentMeta] = {}
        with self.read() as s:
            for part in _chunks(ids):
                rows = s.execute(
                    select(Content.id, Content.modality, Content.text, Content.width, Content.height, Source.uri)
                    .outerjoin(Source, Source.content_id == Content.id)
                    .where(Content.id.in_(part))
                    .order_by(Content.id, Source.uri)
                ).all()
                fields: dict[int, tuple] = {}
                uris: dict[int, list[str]] = {}
                for cid, modality, txt, w, h, uri in rows:
                    fields.setdefault(cid, (modality, txt, w, h))
                    bucket = uris.setdefault(cid, [])
                    if uri is not None:
                        bucket.append(uri)
                for cid, (modality, txt, w, h) in fields.items():
                    out[cid] = ContentMeta(cid, modality, txt, w, h, tuple(uris[cid]))
        return out

    def errors(self) -> list[ErrorRecord]:
        with self.read() as s:
            return list(s.scalars(select(ErrorRecord).order_by(ErrorRecord.uri)))

    def stats(self) -> dict:
        with self.read() as s:
            per_mod = dict(s.execute(select(Content.modality, func.count()).group_by(Content.modality)).all())
            sources = dict(s.execute(select(Source.kind, func.count()).group_by(Source.kind)).all())
            per_space = dict(s.execute(select(Vector.space_id, func.count()).group_by(Vector.space_id)).all())
            n_err = s.execute(select(func.count()).select_from(ErrorRecord)).scalar_one()
            gen = int(s.execute(select(Meta.value).where(Meta.key == "generation")).scalar_one())
            spaces = list(s.scalars(select(Space).order_by(Space.id)))
        return {
            "contents": per_mod,
            "sources": sources,
            "vectors_per_space": per_space,
            "errors": n_err,
            "generation": gen,
            "spaces": spaces,
        }

    def integrity_problems(self) -> list[str]:
        problems = []
        with self._reader.connect() as conn:
            res = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check")]
            if res != ["ok"]:
                problems.extend(f"sqlite integrity: {r}" for r in res)
            fk = list(conn.exec_driver_sql("PRAGMA foreign_key_check"))
            problems.extend(f"foreign key: {tuple(r)}" for r in fk)
            orphans = conn.execute(
                text("SELECT count(*) FROM contents c WHERE NOT EXISTS (SELECT 1 FROM sources s WHERE s.content_id=c.id)")
            ).scalar_one()
            if orphans:
                problems.append(f"{orphans} contents with no source")
        return problems

    def write_manifest(self) -> None:
        spaces = self.spaces()
        data = {
            "format": "mmsearch-store",
            "schema_version": SCHEMA_VERSION,
            "generation": self.generation(),
            "database": DB_NAME,
            "spaces": [
                {"id": sp.id, "key": sp.key, "spec": sp.spec, "dim": sp.dim, "metric": sp.metric,
                 "modalities": sp.modalities.split(","), "preprocess_version": sp.preprocess_version}
                for sp in spaces
            ],
        }
        atomic_write_bytes(self.root / MANIFEST, (json.dumps(data, indent=2) + "\n").encode())
