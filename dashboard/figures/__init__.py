"""Plotly figures of stored probe results, one pure function per figure.

Every function takes plain data — the long scalars table of :meth:`landscape.store.Store.scalars`
(columns ``run, step, probe, key, value``; ``valid`` optional) or the ``arrays`` dict of one result — and
returns a :class:`plotly.graph_objects.Figure`, so the same figures work in a notebook::

    from dashboard import figures
    figures.hessian_eigenvalues_figure(store.scalars(probe="hessian"), lr={"run": 0.1}).show()

Figures of several runs overlay them, one colour per run (:func:`run_colors`). When the data a figure
needs are missing it returns :func:`empty_figure` with a message instead of raising.

The package imports neither Dash nor any part of the core (it reads plain tables and arrays), so it stays
light in a notebook. One module per subject: :mod:`.curves` (loss and accuracy over steps),
:mod:`.surfaces` (landscape slices and interpolation), :mod:`.trajectory` (the training path on the PCA
plane, animated), :mod:`.compare` (two results side by side with their difference), :mod:`.spectra` (Hessian
eigenvalues, trace and spectral density), :mod:`.sharpness`, :mod:`.collapse` (neural collapse),
:mod:`.grokking` and :mod:`.dynamics` (preconditioned sharpness, gradient noise scale, mode
connectivity), :mod:`.weights` (weight-matrix spectra: ESD, power-law alpha,
Marchenko–Pastur bulk); the shared look, and the publication style of static exports, live in :mod:`._style`
and the per-run series of a scalars table in :mod:`._series`.
"""

from __future__ import annotations

from dashboard.figures._style import (
    FONT,
    GRID,
    OKABE_ITO,
    PALETTE,
    PUBLICATION_TEMPLATE,
    TEXT,
    empty_figure,
    publication,
    run_colors,
)
from dashboard.figures.collapse import collapse_figure, cosine_matrix_figure
from dashboard.figures.compare import density_comparison_figure, surface_comparison_figure
from dashboard.figures.curves import training_curves_figure
from dashboard.figures.dynamics import (
    connectivity_figure,
    noise_scale_figure,
    preconditioned_sharpness_figure,
)
from dashboard.figures.grokking import (
    GROKKING_FRACTION,
    SC_THRESHOLD,
    grokking_figure,
    grokking_onset,
    sc_onset,
)
from dashboard.figures.sharpness import SHARPNESS_MEASURES, sharpness_figure
from dashboard.figures.spectra import (
    hessian_eigenvalues_figure,
    hessian_trace_figure,
    spectral_density_figure,
    spectrogram_figure,
)
from dashboard.figures.surfaces import interpolation_curves, slice_curves, slice_figure, surface_figure
from dashboard.figures.trajectory import animation_frames, trajectory_animation_figure
from dashboard.figures.weights import weights_alpha_figure, weights_alpha_heatmap_figure, weights_esd_figure

__all__ = [
    "FONT",
    "GRID",
    "GROKKING_FRACTION",
    "OKABE_ITO",
    "PALETTE",
    "PUBLICATION_TEMPLATE",
    "SC_THRESHOLD",
    "SHARPNESS_MEASURES",
    "TEXT",
    "animation_frames",
    "collapse_figure",
    "connectivity_figure",
    "cosine_matrix_figure",
    "density_comparison_figure",
    "empty_figure",
    "grokking_figure",
    "grokking_onset",
    "hessian_eigenvalues_figure",
    "hessian_trace_figure",
    "interpolation_curves",
    "noise_scale_figure",
    "preconditioned_sharpness_figure",
    "publication",
    "run_colors",
    "sc_onset",
    "sharpness_figure",
    "slice_curves",
    "slice_figure",
    "spectral_density_figure",
    "spectrogram_figure",
    "surface_comparison_figure",
    "surface_figure",
    "training_curves_figure",
    "trajectory_animation_figure",
    "weights_alpha_figure",
    "weights_alpha_heatmap_figure",
    "weights_esd_figure",
]
