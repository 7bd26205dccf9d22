"""Typed results returned by :class:`mmsearch.Engine`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Moment:
    """Where in a video a query matched: seconds ``start``..``end`` around the ``peak`` (the best frame's
    time, where a thumbnail is taken), its calibrated ``score``, and what showed it: ``seen`` (frames),
    ``heard`` (the soundtrack) or ``both``."""

    start: float
    end: float
    peak: float
    score: float
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    """One search result. ``id`` is the content id (one per distinct content; duplicates share it)."""

    rank: int
    id: int
    score: float
    modality: str
    path: str | None  # first file path holding this content, None for added texts
    paths: tuple[str, ...]  # every source: file paths and "text:<key>" uris
    text: str | None = None  # the text (for text items)
    width: int | None = None
    height: int | None = None
    space: str = ""
    #: comparable across spaces and kinds: standard deviations above unrelated queries (mmsearch.query.calibrate)
    calibrated: float | None = None
    duration: float | None = None  # seconds (sounds, videos)
    #: where in the sound the query matched best (its best window), or a video's best moment, seconds
    start: float | None = None
    end: float | None = None
    #: how the score came about: raw cosine, the background's mean and spread, the window matched
    why: dict[str, Any] | None = None
    #: with ``search(collapse_dups=…)``: the paths of lower-ranked hits folded into this one as near-duplicates
    duplicates: tuple[str, ...] = ()
    # photo metadata (EXIF), None when unknown: date taken as ISO 8601 ("2023-06-01T12:34:56", with
    # "+02:00" when the file gives its offset), camera ("Canon EOS 5D"), position (lat, lon) in degrees
    taken_at: str | None = None
    camera: str | None = None
    gps: tuple[float, float] | None = None
    #: a video's best moments, best first (``start``/``end`` are the first's); see ``search(moments=…)``
    moments: tuple[Moment, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paths"] = list(self.paths)
        d["moments"] = [m.to_dict() for m in self.moments]
        d["duplicates"] = list(self.duplicates)
        d["gps"] = list(self.gps) if self.gps is not None else None
        return d


@dataclass
class IndexReport:
    """What one ``index`` run did."""

    space: str = ""  # the first model written (see spaces)
    spaces: list[str] = field(default_factory=list)  # every model this run wrote into, by spec
    scanned: int = 0
    indexed: int = 0  # embedded now
    reused: int = 0  # moved, renamed, copied or duplicate content: linked without embedding
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    gpu_decoded: int = 0  # images decoded on the tensor path (nvJPEG on CUDA: mmsearch.ingest.gpu_decode)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = [{"path": p, "reason": r} for p, r in self.errors]
        d["ok"] = self.ok
        return d


@dataclass(frozen=True)
class SpaceStats:
    id: int
    key: str
    spec: str
    dim: int
    vectors: int
    index: dict[str, str]  # modality -> index kind on disk ("flat", "ivf", …, or "none")
    #: modality -> the search breadth tuned at build and the Recall@10 measured per kind of query:
    #: {"param": "nprobe", "value": 24, "target": 0.95, "recall": {"image": 0.97, "text": 0.96}, "n": …}
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: modality -> where its searches run: "faiss-cpu", "torch on cuda:0", "faiss-gpu on cuda:0" (or "none")
    search: dict[str, str] = field(default_factory=dict)
    #: modality -> bytes of its index files on disk (an on-disk index: the .faiss and its .ivfdata lists)
    index_bytes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    store: str
    items: dict[str, int]  # distinct contents per modality
    sources: dict[str, int]  # files / added texts
    spaces: tuple[SpaceStats, ...]
    errors: int
    generation: int
    size_bytes: int
    faiss: str = ""  # the active faiss build: "faiss-cpu 1.15.1", "faiss-gpu 1.15.1 (1 GPU)"
    database: str = ""  # the database server holding the truth (URL without password); "": the folder's SQLite

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spaces"] = [s.to_dict() for s in self.spaces]
        return d


@dataclass(frozen=True)
class CachedExport:
    """One model exported for the CPU runtime (``mmsearch cache``).

    ``towers``: per tower (image, text), the precision ``auto`` runs, and per precision the measured
    fidelity (minimum cosine to torch fp32) and time per item on the machine that exported it.
    """

    folder: str
    key: str  # the space key: the model's vectors are comparable with every store's space of that key
    exported_from: str  # the model spec that made it
    size_bytes: int
    towers: dict[str, dict[str, Any]]
    usable: bool = True  # False: partial or from another export version (re-exported on next use)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ErrorInfo:
    """A path that could not be indexed: why, when, and in which model's space (None: the file itself)."""

    path: str
    reason: str
    at: float
    space: str | None = None  # the model spec whose space lacks the file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BatchCommitted:
    """One batch of ``index`` work made durable (passed to ``Engine.index(on_commit=…)``).

    Everything listed here is in the store, even if the process dies right after.
    """

    generation: int  # the store generation this batch committed as
    done: int  # files handled so far in this run (committed, unchanged or failed)
    total: int  # files found by the walk
    committed: tuple[str, ...]  # paths indexed or linked in this batch
    failed: tuple[str, ...]  # paths whose error was recorded in this batch

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["committed"], d["failed"] = list(self.committed), list(self.failed)
        return d


