"""Neural-collapse metrics against exact simplex-ETF geometry, hand computations and numpy references."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.data import as_batches
from probes import collapse
from probes.base import ProbeContext
from probes.collapse import CollapseError, CollapseStats

ALL_KEYS = {
    "nc1", "nc2_equinorm_means", "nc2_equinorm_weights", "nc2_equiangular_means", "nc2_equiangular_weights",
    "nc2_maxangle_means", "nc2_maxangle_weights", "nc2_etf_distance", "nc3_self_duality", "nc4_ncc_mismatch",
    "cdnv", "n_classes",
}


def simplex_etf(n_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows m_c = √(C/(C−1))·P(e_c − 1/C): unit norm, pairwise cosine −1/(C−1), summing to zero."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, n_classes)))[0]  # orthonormal columns
    centred = np.eye(n_classes) - 1.0 / n_classes
    return math.sqrt(n_classes / (n_classes - 1)) * centred @ basis.T


def collapsed(n_classes=4, dim=6, per_class=5, noise=None, seed=0):
    """Balanced features h = g + m_y (+ noise), the classifier W = M (rows m_c) and bias b = −W g."""
    rng = np.random.default_rng(seed)
    etf = simplex_etf(n_classes, dim, seed)
    offset = 3.0 * rng.standard_normal(dim)
    labels = np.repeat(np.arange(n_classes), per_class)
    features = offset + etf[labels]
    if noise is not None:
        features = features + noise
    return features, labels, etf, -etf @ offset


# ------------------------------------------------------------------------------------ exact collapse


def test_exact_simplex_etf_gives_zero_for_every_metric():
    features, labels, weight, bias = collapsed()
    out = collapse.metrics(features, labels, weight, bias)
    assert ALL_KEYS - {"n_classes"} <= set(out)
    # Every quantity is exactly 0 in exact arithmetic; float64 round-off of O(C·d) operations on O(1) values
    # leaves ≲ 1e-14, so 1e-10 is a safe bound.
    for key in ALL_KEYS - {"n_classes"}:
        assert abs(out[key]) < 1e-10, key
    assert out["n_classes"] == 4
    assert out["ncc_accuracy"] == 1.0


def test_nc1_and_cdnv_scale_with_the_noise_variance():
    features, labels, _, _ = collapsed(n_classes=5, dim=8, per_class=20)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(features.shape)
    for c in range(5):  # zero-mean noise within each class: the class means stay exactly the ETF
        noise[labels == c] -= noise[labels == c].mean(0)
    scales = [1e-3, 1e-2, 1e-1, 1.0]
    nc1 = [collapse.metrics(features + s * noise, labels)["nc1"] for s in scales]
    cdnv = [collapse.metrics(features + s * noise, labels)["cdnv"] for s in scales]
    assert all(a < b for a, b in itertools.pairwise(nc1))
    # Σ_W scales by s² with Σ_B fixed, so nc1(s)/nc1(1) = s² (and the same for CDNV), to round-off.
    for s, a, b in zip(scales, nc1, cdnv):
        assert a / nc1[-1] == pytest.approx(s**2, rel=1e-9)
        assert b / cdnv[-1] == pytest.approx(s**2, rel=1e-9)


def test_random_features_are_far_from_collapse():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((400, 20))
    labels = rng.integers(0, 5, 400)
    weight = rng.standard_normal((5, 20))
    out = collapse.metrics(features, labels, weight)
    # Class means of pure noise are O(1/√n_c) apart while the within-class spread is O(1):
    # NC1 ≈ (C−1)·n_c/d ≈ 16 here, far above collapsed values (≤ 1e-3).
    assert out["nc1"] > 10
    assert out["cdnv"] > 10
    assert out["nc2_etf_distance"] > 0.2
    assert out["nc3_self_duality"] > 0.5
    assert out["nc4_ncc_mismatch"] > 0.3


# ---------------------------------------------------------------------------------- hand-computed case


def reference(h, y, w=None, b=None):
    """A direct, loop-based transcription of the definitions (independent of the streaming code)."""
    h = np.asarray(h, dtype=np.float64)
    classes = sorted(set(y.tolist()))
    c_count = len(classes)
    mu = {c: h[y == c].mean(0) for c in classes}
    g = h.mean(0)
    sw = sum(np.outer(h[i] - mu[y[i]], h[i] - mu[y[i]]) for i in range(len(h))) / len(h)
    m = np.stack([mu[c] - g for c in classes])  # rows
    sb = m.T @ m / c_count
    lam, vec = np.linalg.eigh(sb)
    lam, vec = lam[-(c_count - 1):], vec[:, -(c_count - 1):]
    out = {"nc1": np.trace(sw @ vec @ np.diag(1 / lam) @ vec.T) / c_count}

    def family(rows, suffix):
        norms = np.linalg.norm(rows, axis=1)
        cos = [rows[i] @ rows[j] / (norms[i] * norms[j]) for i in range(c_count) for j in range(c_count) if i != j]
        out[f"nc2_equinorm_{suffix}"] = np.std(norms, ddof=1) / np.mean(norms)
        out[f"nc2_equiangular_{suffix}"] = np.std(cos, ddof=1)
        out[f"nc2_maxangle_{suffix}"] = np.mean(np.abs(np.array(cos) + 1 / (c_count - 1)))

    def etf(rows):
        gram = rows @ rows.T
        target = np.eye(c_count) - np.ones((c_count, c_count)) / c_count
        return np.linalg.norm(gram / np.linalg.norm(gram) - target / np.linalg.norm(target))

    family(m, "means")
    out["nc2_etf_distance_means"] = out["nc2_etf_distance"] = etf(m)
    var = {c: np.mean([np.sum((x - mu[c]) ** 2) for x in h[y == c]]) for c in classes}
    pairs = [(var[a] + var[c]) / (2 * np.sum((mu[a] - mu[c]) ** 2)) for a, c in itertools.combinations(classes, 2)]
    out["cdnv"] = np.mean(pairs)
    ncc = np.array([classes[int(np.argmin([np.sum((x - mu[c]) ** 2) for c in classes]))] for x in h])
    out["ncc_accuracy"] = np.mean(ncc == y)
    if w is not None:
        wp = np.asarray(w, dtype=np.float64)[classes]
        family(wp, "weights")
        out["nc2_etf_distance"] = etf(wp)
        out["nc3_self_duality"] = np.sum((wp.T / np.linalg.norm(wp) - m.T / np.linalg.norm(m)) ** 2)
        logits = h @ wp.T + (0.0 if b is None else np.asarray(b, dtype=np.float64)[classes])
        out["nc4_ncc_mismatch"] = np.mean(np.array(classes)[logits.argmax(1)] != ncc)
    return out


SMALL_H = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 5.0], [0.0, 4.0], [-3.0, -1.0], [1.0, 3.0]])
SMALL_Y = np.array([0, 0, 1, 1, 1, 2, 0])
SMALL_W = np.array([[1.0, 0.2], [0.1, 1.5], [-1.0, -0.5]])
SMALL_B = np.array([0.0, -2.0, 0.5])


def test_small_case_matches_the_definitions_and_hand_values():
    out = collapse.metrics(SMALL_H, SMALL_Y, SMALL_W, SMALL_B)
    expected = reference(SMALL_H, SMALL_Y, SMALL_W, SMALL_B)
    assert set(expected) <= set(out)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12, abs=1e-14), key  # same formulas, float64
    # By hand: class means (1, 1), (0, 4), (−3, −1) with n = (3, 3, 1), so μ_G = (0, 2). Squared distances
    # to the class mean: class 0: 2, 2, 4 → V_0 = 8/3; class 1: 1, 1, 0 → V_1 = 2/3; class 2: V_2 = 0.
    v0, v1, v2 = 8 / 3, 2 / 3, 0.0
    d01, d02, d12 = 1 + 9, 16 + 4, 9 + 25
    assert out["cdnv"] == pytest.approx(((v0 + v1) / (2 * d01) + (v0 + v2) / (2 * d02) + (v1 + v2) / (2 * d12)) / 3)
    norms = np.array([math.hypot(1, -1), math.hypot(0, 2), math.hypot(-3, -3)])
    assert out["nc2_equinorm_means"] == pytest.approx(np.std(norms, ddof=1) / norms.mean())


def test_nc4_includes_the_bias():
    h = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = np.array([0, 0, 1, 1])
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert collapse.metrics(h, y, w)["nc4_ncc_mismatch"] == 0.0
    # A bias of +2 on class 1 makes the classifier predict class 1 everywhere: half the samples disagree with
    # their nearest class mean.
    assert collapse.metrics(h, y, w, np.array([0.0, 2.0]))["nc4_ncc_mismatch"] == 0.5


# ------------------------------------------------------------------------------- streaming and batching


def test_streaming_statistics_do_not_depend_on_batching():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 1000)
    features = 100.0 + rng.standard_normal((1000, 16)) + rng.standard_normal((7, 16))[labels]
    weight, bias = rng.standard_normal((7, 16)), rng.standard_normal(7)
    whole = CollapseStats.of(features, labels)
    order = rng.permutation(1000)
    pieces = CollapseStats.of(features[order], labels[order], batch_size=37)
    direct_within = sum(np.outer(*(2 * [features[i] - features[labels == labels[i]].mean(0)])) for i in range(1000))
    # Different summation orders of the same float64 sums: agreement to ~1e-14 relative.
    assert np.allclose(whole.within.numpy(), direct_within, rtol=1e-12, atol=1e-12 * np.abs(direct_within).max())
    assert np.allclose(pieces.within.numpy(), direct_within, rtol=1e-12, atol=1e-12 * np.abs(direct_within).max())
    assert torch.allclose(pieces.means, whole.means, rtol=1e-12, atol=0)
    assert torch.equal(pieces.counts, whole.counts)
    one_shot = collapse.metrics(features, labels, weight, bias)
    streamed = collapse.metrics(pieces, weight=weight, bias=bias)
    for key, value in streamed.items():
        assert value == pytest.approx(one_shot[key], rel=1e-12), key
    assert "nc4_ncc_mismatch" not in streamed  # needs per-sample features
    mismatch, correct = 0, 0
    for start in range(0, 1000, 64):  # the second pass, batch by batch
        a, b = collapse.ncc_counts(features[start : start + 64], labels[start : start + 64], pieces, weight, bias)
        mismatch, correct = mismatch + a, correct + b
    assert mismatch / 1000 == one_shot["nc4_ncc_mismatch"]
    assert correct / 1000 == one_shot["ncc_accuracy"]


def test_pseudo_inverse_restricted_to_the_between_class_subspace():
    """A default-tolerance pseudo-inverse of a float32 Σ_B inverts round-off eigenvalues and gives nonsense."""
    rng = np.random.default_rng(0)
    n_classes, dim = 10, 64
    means = rng.standard_normal((n_classes, dim)) + 100.0 * rng.standard_normal(dim)
    labels = np.repeat(np.arange(n_classes), 50)
    h32 = (means[labels] + 0.1 * rng.standard_normal((500, dim))).astype(np.float32)

    h = h32.astype(np.float64)  # the exact values the model produced
    mu = np.stack([h[labels == c].mean(0) for c in range(n_classes)])
    sw = sum((h[labels == c] - mu[c]).T @ (h[labels == c] - mu[c]) for c in range(n_classes)) / len(h)
    m = mu - h.mean(0)
    lam, vec = np.linalg.eigh(m.T @ m / n_classes)
    lam, vec = lam[-(n_classes - 1):], vec[:, -(n_classes - 1):]
    truth = np.trace(sw @ vec @ np.diag(1 / lam) @ vec.T) / n_classes

    mu32 = np.stack([h32[labels == c].mean(0) for c in range(n_classes)])
    sw32 = sum((h32[labels == c] - mu32[c]).T @ (h32[labels == c] - mu32[c]) for c in range(n_classes)) / np.float32(500)
    m32 = mu32 - h32.mean(0)
    naive = np.trace(sw32 @ np.linalg.pinv(m32.T @ m32 / np.float32(n_classes))) / n_classes
    assert abs(naive - truth) > 1e3 * truth  # the pitfall is real on this data

    # Both sides are float64 computations of the same quantity from the same values: 1e-8 relative.
    assert collapse.metrics(torch.from_numpy(h32), torch.from_numpy(labels))["nc1"] == pytest.approx(truth, rel=1e-8)


# --------------------------------------------------------------------------------- classes and errors


def test_absent_classes_are_left_out_with_their_classifier_rows():
    rng = np.random.default_rng(4)
    features = rng.standard_normal((30, 5)) + 3 * rng.standard_normal((3, 5))[np.arange(30) % 3]
    compact = np.arange(30) % 3
    sparse = np.array([0, 2, 3])[compact]  # class 1 has no sample
    weight4, bias4 = rng.standard_normal((4, 5)), rng.standard_normal(4)
    weight4[1] *= 100.0  # a huge row for the absent class must not change anything
    bias4[1] = 1e6
    out = collapse.metrics(features, sparse, weight4, bias4)
    expected = collapse.metrics(features, compact, weight4[[0, 2, 3]], bias4[[0, 2, 3]])
    for key in expected:
        assert out[key] == pytest.approx(expected[key], rel=1e-12), key
    assert collapse.absent_classes(sparse, 4) == [1]
    assert collapse.absent_classes(CollapseStats.of(features, sparse), 5) == [1, 4]


def test_fewer_than_two_classes_is_an_error():
    with pytest.raises(CollapseError, match="at least 2 classes"):
        collapse.metrics(np.ones((5, 3)), np.zeros(5, dtype=np.int64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": np.array([0.0, 1.0, 0.0, 1.0])}, "integer class indices"),
        ({"features": np.ones(4)}, "2-D"),
        ({"labels": np.array([0, 1, 0])}, "must match"),
        ({"weight": np.ones((2, 5))}, "shape"),
        ({"weight": np.ones((1, 3))}, "labels go up to 1"),
        ({"bias": np.ones(2)}, "without weight"),
        ({"weight": np.ones((2, 3)), "bias": np.ones(3)}, "bias has 3"),
        ({"labels": None}, "labels are required"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, match):
    args = {"features": np.arange(12.0).reshape(4, 3), "labels": np.array([0, 1, 0, 1]), **kwargs}
    with pytest.raises(CollapseError, match=match):
        collapse.metrics(**args)


# ------------------------------------------------------------------------------------------- features


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5))


def test_extract_features_returns_the_inputs_of_the_layer():
    model = small_net()
    x, y = torch.randn(17, 3), torch.randint(0, 5, (17,))
    data = [(x[:5], y[:5]), (x[5:], y[5:])]
    with torch.no_grad():
        hidden = model[0](x)
    features, labels = collapse.extract_features(model, data)  # the last Linear: its input is ReLU(hidden)
    assert features.dtype == torch.float64 and features.device.type == "cpu"
    assert torch.equal(features, torch.relu(hidden).double()) and torch.equal(labels, y)
    by_name, _ = collapse.extract_features(model, data, "1")
    by_module, _ = collapse.extract_features(model, data, model[1])
    assert torch.equal(by_name, hidden.double()) and torch.equal(by_module, hidden.double())
    several, labels = collapse.extract_features_multi(model, data, ["0", "2"])
    assert torch.equal(several["0"], x.double()) and torch.equal(several["2"], torch.relu(hidden).double())
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_features_are_flattened_per_sample_and_token_labels_pair_with_tokens():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    x, y = torch.randn(6, 1, 5, 5), torch.randint(0, 4, (6,))
    features, _ = collapse.extract_features(conv, (x, y), "0")
    assert features.shape == (6, 25) and torch.equal(features, x.reshape(6, -1).double())
    tokens = nn.Linear(4, 3)
    xt, yt = torch.randn(2, 5, 4), torch.randint(0, 3, (2, 5))
    features, labels = collapse.extract_features(tokens, (xt, yt))
    assert features.shape == (10, 4) and torch.equal(labels, yt.reshape(-1))


def test_unknown_layer_lists_valid_names():
    with pytest.raises(CollapseError, match=r"no module named 'head'.*'0', '1', '2'"):
        collapse.extract_features(small_net(), (torch.randn(2, 3), torch.zeros(2, dtype=torch.long)), "head")
    with pytest.raises(CollapseError, match="no nn.Linear"):
        collapse.find_layer(nn.Sequential(nn.ReLU()))


def test_hooks_are_removed_even_when_the_forward_fails():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(3, 3), Broken())
    with pytest.raises(RuntimeError, match="boom"):
        collapse.extract_features(model, (torch.randn(2, 3), torch.zeros(2, dtype=torch.long)), "0")
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_a_layer_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 3)

        def forward(self, x):
            return self.layer(self.layer(x))

    with pytest.raises(CollapseError, match="ran 2 times"):
        collapse.extract_features(Twice(), (torch.randn(2, 3), torch.zeros(2, dtype=torch.long)))


def test_model_is_left_untouched():
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(12, 3), torch.arange(12) % 3
    collapse.extract_features(model, (x, y))
    collapse.PROBE.run(ProbeContext(model=model, loss_fn=nn.functional.cross_entropy, train=as_batches((x, y))))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


# ---------------------------------------------------------------------------------------------- probe


def etf_model(n_classes=4, dim=6, per_class=5):
    """A model whose last Linear sees exactly collapsed features and whose rows are the class means."""
    features, labels, weight, bias = collapsed(n_classes, dim, per_class)
    model = nn.Sequential(nn.Identity(), nn.Linear(dim, n_classes)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(weight))
        model[1].bias.copy_(torch.from_numpy(bias))
    return model, torch.from_numpy(features), torch.from_numpy(labels)


def test_probe_on_collapsed_features_stores_the_documented_keys():
    model, x, y = etf_model()
    ctx = ProbeContext(model=model, loss_fn=nn.functional.cross_entropy,
                       train=as_batches([(x[:7], y[:7]), (x[7:], y[7:])]), test=as_batches((x[:8], y[:8])))
    result = collapse.PROBE.run(ctx, **{**collapse.PROBE.defaults, "layers": ["0"]})
    assert result.valid
    assert ALL_KEYS <= set(result.scalars)
    assert {f"test_{k}" for k in ALL_KEYS} <= set(result.scalars)
    assert {"0/nc1", "0/cdnv", "0/test_nc1"} <= set(result.scalars)
    for key in ALL_KEYS - {"n_classes"}:
        assert abs(result.scalars[key]) < 1e-10, key  # exact ETF (see the metrics test)
    assert result.scalars["n_classes"] == 4
    assert result.arrays["cosine_means"].shape == (4, 4)
    assert np.allclose(result.arrays["cosine_weights"][~np.eye(4, dtype=bool)], -1 / 3)
    assert result.arrays["class_counts"].tolist() == [5, 5, 5, 5]
    assert result.arrays["mean_norms"].shape == result.arrays["weight_norms"].shape == (4,)
    assert result.arrays["absent_classes"].size == 0
    json.dumps(result.params)
    assert result.params["resolved_layer"] == "1" and result.params["bias_used"] is True


def test_probe_reports_absent_classes_and_skips_large_matrices():
    model, x, y = etf_model(n_classes=4)
    keep = y != 2
    ctx = ProbeContext(model=model, loss_fn=nn.functional.cross_entropy, train=as_batches((x[keep], y[keep])))
    result = collapse.PROBE.run(ctx, **{**collapse.PROBE.defaults, "max_classes": 2})
    assert result.arrays["absent_classes"].tolist() == [2]
    assert result.arrays["classes"].tolist() == [0, 1, 3]
    assert "cosine_means" not in result.arrays and "cosine_weights" not in result.arrays
    assert result.scalars["n_classes"] == 3


def test_probe_is_invalid_for_regression_targets_and_single_classes():
    model, x, y = etf_model()
    regression = ProbeContext(model=model, loss_fn=nn.functional.mse_loss, train=as_batches((x, x[:, :4])))
    result = collapse.PROBE.run(regression, **collapse.PROBE.defaults)
    assert not result.valid and "not a classification task" in result.message
    single = ProbeContext(model=model, loss_fn=nn.functional.cross_entropy,
                          train=as_batches((x, torch.zeros_like(y))))
    result = collapse.PROBE.run(single, **collapse.PROBE.defaults)
    assert not result.valid and "at least 2 classes" in result.message


def test_probe_rejects_bad_params():
    model, x, y = etf_model()
    ctx = ProbeContext(model=model, loss_fn=nn.functional.cross_entropy, train=as_batches((x, y)))
    with pytest.raises(ValueError, match="max_classes"):
        collapse.PROBE.run(ctx, **{**collapse.PROBE.defaults, "max_classes": 0})
    with pytest.raises(CollapseError, match="no module named"):
        collapse.PROBE.run(ctx, **{**collapse.PROBE.defaults, "layer": "nope"})
