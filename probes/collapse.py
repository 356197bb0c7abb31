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
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from landscape.data import as_batches
from landscape.params import preserved
from landscape.probe import ProbeContext, Result

Layer = str | nn.Module
_EPS = float(np.finfo(np.float64).eps)

CONVENTIONS = {
    "global_mean": "sample mean of all features",
    "nc1": "Tr(Sw pinv(Sb))/C, Sw and Sb with 1/N and 1/C, pinv on the top rank<=C-1 subspace, float64",
    "std": "ddof=1; equiangular over the C(C-1) off-diagonal cosines",
    "nc3": "squared Frobenius norm of W^T/|W|_F - M/|M|_F",
    "nc4": "argmax(W h + b), bias included, vs nearest class mean, both over present classes",
    "ncc": "nearest TRAIN class mean, on test data too; ncc_accuracy = its agreement with the label",
    "prefixes": "test_<key> for test data, <layer>/<key> and <layer>/test_<key> for extra layers",
    "cdnv": "mean over pairs of (V_c+V_c')/(2|mu_c-mu_c'|^2)",
    "absent_classes": "left out of every metric, classifier rows included",
}


class CollapseError(ValueError):
    """The features, labels or classifier cannot be used for collapse metrics."""


# ----------------------------------------------------------------------------------------- statistics


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


# -------------------------------------------------------------------------------------------- metrics


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


# ------------------------------------------------------------------------------------------- features


def find_layer(model: nn.Module, layer: Layer | None = None) -> tuple[str, nn.Module]:
    """``(name, module)`` for a module name, a module of the model, or None (the last ``nn.Linear``)."""
    named = dict(model.named_modules())
    if layer is None:
        linear = [name for name, module in named.items() if isinstance(module, nn.Linear)]
        if not linear:
            raise CollapseError(f"the model has no nn.Linear; pass layer= one of: {_some(named)}.")
        return linear[-1], named[linear[-1]]
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise CollapseError(f"layer {type(layer).__name__} is not a submodule of the model.")
    if layer not in named:
        raise CollapseError(f"the model has no module named {layer!r}; valid names include: {_some(named)}.")
    return layer, named[layer]


