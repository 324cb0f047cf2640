"""Layers only point down: no module of the package imports from a layer above its own.

The order is the one docs/ARCHITECTURE.md draws (foundation -> tasks / spaces / profiles ->
models -> kernels -> evaluators -> spec -> pipeline -> orchestrator -> testing -> cli). Every
import counts: module level, inside functions, under ``TYPE_CHECKING``, relative, and
``importlib.import_module`` with a literal name. Every module of the package must have a rank,
so a new top-level module or package is placed here when it is added.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import paretoforge

PACKAGE_DIR = Path(paretoforge.__file__).parent
REPO_ROOT = PACKAGE_DIR.parent

# The layer order. A module may import from its own rank or below, never above. Names that do
# not exist (yet) simply never match.
RANKS: dict[str, int] = {
    # 0 foundation
    "paretoforge.exceptions": 0,
    "paretoforge.registry": 0,
    "paretoforge._io": 0,
    "paretoforge._sysinfo": 0,
    "paretoforge._system": 0,  # pinning, core counts
    "paretoforge._ray_auth": 0,
    "paretoforge.names": 0,  # trial-attribute names, stop reasons, failure kinds, precisions
    "paretoforge.manifest": 0,  # the typed artifact manifest (written by the pipeline)
    # 1 data the rest is parametrised by
    "paretoforge.tasks": 1,
    "paretoforge.search_spaces": 1,
    "paretoforge.hw_profiles": 1,
    "paretoforge.samplers": 1,
    # 2..9
    "paretoforge.models": 2,
    "paretoforge.kernels": 3,
    "paretoforge.evaluators": 4,
    "paretoforge.spec": 5,
    "paretoforge.pipeline": 6,
    "paretoforge.orchestrator": 7,
    "paretoforge.testing": 8,  # fakes and cluster helpers: only tests and benchmarks import it
    "paretoforge.cli": 9,
}

# The package root re-exports the public API (from spec and orchestrator): the root itself is
# not checked, and a module inside the package that imports the root (``import paretoforge``,
# ``from paretoforge import Spec``) counts as importing the top layer; it imports what it needs
# from where that lives.
ROOT = "paretoforge"
ROOT_RANK = max(RANKS.values())
TESTING = "paretoforge.testing"

# Upward imports that are known and being removed: {(file relative to the repo, importing
# module, imported module): reason}. Each entry must still occur (a fixed one is removed here).
# Reason for entries in the lead's files: "lead: being moved in the pipeline refactor".
ALLOWED: dict[tuple[str, str, str], str] = {}


def rank_of(module: str) -> int | None:
    """The rank of ``module`` (longest ranked prefix); None for the root or an unranked one."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        rank = RANKS.get(".".join(parts[:n]))
        if rank is not None:
            return rank
    return None


