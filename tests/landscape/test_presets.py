"""Presets set every probe's budget under the user's own params; cost lines are the probes' own counts."""

from __future__ import annotations

import pytest

from landscape import probe as registry
from landscape.presets import PRESETS, apply_budget, describe_costs, forward_equivalents


def test_presets_set_budgets_and_explicit_params_win():
    quick = apply_budget({"hessian": {"k": 3}, "sharpness": {}}, "quick")
    assert quick["hessian"]["k"] == 3 and quick["hessian"]["density"] is False
    assert quick["sharpness"]["steps"] == PRESETS["quick"]["sharpness"]["steps"]
    assert apply_budget({"hessian": {}}, "default") == {"hessian": {}}
    for preset in PRESETS:  # every preset names real parameters only
        for name, params in PRESETS[preset].items():
            assert set(params) <= set(registry.get(name).defaults), (preset, name)
    with pytest.raises(ValueError, match="preset must be one of"):
        apply_budget({"hessian": {}}, "fast")


def test_param_groups_go_to_the_probes_that_take_them():
    chosen = apply_budget({"hessian": {}, "metrics": {}}, None, ["layer4", "fc"])
    assert chosen["hessian"]["params"] == ["layer4", "fc"] and "params" not in chosen["metrics"]
    assert apply_budget({"hessian": {"params": "fc"}}, None, ["layer4"])["hessian"]["params"] == "fc"


def test_costs_shrink_with_the_quick_preset_and_are_described():
    n_params, n_samples = 11_000_000, 32
    costs = {}
    for preset in ("quick", "default", "thorough"):
        chosen = apply_budget({n: {} for n in registry.available()}, preset)
        costs[preset] = sum(forward_equivalents(registry.get(n).cost(registry.resolve_params(registry.get(n), p),
                                                                     n_params, n_samples))
                            for n, p in chosen.items())
    assert costs["quick"] < costs["default"] < costs["thorough"]
    hessian = registry.get("hessian").cost({"k": 2, "n_matvec": 10, "density": False}, 1000, 8)
    assert hessian == {"forward": 2.0, "hvp": 4 * 2 + 20 + 10}
    lines = describe_costs({"hessian": hessian, "other": None}, 1000, 8, 3)
    assert "38 Hessian-vector products" in lines[1] and "(no estimate)" in lines[2] and "3 checkpoint(s)" in lines[-1]
