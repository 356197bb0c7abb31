"""Weight-spectrum probe against ground truth: Pareto samples, Marchenko–Pastur noise, planted spikes."""

import doctest
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from threadpoolctl import threadpool_limits
from torch import nn

import probes.weights as weights
from landscape import cli
from landscape.callbacks import Monitor
from landscape.checkpoints import find_checkpoints
from landscape.probe import ProbeContext, get
from landscape.runner import run_probes
from landscape.store import Store
from probes import _marchenko_pastur as mp
from probes._powerlaw import best_candidate, candidate_scan, fit_power_law


@pytest.fixture(autouse=True)
def _one_thread():
    """Small dense solves run on one BLAS/torch thread: on a shared machine more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def _pareto(alpha, n, seed, xmin=1.0):
    """Exact draws from p(x) = (alpha-1)/xmin (x/xmin)^-alpha by inversion."""
    u = np.random.default_rng(seed).uniform(size=n)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def _linear_with(weight):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight))
    return nn.Sequential(layer)


# -- the power-law fit -------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_pareto_exponent_is_recovered_within_its_standard_error(alpha):
    # Draws are the same uniforms raised to 1/(alpha-1), and the fit is exactly equivariant under that map,
    # so each alpha gets its own seeds. With xmin searched, not known, the error runs ~10% above the stated
    # (alpha-1)/sqrt(n_tail) (RMS z = 1.09 over 200 seeds, 1% beyond 3 sigma), hence: every |z| < 3.5 and
    # the RMS of z over the 12 draws in [0.5, 1.6] (chi-square bounds of a 12-draw RMS at ~1.1 sigma spread).
    z = []
    for seed in range(12):
        fit = fit_power_law(_pareto(alpha, 3000, seed + int(alpha * 1000)))
        assert fit.ok and fit.stderr == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))
        z.append((fit.alpha - alpha) / fit.stderr)
    assert np.max(np.abs(z)) < 3.5
    assert 0.5 < np.sqrt(np.mean(np.square(z))) < 1.6


def test_standard_error_is_calibrated_at_known_xmin():
    # With xmin known the MLE's spread over 400 samples of n=500 matches (alpha-1)/sqrt(n): the empirical
    # standard deviation has relative sampling error 1/sqrt(2*400) = 3.5%, so 12% is a 3.4-sigma bound.
    alpha, n = 2.5, 500
    estimates = np.array([fit_power_law(_pareto(alpha, n, seed), xmin=1.0).alpha for seed in range(400)])
    assert np.std(estimates) == pytest.approx((alpha - 1) / math.sqrt(n), rel=0.12)
    assert abs(np.mean(estimates) - alpha) < 4 * (alpha - 1) / math.sqrt(n) / math.sqrt(400) + (alpha - 1) / n


def _brute_force(x, min_tail, ks):
    alphas, distances = [], []
    for i in range(len(x) - min_tail + 1):
        tail = x[i:]
        m = len(tail)
        alpha = 1 + m / np.sum(np.log(tail / x[i]))
        fitted = 1 - (tail / x[i]) ** (1 - alpha)
        k = np.arange(m)
        if ks == "two_sided":
            gap = np.maximum(fitted - k / m, (k + 1) / m - fitted)
        else:
            gap = np.abs(fitted - k / m)
        alphas.append(alpha)
        distances.append(gap.max())
    return np.array(alphas), np.array(distances)


@pytest.mark.parametrize("ks", ["two_sided", "lower"])
@pytest.mark.parametrize("min_tail", [2, 10])
def test_vectorized_xmin_search_equals_a_brute_force_loop(ks, min_tail, monkeypatch):
    rng = np.random.default_rng(3)
    x = np.sort(np.concatenate([rng.lognormal(size=70), _pareto(2.5, 50, 4) * 3, [2.0, 2.0, 2.0]]))
    monkeypatch.setattr("probes._powerlaw._BLOCK_ELEMENTS", 7 * x.size)  # several candidate blocks
    alphas, distances = candidate_scan(x, min_tail=min_tail, ks=ks)
    ref_alphas, ref_distances = _brute_force(x, min_tail, ks)
    np.testing.assert_allclose(alphas, ref_alphas, rtol=1e-12)
    np.testing.assert_allclose(distances, ref_distances, rtol=1e-12, atol=1e-15)
    fit = fit_power_law(x, min_tail=min_tail, ks=ks)
    best = int(np.argmin(ref_distances))
    assert fit.xmin == x[best] and fit.alpha == pytest.approx(ref_alphas[best], rel=1e-12)


def test_pruned_search_finds_exactly_the_full_scans_minimum():
    # The fit scores exactly only the candidates whose lower bound beats the best distance so far; it must
    # pick the full scan's argmin (ties: smallest index) on heavy, light and mixed tails of many sizes.
    rng = np.random.default_rng(11)
    for trial in range(24):
        n = int(rng.integers(12, 900))
        draw = (rng.lognormal(size=n), rng.pareto(1.5, n) + 1, rng.chisquare(3, n),
                np.round(rng.lognormal(size=n), 1) + 0.1)[trial % 4]  # the last one with many ties
        x = np.sort(draw)
        for ks in ("two_sided", "lower"):
            _, distances = candidate_scan(x, min_tail=5, ks=ks)
            best, _, distance = best_candidate(x, min_tail=5, ks=ks)
            assert best == int(np.argmin(distances)) and distance == distances[best]


def test_too_few_points_or_a_constant_tail_is_a_message_not_a_number():
    fit = fit_power_law(np.arange(1.0, 8.0), min_tail=10)
    assert not fit.ok and math.isnan(fit.alpha) and "too few eigenvalues" in fit.message
    flat = fit_power_law(np.ones(30))
    assert not flat.ok and "constant" in flat.message
    with pytest.raises(ValueError, match="ks must be one of"):
        fit_power_law(np.arange(1.0, 30.0), ks="upper")


# -- Marchenko–Pastur ---------------------------------------------------------------------------------------
def _mp_cdf_by_quadrature(x, ratio, scale):
    lo, hi = scale * (1 - math.sqrt(ratio)) ** 2, scale * (1 + math.sqrt(ratio)) ** 2
    density = lambda t: math.sqrt(max((hi - t) * (t - lo), 0.0)) / (2 * math.pi * scale * ratio * t)  # noqa: E731
    return integrate.quad(density, lo, min(max(x, lo), hi), limit=200)[0]


@pytest.mark.parametrize("ratio", [0.25, 0.6, 1.0])
def test_closed_form_mp_cdf_matches_numerical_integration(ratio):
    lo, hi = mp.edges(ratio, 2.0)
    for x in np.linspace(lo, hi, 9)[1:-1]:
        assert float(mp.cdf(x, ratio, 2.0)) == pytest.approx(_mp_cdf_by_quadrature(x, ratio, 2.0), abs=1e-9)
    assert float(mp.cdf(hi * 1.1, ratio, 2.0)) == 1.0 and float(mp.cdf(lo * 0.9, ratio, 2.0)) == 0.0
    assert float(mp.cdf(mp.median(ratio), ratio)) == pytest.approx(0.5, abs=1e-12)


def test_gaussian_matrix_esd_is_marchenko_pastur_without_spikes():
    n, m, sigma = 1600, 400, 0.05
    w = np.random.default_rng(0).normal(0.0, sigma, size=(n, m))
    model = _linear_with(w.T)  # weight (400, 1600): the ESD convention transposes to N = 1600
    evals = weights.esd(model, "0")
    assert evals.shape == (m,)
    np.testing.assert_allclose(evals, np.sort(np.linalg.svd(w, compute_uv=False) ** 2 / n), rtol=1e-10)
    # KS distance to the MP CDF (by quadrature, at the true variance). Eigenvalues are far more regular
    # than i.i.d. draws, so the distance sits well below the i.i.d. 1% critical value 1.63/sqrt(M) = 0.08.
    ecdf = np.arange(1, m + 1) / m
    theory = np.array([_mp_cdf_by_quadrature(x, m / n, sigma**2) for x in evals])
    assert np.max(np.maximum(np.abs(theory - ecdf), np.abs(theory - (ecdf - 1 / m)))) < 0.02
    row = weights.layer_spectra(model).iloc[0]
    assert row.n_spikes == 0 and row.n_traps == 0 and not row.trap
    assert row.mp_scale == pytest.approx(sigma**2, rel=0.03)  # median matching; its spread is ~1% at M=400
    assert row.mp_edge == pytest.approx(sigma**2 * (1 + math.sqrt(m / n)) ** 2, rel=0.03)
    assert row.rand_distance < 0.1


def test_tracy_widom_level_is_roughly_calibrated_on_pure_noise():
    # 300 Gaussian 200x100 matrices at tw_level=0.9: the share with a false spike should be about 10%;
    # its binomial standard deviation is 1.7%, and the fitted (not known) scale adds a little.
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(300):
        sv = np.linalg.svd(rng.standard_normal((200, 100)), compute_uv=False)
        hits += mp.fit_bulk(sv**2 / 200, 200, 100, level=0.9).n_spikes > 0
    assert 0.04 < hits / 300 < 0.18


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_planted_spikes_are_counted_exactly(rank):
    n, m, sigma = 1200, 300, 0.1
    rng = np.random.default_rng(rank)
    noise = rng.normal(0.0, sigma, size=(n, m))
    u, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    v, _ = np.linalg.qr(rng.standard_normal((m, rank)))
    # Singular values 3..7 sigma*sqrt(N): far above the BBP threshold sigma*(N*M)^(1/4) = 24.5 sigma.
    strengths = sigma * math.sqrt(n) * (3.0 + np.arange(rank))
    w = noise + (u * strengths) @ v.T
    row = weights.layer_spectra(_linear_with(w)).iloc[0]
    assert row.n_spikes == rank
    assert row.mp_scale == pytest.approx(sigma**2, rel=0.03)


def test_a_few_huge_entries_are_a_correlation_trap():
    rng = np.random.default_rng(5)
    w = rng.normal(0.0, 0.02, size=(512, 256))
    clean = weights.layer_spectra(_linear_with(w)).iloc[0]
    w[rng.integers(0, 512, 4), rng.integers(0, 256, 4)] = 3.0
    trapped = weights.layer_spectra(_linear_with(w)).iloc[0]
    assert not clean.trap and clean.n_traps == 0
    # Each entry of 3.0 alone is a rank-one piece with eigenvalue 9/512, ~9x the permuted matrix's MP edge.
    assert trapped.trap and trapped.n_traps == 4 and trapped.rand_lambda_max > 5 * trapped.rand_mp_edge


# -- which matrices, and how -------------------------------------------------------------------------------
def test_conv_kernels_pool_their_position_slices_or_reshape():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, kernel_size=3)
    kernel = conv.weight.detach().double().numpy()
    model = nn.Sequential(conv)
    slices = [np.linalg.svd(kernel[:, :, i, j], compute_uv=False) ** 2 / 16 for i in range(3) for j in range(3)]
    np.testing.assert_allclose(weights.esd(model, "0"), np.sort(np.concatenate(slices)), rtol=1e-10)
    flat = np.linalg.svd(kernel.reshape(16, 72), compute_uv=False) ** 2 / 72
    np.testing.assert_allclose(weights.esd(model, "0", conv="reshape"), np.sort(flat), rtol=1e-10)
    pooled = weights.layer_spectra(model).iloc[0]
    reshaped = weights.layer_spectra(model, conv="reshape").iloc[0]
    assert (pooled.n_matrices, pooled.n_evals, pooled.matrix_shape) == (9, 72, "9x16x8")
    assert (reshaped.n_matrices, reshaped.n_evals, reshaped.matrix_shape) == (1, 16, "16x72")


def test_attention_embeddings_and_hf_conv1d():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.attn = nn.MultiheadAttention(16, 2)
            self.mlp = Conv1D(32, 16)

    model = Block()
    table = weights.layer_spectra(model)
    assert list(table.name) == ["attn.q", "attn.k", "attn.v", "attn.out_proj", "mlp"]
    assert list(table.layer) == ["attn", "attn", "attn", "attn.out_proj", "mlp"]
    q, k, v = model.attn.in_proj_weight.detach().double().chunk(3)
    for name, part in zip(("attn.q", "attn.k", "attn.v"), (q, k, v)):
        expected = np.sort(torch.linalg.svdvals(part).numpy() ** 2 / 16)
        np.testing.assert_allclose(weights.esd(model, name), expected, rtol=1e-10)
    assert list(weights.layer_spectra(model, embeddings=True).name)[0] == "embed"
    with pytest.raises(KeyError, match="holds 3 weight matrices"):
        weights.esd(model, "attn")
    with pytest.raises(KeyError, match="no weight matrix named 'nope'"):
        weights.esd(model, "nope")


def test_gram_solver_gives_the_same_spectrum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 300), nn.Conv2d(16, 24, 3), nn.Linear(300, 40), nn.Conv2d(1, 8, 3))
    for name in ("0", "1", "2", "3"):  # tall, kernel slices, wide (a transposed view), slices of one column
        exact = weights.esd(model, name, solver="svdvals")
        gram = weights.esd(model, name)
        np.testing.assert_allclose(gram, exact, rtol=1e-9, atol=1e-14 * exact.max())
    a, b = weights.layer_spectra(model, solver="svdvals"), weights.layer_spectra(model)
    np.testing.assert_allclose(a.alpha, b.alpha, rtol=1e-8)
    assert list(a.n_spikes) == list(b.n_spikes) and list(a.n_traps) == list(b.n_traps)
    with pytest.raises(ValueError, match="solver must be one of"):
        weights.esd(model, "0", solver="qr")


def test_numpy_gram_route_equals_torch_eigvalsh_on_strided_batches():
    from probes._weight_matrices import _gram_eigenvalues_host

    torch.manual_seed(0)
    for batch in (torch.randn(1, 40, 300, dtype=torch.float64).transpose(1, 2),  # a transposed view
                  torch.randn(9, 64, 24, dtype=torch.float64),  # many small ones
                  torch.randn(3, 500, 300, dtype=torch.float64)):  # above the one-thread size
        expected = torch.linalg.eigvalsh(batch.transpose(1, 2) @ batch).numpy()
        got = _gram_eigenvalues_host(batch.numpy())
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * float(expected.max()))


def test_half_precision_weights_give_the_spectrum_of_their_values():
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        model = nn.Sequential(nn.Linear(48, 160), nn.Conv2d(8, 12, 3)).to(dtype)
        for name in ("0", "1"):
            exact = weights.esd(model.float(), name, solver="svdvals")
            np.testing.assert_allclose(weights.esd(model.to(dtype), name), exact, rtol=1e-9,
                                       atol=1e-14 * exact.max())
        assert weights.layer_spectra(model).valid.all()


def test_rank_deficient_layer_fits_the_same_with_either_solver():
    rng = np.random.default_rng(0)
    low_rank = (rng.standard_normal((400, 60)) @ rng.standard_normal((60, 200))) / 20  # rank 60 of 200
    model = _linear_with(low_rank)
    exact = weights.layer_spectra(model, solver="svdvals", randomize=False).iloc[0]
    gram = weights.layer_spectra(model, randomize=False).iloc[0]
    assert gram.valid and gram.n_tail == exact.n_tail <= 60  # rounding-level eigenvalues stay out of the fit
    assert gram.alpha == pytest.approx(exact.alpha, rel=1e-9)
    assert gram.n_spikes == exact.n_spikes == 60  # over a bulk of zeros, whatever size their rounding has


def test_permuted_keeps_the_entries_and_follows_the_seed():
    from probes._weight_matrices import permuted

    stack = torch.randn(9, 24, 16, generator=torch.Generator().manual_seed(0))
    first = permuted(stack, np.random.default_rng(3))
    assert first.shape == stack.shape and first.dtype == torch.float64
    torch.testing.assert_close(first.reshape(-1).sort().values, stack.double().reshape(-1).sort().values)
    assert torch.equal(first, permuted(stack, np.random.default_rng(3)))
    assert not torch.equal(first, permuted(stack, np.random.default_rng(4)))
    assert not torch.equal(first, stack.double())


def test_log_histogram_counts_every_positive_eigenvalue():
    rng = np.random.default_rng(0)
    for _ in range(200):
        values = np.sort(rng.lognormal(sigma=rng.uniform(0.1, 3.0), size=int(rng.integers(2, 300))))
        edges, counts = weights.log_histogram(values, int(rng.integers(1, 80)))
        assert counts.sum() == values.size and edges.size == counts.size + 1


def test_esd_scale_none_is_sigma_squared_and_alpha_does_not_move():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 200))
    scaled = weights.layer_spectra(model).iloc[0]
    raw = weights.layer_spectra(model, esd_scale="none").iloc[0]
    assert raw.alpha == pytest.approx(scaled.alpha, rel=1e-12)
    assert raw.spectral_norm == pytest.approx(scaled.spectral_norm * 200, rel=1e-12)
    assert raw.log_norm == pytest.approx(scaled.log_norm + math.log10(200), rel=1e-12)
    assert (raw.n_spikes, raw.n_traps) == (scaled.n_spikes, scaled.n_traps)
    sv = torch.linalg.svdvals(model[0].weight.detach().double()).numpy()
    assert raw.stable_rank == pytest.approx(np.sum(sv**2) / sv[0] ** 2, rel=1e-12)


def test_bad_layers_are_marked_and_the_rest_go_on():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 120), nn.Linear(120, 80), nn.Linear(80, 5))
    with torch.no_grad():
        model[1].weight[3, 4] = float("nan")
        model[1].weight[0, 0] = float("inf")
    table = weights.layer_spectra(model)
    assert list(table.valid) == [True, False, False]
    assert table.message[1] == "non-finite weights in 1.weight (1 NaN, 1 Inf entries)"
    assert table[["alpha", "spectral_norm", "mp_edge"]].iloc[1].isna().all()
    assert "too few eigenvalues" in table.message[2] and math.isnan(table.alpha[2])
    assert np.isfinite(table.spectral_norm[2])  # norms are still measured on a tiny layer
    summary = weights.summarize(table)
    assert summary["alpha_mean"] == pytest.approx(table.alpha[0]) and summary["n_fitted"] == 1
    assert summary["alpha_weighted"] == pytest.approx(table.alpha[0] * math.log10(table.spectral_norm[0]))
    with pytest.raises(ValueError, match=r"has no weight matrices: expected nn.Linear"):
        weights.layer_spectra(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)))
    with pytest.raises(ValueError, match="esd_scale must be one of"):
        weights.layer_spectra(model, esd_scale="M")


def test_table_columns_have_their_dtypes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 120), nn.Linear(120, 5))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    table = weights.layer_spectra(model)
    assert list(table.columns) == list(weights.COLUMNS)
    assert all(table[c].dtype == np.int64 for c in ("n", "m", "n_matrices", "n_evals", "n_tail", "n_spikes", "n_traps"))
    assert table.valid.dtype == bool and table.trap.dtype == bool and table.alpha.dtype == np.float64
    assert not isinstance(table.message[0], str) and table.message[1].startswith("non-finite weights")
    assert table.n_spikes[1] == -1 and math.isnan(table.rand_distance[1])


def test_module_docstring_example_runs():
    assert doctest.testmod(weights).failed == 0


# -- through the probe protocol, the runner, the monitor and the CLI ---------------------------------------
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.fixture()
def checkpoints(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    model = _mlp()
    for step in (0, 5):
        with torch.no_grad():
            model[0].weight.mul_(1.5)
        torch.save(model.state_dict(), folder / f"step_{step}.pt")
    return find_checkpoints(folder)


def test_probe_result_holds_per_layer_scalars_summaries_and_arrays():
    model = _mlp()
    result = get("weights").run(ProbeContext(model=model, loss_fn=None, train=None), **get("weights").defaults)
    table = weights.layer_spectra(model)
    assert result.valid and result.scalars["0/alpha"] == pytest.approx(table.alpha[0])
    assert result.scalars["alpha_mean"] == pytest.approx(table.alpha.mean())
    assert "4/alpha" not in result.scalars and result.scalars["4/spectral_norm"] > 0  # 4 eigenvalues: no fit
    assert not any(math.isnan(v) for v in result.scalars.values())
    assert list(result.arrays["layer_names"]) == ["0", "2", "4"]
    assert result.arrays["esd_counts"].shape == (3, 60) and result.arrays["esd_log10_edges"].shape == (3, 61)
    assert result.arrays["esd_counts"].sum(axis=1).tolist() == [20, 32, 4]
    assert result.arrays["messages"][2].startswith("too few eigenvalues")


def test_runner_runs_the_weights_probe_without_data(tmp_path, checkpoints):
    with Store(tmp_path / "s.sqlite") as store:
        report = run_probes(model_factory=_mlp, loss_fn=nn.CrossEntropyLoss(), train=None, checkpoints=checkpoints,
                            probes={"weights": {}}, store=store, run="r", device="cpu", progress=False)
        assert report.ok and report.computed == 2
        alpha = store.scalars(run="r", probe="weights", keys=["0/alpha"]).sort_values("step")
        assert len(alpha) == 2 and alpha.value.notna().all()
        # A data-free result's identity ignores the data: a run with data reuses it.
        x, y = torch.randn(30, 20), torch.randint(0, 4, (30,))
        again = run_probes(model_factory=_mlp, loss_fn=nn.CrossEntropyLoss(), train=(x, y), checkpoints=checkpoints,
                           probes={"weights": {}}, store=store, run="r", device="cpu", progress=False)
        assert again.skipped == 2 and again.computed == 0
        with pytest.raises(ValueError, match="train data is required by the probe"):
            run_probes(model_factory=_mlp, loss_fn=nn.CrossEntropyLoss(), train=None, checkpoints=checkpoints,
                       probes={"weights": {}, "metrics": {}}, store=store, run="r", device="cpu", progress=False)


def test_monitor_runs_the_weights_probe_without_data(tmp_path):
    model = _mlp()
    with Monitor(tmp_path / "m.sqlite", "live", probes={"weights": {"every": 2}}, every=100) as monitor:
        for step in range(5):
            monitor.step(model, step)
    with Store(tmp_path / "m.sqlite", readonly=True) as store:
        steps = sorted(store.scalars(run="live", probe="weights", keys=["alpha_mean"]).step)
    assert steps == [0, 2, 4]


def test_cli_analyze_with_only_the_weights_probe_needs_no_data(tmp_path, checkpoints, capsys):
    (tmp_path / "user_models.py").write_text(
        "import torch\nfrom torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), "
        "nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))\n")
    store = tmp_path / "cli.sqlite"
    status = cli.main(["analyze", "--model", f"{tmp_path / 'user_models.py'}:make", "--checkpoints",
                       str(checkpoints[0].path.parent), "--probes", "weights", "--store", str(store), "--quiet"])
    assert status == 0, capsys.readouterr().err
    with Store(store, readonly=True) as opened:
        assert set(opened.scalars(probe="weights", keys=["alpha_mean"]).step) == {0, 5}
    status = cli.main(["analyze", "--model", f"{tmp_path / 'user_models.py'}:make", "--checkpoints",
                       str(checkpoints[0].path.parent), "--probes", "weights,metrics", "--store", str(store)])
    assert status == 2 and "--data" in capsys.readouterr().err
