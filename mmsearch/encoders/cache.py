"""The runtime cache: one folder per exported model, keyed by its space key.

Location: ``$MMSEARCH_CACHE``, else ``$XDG_CACHE_HOME/mmsearch``, else ``~/.cache/mmsearch``; exports
live in ``runtime/<hash of the space key>/``. An entry is published whole (written to a temporary
folder, then renamed), so a reader sees either nothing or a complete export; deleting the folder
(``mmsearch cache --clear``) only costs a new export on next use.

An entry holds ``meta.json`` (the space, preprocessing recipe, tokenizer kind, fidelity per tower and
precision) and the ONNX files it names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mmsearch.util import folder_size

if TYPE_CHECKING:  # pragma: no cover
    from mmsearch.types import CachedExport

#: Bumped when the export format changes; older entries are ignored (and re-exported).
EXPORT_VERSION = 5


def root() -> Path:
    env = os.environ.get("MMSEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mmsearch"


@dataclass(frozen=True)
class Entry:
    """One model's export folder (it may not exist yet)."""

    folder: Path

    @classmethod
    def for_key(cls, key: str, identity: str = "") -> "Entry":
        """The entry of a space ``key``; ``identity`` adds what the key leaves out (a local model's config
        and weights size). The CPU kind is part of it too: int8 fidelity and speed hold for one kind."""
        digest = hashlib.sha256(f"{key}|{identity}|{cpu_kind()}|export{EXPORT_VERSION}".encode()).hexdigest()[:24]
        return cls(root() / "runtime" / digest)

    @property
    def meta_path(self) -> Path:
        return self.folder / "meta.json"

    def meta(self) -> dict[str, Any] | None:
        """The entry's metadata, or None when it is absent, partial or from another export version."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("export_version") != EXPORT_VERSION:
            return None
        files = [f for tower in meta.get("towers", {}).values() for f in tower.get("files", {}).values()]
        files += [meta["tokenizer"]["file"]] if "file" in meta.get("tokenizer", {}) else []
        files += [meta["recipe"]["mel"]] if isinstance(meta.get("recipe", {}).get("mel"), str) else []
        return meta if all((self.folder / f).is_file() for f in files) else None

    def lock_path(self) -> Path:
        return self.folder.with_name(self.folder.name + ".lock")

    def staging(self) -> Path:
        """A fresh private folder beside the entry to export into."""
        tmp = self.folder.with_name(f".{self.folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def publish(self, staged: Path) -> None:
        """Make ``staged`` the entry (replacing a stale one; callers hold :meth:`lock_path`)."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(staged, self.folder)


def cpu_kind() -> str:
    """What int8 results depend on: the integer dot-product instructions present, and ONNX Runtime's version
    (without VNNI, full-range int8 weights saturate: an export measured elsewhere would not hold here)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        ort = version("onnxruntime")
    except PackageNotFoundError:
        ort = "none"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return f"{platform.machine()}:{','.join(f for f in wanted if f in flags)}:ort{ort}"


def entries() -> Iterator[tuple[Entry, dict[str, Any] | None, int]]:
    """Every export in the cache: (entry, meta or None when unusable, bytes on disk)."""
    base = root() / "runtime"
    if not base.is_dir():
        return
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):  # a ".…tmp-PID" is an export cut short
        size = folder_size(folder)  # an export being published may move away mid-walk
        entry = Entry(folder)
        yield entry, entry.meta(), size


def clear() -> tuple[int, int]:
    """Delete every export (and left-over staging folders). Returns (entries, bytes) removed."""
    base = root() / "runtime"
    count = size = 0
    if not base.is_dir():
        return 0, 0
    for path in list(base.iterdir()):
        if path.is_dir():
            size += folder_size(path)
            count += not path.name.startswith(".")
            shutil.rmtree(path, ignore_errors=True)
        elif path.suffix == ".lock":
            path.unlink(missing_ok=True)
    return count, size


def describe() -> list["CachedExport"]:
    """Every export in the cache, as :class:`mmsearch.types.CachedExport`."""
    from mmsearch.encoders.runtime import pick_precision
    from mmsearch.types import CachedExport

    found = []
    for entry, meta, size in entries():
        if meta is None:
            found.append(CachedExport(str(entry.folder), "", "", size, {}, usable=False))
            continue
        towers = {name: {"auto": pick_precision(t, "auto"), "fidelity": t["fidelity"], "ms_per_item": t.get("ms_per_item", {})}
                  for name, t in meta["towers"].items()}
        found.append(CachedExport(str(entry.folder), meta["key"], meta.get("exported_from", ""), size, towers))
    return found
