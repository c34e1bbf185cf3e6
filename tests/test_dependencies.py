"""What the code and the tests import is what pyproject.toml declares, checked on the sources.

A module that arrives only through another package's requirements (multiaddr through libp2p,
ifaddr through zeroconf) or only with an extra (numpy with `plot`, once) works on the machine
that happens to have it and fails, or makes a test skip, on a plain install. So:

- the packages (node, overlay, consensus, sim) import at module level only what
  ``[project].dependencies`` declares; an import inside a function, under ``TYPE_CHECKING`` or
  guarded by ``except ImportError`` may come from an extra instead (``--plot`` needs matplotlib);
- the tests import only what the dependencies and the ``test`` extra declare (``make test``
  installs them, and a test must not skip for want of one);
- the benchmarks import only what something declares;
- and every runtime dependency is imported by the packages, so that none is left behind stale.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "overlay", "consensus", "sim")
FIRST_PARTY = {*PACKAGES, "tests", "bench"}
PROJECT = "enclave-swarm"


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """(runtime dependencies, extra -> its distributions), names normalised, self-references
    (``enclave-swarm[test]``) expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def parse(reqs: list[str]) -> set[str]:
        out = set()
        for req in reqs:
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", req)
            assert m, f"unparsable requirement {req!r}"
            out.add(_norm(m[1]) + (f"[{m[2]}]" if m[2] else ""))
        return out

    deps = parse(project["dependencies"])
    extras = {name: parse(reqs) for name, reqs in project["optional-dependencies"].items()}

    def expand(dists: set[str], seen: frozenset[str] = frozenset()) -> set[str]:
        out = set()
        for d in dists:
            name, _, rest = d.partition("[")
            if name != PROJECT:
                out.add(name)
                continue
            for extra in rest.rstrip("]").split(","):
                assert extra not in seen, f"extra {extra!r} includes itself"
                out |= expand(extras[extra.strip()], seen | {extra})
        return out

    assert all(not d.startswith(PROJECT) for d in deps)
    return deps, {name: expand(dists) for name, dists in extras.items()}


def _guards_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(t, ast.Name) and t.id in names for t in types):
            return True
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(source: str) -> Iterator[tuple[str, bool]]:
    """(top-level module name, eager) for each absolute import in ``source``: eager unless it
    sits in a function, under ``TYPE_CHECKING`` or in a ``try`` that catches ImportError."""

    def visit(node: ast.AST, eager: bool) -> Iterator[tuple[str, bool]]:
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.partition(".")[0], eager
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], eager
        for child in ast.iter_child_nodes(node):
            lazy = (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                    or (isinstance(node, ast.Try) and child in node.body and _guards_import_error(node))
                    or (isinstance(node, ast.If) and child in node.body and _is_type_checking(node.test)))
            yield from visit(child, eager and not lazy)

    yield from visit(ast.parse(source), True)


def _third_party(dirs: tuple[str, ...]) -> dict[tuple[str, bool], list[str]]:
    """(module, eager) -> the files importing it, for modules neither ours nor the stdlib's."""
    out: dict[tuple[str, bool], list[str]] = {}
    for d in dirs:
        for path in sorted((ROOT / d).rglob("*.py")):
            for mod, eager in imports(path.read_text()):
                if mod not in FIRST_PARTY and mod not in sys.stdlib_module_names:
                    out.setdefault((mod, eager), []).append(str(path.relative_to(ROOT)))
    return out


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()  # a scan of every installed distribution


def _providers(module: str) -> set[str]:
    return {_norm(d) for d in _distributions().get(module, [])}


def _undeclared(dirs: tuple[str, ...], eager_ok: set[str], lazy_ok: set[str]) -> list[str]:
    bad = []
    for (mod, eager), files in sorted(_third_party(dirs).items()):
        allowed = eager_ok if eager else lazy_ok
        dists = _providers(mod)
        if not dists & allowed:
            where = "module level" if eager else "lazily"
            bad.append(f"{mod} ({where}; from {sorted(dists) or 'nothing installed'}) in {files[:3]}")
    return bad


def test_the_packages_import_only_declared_dependencies() -> None:
    deps, extras = _declared()
    anything = deps.union(*extras.values())
    assert _undeclared(PACKAGES, deps, anything) == []


def test_the_tests_import_only_what_make_test_installs() -> None:
    deps, extras = _declared()
    assert _undeclared(("tests",), deps | extras["test"], deps | extras["test"]) == []


def test_the_benchmarks_import_only_declared_distributions() -> None:
    deps, extras = _declared()
    anything = deps.union(*extras.values())
    assert _undeclared(("bench",), anything, anything) == []


def test_every_runtime_dependency_is_imported_by_the_packages() -> None:
    deps, _ = _declared()
    used = {d for mod, _ in _third_party(PACKAGES) for d in _providers(mod)}
    assert deps - used == set()


def test_the_import_scan_tells_eager_from_lazy() -> None:
    src = """
import a.b
from c import d
from . import e
from .f import g
if TYPE_CHECKING:
    import h
try:
    import i
except (ValueError, ImportError):
    pass
try:
    import j
except ValueError:
    pass
def f():
    import k
class C:
    import m
"""
    assert sorted(imports(src)) == [("a", True), ("c", True), ("h", False), ("i", False), ("j", True),
                                    ("k", False), ("m", True)]
