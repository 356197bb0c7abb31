"""The figures package as notebooks use it: its public names, and no Dash or core import behind them."""

from __future__ import annotations

import ast
from pathlib import Path

import dashboard
from dashboard import figures

DASHBOARD = Path(dashboard.__file__).parent

# Every public name that `from dashboard import figures; figures.<name>` has offered since the figures
# lived in one module; notebooks rely on them, so a new layout must keep each one at the package level.
PUBLIC = {
    "FONT", "GRID", "GROKKING_FRACTION", "PALETTE", "SC_THRESHOLD", "SHARPNESS_MEASURES", "TEXT",
    "collapse_figure", "cosine_matrix_figure", "empty_figure", "grokking_figure", "grokking_onset",
    "hessian_eigenvalues_figure", "hessian_trace_figure", "interpolation_curves", "run_colors", "sc_onset",
    "sharpness_figure", "slice_curves", "slice_figure", "spectral_density_figure", "spectrogram_figure",
    "surface_figure", "training_curves_figure",
    # training dynamics beyond SGD
    "connectivity_figure", "noise_scale_figure", "preconditioned_sharpness_figure",
    "weights_alpha_figure", "weights_alpha_heatmap_figure", "weights_esd_figure",
}
# Added with the sharing features: the publication style, the trajectory animation, comparison figures.
PUBLIC |= {"OKABE_ITO", "PUBLICATION_TEMPLATE", "publication", "animation_frames", "trajectory_animation_figure",
           "surface_comparison_figure", "density_comparison_figure"}


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module a source file imports, at any depth (lazy imports in functions too);
    ``from a import b`` counts as ``a.b`` so that ``from landscape import store`` reads as ``landscape.store``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(names: set[str], package: str) -> set[str]:
    return {n for n in names if n == package or n.startswith(package + ".")}


def test_every_public_name_is_offered_by_the_package():
    assert set(figures.__all__) == PUBLIC
    missing = sorted(name for name in PUBLIC if not hasattr(figures, name))
    assert missing == []
    assert figures.SHARPNESS_MEASURES["lambda_max"] == "λmax"
    assert (figures.GROKKING_FRACTION, figures.SC_THRESHOLD) == (0.95, 0.01)


def test_the_figures_package_imports_neither_dash_nor_the_core():
    files = sorted((DASHBOARD / "figures").glob("*.py"))
    assert len(files) >= 8  # the package and its subject modules, not an empty directory
    for path in files:
        names = imported_modules(path)
        assert _within(names, "dash") == set(), f"{path.name} imports Dash"
        assert {n for n in _within(names, "landscape") if not n.startswith("landscape.store")} == set()