def _some(named: Mapping[str, nn.Module], limit: int = 12) -> str:
    names = [repr(n) for n in named if n]
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@contextmanager
def _captured_inputs(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the first input of each module at every call; the hooks are removed on exit, even on error."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = []

    def recorder(store: list[torch.Tensor]) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            value = args[0] if args else next(iter(kwargs.values()), None)
            if not isinstance(value, torch.Tensor):
                raise CollapseError(f"the input of {type(module).__name__} is not a tensor.")
            store.append(value.detach())

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(recorder(captured[name]), with_kwargs=True))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _per_sample(value: torch.Tensor, labels: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [samples, d] and labels [samples]: token-level labels [B, T] pair with inputs [B, T, d]."""
    if labels.dim() >= 2 and value.dim() == labels.dim() + 1 and value.shape[:-1] == labels.shape:
        return value.reshape(-1, value.shape[-1]), labels.reshape(-1)
    if value.shape[0] != labels.shape[0]:
        raise CollapseError(f"the input of layer {name!r} has {value.shape[0]} rows for a batch of "
                            f"{labels.shape[0]} samples.")
    if labels.dim() != 1:
        raise CollapseError(f"targets must be class indices of shape [batch], got shape {tuple(labels.shape)}.")
    return value.reshape(value.shape[0], -1), labels


def _batches_of_features(model: nn.Module, data: object, names: Sequence[str],
                         modules: Mapping[str, nn.Module]) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Per batch: the inputs of every named layer (float64, CPU, [samples, d]) and the labels."""
    first = next(model.parameters(), None)
    batches = as_batches(data, device=None if first is None else first.device)
    with preserved(model), _captured_inputs({n: modules[n] for n in names}) as captured:
        for x, y in batches:
            for store in captured.values():
                store.clear()
            with torch.inference_mode():
                model(x)
            out: dict[str, torch.Tensor] = {}
            labels = y.detach().cpu()
            for name in names:
                calls = captured[name]
                if len(calls) != 1:
                    raise CollapseError(f"layer {name!r} ran {len(calls)} times in one forward pass; "
                                        "choose a module that runs exactly once.")
                value, labels_here = _per_sample(calls[0].to("cpu", torch.float64), y.detach().cpu(), name)
                out[name] = value
                labels = labels_here
            yield out, labels


def _resolve(model: nn.Module, layers: Sequence[Layer | None]) -> tuple[list[str], dict[str, nn.Module]]:
    names, modules = [], {}
    for layer in layers:
        name, module = find_layer(model, layer)
        if name not in modules:
            names.append(name)
            modules[name] = module
    return names, modules


def extract_features_multi(model: nn.Module, data: object,
                           layers: Sequence[Layer | None]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs of several layers in one pass over ``data``: ``({name: features [N, d_name]}, labels [N])``."""
    names, modules = _resolve(model, layers)
    if not names:
        raise CollapseError("layers is empty; name at least one module.")
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    labels: list[torch.Tensor] = []
    for features, y in _batches_of_features(model, data, names, modules):
        for name in names:
            chunks[name].append(features[name])
        labels.append(y)
    return {n: torch.cat(chunks[n]) for n in names}, torch.cat(labels)


def extract_features(model: nn.Module, data: object, layer: Layer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of ``layer`` (default: the model's last ``nn.Linear``) over ``data``: features [N, d]
    (float64, CPU, flattened per sample) and the targets [N]. The model is left untouched."""
    name, _ = find_layer(model, layer)
    features, labels = extract_features_multi(model, data, [name])
    return features[name], labels


def collect_stats(model: nn.Module, data: object, layers: Sequence[Layer | None] = (None,)) -> dict[str, CollapseStats]:
    """:class:`CollapseStats` of the inputs of each layer, streamed over ``data`` in one pass."""
    names, modules = _resolve(model, layers)
    stats = {n: CollapseStats() for n in names}
    for features, y in _batches_of_features(model, data, names, modules):
        _check_labels(y)
        for name in names:
            stats[name].update(features[name], y)
    return stats


def collect_ncc_counts(model: nn.Module, data: object, stats: Mapping[str, CollapseStats],
                       classifiers: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, tuple[int, int]]:
    """Second pass: per layer, :func:`ncc_counts` summed over ``data`` given the layer's full statistics."""
    names, modules = _resolve(model, list(stats))
    classifiers = dict(classifiers or {})
    totals = {n: [0, 0] for n in names}
    for features, y in _batches_of_features(model, data, names, modules):
        for name in names:
            weight, bias = classifiers.get(name, (None, None))
            mismatch, correct = ncc_counts(features[name], y, stats[name], weight, bias)
            totals[name][0] += mismatch
            totals[name][1] += correct
    return {n: (t[0], t[1]) for n, t in totals.items()}


def _check_labels(labels: torch.Tensor) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise CollapseError(f"targets must be integer class indices, got dtype {labels.dtype}.")


# --------------------------------------------------------------------------------------------- probe


class CollapseProbe:
    """Neural-collapse metrics of the classifier's input features (train, and test when given).

    ``layer`` (default: the last ``nn.Linear``) is the classifier; its weight and bias enter the metrics
    when it is an ``nn.Linear``. ``layers`` adds feature-only metrics of other modules' inputs, prefixed
    ``"{layer}/"``. The [C, C] cosine arrays are stored only when C ≤ ``max_classes``. Two forward
    passes per data set: statistics, then nearest-class-mean counts against the train class means.
    """

    name = "collapse"
    defaults: ClassVar[dict[str, Any]] = {"layer": None, "layers": [], "max_classes": 100}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        p = {**self.defaults, **params}
        max_classes = p["max_classes"]
        if isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 2:
            raise ValueError(f"max_classes must be an integer ≥ 2, got {max_classes!r}.")
        extra_layers = list(p["layers"] or [])
        record = {**p, "conventions": CONVENTIONS}
        problem = _not_classification(ctx)
        if problem is not None:
            return Result.invalid(problem, record)
        main, module = find_layer(ctx.model, p["layer"])
        extra, _ = _resolve(ctx.model, extra_layers)
        extra = [n for n in extra if n != main]
        classifier: tuple[Any, Any] = (None, None)
        if isinstance(module, nn.Linear):
            classifier = (module.weight.detach(), None if module.bias is None else module.bias.detach())
        record.update(resolved_layer=main, resolved_layers=extra, classifier=classifier[0] is not None,
                      bias_used=classifier[1] is not None)
        layers = [main, *extra]
        scalars: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        try:
            train = collect_stats(ctx.model, ctx.train, layers)
            splits = [("", train)]
            if ctx.test is not None:
                splits.append(("test_", collect_stats(ctx.model, ctx.test, layers)))
            for prefix, stats in splits:
                broken = [n for n in layers if not _finite(stats[n])]
                if broken:
                    return Result.invalid(f"the inputs of layer {broken[0]!r} are not finite at step {ctx.step}.",
                                          record)
                # NCC always uses the train class means: on test data it is the nearest-train-mean classifier.
                counts = collect_ncc_counts(ctx.model, ctx.test if prefix else ctx.train, train, {main: classifier})
                for name in layers:
                    weight, bias = classifier if name == main else (None, None)
                    values = metrics(stats[name], weight=weight, bias=bias)
                    n = stats[name].n_samples
                    values["ncc_accuracy"] = counts[name][1] / n
                    if weight is not None:
                        values["nc4_ncc_mismatch"] = counts[name][0] / n
                    head = prefix if name == main else f"{name}/{prefix}"
                    scalars.update({f"{head}{k}": v for k, v in values.items()})
            arrays.update(class_arrays(train[main], classifier[0], max_classes=max_classes))
            arrays["absent_classes"] = np.asarray(
                absent_classes(train[main], _n_classes(train[main], classifier[0])), dtype=np.int64)
        except CollapseError as error:
            return Result.invalid(str(error), record)
        return Result(scalars=scalars, arrays=arrays, params=record)


def _finite(stats: CollapseStats) -> bool:
    if stats.means is None or stats.within is None:
        return True  # no samples: metrics() reports that clearly
    return bool(torch.isfinite(stats.within).all() and torch.isfinite(stats.means).all())


def _n_classes(stats: CollapseStats, weight: Any) -> int:
    return int(weight.shape[0]) if weight is not None else len(stats.counts)


def _not_classification(ctx: ProbeContext) -> str | None:
    for _, y in ctx.train:
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            return (f"collapse needs integer class targets; the train targets have dtype {y.dtype}, "
                    "so this is not a classification task.")
    return None


PROBE = CollapseProbe()
