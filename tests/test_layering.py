"""The house rules, read from the source: imports run one way and no file grows into a grab-bag.

* The core (``landscape/``) never imports ``probes`` or ``dashboard``: the probe registry finds the
  probes by package name (``importlib``), and the CLI's lazy ``dashboard`` import that serves the app is
  the one allowed arrow into the dashboard.
* ``dashboard/`` takes from the core only ``landscape.store`` (so the app starts without torch), and
  nothing from ``probes``.
* ``probes/`` never imports ``dashboard``.
* No Python source file in the repository is over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
SOURCE_DIRS = ("landscape", "probes", "dashboard", "tests", "benchmarks", "examples")

# (importing file relative to ROOT, imported top-level package) pairs that are allowed across the layers.
ALLOWED = {("landscape/cli.py", "dashboard")}


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """Every imported module name in ``path`` with its line number (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def _violations(folder: str, forbidden: set[str], only_from_core: set[str] | None = None) -> list[str]:
    bad = []
    for path in _sources(folder):
        rel = path.relative_to(ROOT).as_posix()
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in forbidden and (rel, top) not in ALLOWED:
                bad.append(f"{rel}:{line} imports {module}")
            if only_from_core is not None and top == "landscape" and module not in only_from_core:
                bad.append(f"{rel}:{line} imports {module} (the dashboard may use only {sorted(only_from_core)})")
    return bad


def test_the_core_never_imports_probes_or_dashboard() -> None:
    assert _violations("landscape", {"probes", "dashboard"}) == []


def test_the_dashboard_imports_only_the_store_from_the_core() -> None:
    assert _violations("dashboard", {"probes"}, only_from_core={"landscape.store"}) == []


def test_probes_never_import_the_dashboard() -> None:
    assert _violations("probes", {"dashboard"}) == []


def test_the_registry_finds_probes_by_name_not_by_import() -> None:
    # The one place the core names the probes package: a string handed to importlib.
    text = (ROOT / "landscape" / "probe.py").read_text(encoding="utf-8")
    assert 'PROBES_PACKAGE = "probes"' in text


@pytest.mark.parametrize("path", _sources(*SOURCE_DIRS), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_source_file_is_a_grab_bag(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES}): split it by job.")


def test_the_guard_sees_an_arrow_when_there_is_one(tmp_path: Path) -> None:
    # The checker itself: absolute, relative and function-local imports are all found and resolved.
    sample = tmp_path / "sample.py"
    sample.write_text("import torch\nfrom .store import Store\n\ndef f():\n    from probes.slices import slice_1d\n")
    assert _imports(sample, package="landscape") == [(1, "torch"), (2, "landscape.store"), (5, "probes.slices")]