def module_name(relpath: str) -> tuple[str, bool]:
    """``paretoforge/kernels/ort.py`` -> (``paretoforge.kernels.ort``, is a package)."""
    parts = list(Path(relpath).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _literal_prefix(node: ast.expr) -> str | None:
    """The module name an ``import_module`` call names: a literal, or an f-string's head."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value.rstrip(".")
    return None


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every (line, module of the package) that ``source`` imports, however it imports it."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == ROOT:
                # `from paretoforge import kernels` imports a layer; `import Spec`, the root.
                for alias in node.names:
                    sub = f"{ROOT}.{alias.name}"
                    yield node.lineno, sub if rank_of(sub) is not None else ROOT
            else:
                yield node.lineno, target
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "import_module":
                target = _literal_prefix(node.args[0])
                if target is not None:
                    yield node.lineno, target


def violations(files: Iterable[tuple[str, str]]) -> list[str]:
    """One line per broken rule in ``files`` ((path relative to the repo, source) pairs)."""
    out = []
    for relpath, source in files:
        module, is_package = module_name(relpath)
        if module == ROOT:
            continue
        rank = rank_of(module)
        if rank is None:
            out.append(f"{relpath}: module {module} has no layer; add its top-level name to "
                       f"RANKS in tests/test_layers.py (and to docs/ARCHITECTURE.md)")
            continue
        for line, target in sorted(imported_modules(source, module, is_package)):
            if target != ROOT and not target.startswith(ROOT + "."):
                continue
            in_testing = module == TESTING or module.startswith(TESTING + ".")
            if (target == TESTING or target.startswith(TESTING + ".")) and not in_testing:
                out.append(f"{relpath}:{line}: {module} imports {target}: test support is "
                           f"for tests and benchmarks only")
                continue
            target_rank = ROOT_RANK if target == ROOT else rank_of(target)
            if target_rank is None:
                out.append(f"{relpath}:{line}: {module} (rank {rank}) imports {target}, "
                           f"which has no layer")
            elif target_rank > rank and (relpath, module, target) not in ALLOWED:
                out.append(f"{relpath}:{line}: {module} (rank {rank}) imports {target} "
                           f"(rank {target_rank})")
    return out


def package_files() -> list[tuple[str, str]]:
    return [(p.relative_to(REPO_ROOT).as_posix(), p.read_text(encoding="utf-8"))
            for p in sorted(PACKAGE_DIR.rglob("*.py"))]


def test_every_import_points_down_the_layers():
    found = violations(package_files())
    assert not found, "Imports that point up the layer order:\n" + "\n".join(found)


def test_allowed_upward_imports_still_exist():
    files = package_files()
    seen = {(relpath, module_name(relpath)[0], target)
            for relpath, source in files
            for _, target in imported_modules(source, *module_name(relpath))}
    stale = [key for key in ALLOWED if key not in seen]
    assert not stale, f"Remove these from ALLOWED, they are fixed: {stale}"


def test_the_checker_reports_what_breaks_the_rules():
    fake = [
        ("paretoforge/kernels/fake.py",
         "from __future__ import annotations\n"
         "from typing import TYPE_CHECKING\n"
         "from paretoforge.exceptions import BuildError\n"  # down: fine
         "from paretoforge.kernels.ort import ORT_DTYPES\n"  # same layer: fine
         "if TYPE_CHECKING:\n"
         "    from paretoforge.orchestrator.driver import run_search\n"  # line 6: up
         "def f():\n"
         "    from ..evaluators import latency\n"  # line 8: up, relative
         "    import paretoforge.spec\n"  # line 9: up
         "    from paretoforge import Spec\n"  # line 10: the root re-exports the top
         "    import importlib\n"
         "    importlib.import_module(f'paretoforge.pipeline.{f}')\n"),  # line 12: up
        ("paretoforge/cli.py", "from paretoforge.testing import FakeWorker\n"),
        ("paretoforge/newthing/__init__.py", "from paretoforge.kernels import ort\n"),
        ("paretoforge/models/fake.py", "from . import surgery\nfrom .. import kernels\n"),
    ]
    found = violations(fake)
    assert found == [
        "paretoforge/kernels/fake.py:6: paretoforge.kernels.fake (rank 3) imports "
        "paretoforge.orchestrator.driver (rank 7)",
        "paretoforge/kernels/fake.py:8: paretoforge.kernels.fake (rank 3) imports "
        "paretoforge.evaluators (rank 4)",
        "paretoforge/kernels/fake.py:9: paretoforge.kernels.fake (rank 3) imports "
        "paretoforge.spec (rank 5)",
        "paretoforge/kernels/fake.py:10: paretoforge.kernels.fake (rank 3) imports "
        "paretoforge (rank 9)",
        "paretoforge/kernels/fake.py:12: paretoforge.kernels.fake (rank 3) imports "
        "paretoforge.pipeline (rank 6)",
        "paretoforge/cli.py:1: paretoforge.cli imports paretoforge.testing: test support is "
        "for tests and benchmarks only",
        "paretoforge/newthing/__init__.py: module paretoforge.newthing has no layer; add its "
        "top-level name to RANKS in tests/test_layers.py (and to docs/ARCHITECTURE.md)",
        "paretoforge/models/fake.py:2: paretoforge.models.fake (rank 2) imports "
        "paretoforge.kernels (rank 3)",
    ]
