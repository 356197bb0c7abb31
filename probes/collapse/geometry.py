"""The neural-collapse metrics from class statistics and a classifier (definitions: :mod:`probes.collapse`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probes.collapse.stats import CollapseError, CollapseStats, _as_features, _as_labels

__all__ = ["class_arrays", "metrics", "ncc_counts"]

_EPS = float(np.finfo(np.float64).eps)


class _Geometry:
    """Everything derived from the statistics and the classifier, restricted to the classes present."""

    def __init__(self, stats: CollapseStats, weight: Any = None, bias: Any = None) -> None:
        if stats.means is None:
            raise CollapseError("no features were seen (every label was negative or the data was empty).")
        self.stats = stats
        self.classes = torch.as_tensor(stats.classes)
        self.C = len(self.classes)
        if self.C < 2:
            raise CollapseError(f"collapse metrics need at least 2 classes with samples, got {self.C}.")
        self.counts = stats.counts[self.classes].to(torch.float64)
        self.N = float(self.counts.sum())
        self.means = stats.means[self.classes]  # [C, d]
        self.global_mean = (self.counts[:, None] * self.means).sum(0) / self.N
        self.centred = self.means - self.global_mean  # rows: μ_c − μ_G
        self.weight, self.bias = self._classifier(weight, bias)

    def _classifier(self, weight: Any, bias: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if weight is None:
            if bias is not None:
                raise CollapseError("bias was given without weight; pass the classifier's weight too.")
            return None, None
        w = torch.as_tensor(weight).detach().to("cpu", torch.float64)
        if w.dim() != 2 or w.shape[1] != self.stats.dim:
            raise CollapseError(f"weight must have shape [n_classes, {self.stats.dim}] (one row per class, "
                                f"matching the feature dimension), got {tuple(w.shape)}.")
        top = int(self.classes.max())
        if w.shape[0] <= top:
            raise CollapseError(f"weight has {w.shape[0]} rows but the labels go up to {top}.")
        b = None
        if bias is not None:
            b = torch.as_tensor(bias).detach().to("cpu", torch.float64).reshape(-1)
            if b.shape[0] != w.shape[0]:
                raise CollapseError(f"bias has {b.shape[0]} entries but weight has {w.shape[0]} rows.")
            b = b[self.classes]
        return w[self.classes], b

    def nc1(self) -> float:
        within = self.stats.within / self.N
        u, s, _ = torch.linalg.svd(self.centred.T, full_matrices=False)  # centred.T = M, d × C
        # Σ_B = U diag(s²/C) Uᵀ has rank ≤ C − 1; singular values at the round-off level of M (whose entries
        # carry errors of order eps·‖μ_c‖ from centring) are rank deficiency, not signal.
        scale = max(float(s[0]), float(self.means.norm()))
        tol = max(self.stats.dim, self.C) * _EPS * scale
        rank = int(min(self.C - 1, int((s > tol).sum())))
        if rank == 0:
            return math.inf
        u, s = u[:, :rank], s[:rank]
        projected = torch.einsum("dk,de,ek->k", u, within, u)
        return float((projected / s.pow(2)).sum())  # Tr(Σ_W Σ_B⁺)/C = Σ_k u_kᵀΣ_W u_k / s_k²

    def cdnv(self) -> float:
        variances = self.stats.class_sq[self.classes] / self.counts
        distances = torch.cdist(self.means[None], self.means[None])[0].pow(2)
        i, j = torch.triu_indices(self.C, self.C, offset=1)
        return float(((variances[i] + variances[j]) / (2 * distances[i, j])).mean())


def _cosines(rows: torch.Tensor) -> torch.Tensor:
    unit = rows / rows.norm(dim=1, keepdim=True)
    return unit @ unit.T


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    return matrix[~torch.eye(matrix.shape[0], dtype=torch.bool)]


def _equinorm(rows: torch.Tensor) -> float:
    norms = rows.norm(dim=1)
    return float(norms.std(unbiased=True) / norms.mean())


def _etf_distance(rows: torch.Tensor) -> float:
    c = rows.shape[0]
    gram = rows @ rows.T
    target = torch.eye(c, dtype=torch.float64) - 1.0 / c
    return float((gram / gram.norm() - target / target.norm()).norm())


def _angles(rows: torch.Tensor, suffix: str) -> dict[str, float]:
    c = rows.shape[0]
    off = _off_diagonal(_cosines(rows))
    return {
        f"nc2_equinorm_{suffix}": _equinorm(rows),
        f"nc2_equiangular_{suffix}": float(off.std(unbiased=True)),
        f"nc2_maxangle_{suffix}": float((off + 1.0 / (c - 1)).abs().mean()),
    }


def metrics(features: Any, labels: Any = None, weight: Any = None, bias: Any = None) -> dict[str, float]:
    """Neural-collapse metrics (definitions in the module docstring), in float64.

    ``features`` is a per-sample array [N, d] with ``labels`` [N], or a :class:`CollapseStats` (labels
    then None; ``nc4_ncc_mismatch`` and ``ncc_accuracy`` need per-sample features and are left out —
    count them with :func:`ncc_counts` in a second pass). ``weight`` [K, d] and ``bias`` [K] are the
    classifier; keys that need them are absent without them. At least two classes must be present.
    """
    if isinstance(features, CollapseStats):
        if labels is not None:
            raise CollapseError("labels must be None when features is a CollapseStats (it holds them already).")
        stats, per_sample = features, None
    else:
        if labels is None:
            raise CollapseError("labels are required with per-sample features.")
        h, y = _as_features(features), _as_labels(labels)
        stats, per_sample = CollapseStats.of(h, y), (h, y)
    geometry = _Geometry(stats, weight, bias)
    out = {"nc1": geometry.nc1(), **_angles(geometry.centred, "means")}
    out["nc2_etf_distance_means"] = _etf_distance(geometry.centred)
    out["nc2_etf_distance"] = out["nc2_etf_distance_means"]
    out["cdnv"] = geometry.cdnv()
    if geometry.weight is not None:
        w = geometry.weight
        out.update(_angles(w, "weights"))
        out["nc2_etf_distance"] = _etf_distance(w)
        m = geometry.centred.T
        out["nc3_self_duality"] = float((w.T / w.norm() - m / m.norm()).norm().pow(2))
    if per_sample is not None:
        mismatch, correct = ncc_counts(per_sample[0], per_sample[1], stats, weight, bias)
        n = geometry.N
        out["ncc_accuracy"] = correct / n
        if geometry.weight is not None:
            out["nc4_ncc_mismatch"] = mismatch / n
    out["n_classes"] = float(geometry.C)
    return out


def ncc_counts(features: Any, labels: Any, stats: CollapseStats, weight: Any = None,
               bias: Any = None) -> tuple[int, int]:
    """For one batch: (samples whose classifier and nearest-class-mean predictions differ, samples whose
    nearest class mean is their label). Means come from ``stats`` (all the data); the first count is 0
    without a classifier. Predictions range over the classes present in ``stats``."""
    geometry = _Geometry(stats, weight, bias)
    h, y = _as_features(features), _as_labels(labels)
    keep = y >= 0
    h, y = h[keep], y[keep]
    # argmin_c ‖h − μ_c‖² = argmin_c (‖m_c‖² − 2 (h − μ_G)ᵀ m_c), m_c = μ_c − μ_G: centred first, so a large
    # common offset does not eat the precision of the comparison.
    centred = h - geometry.global_mean
    scores = geometry.centred.pow(2).sum(1)[None] - 2 * centred @ geometry.centred.T
    ncc = geometry.classes[scores.argmin(1)]
    correct = int((ncc == y).sum())
    if geometry.weight is None:
        return 0, correct
    logits = h @ geometry.weight.T
    if geometry.bias is not None:
        logits = logits + geometry.bias
    predicted = geometry.classes[logits.argmax(1)]
    return int((predicted != ncc).sum()), correct


def class_arrays(stats: CollapseStats, weight: Any = None, *, max_classes: int | None = None) -> dict[str, np.ndarray]:
    """Per-class arrays over the classes present, for imbalance-aware reading of the metrics.

    ``classes`` (labels), ``class_counts``, ``mean_norms`` (‖μ_c − μ_G‖), ``mean_norm_order`` (labels by
    decreasing mean norm), ``cosine_means`` [C, C]; with a classifier also ``weight_norms``,
    ``weight_norm_order`` and ``cosine_weights``. The [C, C] arrays are left out when C > ``max_classes``.
    """
    geometry = _Geometry(stats, weight)
    classes = geometry.classes.numpy()
    mean_norms = geometry.centred.norm(dim=1).numpy()
    out = {
        "classes": classes,
        "class_counts": geometry.counts.numpy().astype(np.int64),
        "mean_norms": mean_norms,
        "mean_norm_order": classes[np.argsort(-mean_norms, kind="stable")],
    }
    small = max_classes is None or geometry.C <= max_classes
    if small:
        out["cosine_means"] = _cosines(geometry.centred).numpy()
    if geometry.weight is not None:
        weight_norms = geometry.weight.norm(dim=1).numpy()
        out["weight_norms"] = weight_norms
        out["weight_norm_order"] = classes[np.argsort(-weight_norms, kind="stable")]
        if small:
            out["cosine_weights"] = _cosines(geometry.weight).numpy()
    return out