@dataclass(frozen=True)
class DoctorCheck:
    """One finding of ``Engine.doctor``. ``status``: ok, note (informational), repaired or problem."""

    name: str
    status: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def fixed(cls, name: str, repair: bool, problem: str, do: Callable[[], str]) -> "DoctorCheck":
        """A problem, repaired by ``do()`` when asked to (its return says how); a failed repair stays a problem."""
        if not repair:
            return cls(name, "problem", problem)
        try:
            return cls(name, "repaired", f"{problem}: {do()}")
        except Exception as exc:
            return cls(name, "problem", f"{problem}; repair failed: {str(exc).splitlines()[0][:300]}")


@dataclass
class DoctorReport:
    """What ``Engine.doctor`` checked, found and repaired. ``ok``: no problem left."""

    store: str
    repair: bool
    checks: list[DoctorCheck] = field(default_factory=list)

    @property
    def problems(self) -> list[DoctorCheck]:
        return [c for c in self.checks if c.status == "problem"]

    @property
    def repaired(self) -> list[DoctorCheck]:
        return [c for c in self.checks if c.status == "repaired"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "repair": self.repair, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class DupMember:
    """One distinct content of a near-duplicate cluster (``Engine.dups``).

    ``paths``: every file holding exactly these bytes (more than one: exact copies, ``exact``).
    ``similarity``: cosine to the cluster's first member (1.0 for that one).
    """

    id: int
    paths: tuple[str, ...]
    similarity: float
    width: int | None = None
    height: int | None = None
    duration: float | None = None  # seconds (sounds)
    size: int | None = None  # bytes of the file

    @property
    def exact(self) -> bool:
        """Several files hold these very bytes (one content, several paths)."""
        return len(self.paths) > 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paths"] = list(self.paths)
        d["exact"] = self.exact
        return d


@dataclass(frozen=True)
class DupCluster:
    """Files that look the same (``Engine.dups``): members best first, the one to keep first.

    Best: most pixels (images) or longest (sounds), then the largest file. ``similarity``: the other
    members' mean cosine to the first (1.0 when the cluster is exact copies only). Members are joined
    when any two are within the threshold, so two members can be further apart than it (their
    ``similarity`` to the first says how far).
    """

    modality: str
    space: str  # model spec of the vectors compared
    threshold: float
    similarity: float
    members: tuple[DupMember, ...]

    @property
    def keep(self) -> str:
        """The first file of the best member: the copy to keep."""
        return self.members[0].paths[0]

    @property
    def duplicates(self) -> tuple[str, ...]:
        """Every file of the cluster but :attr:`keep`."""
        return tuple(p for m in self.members for p in m.paths)[1:]

    @property
    def exact(self) -> bool:
        """Only exact copies (one content, several files)."""
        return len(self.members) == 1

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "space": self.space, "threshold": self.threshold,
                "similarity": self.similarity, "exact": self.exact, "files": len(self.duplicates) + 1,
                "keep": self.keep, "duplicates": list(self.duplicates),
                "members": [m.to_dict() for m in self.members]}


@dataclass(frozen=True)
class WatchSync:
    """One step of ``Engine.watch`` (passed to ``on_sync``), told once its work is durable.

    ``kind``: ``start`` (the sync of every watched root when the watch begins, like ``index``),
    ``changes`` (a debounced batch of changes), ``returned`` (a root that had vanished is back: it is
    synced again like at the start), ``resync`` (the other roots, synced in full again when the watch
    restarts because a root came or went: what changed in between was seen by no watch), ``vanished``
    (a root went away, e.g. a disk unplugged: nothing is written and its entries stay in the store
    until it comes back) or ``waiting`` (another process writes the store: changes wait for it,
    ``notice`` says who).

    ``added``/``changed``/``moved``/``removed`` are told for ``changes`` (files new to the store,
    files whose content changed, files that arrived with the content of a path removed in the same
    sync, linked without a model call, and files gone); a full sync (``start``, ``returned``, ``resync``) tells
    what ``index`` tells: ``indexed`` (embedded now), ``reused`` (linked), ``unchanged``, ``removed``.
    """

    kind: str
    roots: tuple[str, ...]  # the watched roots this step is about
    paths: int = 0  # changed paths the batch named, after coalescing (``changes``)
    added: int = 0
    changed: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    indexed: int = 0
    reused: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    errors: tuple[tuple[str, str], ...] = ()
    interrupted: bool = False  # cut short by the stop (what it committed is kept)
    notice: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["roots"] = list(self.roots)
        d["errors"] = [{"path": p, "reason": r} for p, r in self.errors]
        return d


@dataclass
class WatchReport:
    """What one ``Engine.watch`` session did, from its start to its stop.

    The counts are the session's changes (``WatchSync`` of kind ``changes``); ``full`` sums the full
    syncs: the one at the start and one per root that came back (``returned`` counts those).
    """

    roots: list[str] = field(default_factory=list)
    syncs: int = 0  # batches of changes applied
    added: int = 0
    changed: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    full: IndexReport = field(default_factory=IndexReport)
    returned: int = 0
    vanished: list[str] = field(default_factory=list)  # roots absent when the watch stopped (entries kept)
    errors: list[tuple[str, str]] = field(default_factory=list)  # the session's per-file problems (the last 1000)
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False  # a sync was cut short by the stop (what it committed is kept)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["full"] = self.full.to_dict()
        d["errors"] = [{"path": p, "reason": r} for p, r in self.errors]
        return d
