"""Sharpness of the loss at a point, by each definition the literature uses, measured the same way everywhere.

All quantities are of the full-data loss ``L`` (the sample-weighted mean over batches) at the current
weights ``θ`` (the trainable parameters, as one vector), with the model in eval mode and left untouched:

* **worst case** (SAM, Foret et al. 2021): ``max_{‖ε‖₂ ≤ ρ} L(θ+ε) − L(θ)``.
* **adaptive worst case** (ASAM, Kwon et al. 2021): the same maximum over the ball ``‖ε / t‖₂ ≤ ρ`` with
  ``t = |θ| + η`` element-wise (``η = 0.01`` as in ASAM), so the ball scales with each weight and the
  measure is invariant to rescalings of the weights that leave the network function unchanged. ``t`` is
  applied to every trainable tensor, biases included.
* **one-step SAM estimate**: ``L(θ + ρ g/‖g‖) − L(θ)`` with ``g = ∇L(θ)`` (the ascent step SAM trains with).
  Near a minimum ``g`` is tiny and its direction is noise, so this says little; it is kept for comparison.
* **m-sharpness** (SAM paper): the worst case of each batch's own loss over batches of ``m`` samples,
  averaged (weighted like the full-data mean: samples, or scored tokens).
* **average case** (Keskar et al., Jiang et al. 2020): ``E[L(θ+ε)] − L(θ)``, ``ε ~ N(0, σ²I)``, or with a
  per-filter ``σ`` proportional to the filter's weight norm.
* **first-order flatness** (GAM, Zhang et al. 2023): ``ρ · max_{‖ε‖₂ ≤ ρ} ‖∇L(θ+ε)‖₂``.
* **stability** (Cohen et al. 2021; Wu & Su 2023): ``λ_max·lr/2`` (gradient descent is linearly unstable
  at ≥ 1, the edge of stability) and ``tr(H)·lr/2`` (a minimum linearly stable for SGD has ≤ 1).
* **preconditioned stability** (Cohen et al. 2022): ``λ_max(P⁻¹H)`` for an adaptive optimizer's
  preconditioner P against its threshold (38/η for Adam at β₁ = 0.9), :func:`preconditioned_eigenvalues`
  (implemented in :mod:`probes.preconditioned`); the probe stores it when the checkpoint carries optimizer
  state.

The maxima are found by projected gradient ascent from a random point on the ball's surface (at a minimum
the gradient is ~0, so a step from ``ε = 0`` has no direction), with the full step: each iterate is the
maximiser of the loss linearised at the previous one, ``ε ← ρ g/‖g‖`` (``ε ← ρ t²g/‖tg‖`` on the adaptive
ball). On a convex loss no step decreases the objective, and on a quadratic this is power iteration, which
converges to the exact maximum ``½ρ²λ_max`` at the rate ``(λ₂/λ₁)^2k``. The best value seen is returned,
with ``ε = 0`` as a candidate, so the worst case is ≥ 0; on a non-convex loss it is a lower bound of the
true maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from landscape.autodiff import (
    DoubleBackwardError,
    explain_double_backward,
    is_double_backward_error,
    math_attention,
)
from landscape.batch import Batch
from landscape.data import Batches, as_batches
from landscape.distributed import all_reduce_named, local_share
from landscape.evaluate import LossFn, evaluate, gradient, total_weight
from landscape.objective import Objective, as_objective
from landscape.params import Named, preserved, set_point, trainable_parameters
from landscape.probe import ProbeContext, Result
from probes.preconditioned import PreconditionedEigen, preconditioned_eigenvalues

__all__ = [
    "PROBE", "PreconditionedEigen", "SharpnessProbe", "average_case", "first_order_flatness", "gradient_norm",
    "m_sharpness", "preconditioned_eigenvalues", "sam_one_step", "stability", "worst_case",
]

ASAM_ETA = 0.01

DEFINITIONS = {
    "worst_case": "max_{|e|<=rho} L(t+e)-L(t); projected ascent from a random point on the sphere, "
    "full step e=rho*g/|g|, best of `steps` iterates and e=0 (>=0)",
    "worst_case_adaptive": "same over |e/(|t|+eta)|<=rho (ASAM ball, all tensors), step e=rho*T^2 g/|T g|",
    "sam_one_step": "L(t+rho*g/|g|)-L(t), g the full-data gradient at t",
    "m_sharpness": "worst case of each m-sample batch's loss, averaged weighted by batch size",
    "average_case": "E[L(t+e)]-L(t), e~N(0,sigma^2 I) (filter_scaled: sigma*|filter|/sqrt(n_filter) "
    "per entry), antithetic pairs +-e, n_samples pairs",
    "gradient_norm": "|grad L(t)|_2, full data",
    "first_order_flatness": "rho*max_{|e|<=rho}|grad L(t+e)|_2 (GAM), ascent along H g/|g|",
    "eos_ratio": "lambda_max*lr/2 (>=1: GD linearly unstable)",
    "sgd_trace_ratio": "trace(H)*lr/2 (>1: not linearly stable for SGD, Wu & Su 2023)",
    "preconditioned_eos_ratio": "lambda_max(P^-1 H)/threshold, P the optimizer's preconditioner, threshold "
    "(2+2*beta1)/((1-beta1)*lr) for Adam, (2+2*momentum)/lr for RMSprop, 2/lr for Adagrad (>=1: unstable)",
}


# --------------------------------------------------------------------------------------------- checks


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}.")
    return float(value)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


# ------------------------------------------------------------------------------------- named vectors


def _dot(a: Named, b: Named) -> float:
    return float(sum(float((a[k].double() * b[k].double()).sum()) for k in a))


def _norm(a: Named) -> float:
    return math.sqrt(_dot(a, a))


def _scaled(a: Named, factor: float) -> Named:
    return {k: v * factor for k, v in a.items()}


def _times(a: Named, b: Named) -> Named:
    return {k: a[k] * b[k] for k in a}


# ------------------------------------------------------------------------------------------ the point


@dataclass
class _Point:
    """The model at its original weights θ, with helpers to evaluate the loss and its derivatives at θ+ε.

    Lives inside ``preserved(model)``: the weights are written from the saved origin at every call (no
    drift), and the caller's ``preserved`` puts everything back afterwards.
    """

    model: nn.Module
    loss_fn: LossFn
    data: Batches
    origin: Named

    @classmethod
    def of(cls, model: nn.Module, loss_fn: LossFn, data: Batches) -> _Point:
        params = trainable_parameters(model)
        if not params:
            raise ValueError("model has no trainable parameters; sharpness is measured in parameter space.")
        origin = {name: p.detach().clone() for name, p in params.items()}
        return cls(model, loss_fn, data, origin)

    def move(self, eps: Named | None) -> None:
        set_point(self.model, self.origin, [] if eps is None else [eps], [] if eps is None else [1.0])

    def loss(self, eps: Named | None = None, data: Batches | None = None) -> float:
        self.move(eps)
        return evaluate(self.model, self.loss_fn, self.data if data is None else data).loss

    def gradient(self, eps: Named | None = None, data: Batches | None = None) -> Named:
        self.move(eps)
        return gradient(self.model, self.loss_fn, self.data if data is None else data)

    def hvp(self, eps: Named | None, vector: Named) -> Named:
        """Hessian of the full-data loss at θ+ε times ``vector`` (double backward, weighted like the loss).

        Attention runs on the math kernel (the one with a second derivative); a model that still cannot be
        differentiated twice gets one sentence naming the module.
        """
        self.move(eps)
        params = trainable_parameters(self.model)
        names = list(params)
        total = {name: torch.zeros_like(p) for name, p in params.items()}
        objective = as_objective(self.loss_fn, self.model)
        data, summed = local_share(self.data)  # under torch.distributed: this rank's shard, summed below
        weights = total_weight(objective, data, summed=summed)
        with math_attention():
            for batch in data:
                weight = objective.weight(batch)
                if weight == 0:
                    continue
                try:
                    products = self._batch_hvp(objective, batch, params, names, vector)
                except RuntimeError as error:
                    if not is_double_backward_error(error):
                        raise
                    small = batch.rows(0, min(2, batch.n_samples))
                    raise DoubleBackwardError(explain_double_backward(
                        self.model, lambda small=small: objective.batch_loss(self.model, small), error)) from None
                for k, hv in zip(names, products):
                    if hv is not None:
                        total[k].add_(hv.detach(), alpha=weight / weights)
        if summed:
            all_reduce_named(total, "a Hessian-vector product")
        return total

    def _batch_hvp(self, objective: Objective, batch: Batch, params: Named, names: list[str],
                   vector: Named) -> tuple[torch.Tensor | None, ...]:
        loss = objective.batch_loss(self.model, batch)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=True, allow_unused=True)
        inner = sum((g * vector[k]).sum() for k, g in zip(names, grads) if g is not None and g.requires_grad)
        if not isinstance(inner, torch.Tensor):
            return (None,) * len(names)  # the loss is at most linear in the parameters: zero curvature here
        return torch.autograd.grad(inner, [params[k] for k in names], allow_unused=True)

    def scale(self, eta: float) -> Named:
        """The ASAM element-wise scale ``t = |θ| + η``."""
        return {k: v.abs() + eta for k, v in self.origin.items()}

    def random_direction(self, generator: torch.Generator) -> Named:
        """A standard Gaussian vector shaped like the parameters (drawn on the CPU, so seeds agree across devices)."""
        return {
            k: torch.randn(v.shape, generator=generator, dtype=torch.float64).to(v.device, v.dtype)
            for k, v in self.origin.items()
        }


@contextmanager
def _point(model: nn.Module, loss_fn: LossFn, data: object) -> Iterator[_Point]:
    batches = as_batches(data, device=_device_of(model))
    with preserved(model):
        yield _Point.of(model, loss_fn, batches)


# ----------------------------------------------------------------------------------- the ascent steps


def _on_sphere(direction: Named, rho: float, scale: Named | None) -> Named | None:
    """The ball's point furthest along ``direction``: ``ρ d/‖d‖``, or ``ρ t²d/‖td‖`` on the adaptive ball.

    This is the maximiser of the linear function ``dᵀε`` over the ball; None when ``d`` is zero.
    """
    if scale is None:
        size = _norm(direction)
        return None if size == 0.0 or not math.isfinite(size) else _scaled(direction, rho / size)
    scaled = _times(scale, direction)
    size = _norm(scaled)
    return None if size == 0.0 or not math.isfinite(size) else _scaled(_times(scale, scaled), rho / size)


def _random_start(point: _Point, rho: float, scale: Named | None, generator: torch.Generator) -> Named:
    """A uniformly random point on the ball's surface (Gaussian direction, normalised in the ball's metric)."""
    u = point.random_direction(generator)
    u = _scaled(u, rho / _norm(u))
    return u if scale is None else _times(scale, u)


def _worst_case(point: _Point, rho: float, scale: Named | None, steps: int, generator: torch.Generator,
                data: Batches | None = None) -> float:
    base = point.loss(None, data)
    if not math.isfinite(base):
        return math.nan
    best = 0.0  # ε = 0 is in the ball
    eps = _random_start(point, rho, scale, generator)
    for _ in range(steps):
        value = point.loss(eps, data)
        if math.isfinite(value) or value == math.inf:
            best = max(best, value - base)
        following = _on_sphere(point.gradient(eps, data), rho, scale)
        if following is None:
            return best  # a stationary (or non-finite) gradient: no ascent direction left
        eps = following
    value = point.loss(eps, data)
    if math.isfinite(value) or value == math.inf:
        best = max(best, value - base)
    return best


# ------------------------------------------------------------------------------------ public functions


def worst_case(model: nn.Module, loss_fn: LossFn, data: object, *, rho: float = 0.05, adaptive: bool = False,
               steps: int = 10, seed: int = 0, eta: float = ASAM_ETA) -> float:
    """Worst-case loss increase in a ball: ``max_{‖ε‖ ≤ ρ} L(θ+ε) − L(θ)`` (≥ 0; NaN if ``L(θ)`` is not finite).

    ``adaptive=True`` uses the ASAM ball ``‖ε / (|θ| + η)‖ ≤ ρ``. The maximum is sought by ``steps``
    full-step projected gradient ascent iterations (``steps`` full-data gradients) from a seeded random
    point on the sphere; the best value seen, ``ε = 0`` included, is returned (a lower bound of the true
    maximum, exact for a quadratic once converged).
    """
    rho, steps = _positive("rho", rho), _count("steps", steps)
    eta = _non_negative("eta", eta)
    with _point(model, loss_fn, data) as point:
        scale = point.scale(eta) if adaptive else None
        return _worst_case(point, rho, scale, steps, torch.Generator().manual_seed(seed))


def sam_one_step(model: nn.Module, loss_fn: LossFn, data: object, *, rho: float = 0.05, adaptive: bool = False,
                 eta: float = ASAM_ETA) -> float:
    """One-step SAM estimate ``L(θ + ρ g/‖g‖) − L(θ)``, ``g = ∇L(θ)`` (ASAM step ``ρ t²g/‖tg‖`` if adaptive).

    Returns 0.0 when the gradient is exactly zero (no ascent direction). May be negative.
    """
    rho = _positive("rho", rho)
    eta = _non_negative("eta", eta)
    with _point(model, loss_fn, data) as point:
        return _sam_one_step(point, rho, point.scale(eta) if adaptive else None)


def _sam_one_step(point: _Point, rho: float, scale: Named | None, grad: Named | None = None) -> float:
    base = point.loss()
    eps = _on_sphere(point.gradient() if grad is None else grad, rho, scale)
    return 0.0 if eps is None else point.loss(eps) - base


def m_sharpness(model: nn.Module, loss_fn: LossFn, data: object, *, rho: float = 0.05, m: int = 128,
                steps: int = 10, seed: int = 0, adaptive: bool = False, eta: float = ASAM_ETA) -> float:
    """m-sharpness: the data cut (in order) into batches of ``m`` samples, the worst case of each batch's own
    mean loss in the ρ-ball (as :func:`worst_case`), averaged over batches weighted by their sizes."""
    rho, m, steps = _positive("rho", rho), _count("m", m), _count("steps", steps)
    eta = _non_negative("eta", eta)
    with _point(model, loss_fn, data) as point:
        return _m_sharpness(point, rho, m, steps, point.scale(eta) if adaptive else None,
                            torch.Generator().manual_seed(seed))


def _m_sharpness(point: _Point, rho: float, m: int, steps: int, scale: Named | None,
                 generator: torch.Generator) -> float:
    objective = as_objective(point.loss_fn, point.model)
    pieces = point.data.rebatched(m)
    weights = total_weight(objective, pieces)
    total = 0.0
    for batch in pieces:
        weight = objective.weight(batch)
        if weight == 0:
            continue
        one = Batches((batch,), pieces.spec)
        total += _worst_case(point, rho, scale, steps, generator, one) * weight / weights
    return total


def average_case(model: nn.Module, loss_fn: LossFn, data: object, *, sigma: float = 0.01, n_samples: int = 20,
                 seed: int = 0, filter_scaled: bool = False) -> float:
    """Average-case sharpness ``E[L(θ+ε)] − L(θ)`` with ``ε ~ N(0, σ²I)``, a seeded Monte-Carlo estimate.

    Each of the ``n_samples`` draws is evaluated at ``+ε`` and ``−ε`` (antithetic pairs, ``2·n_samples``
    loss evaluations): the estimate stays unbiased and the first-order term ``gᵀε``, whose noise would
    swamp ``½σ² tr(H)`` away from a minimum, cancels exactly. ``filter_scaled=True`` draws each filter
    (a slice along dim 0 of a tensor with ≥ 2 dims; a 1-D or 0-D tensor counts as one filter) with
    per-entry std ``σ·‖θ_filter‖/√n_filter``, so ``E‖ε_filter‖² = σ²‖θ_filter‖²``.
    """
    sigma, n_samples = _positive("sigma", sigma), _count("n_samples", n_samples)
    with _point(model, loss_fn, data) as point:
        return _average_case(point, sigma, n_samples, filter_scaled, torch.Generator().manual_seed(seed))


def _noise_scale(point: _Point, sigma: float, filter_scaled: bool) -> Named | None:
    if not filter_scaled:
        return None
    out: Named = {}
    for name, value in point.origin.items():
        if value.dim() >= 2:
            rows = value.reshape(value.shape[0], -1)
            std = rows.double().norm(dim=1) / math.sqrt(rows.shape[1])
            out[name] = (std.view(-1, *([1] * (value.dim() - 1))).expand_as(value)).to(value.dtype)
        else:
            std = value.double().norm() / math.sqrt(max(value.numel(), 1))
            out[name] = torch.full_like(value, float(std))
    return out


def _average_case(point: _Point, sigma: float, n_samples: int, filter_scaled: bool,
                  generator: torch.Generator) -> float:
    base = point.loss()
    if not math.isfinite(base):
        return math.nan
    scale = _noise_scale(point, sigma, filter_scaled)
    total = 0.0
    for _ in range(n_samples):
        eps = _scaled(point.random_direction(generator), sigma)
        if scale is not None:
            eps = _times(eps, scale)
        total += 0.5 * (point.loss(eps) + point.loss(_scaled(eps, -1.0)))
    return total / n_samples - base


def gradient_norm(model: nn.Module, loss_fn: LossFn, data: object) -> float:
    """``‖∇L(θ)‖₂`` of the full-data (sample-weighted mean) loss."""
    with _point(model, loss_fn, data) as point:
        return _norm(point.gradient())


def first_order_flatness(model: nn.Module, loss_fn: LossFn, data: object, *, rho: float = 0.05, steps: int = 10,
                         seed: int = 0) -> float:
    """GAM's first-order flatness ``ρ · max_{‖ε‖ ≤ ρ} ‖∇L(θ+ε)‖₂``.

    The maximum is sought by full-step projected ascent on ``‖∇L(θ+ε)‖``, whose gradient is
    ``H g/‖g‖`` (a Hessian-vector product by double backward), from a seeded random point on the sphere;
    the best norm seen (``ε = 0`` included) is used. Each step costs one gradient and one HVP over the data.
    On a quadratic at its minimum this is power iteration on ``H²`` and gives ``ρ²·‖H‖₂``.
    """
    rho, steps = _positive("rho", rho), _count("steps", steps)
    with _point(model, loss_fn, data) as point:
        return _first_order_flatness(point, rho, steps, torch.Generator().manual_seed(seed))


def _first_order_flatness(point: _Point, rho: float, steps: int, generator: torch.Generator,
                          grad_at_origin: Named | None = None) -> float:
    best = _norm(point.gradient() if grad_at_origin is None else grad_at_origin)
    if not math.isfinite(best):
        return math.nan
    eps = _random_start(point, rho, None, generator)
    for _ in range(steps):
        grad = point.gradient(eps)
        size = _norm(grad)
        if math.isfinite(size):
            best = max(best, size)
        if size == 0.0 or not math.isfinite(size):
            return rho * best
        following = _on_sphere(point.hvp(eps, _scaled(grad, 1.0 / size)), rho, None)
        if following is None:
            return rho * best
        eps = following
    size = _norm(point.gradient(eps))
    if math.isfinite(size):
        best = max(best, size)
    return rho * best


def stability(lambda_max: float | None, trace: float | None, lr: float) -> dict[str, Any]:
    """Linear-stability ratios for a learning rate.

    ``eos_ratio = λ_max·lr/2``: gradient descent on the local quadratic diverges along the top eigenvector
    when ≥ 1 (threshold ``λ_max = 2/lr``, the edge of stability). ``sgd_trace_ratio = tr(H)·lr/2``: a
    minimum that is linearly stable for SGD has ``tr(H) ≤ 2/lr`` (Wu & Su 2023), so a ratio > 1 means SGD
    cannot stay there. Either input may be None (its ratio is then left out).
    """
    lr = _positive("lr", lr)
    out: dict[str, Any] = {"eos_threshold": 2.0 / lr, "sgd_trace_threshold": 2.0 / lr}
    meaning = {}
    if lambda_max is not None:
        out["eos_ratio"] = float(lambda_max) * lr / 2.0
        meaning["eos_ratio"] = ("lambda_max*lr/2; >=1: gradient descent is linearly unstable here "
                                "(edge of stability at 1)")
    if trace is not None:
        out["sgd_trace_ratio"] = float(trace) * lr / 2.0
        meaning["sgd_trace_ratio"] = ("trace(H)*lr/2; >1: not a linearly stable minimum for SGD "
                                      "(stable minima have trace(H) <= 2/lr)")
    out["meaning"] = meaning
    return out


# -------------------------------------------------------------------------------------------- the probe


class SharpnessProbe:
    """Every sharpness measure at a checkpoint, with the same definitions and seeds at every checkpoint."""

    name = "sharpness"
    uses_optimizer_state = True
    defaults: ClassVar[dict[str, Any]] = {
        "rho": 0.05,
        "adaptive": True,
        "eta": ASAM_ETA,
        "steps": 10,
        "sigma": 0.01,
        "n_samples": 10,
        "filter_scaled": False,
        "m": None,
        "seed": 0,
        "stability": True,
    }

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """Full-data passes at one checkpoint: each ascent (plain, adaptive, m-sharpness) ``steps`` gradients
        and ``steps + 1`` losses, the average case ``2·n_samples`` losses, the flatness ascent ``steps``
        gradients and products, the stability ratios (with a learning rate) a top eigenvalue and a trace."""
        p = {**self.defaults, **params}
        steps = int(p["steps"])
        ascents = 1 + bool(p["adaptive"]) + (p["m"] is not None)
        forward = 3 + ascents * (steps + 1) + 2 * int(p["n_samples"])
        gradient = 1 + ascents * steps + steps + 1
        hvp = steps
        if p["stability"]:
            hvp += min(n_params, 24) + min(n_params, 100)
        return {"forward": float(forward), "gradient": float(gradient), "hvp": float(hvp)}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        p = {**self.defaults, **params}
        rho, steps = _positive("rho", p["rho"]), _count("steps", p["steps"])
        sigma, n_samples = _positive("sigma", p["sigma"]), _count("n_samples", p["n_samples"])
        eta = _non_negative("eta", p["eta"])
        m = None if p["m"] is None else _count("m", p["m"])
        seed = int(p["seed"])
        record = {**p, "definition": DEFINITIONS}
        with_stability = bool(p["stability"]) and ctx.lr is not None
        with_preconditioned = bool(p["stability"]) and ctx.optimizer_state is not None
        tasks = 5 + bool(p["adaptive"]) + (m is not None) + 2 * with_stability + with_preconditioned
        bar = _bar(tasks, ctx.progress)
        scalars: dict[str, float] = {}
        try:
            with _point(ctx.model, ctx.loss_fn, ctx.train) as point:
                base = point.loss()
                if not math.isfinite(base):
                    return Result.invalid(f"train loss is {base} at step {ctx.step}; sharpness is undefined", record)
                grad = point.gradient()
                scalars["gradient_norm"] = _norm(grad)
                bar.update(1)
                scalars["worst_case"] = _worst_case(point, rho, None, steps, torch.Generator().manual_seed(seed))
                bar.update(1)
                if p["adaptive"]:
                    scalars["worst_case_adaptive"] = _worst_case(point, rho, point.scale(eta), steps,
                                                                 torch.Generator().manual_seed(seed))
                    bar.update(1)
                scalars["sam_one_step"] = _sam_one_step(point, rho, None, grad)
                bar.update(1)
                scalars["average_case"] = _average_case(point, sigma, n_samples, bool(p["filter_scaled"]),
                                                        torch.Generator().manual_seed(seed))
                bar.update(1)
                scalars["first_order_flatness"] = _first_order_flatness(
                    point, rho, steps, torch.Generator().manual_seed(seed), grad)
                bar.update(1)
                if m is not None:
                    scalars["m_sharpness"] = _m_sharpness(point, rho, m, steps, None,
                                                          torch.Generator().manual_seed(seed))
                    bar.update(1)
            if with_stability:
                message = self._stability(ctx, seed, scalars, bar)
                if message is not None:
                    record["stability_skipped"] = message
            if with_preconditioned:
                message = self._preconditioned(ctx, seed, scalars)
                bar.update(1)
                if message is not None:
                    record["preconditioned_skipped"] = message
        finally:
            bar.close()
        return Result(scalars=scalars, params=record)

    @staticmethod
    def _stability(ctx: ProbeContext, seed: int, scalars: dict[str, float], bar: Any) -> str | None:
        try:
            from probes import hessian
        except ImportError as error:
            return f"probes.hessian is not available: {error}"
        top = hessian.eigenvalues(ctx.model, ctx.loss_fn, ctx.train, k=1, seed=seed)
        bar.update(1)
        estimate = hessian.trace(ctx.model, ctx.loss_fn, ctx.train, seed=seed)
        bar.update(1)
        scalars["lambda_max"] = float(top.values[0])
        scalars["trace"] = float(estimate.value)
        ratios = stability(scalars["lambda_max"], scalars["trace"], float(ctx.lr))  # type: ignore[arg-type]
        scalars["eos_ratio"] = ratios["eos_ratio"]
        scalars["sgd_trace_ratio"] = ratios["sgd_trace_ratio"]
        return None


    @staticmethod
    def _preconditioned(ctx: ProbeContext, seed: int, scalars: dict[str, float]) -> str | None:
        """λ_max(P⁻¹H) against the optimizer's threshold; a state that gives no preconditioner is noted."""
        from probes.preconditioned import OptimizerStateError, stability_scalars

        try:
            scalars.update(stability_scalars(ctx.model, ctx.loss_fn, ctx.train, ctx.optimizer_state, seed=seed))
        except OptimizerStateError as error:
            return str(error)
        return None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sharpness", unit="measure", leave=False, dynamic_ncols=True)


PROBE = SharpnessProbe()
