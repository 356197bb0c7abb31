"""Per-class feature statistics of neural collapse, streamed batch by batch in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["CollapseError", "CollapseStats", "absent_classes"]


class CollapseError(ValueError):
    """The features, labels or classifier cannot be used for collapse metrics."""



class CollapseStats:
    """Per-class counts, means and within-class scatter of features, accumulated batch by batch in float64.

    Each batch is summarised by its own class means and scatter about them, then merged with the running
    totals by the pairwise update of Chan et al. (``S = S_a + S_b + n_a n_b/(n_a+n_b)·δδᵀ``, ``δ`` the
    difference of the means): sums of squares about a far-away origin are never subtracted, so collapsed
    features (tiny within-class spread around large means) keep their precision. Memory: ``d² + K·d``.
    """

    def __init__(self) -> None:
        self.counts = torch.zeros(0, dtype=torch.int64)
        self.means: torch.Tensor | None = None  # [K, d]
        self.within: torch.Tensor | None = None  # [d, d], Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ
        self.class_sq = torch.zeros(0, dtype=torch.float64)  # [K], Σ_{y_i = c} ‖h_i − μ_c‖²

    @classmethod
    def of(cls, features: Any, labels: Any, batch_size: int | None = None) -> CollapseStats:
        """Statistics of per-sample ``features`` [N, d] with ``labels`` [N] (optionally in batches)."""
        h, y = _as_features(features), _as_labels(labels)
        if h.shape[0] != y.shape[0]:
            raise CollapseError(f"features have {h.shape[0]} rows but labels have {y.shape[0]}; they must match.")
        stats = cls()
        step = h.shape[0] if batch_size is None else batch_size
        for start in range(0, h.shape[0], max(step, 1)):
            stats.update(h[start : start + step], y[start : start + step])
        return stats

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def dim(self) -> int:
        return 0 if self.means is None else int(self.means.shape[1])

    @property
    def classes(self) -> np.ndarray:
        """Labels of the classes present (count > 0), ascending."""
        return torch.nonzero(self.counts > 0).flatten().numpy()

    def update(self, features: Any, labels: Any) -> None:
        """Add a batch of features [B, d] (any float dtype/device) with integer labels [B]."""
        h, y = _as_features(features), _as_labels(labels)
        if h.shape[0] != y.shape[0]:
            raise CollapseError(f"features have {h.shape[0]} rows but labels have {y.shape[0]}; they must match.")
        keep = y >= 0
        h, y = h[keep], y[keep]
        if h.shape[0] == 0:
            return
        if self.means is None:
            self.means = torch.zeros(0, h.shape[1], dtype=torch.float64)
            self.within = torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64)
        if h.shape[1] != self.dim:
            raise CollapseError(f"a batch has feature dimension {h.shape[1]}, earlier ones had {self.dim}.")
        self._grow(int(y.max()) + 1)
        present, inverse, n_b = torch.unique(y, return_inverse=True, return_counts=True)
        n_b = n_b.to(torch.float64)
        batch_means = torch.zeros(len(present), h.shape[1], dtype=torch.float64).index_add_(0, inverse, h)
        batch_means /= n_b[:, None]
        centred = h - batch_means[inverse]
        n_a = self.counts[present].to(torch.float64)
        delta = batch_means - self.means[present]
        weight = n_a * n_b / (n_a + n_b)
        self.within += centred.T @ centred + (delta * weight[:, None]).T @ delta
        batch_sq = torch.zeros(len(present), dtype=torch.float64).index_add_(0, inverse, centred.pow(2).sum(1))
        self.class_sq[present] += batch_sq + weight * delta.pow(2).sum(1)
        self.means[present] += delta * (n_b / (n_a + n_b))[:, None]
        self.counts[present] += n_b.to(torch.int64)

    def _grow(self, size: int) -> None:
        if size <= len(self.counts):
            return
        extra = size - len(self.counts)
        self.counts = torch.cat([self.counts, torch.zeros(extra, dtype=torch.int64)])
        self.class_sq = torch.cat([self.class_sq, torch.zeros(extra, dtype=torch.float64)])
        self.means = torch.cat([self.means, torch.zeros(extra, self.dim, dtype=torch.float64)])


def _as_features(features: Any) -> torch.Tensor:
    h = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if h.dim() != 2:
        raise CollapseError(f"features must be a 2-D array [samples, dim], got shape {tuple(h.shape)}.")
    return h


def _as_labels(labels: Any) -> torch.Tensor:
    y = torch.as_tensor(labels).detach().cpu()
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise CollapseError(f"labels must be integer class indices, got dtype {y.dtype}.")
    if y.dim() != 1:
        raise CollapseError(f"labels must be a 1-D array of class indices, got shape {tuple(y.shape)}.")
    return y.to(torch.int64)


def absent_classes(labels_or_stats: Any, n_classes: int) -> list[int]:
    """Class indices in ``range(n_classes)`` with no sample (e.g. the classifier's rows left out of metrics)."""
    stats = labels_or_stats if isinstance(labels_or_stats, CollapseStats) else None
    if stats is None:
        y = _as_labels(labels_or_stats)
        seen = set(torch.unique(y[y >= 0]).tolist())
    else:
        seen = set(stats.classes.tolist())
    return [c for c in range(n_classes) if c not in seen]

