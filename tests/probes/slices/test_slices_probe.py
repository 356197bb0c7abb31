"""The registered ``slices`` probe: its result keys and values against direct slices, the separate
1-D line, invalid results, Hessian axes, and a run through the runner and a real store."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from slices_cases import EXACT, LOSS, MemoryRows, direct, mlp, vector_data

from landscape.checkpoints import Checkpoint
from landscape.data import as_batches
from landscape.evaluate import evaluate
from probes import slices
from probes.base import ProbeContext, Result


# ----------------------------------------------------------------------------------------------- probe
def make_run(tmp_path: Path, n: int = 3) -> tuple[list[Checkpoint], dict[Checkpoint, dict]]:
    checkpoints, states = [], {}
    for k in range(n):
        model = mlp(k)
        c = Checkpoint(step=10 * k, path=tmp_path / f"step_{10 * k}.pt")
        torch.save(model.state_dict(), c.path)
        checkpoints.append(c)
        states[c] = model.state_dict()
    return checkpoints, states


def context(tmp_path: Path, step_index: int, **overrides) -> ProbeContext:
    checkpoints, states = make_run(tmp_path)
    model = mlp(step_index)
    model.eval()
    return ProbeContext(model=model, loss_fn=LOSS, train=as_batches(vector_data()),
                        test=as_batches(vector_data(12, seed=7)), step=checkpoints[step_index].step,
                        checkpoints=checkpoints, load_state=lambda c: states[c], **overrides)


def test_probe_result_keys_and_values(tmp_path: Path) -> None:
    probe = slices.PROBE
    params = {**probe.defaults, "steps": 5, "trajectory_steps": 3}
    ctx = context(tmp_path, 2, partial=MemoryRows())
    result = probe.run(ctx, **params)
    assert isinstance(result, Result) and result.valid
    assert set(result.arrays) == {
        "x", "y", "loss", "accuracy", "test_loss", "test_accuracy", "line_x", "line_loss", "line_accuracy",
        "line_test_loss", "line_test_accuracy",
        "pca_x", "pca_y", "pca_loss", "pca_accuracy", "path_x", "path_y", "path_steps", "explained_variance",
        "interp_x", "interp_loss", "interp_accuracy", "interp_test_loss", "interp_test_accuracy", "interp_from_step",
    }
    assert set(result.scalars) == {"loss_center", "loss_min", "loss_max", "interp_barrier"}
    assert result.arrays["loss"].shape == (5, 5) and result.arrays["pca_loss"].shape == (3, 3)
    np.testing.assert_array_equal(result.arrays["line_loss"], result.arrays["loss"][2])
    np.testing.assert_array_equal(result.arrays["line_test_loss"], result.arrays["test_loss"][2])
    np.testing.assert_array_equal(result.arrays["path_steps"], [0, 10, 20])
    assert result.scalars["loss_center"] == result.arrays["loss"][2, 2]
    np.testing.assert_allclose(result.scalars["loss_center"], evaluate(ctx.model, LOSS, ctx.train).loss, **EXACT)
    assert result.arrays["path_x"][-1] == 0.0 and result.arrays["path_y"][-1] == 0.0
    # The interpolation runs from the first checkpoint (x = 0) to this one (x = 1), 0.25 beyond each end.
    x, line = result.arrays["interp_x"], result.arrays["interp_loss"]
    assert len(x) == 25 and x[0] == -0.25 and x[-1] == 1.25 and result.arrays["interp_from_step"][0] == 0
    assert (x == 0.0).sum() == 1 and (x == 1.0).sum() == 1
    np.testing.assert_allclose(line[x == 0.0], evaluate(mlp(0), LOSS, ctx.train).loss, **EXACT)
    np.testing.assert_allclose(line[x == 1.0], result.scalars["loss_center"], **EXACT)
    inside = (x >= 0) & (x <= 1)
    assert result.scalars["interp_barrier"] == pytest.approx(max(0.0, line[inside].max() - max(line[x == 0.0][0],
                                                                                              line[x == 1.0][0])))
    import json

    json.dumps(result.params)
    # Same seed at another checkpoint: same draws, normalized to that checkpoint's weights.
    earlier = probe.run(context(tmp_path, 1), **params)
    assert "pca_loss" not in earlier.arrays and earlier.valid and "interp_loss" in earlier.arrays
    first = probe.run(context(tmp_path, 0), **params)
    assert "interp_loss" not in first.arrays and "interp_barrier" not in first.scalars
    direct_surface = slices.slice_2d(mlp(1), LOSS, vector_data(), steps=5, seed=0)
    np.testing.assert_allclose(earlier.arrays["loss"], direct_surface.loss, **EXACT)


def test_probe_line_without_a_zero_row_and_invalid_on_nan(tmp_path: Path) -> None:
    probe = slices.PROBE
    params = {**probe.defaults, "steps": 4, "trajectory": False}
    ctx = context(tmp_path, 0)
    result = probe.run(ctx, **params)
    line = slices.slice_1d(ctx.model, LOSS, ctx.train, steps=4, test_data=ctx.test)
    np.testing.assert_allclose(result.arrays["line_loss"], line.loss, **EXACT)
    np.testing.assert_allclose(result.arrays["line_test_loss"], line.test_loss, **EXACT)
    np.testing.assert_allclose(result.scalars["loss_center"], evaluate(ctx.model, LOSS, ctx.train).loss, **EXACT)
    with torch.no_grad():
        ctx.model[0].weight[0, 0] = float("nan")
    bad = probe.run(ctx, **params)
    assert not bad.valid and "nan" in bad.message.lower()


def test_probe_rejects_unknown_direction_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directions must be 'random' or 'hessian'"):
        slices.PROBE.run(context(tmp_path, 0), **{**slices.PROBE.defaults, "directions": "pca"})


@pytest.mark.skipif(importlib.util.find_spec("probes.hessian") is None, reason="probes.hessian not available")
def test_probe_with_hessian_axes(tmp_path: Path) -> None:
    ctx = context(tmp_path, 0)
    params = {**slices.PROBE.defaults, "steps": 3, "directions": "hessian", "span": 0.5, "trajectory": False}
    result = slices.PROBE.run(ctx, **params)
    assert result.valid and result.arrays["loss"].shape == (3, 3)
    dirs = slices.hessian_directions(ctx.model, LOSS, ctx.train, 2)
    for d in dirs:  # unit eigenvectors: the span is a distance in parameter space
        assert math.isclose(math.sqrt(sum(float(t.double().pow(2).sum()) for t in d.values())), 1.0, rel_tol=1e-5)
    loss, _ = direct(ctx.model, LOSS, ctx.train, dirs, (0.5, -0.5))
    # The eigenvectors come from an iterative solver run twice with the same seed: identical vectors.
    np.testing.assert_allclose(result.arrays["loss"][0, 2], loss, rtol=1e-9)


def test_probe_through_the_runner_and_a_real_store(tmp_path: Path) -> None:
    from landscape.checkpoints import find_checkpoints
    from landscape.runner import run_probes
    from landscape.store import Store

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for k in range(3):
        torch.save({"state_dict": mlp(k).state_dict(), "step": 5 * k}, folder / f"step_{5 * k}.pt")
    store = Store(tmp_path / "run.sqlite")
    report = run_probes(model_factory=mlp, loss_fn=LOSS, train=vector_data(), checkpoints=find_checkpoints(folder),
                        probes={"slices": {"steps": 3, "trajectory_steps": 3}}, store=store, run="r",
                        device="cpu", progress=False)
    assert report.ok, report.errors
    last = store.arrays("r", 10, "slices")
    assert {"pca_loss", "path_x", "explained_variance"} <= set(last)
    assert "pca_loss" not in store.arrays("r", 5, "slices")
    np.testing.assert_allclose(last["loss"], slices.slice_2d(mlp(2), LOSS, vector_data(), steps=3).loss, **EXACT)


def test_probe_rejects_an_interpolation_grid_that_misses_the_checkpoints(tmp_path: Path) -> None:
    params = {**slices.PROBE.defaults, "steps": 3, "trajectory": False, "interpolation_steps": 21}
    with pytest.raises(ValueError, match="interpolation_steps=21 with interpolation_extend=0.25 puts no grid point"):
        slices.PROBE.run(context(tmp_path, 1), **params)
