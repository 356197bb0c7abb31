"""Random directions: normalization properties, ``ignore`` rules, orthogonality, seeding, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscape.directions import (
    check_directions,
    cosine,
    load_directions,
    normalize_direction,
    orthogonalize,
    random_directions,
    save_directions,
)


def small_net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.ReLU(),
        nn.Linear(7, 3),
    ).to(dtype)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in model.named_parameters()}


def filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.double().reshape(t.shape[0], -1).norm(dim=1)


# Norms are compared in float64 after a float32 rescaling: relative error is a few float32 ulps (~1e-7),
# so 1e-6 is tight yet safe.
RTOL = 1e-6


@pytest.mark.parametrize("orthogonal", [False, True])
def test_filter_norm_matches_each_filter_and_zeroes_1d(orthogonal: bool) -> None:
    model = small_net()
    w = weights(model)
    for d in random_directions(model, 2, norm="filter", seed=3, orthogonal=orthogonal):
        assert set(d) == set(w)
        for name, t in d.items():
            if w[name].dim() <= 1:
                assert torch.count_nonzero(t) == 0, name
            else:
                torch.testing.assert_close(filter_norms(t), filter_norms(w[name]), rtol=RTOL, atol=0)


def test_ignore_none_copies_1d_weights() -> None:
    model = small_net()
    w = weights(model)
    d = random_directions(model, 1, norm="filter", ignore=None, seed=0)[0]
    for name in ("0.bias", "1.weight", "1.bias", "4.bias", "6.bias"):
        assert torch.equal(d[name], w[name])


def test_first_direction_independent_of_ignore_and_n() -> None:
    model = small_net()
    a = random_directions(model, 1, seed=5)[0]
    b = random_directions(model, 3, seed=5, ignore=None)[0]
    for name, t in a.items():
        if t.dim() > 1:
            assert torch.equal(t, b[name])


@pytest.mark.parametrize("orthogonal", [False, True])
def test_layer_norm_matches_each_tensor(orthogonal: bool) -> None:
    model = small_net()
    w = weights(model)
    for d in random_directions(model, 2, norm="layer", seed=1, orthogonal=orthogonal):
        for name, t in d.items():
            if t.dim() > 1:
                assert math.isclose(float(t.double().norm()), float(w[name].double().norm()), rel_tol=RTOL)


@pytest.mark.parametrize("orthogonal", [False, True])
def test_model_norm_matches_whole_vector(orthogonal: bool) -> None:
    model = small_net()
    w = weights(model)
    big = [k for k, t in w.items() if t.dim() > 1]
    for d in random_directions(model, 2, norm="model", seed=1, orthogonal=orthogonal):
        dn = math.sqrt(sum(float(d[k].double().pow(2).sum()) for k in big))
        wn = math.sqrt(sum(float(w[k].double().pow(2).sum()) for k in big))
        assert math.isclose(dn, wn, rel_tol=RTOL)
        assert not any(bool(d[k].any()) for k in w if k not in big)


def test_norm_none_is_the_seeded_gaussian_draw() -> None:
    model = small_net()
    d = random_directions(model, 1, norm=None, seed=11)[0]
    generator = torch.Generator().manual_seed(11)
    for name, p in model.named_parameters():  # draws happen in parameter order, float32, on CPU
        expected = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        if p.dim() > 1:
            assert torch.equal(d[name], expected)


def test_same_seed_same_directions_and_other_seed_differs() -> None:
    model = small_net()
    a = random_directions(model, 2, seed=7)
    b = random_directions(model, 2, seed=7)
    c = random_directions(model, 2, seed=8)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert not torch.equal(a[0]["0.weight"], c[0]["0.weight"])


def test_float64_model_gets_the_same_directions() -> None:
    a = random_directions(small_net(torch.float32), 2, seed=2)
    b = random_directions(small_net(torch.float64), 2, seed=2)
    for x, y in zip(a, b):
        for k in x:
            assert y[k].dtype == torch.float64
            # Same draws; the normalization runs in each model's precision: float32 rounding only.
            torch.testing.assert_close(x[k].double(), y[k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm", ["filter", "layer", "model", None])
def test_orthogonal_directions_are_exactly_orthogonal(norm: str | None) -> None:
    model = small_net()
    d1, d2, d3 = random_directions(model, 3, norm=norm, seed=4, orthogonal=True)
    # Gram-Schmidt runs in float64 and the result is stored in float32: cosine ~1e-7 at most.
    for a, b in ((d1, d2), (d1, d3), (d2, d3)):
        assert abs(cosine(a, b)) < 1e-6


def test_unorthogonalized_directions_are_not_exactly_orthogonal() -> None:
    d1, d2 = random_directions(small_net(), 2, seed=4, orthogonal=False)
    assert abs(cosine(d1, d2)) > 1e-4  # ~1/sqrt(P) for P ≈ 700 entries: a real, non-zero angle


def test_orthogonalize_keeps_single_entry_units_as_drawn() -> None:
    torch.manual_seed(0)
    model = nn.Linear(1, 4, bias=False)  # every filter is a single weight: nothing can be orthogonal to it
    d1, d2 = random_directions(model, 2, seed=0, orthogonal=False)
    out = orthogonalize(d2, [d1], model)
    assert torch.equal(out["weight"], d2["weight"])


def test_dead_filter_gets_zero_direction_not_nan() -> None:
    model = small_net()
    with torch.no_grad():
        model[0].weight[2].zero_()
    d1, d2 = random_directions(model, 2, seed=0)
    assert torch.count_nonzero(d1["0.weight"][2]) == 0 and torch.count_nonzero(d2["0.weight"][2]) == 0
    assert all(bool(torch.isfinite(t).all()) for d in (d1, d2) for t in d.values())


def test_normalize_direction_closed_form_on_a_two_filter_tensor() -> None:
    w = {"w": torch.tensor([[3.0, 4.0], [0.0, 2.0]])}  # filter norms 5 and 2
    d = {"w": torch.tensor([[1.0, 0.0], [1.0, 1.0]])}  # filter norms 1 and sqrt(2)
    out = normalize_direction(d, w, norm="filter")
    expected = torch.tensor([[5.0, 0.0], [2 / math.sqrt(2), 2 / math.sqrt(2)]])
    torch.testing.assert_close(out["w"], expected, rtol=1e-6, atol=0)


def test_save_and_load_roundtrip(tmp_path) -> None:
    model = small_net()
    dirs = random_directions(model, 2, seed=9)
    path = save_directions(tmp_path / "plane.safetensors", dirs, {"seed": 9, "norm": "filter"})
    loaded, meta = load_directions(path)
    assert meta == {"seed": 9, "norm": "filter"}
    assert len(loaded) == 2
    assert all(torch.equal(a[k], b[k]) for a, b in zip(dirs, loaded) for k in a)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_directions(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="holds no saved directions"):
        load_directions(tmp_path / "other.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable directions file"):
        load_directions(tmp_path / "garbage.safetensors")
    with pytest.raises(ValueError, match="JSON-able"):
        save_directions(tmp_path / "x.safetensors", [{"a": torch.ones(2)}], {"bad": object()})


def test_bad_arguments_are_named() -> None:
    model = small_net()
    with pytest.raises(ValueError, match="norm must be one of"):
        random_directions(model, norm="rows")
    with pytest.raises(ValueError, match="ignore must be one of"):
        random_directions(model, ignore="bias")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        random_directions(model, 0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        random_directions(model, seed=1.5)
    with pytest.raises(ValueError, match="no trainable parameters"):
        random_directions(nn.ReLU())


def test_check_directions_errors() -> None:
    w = weights(small_net())
    good = random_directions(small_net(), 1)[0]
    with pytest.raises(ValueError, match="not trainable parameters"):
        check_directions(w, [{**good, "head.weight": torch.ones(1)}])
    with pytest.raises(ValueError, match=r"has shape \(3,\), the parameter has \(5, 2, 3, 3\)"):
        check_directions(w, [{"0.weight": torch.ones(3)}])
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_directions(w, [{"0.weight": torch.full((5, 2, 3, 3), float("nan"))}])
    with pytest.raises(ValueError, match="zero everywhere"):
        check_directions(w, [{"0.weight": torch.zeros(5, 2, 3, 3)}])
    with pytest.raises(ValueError, match="must be a list"):
        check_directions(w, good)
    with pytest.raises(ValueError, match="floating-point"):
        check_directions(w, [{"0.weight": torch.ones(5, 2, 3, 3, dtype=torch.int64)}])
    out = check_directions(w, [{"0.weight": torch.ones(5, 2, 3, 3, dtype=torch.float64)}])
    assert out[0]["0.weight"].dtype == torch.float32  # cast to the parameter's dtype
