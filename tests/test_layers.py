"""Layers import downward only: a lower layer never imports a higher one (lazily or not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmsearch"
#: the data flow, bottom up; a module may import its own layer and those below
RANK = {"util": 0, "errors": 0, "types": 0, "config": 0, "encoders": 1, "store": 1, "ann": 2, "ingest": 3,
        "query": 4, "doctor": 5, "engine": 6, "present": 6, "reports": 6, "world": 6, "cli": 7, "commands": 7, "server": 7, "__init__": 8,
        "__main__": 8}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """Modules imported at run time (type-checking-only imports make no cycle and are left out)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "mmsearch":
            found.update(f"mmsearch.{a.name}" for a in node.names)  # from mmsearch import present
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmsearch"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mmsearch"))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    me = _layer(".".join(rel.parts))
    if path.name == "__init__.py" and path.parent == PACKAGE:
        return  # the public API re-exports (lazily) from every layer
    upward = [m for m in _imports(path) if _layer(m) != me and RANK[_layer(m)] > RANK[me]]
    assert not upward, f"{me} imports higher layers: {upward}"


def test_every_layer_is_ranked():
    assert {_layer(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in MODULES} <= set(RANK)
