"""DESIGN.md rule 1: consensus/ is sans-IO and imports nothing from the other folders."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"node", "overlay", "sim", "trio", "libp2p", "time", "socket", "asyncio", "os",
             "threading", "datetime", "random"}
FILES = sorted((Path(__file__).parents[2] / "consensus").glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_forbidden_imports_or_global_randomness(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "random"):
            assert node.func.attr == "Random", f"{path.name} uses the global random generator"
