"""Probe budgets by name (``--preset quick|default|thorough``) and what a run will cost before it starts.

A preset sets every probe's budget parameters (Lanczos and trace products, sharpness ascent steps and
Monte-Carlo draws, grid sizes); parameters the user gives explicitly always win. ``default`` is each
probe's own defaults; ``quick`` is for a first look at a large model (minutes on a CPU with
``--max-samples 32``); ``thorough`` is for final numbers.

Cost: a probe may expose ``cost(params, n_params, n_samples) -> dict`` counting the full-data passes one
checkpoint needs: ``forward`` (loss evaluations), ``gradient`` (forward + backward) and ``hvp``
(Hessian-vector products). :func:`describe_costs` turns them into the lines the runner prints, with
a *forward-equivalent* total that weighs a gradient as 3 forward passes and a Hessian-vector product as
5 (the usual ratios of reverse-mode and double-backward work to a forward pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["GRADIENT_FORWARDS", "HVP_FORWARDS", "PRESETS", "apply_budget", "describe_costs", "forward_equivalents"]

GRADIENT_FORWARDS = 3.0
HVP_FORWARDS = 5.0

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "hessian": {"k": 1, "tol": 1e-2, "max_iter": 20, "n_matvec": 12, "density": False},
        "sharpness": {"steps": 2, "n_samples": 2, "adaptive": False, "stability": False},
        "slices": {"steps": 7, "trajectory_steps": 7, "interpolation_steps": 7},
        "grokking": {"feature_samples": 128},
    },
    "default": {},
    "thorough": {
        "hessian": {"k": 10, "tol": 1e-5, "n_matvec": 200, "n_runs": 16, "n_steps": 80, "lambda_min": True},
        "sharpness": {"steps": 20, "n_samples": 40},
        "slices": {"steps": 41, "trajectory_steps": 31, "interpolation_steps": 49},
    },
}


def apply_budget(selected: Mapping[str, Mapping[str, Any]], preset: str | None,
                 param_groups: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each probe's params with the preset's budget under them and, for the probes that take a ``params``
    (parameter-group) argument, the given groups unless set explicitly."""
    from landscape import probe as registry

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}.")
    if param_groups is not None and (not param_groups or not all(isinstance(g, str) and g for g in param_groups)):
        raise ValueError(f"params must be a non-empty list of parameter-name prefixes, got {param_groups!r}.")
    out: dict[str, dict[str, Any]] = {}
    for name, given in selected.items():
        defaults = registry.get(name).defaults
        budget = {k: v for k, v in PRESETS.get(preset or "default", {}).get(name, {}).items() if k in defaults}
        merged = {**budget, **dict(given)}
        if param_groups is not None and "params" in defaults and "params" not in given:
            merged["params"] = list(param_groups)
        out[name] = merged
    return out


def forward_equivalents(cost: Mapping[str, float]) -> float:
    """Forward passes a cost amounts to (a gradient as 3, a Hessian-vector product as 5)."""
    return (float(cost.get("forward", 0)) + GRADIENT_FORWARDS * float(cost.get("gradient", 0))
            + HVP_FORWARDS * float(cost.get("hvp", 0)))


def _phrase(cost: Mapping[str, float]) -> str:
    parts = [f"{int(round(cost[k]))} {label}" for k, label in
             (("hvp", "Hessian-vector products"), ("gradient", "gradients"), ("forward", "loss evaluations"))
             if cost.get(k)]
    return ", ".join(parts) or "no full-data pass"


def describe_costs(costs: Mapping[str, Mapping[str, float] | None], n_params: int, n_samples: int,
                   n_checkpoints: int) -> list[str]:
    """The lines printed before a run: per probe the full-data passes one checkpoint needs, and the total."""
    lines = [f"estimated cost per checkpoint ({n_params:,} trainable parameters, {n_samples} samples; "
             f"full-data passes):"]
    total = 0.0
    for name, cost in costs.items():
        if cost is None:
            lines.append(f"  {name:<10} (no estimate)")
            continue
        amount = forward_equivalents(cost)
        total += amount
        lines.append(f"  {name:<10} {_phrase(cost)}  (~{amount:,.0f} forward-equivalents)")
    lines.append(f"  total      ~{total:,.0f} forward-equivalents per checkpoint, ~{total * n_checkpoints:,.0f} "
                 f"for {n_checkpoints} checkpoint(s); a time estimate follows the first checkpoint; "
                 "--preset quick cuts it")
    return lines
