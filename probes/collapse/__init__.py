"""Neural collapse (Papyan, Han & Donoho 2020) of the features that feed a layer, and of its classifier.

Features ``h_i`` are the inputs of a module (by default the model's last ``nn.Linear``), captured with a
forward pre-hook and flattened per sample; the classifier is that layer's weight ``W`` [K, d] and bias
``b``. Statistics are accumulated per class in float64, batch by batch (:class:`CollapseStats`), so the
features of a whole data set never need to be held at once. Notation: ``N`` samples, ``C`` classes
present (``n_c > 0``), ``μ_c`` class means, ``μ_G`` the sample mean of all features, ``M = [μ_c − μ_G]``
(d × C, the centred class means as columns), ``W`` restricted to the rows of the present classes.

* ``nc1 = Tr(Σ_W Σ_B⁺)/C`` with ``Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ`` and
  ``Σ_B = (1/C) M Mᵀ``; ``Σ_B⁺`` is inverted on its top eigen-subspace of rank ≤ C − 1 only (float64, from
  the SVD of M), never by a default-tolerance pseudo-inverse, whose round-off eigenvalues blow up.
* ``nc2_equinorm_means`` / ``_weights``: std/mean (std with ddof=1) of ``‖μ_c − μ_G‖`` / of ``‖w_c‖``.
* ``nc2_equiangular_means`` / ``_weights``: std (ddof=1) of the C(C−1) off-diagonal cosines between
  centred means / classifier rows; ``nc2_maxangle_*``: mean of ``|cos + 1/(C−1)|`` over the same entries.
* ``nc2_etf_distance``: ``‖AAᵀ/‖AAᵀ‖_F − (I − 11ᵀ/C)/‖I − 11ᵀ/C‖_F‖_F`` with ``A = W`` when a classifier
  is given, else ``A = Mᵀ``; ``nc2_etf_distance_means`` always uses ``A = Mᵀ``.
* ``nc3_self_duality = ‖Wᵀ/‖W‖_F − M/‖M‖_F‖²_F`` (squared Frobenius norm).
* ``nc4_ncc_mismatch``: fraction of samples whose classifier prediction ``argmax_c (Wh + b)_c`` (bias
  included when given) differs from the nearest class mean ``argmin_c ‖h − μ_c‖``, both over the present
  classes. ``ncc_accuracy``: fraction whose nearest class mean is their own class.
* ``cdnv`` (Galanti et al. 2022): mean over class pairs c < c′ of ``(V_c + V_c′)/(2‖μ_c − μ_c′‖²)``,
  ``V_c = (1/n_c) Σ_{y_i=c} ‖h_i − μ_c‖²``.

Classes absent from the data are left out of every metric (their classifier rows too) and listed by
:func:`absent_classes`. Labels are class indices; negative labels (``ignore_index``) are skipped.

Sequence models: with one label per sequence and a layer whose input is ``[batch, seq, d]`` the feature
of a sample is taken at a chosen pooling (``pooling``: the first token ``"cls"``, the last non-padding
token ``"last"``, the ``attention_mask``-weighted ``"mean"``; ``"auto"``: last for causal models, first
otherwise); with one label per token (``[batch, seq]``) every scored token is a sample, shifted by one
for causal language models (the feature at t predicts the label at t + 1).

Modules: :mod:`~probes.collapse.stats` (streamed class statistics), :mod:`~probes.collapse.geometry`
(the metrics), :mod:`~probes.collapse.features` (features from a model) and :mod:`~probes.collapse.probe`
(the registered ``PROBE``); every public name is re-exported here.
"""

from __future__ import annotations

from probes.collapse.features import (
    POOLINGS,
    collect_ncc_counts,
    collect_stats,
    extract_features,
    extract_features_multi,
    find_layer,
)
from probes.collapse.geometry import class_arrays, metrics, ncc_counts
from probes.collapse.probe import CONVENTIONS, PROBE, CollapseProbe
from probes.collapse.stats import CollapseError, CollapseStats, absent_classes

__all__ = [
    "CONVENTIONS",
    "POOLINGS",
    "PROBE",
    "CollapseError",
    "CollapseProbe",
    "CollapseStats",
    "absent_classes",
    "class_arrays",
    "collect_ncc_counts",
    "collect_stats",
    "extract_features",
    "extract_features_multi",
    "find_layer",
    "metrics",
    "ncc_counts",
]
