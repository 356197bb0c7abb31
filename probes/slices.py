"""Loss-landscape slices: 1-D lines and 2-D planes through parameter space (Li et al. 2018), linear
interpolation between two models (Goodfellow et al. 2015), the plane through three models (mode
connectivity), and the PCA plane of a training trajectory.

Every view evaluates the sample-weighted mean loss (and accuracy for class targets) at points
``θ + a·d1 + b·d2`` of a plane. How it is made fast without changing what is measured:

* no copy of the model: each point is written *in place* from a saved origin (``origin + Σ cₖ·dₖ``
  computed afresh at every point, so rounding never accumulates) and the weights, buffers, modes and
  ``.grad`` are restored bit for bit at the end;
* ``torch.inference_mode()``, losses summed on the device with one host sync per grid row;
* the layers that read the raw input (a linear or convolution layer fed the batch, e.g. after
  ``Flatten``) are linear in their weights, so their output at ``θ + a·d1 + b·d2`` is
  ``f(x; θ) + a·f(x; d1) + b·f(x; d2)``: those three outputs are computed once per batch and each point
  costs two axpys instead of the layer (``factor_input="auto"``: when each output reads ≥ 32 inputs;
  measured on 2 CPU cores: a 784→112→10 MLP went from 0.47 to 0.16 ms per point, below the 0.37 ms
  of a bare forward pass; a 1-channel 3×3 first convolution would gain nothing and is left alone). The
  values differ from moving the layer's weights only by float rounding;
* optionally many points per forward pass: ``vectorize=True`` stacks the parameters of several grid
  points and runs ``torch.func.functional_call`` under ``vmap``, so each data batch is shared by those
  points. On CPU it was slower than the plain loop for CNNs and MLPs alike (each point is already a
  full forward over the batch), so ``vectorize="auto"`` uses it only on CUDA, for models up to
  ``_VMAP_MAX_PARAMS`` parameters, where small models leave the GPU idle one point per launch (a
  design choice not yet timed on a GPU; ``vectorize=False`` turns it off);
* ``autocast_dtype`` (e.g. ``torch.bfloat16``) autocasts on CUDA only; CPU always runs in full precision
  (CPU bfloat16 autocast was both slower and inaccurate).

BatchNorm and other buffers: the model runs in eval mode, so running statistics are used as they are
(fixed at the origin's values) and never updated by the evaluations.

Long 2-D grids save each finished row through a ``PartialRows`` store (``partial=``); a re-run loads
finished rows and computes only the rest, giving exactly the surface an uninterrupted run gives.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from landscape.checkpoints import Checkpoint, load_checkpoint, load_into
from landscape.data import Batches, as_batches
from landscape.directions import NORMS, check_directions
from landscape.directions import random_directions as _random_directions
from landscape.evaluate import LossError, LossFn, autocast_context, check_scalar_loss, evaluate
from landscape.params import preserved, trainable_parameters
from landscape.probe import PartialRows, ProbeContext, Result

Named = dict[str, torch.Tensor]

_VMAP_MAX_PARAMS = 5_000_000
"""Largest model (trainable parameters) that ``vectorize="auto"`` evaluates with vmap on CUDA."""
_VMAP_BYTES = 512 * 2**20
"""Memory budget for the stacked parameter copies of one vectorized pass (points × parameter bytes)."""
_FACTOR_MIN_FAN_IN = 32
"""``factor_input="auto"`` factors an input layer only when each output reads at least this many inputs
(in_features, or in_channels/groups × kernel size): below that the two axpys per point cost about as much
as the layer itself (measured: a 1-channel 3×3 convolution gains nothing, a 784-input linear layer ~3×
on the whole MLP)."""
_FACTOR_BYTES = 1 << 30
"""Memory budget for the cached input-layer outputs (origin + one per direction, every batch)."""
_LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PCA_ROW_OFFSET = 100_000
"""Row index offset under which the probe stores the rows of the trajectory plane (main grid below)."""
_LINE_ROW_OFFSET = 200_000
"""Row index offset of the probe's separate 1-D line (only when the grid has no y = 0 row)."""


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Slice:
    """Loss (and accuracy) along a line: ``loss[i]`` at ``x[i]``."""

    x: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    direction: Named | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Surface:
    """Loss over a plane: ``loss[j, i]`` is the loss at ``θ + x[i]·d1 + y[j]·d2`` (shape ``[ny, nx]``).

    ``points`` holds plane coordinates of models drawn on it (the three models of :func:`plane`, the
    checkpoints of a trajectory), shape ``[m, 2]``, or None.
    """

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    directions: list[Named] | None = field(default=None, repr=False)
    points: np.ndarray | None = None


@dataclass(frozen=True)
class Trajectory:
    """PCA of a training path: ``coords[t]`` are the coordinates of ``θ_t − θ_ref`` on the unit
    ``directions``; ``explained_variance[k] = s_k² / Σ s²`` (uncentered, see :func:`trajectory`)."""

    coords: np.ndarray
    explained_variance: np.ndarray
    singular_values: np.ndarray
    directions: list[Named] = field(repr=False)
    origin: Named = field(repr=False)
    reference: int = -1


# ------------------------------------------------------------------------------------------ validation
def _check_steps(steps: object, what: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or int(steps) < 2:
        raise ValueError(f"{what} must be an integer of at least 2 (grid points along an axis), got {steps!r}.")
    return int(steps)


def _check_steps_2d(steps: object) -> tuple[int, int]:
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        n = _check_steps(steps)
        return n, n
    if isinstance(steps, Sequence) and not isinstance(steps, str) and len(steps) == 2:
        return _check_steps(steps[0], "steps[0] (points along x)"), _check_steps(steps[1], "steps[1] (points along y)")
    raise ValueError(f"steps must be an integer or a pair (steps_x, steps_y), got {steps!r}.")


def _check_interval(lo: object, hi: object, what: str) -> tuple[float, float]:
    try:
        lo_f, hi_f = float(lo), float(hi)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must hold numbers, got ({lo!r}, {hi!r}).") from None
    if not (math.isfinite(lo_f) and math.isfinite(hi_f)) or lo_f >= hi_f:
        raise ValueError(f"{what} must be finite with start < end, got ({lo!r}, {hi!r}).")
    return lo_f, hi_f


def _check_span(span: object, dims: int) -> tuple[float, ...]:
    """A span as ``2·dims`` floats: a number ``s`` means ``(-s, s)`` on every axis; a pair applies to
    every axis; otherwise ``(x_lo, x_hi[, y_lo, y_hi])``."""
    if isinstance(span, (int, float, np.integer, np.floating)) and not isinstance(span, bool):
        s = float(span)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"span must be a positive number or a tuple of bounds, got {span!r}.")
        return (-s, s) * dims
    if isinstance(span, Sequence) and not isinstance(span, str):
        values = list(span)
        if len(values) == 2:
            return _check_interval(values[0], values[1], "span") * dims
        if len(values) == 2 * dims:
            out: tuple[float, ...] = ()
            for k, axis in enumerate("xy"[:dims]):
                out += _check_interval(values[2 * k], values[2 * k + 1], f"span ({axis} bounds)")
            return out
    shape = "(lo, hi)" if dims == 1 else "(x_lo, x_hi, y_lo, y_hi)"
    raise ValueError(f"span must be a positive number or a tuple {shape}, got {span!r}.")


def _axis(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced values from lo to hi; a value within rounding of 0 is set to exactly 0 so the
    grid's centre is the unperturbed model."""
    x = np.linspace(lo, hi, n)
    x[np.abs(x) < 1e-12 * (hi - lo)] = 0.0
    return x


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _check_model(model: object, what: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} must be a torch.nn.Module, got {type(model).__name__}.")
    if not trainable_parameters(model):
        raise ValueError(f"{what} has no trainable parameters to move along.")
    return model


# ------------------------------------------------------------------------------------------------ movers
class _Affine:
    """Points ``origin + Σ cₖ·dₖ`` written into the model's parameters (the names of ``origin``)."""

    def __init__(self, model: nn.Module, origin: Mapping[str, torch.Tensor], directions: Sequence[Named]) -> None:
        params = trainable_parameters(model)
        self.origin = {k: v.detach() for k, v in origin.items()}
        self.directions = [dict(d) for d in directions]
        self._plan = [
            (name, params[name], base, [(k, d[name]) for k, d in enumerate(self.directions) if name in d])
            for name, base in self.origin.items()
        ]

    def write(self, coords: Sequence[float], *, skip: frozenset[str] = frozenset(),
              only: frozenset[str] | None = None) -> None:
        """Set the parameters to the point ``coords`` (all of them, or ``only`` those, minus ``skip``)."""
        with torch.no_grad():
            for name, target, base, parts in self._plan:
                if name in skip or (only is not None and name not in only):
                    continue
                # origin + c₀·d₀ in one pass (the same kernel, hence the same bits, as copy then add)
                moving = [(k, d) for k, d in parts if coords[k] != 0.0]
                if moving:
                    k, d = moving[0]
                    torch.add(base, d, alpha=float(coords[k]), out=target)
                else:
                    target.copy_(base)
                for k, d in moving[1:]:
                    target.add_(d, alpha=float(coords[k]))

    def stacked(self, coords: Sequence[Sequence[float]]) -> Named:
        c = torch.tensor(coords, dtype=torch.float64)
        out: Named = {}
        for name, base in self.origin.items():
            t = base.unsqueeze(0).repeat(len(coords), *([1] * base.dim()))
            for k, d in enumerate(self.directions):
                if name in d:
                    scale = c[:, k].to(device=base.device, dtype=base.dtype).view(-1, *([1] * base.dim()))
                    t.add_(d[name].unsqueeze(0) * scale)
            out[name] = t
        return out

    def fingerprint(self) -> np.ndarray:
        """Float64 dot products that identify this plane (origin and directions) for resumed rows."""
        values = []
        for d in self.directions:
            values.append(sum(float(d[k].double().pow(2).sum()) for k in d))
            values.append(sum(float((self.origin[k].double() * d[k].double()).sum()) for k in d if k in self.origin))
        values.append(sum(float(o.double().pow(2).sum()) for o in self.origin.values()))
        return np.asarray(values, dtype=np.float64)


class _Lerp:
    """Points ``lerp(a, b, t)`` of every floating-point state entry; buffers use ``t`` clipped to [0, 1]
    (the running statistics of the nearer endpoint beyond the ends, never an extrapolated variance)."""

    def __init__(self, model: nn.Module, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
        state = model.state_dict(keep_vars=True)
        buffers = {name for name, _ in model.named_buffers()}
        self._plan = [
            (state[name], a[name], b[name], name in buffers)
            for name in a
            if a[name].is_floating_point() and not torch.equal(a[name], b[name])
        ]
        self.names = [name for name in a if a[name].is_floating_point() and not torch.equal(a[name], b[name])]

    def write(self, coords: Sequence[float]) -> None:
        t = float(coords[0])
        with torch.no_grad():
            for target, a, b, is_buffer in self._plan:
                target.copy_(torch.lerp(a, b, min(max(t, 0.0), 1.0) if is_buffer else t))

    def stacked(self, coords: Sequence[Sequence[float]]) -> Named:
        out: Named = {}
        for name, (_, a, b, is_buffer) in zip(self.names, self._plan):
            t = torch.tensor([c[0] for c in coords], dtype=a.dtype, device=a.device)
            if is_buffer:
                t = t.clamp(0.0, 1.0)
            out[name] = torch.lerp(a.unsqueeze(0), b.unsqueeze(0), t.view(-1, *([1] * a.dim())))
        return out

    def fingerprint(self) -> np.ndarray:
        return np.asarray([sum(float((b.double() - a.double()).pow(2).sum()) for _, a, b, _ in self._plan)])


# ------------------------------------------------------------------------------------------------ engine
def _correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """Correct top-1 predictions as a device tensor, or None when targets are not class indices."""
    if targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and outputs.dim() == targets.dim() + 1:
        return (outputs.argmax(dim=-1) == targets).sum()
    return None


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype and a.device == b.device)


class _InputLayers:
    """Exact shortcut for the layers that read the raw input: they are linear in their weights, so

        f(x; W₀ + Σₖ cₖ·Dₖ, b₀ + Σₖ cₖ·δₖ) = f(x; W₀, b₀) + Σₖ cₖ · f(x; Dₖ, δₖ)

    for a linear or convolution layer ``f``. The origin output and one output per direction are computed
    once per batch; a grid point then costs one axpy per direction instead of the layer (the result
    differs from evaluating the moved layer only by float rounding). A layer qualifies when it is a plain
    ``nn.Linear``/``nn.Conv1d/2d/3d`` whose weight the directions move, that is called once per forward
    pass on a view of the batch input itself. At every call the input is checked to be that same view;
    anything else runs the real layer.
    """

    def __init__(self, mover: _Affine) -> None:
        self.mover = mover
        self.entries: dict[tuple[nn.Module, str, int], tuple[torch.Tensor, torch.Tensor, list]] = {}
        self.modules: list[nn.Module] = []
        self.names: dict[nn.Module, frozenset[str]] = {}
        self.skipped: frozenset[str] = frozenset()
        """Parameters of the factored layers: not written per point (only when a layer runs for real)."""
        self.batch: tuple[str, int] = ("", 0)
        self.coords: Sequence[float] = ()

    @classmethod
    def prepare(cls, model: nn.Module, mover: _Affine, sets: Sequence[tuple[str, Batches]], *,
                min_fan_in: int, budget: int) -> _InputLayers | None:
        candidates: dict[nn.Module, tuple[str, str]] = {}
        for prefix, module in model.named_modules():
            if type(module) not in _LINEAR_LAYERS or "forward" in module.__dict__:
                continue
            weight = f"{prefix}.weight" if prefix else "weight"
            bias = f"{prefix}.bias" if prefix else "bias"
            if weight in mover.origin and module.weight[0].numel() >= min_fan_in:
                candidates[module] = (weight, bias)
        if not candidates:
            return None
        self = cls(mover)
        calls: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}

        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            calls.setdefault(module, []).append((args[0] if args else None, output.clone()))

        mover.write([0.0] * len(mover.directions))
        used = 0
        total_samples = sum(b.n_samples for _, b in sets)
        eligible = set(candidates)
        for prefix, batches in sets:
            for index, (x, _) in enumerate(batches):
                calls.clear()
                handles = [m.register_forward_hook(record) for m in eligible]
                try:
                    model(x)
                finally:
                    for handle in handles:
                        handle.remove()
                for module in list(eligible):
                    seen = calls.get(module, [])
                    inp = seen[0][0] if len(seen) == 1 else None
                    if (not isinstance(inp, torch.Tensor) or inp.untyped_storage().data_ptr()
                            != x.untyped_storage().data_ptr()):
                        eligible.discard(module)
                        continue
                    weight, bias = candidates[module]
                    parts = []
                    for k, d in enumerate(mover.directions):
                        if weight in d or bias in d:
                            w = d.get(weight, torch.zeros_like(module.weight))
                            parts.append((k, _linear_layer(module, inp, w, d.get(bias))))
                    self.entries[(module, prefix, index)] = (inp, seen[0][1], parts)
                    used += seen[0][1].numel() * seen[0][1].element_size() * (1 + len(parts))
                if not eligible or used * total_samples > budget * max(1, _samples_so_far(sets, prefix, index)):
                    return None
        self.entries = {key: value for key, value in self.entries.items() if key[0] in eligible}
        self.modules = list(eligible)
        self.names = {m: frozenset(n for n in candidates[m] if n in mover.origin) for m in self.modules}
        self.skipped = frozenset().union(*self.names.values())
        return self

    def patched(self) -> _Patched:
        return _Patched(self)

    def forward_for(self, module: nn.Module, original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def forward(inp: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            entry = self.entries.get((module, *self.batch))
            if entry is None or args or kwargs or not _same_view(inp, entry[0]):
                self.mover.write(self.coords, only=self.names[module])  # the real layer needs its weights
                return original(inp, *args, **kwargs)
            _, base, parts = entry
            out = base.clone()
            for k, part in parts:
                if self.coords[k] != 0.0:
                    out.add_(part, alpha=float(self.coords[k]))
            return out

        return forward


def _samples_so_far(sets: Sequence[tuple[str, Batches]], prefix: str, index: int) -> int:
    total = 0
    for name, batches in sets:
        for i, (x, _) in enumerate(batches):
            total += int(x.shape[0])
            if name == prefix and i == index:
                return total
    return total


def _linear_layer(module: nn.Module, inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return nn.functional.linear(inp, weight, bias)
    return module._conv_forward(inp, weight, bias)  # type: ignore[operator]  # honours padding_mode


class _Patched:
    """Context manager that routes the qualifying input layers through the cached outputs."""

    def __init__(self, layers: _InputLayers) -> None:
        self.layers = layers

    def __enter__(self) -> _InputLayers:
        for module in self.layers.modules:
            module.forward = self.layers.forward_for(module, type(module).forward.__get__(module))  # type: ignore[method-assign]
        return self.layers

    def __exit__(self, *exc: object) -> None:
        for module in self.layers.modules:
            module.__dict__.pop("forward", None)


class _Evaluator:
    """Evaluates rows of points of a mover over fixed train (and test) batches."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train: Batches,
        test: Batches | None,
        *,
        vectorize: bool | str = "auto",
        points_per_pass: int | None = None,
        autocast_dtype: torch.dtype | None = None,
        factor_input: bool | str = "auto",
    ) -> None:
        if factor_input not in ("auto", True, False):
            raise ValueError(f"factor_input must be 'auto', True or False, got {factor_input!r}.")
        if vectorize not in ("auto", True, False):
            raise ValueError(f"vectorize must be 'auto', True or False, got {vectorize!r}.")
        if points_per_pass is not None and (isinstance(points_per_pass, bool) or not isinstance(points_per_pass, int)
                                            or points_per_pass < 1):
            raise ValueError(f"points_per_pass must be a positive integer or None, got {points_per_pass!r}.")
        self.model, self.loss_fn = model, loss_fn
        self.sets = [("", train)] + ([("test_", test)] if test is not None else [])
        self.device = _device_of(model)
        self.autocast_dtype = autocast_dtype
        n_params = sum(p.numel() for p in trainable_parameters(model).values())
        bytes_per_point = max(1, sum(p.numel() * p.element_size() for p in trainable_parameters(model).values()))
        self.points_per_pass = points_per_pass or max(1, min(32, _VMAP_BYTES // bytes_per_point))
        if vectorize == "auto":
            self.vectorize = self.device.type == "cuda" and n_params <= _VMAP_MAX_PARAMS
            self.strict = False
        else:
            self.vectorize, self.strict = bool(vectorize), True
        self._batched: Callable[..., Any] | None = None
        self._has_accuracy: list[bool] = []
        # Input-layer factoring changes rounding only; it is left out under autocast (other rounding).
        self.factor_input = factor_input if autocast_dtype is None else False
        self._factored: dict[int, _InputLayers | None] = {}

    # one point at a time ------------------------------------------------------------------------
    def _input_layers(self, mover: _Affine | _Lerp) -> _InputLayers | None:
        if self.factor_input is False or not isinstance(mover, _Affine):
            return None
        if id(mover) not in self._factored:
            self._factored[id(mover)] = _InputLayers.prepare(
                self.model, mover, self.sets, min_fan_in=_FACTOR_MIN_FAN_IN if self.factor_input == "auto" else 1,
                budget=_FACTOR_BYTES)
        return self._factored[id(mover)]

    def _loop(self, mover: _Affine | _Lerp, coords: Sequence[Sequence[float]]) -> dict[str, torch.Tensor | None]:
        """Loss sums and correct counts per point, one point at a time. Per-batch losses stay on the
        device and are weighted and summed once per row (no per-point host sync or bookkeeping ops)."""
        losses: dict[str, list[torch.Tensor]] = {prefix: [] for prefix, _ in self.sets}
        corrects: dict[str, list[torch.Tensor] | None] = {prefix: [] for prefix, _ in self.sets}
        layers = self._input_layers(mover)
        with layers.patched() if layers is not None else nullcontext():
            for c in coords:
                if layers is None:
                    mover.write(c)
                else:
                    mover.write(c, skip=layers.skipped)
                    layers.coords = c
                for prefix, batches in self.sets:
                    for index, (x, y) in enumerate(batches):
                        if layers is not None:
                            layers.batch = (prefix, index)
                        outputs = self.model(x)
                        losses[prefix].append(check_scalar_loss(self.loss_fn(outputs, y)))
                        counted = corrects[prefix]
                        if counted is not None:
                            hits = _correct(outputs, y)
                            if hits is None:
                                corrects[prefix] = None
                            else:
                                counted.append(hits)
        sums: dict[str, torch.Tensor | None] = {}
        for prefix, batches in self.sets:
            shape = (len(coords), len(batches))
            sizes = torch.tensor([float(x.shape[0]) for x, _ in batches], dtype=torch.float64, device=self.device)
            sums[prefix + "loss"] = (torch.stack(losses[prefix]).detach().double().view(shape) * sizes).sum(1)
            counted = corrects[prefix]
            sums[prefix + "accuracy"] = None if counted is None else torch.stack(counted).view(shape).sum(1)
        return sums

    # many points per forward pass ----------------------------------------------------------------
    def _make_batched(self) -> Callable[..., Any]:
        from torch.func import functional_call, vmap

        model, loss_fn, flags = self.model, self.loss_fn, self._has_accuracy

        def one_point(params: Named, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            outputs = functional_call(model, params, (x,))
            loss = check_scalar_loss(loss_fn(outputs, y))
            c = _correct(outputs, y)  # decided from dtypes and shapes while tracing: no host sync
            flags.append(c is not None)
            return loss, (c if c is not None else torch.zeros((), dtype=torch.int64, device=loss.device))

        return vmap(one_point, in_dims=(0, None, None))

    def _vectorized(self, mover: _Affine | _Lerp,
                    coords: Sequence[Sequence[float]]) -> dict[str, torch.Tensor | None]:
        if self._batched is None:
            self._batched = self._make_batched()
        parts: dict[str, list] = {}
        for start in range(0, len(coords), self.points_per_pass):
            chunk = coords[start : start + self.points_per_pass]
            params = mover.stacked(chunk)
            for prefix, batches in self.sets:
                total = torch.zeros(len(chunk), dtype=torch.float64, device=self.device)
                correct: torch.Tensor | None = torch.zeros(len(chunk), dtype=torch.int64, device=self.device)
                for x, y in batches:
                    self._has_accuracy.clear()
                    loss, c = self._batched(params, x, y)
                    total += loss.detach().double() * int(x.shape[0])
                    correct = None if correct is None or not all(self._has_accuracy) else correct + c
                parts.setdefault(prefix + "loss", []).append(total)
                parts.setdefault(prefix + "accuracy", []).append(correct)
        return {key: None if any(v is None for v in values) else torch.cat(values) for key, values in parts.items()}

    def row(self, mover: _Affine | _Lerp, coords: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        """Mean loss/accuracy (train and test) at each point of ``coords``, as float64 arrays."""
        with torch.inference_mode(), autocast_context(self.device, self.autocast_dtype):
            if self.vectorize:
                try:
                    sums = self._vectorized(mover, coords)
                except LossError:
                    raise
                except Exception as error:  # vmap cannot trace every model; "auto" falls back to the loop.
                    if self.strict:
                        raise RuntimeError(
                            f"vectorize=True failed: this model or loss cannot run under torch.func.vmap "
                            f"({type(error).__name__}: {error}); use vectorize=False."
                        ) from error
                    warnings.warn(f"vectorized slices unavailable ({type(error).__name__}); using the loop.",
                                  RuntimeWarning, stacklevel=3)
                    self.vectorize = False
                    sums = self._loop(mover, coords)
            else:
                sums = self._loop(mover, coords)
        out: dict[str, np.ndarray] = {}
        for prefix, batches in self.sets:
            n = batches.n_samples
            loss = sums[prefix + "loss"]
            assert loss is not None
            out[prefix + "loss"] = loss.cpu().numpy() / n
            acc = sums[prefix + "accuracy"]
            if acc is not None:
                out[prefix + "accuracy"] = acc.cpu().numpy().astype(np.float64) / n
        return out


def _grid(
    evaluator: _Evaluator,
    mover: _Affine | _Lerp,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    partial: PartialRows | None = None,
    row_offset: int = 0,
    progress: bool = False,
    label: str = "slice",
) -> dict[str, np.ndarray]:
    """Evaluate every point of the grid (one row per ``y`` value; ``y=None`` is a single 1-D row).

    Finished rows are saved to ``partial`` (under index ``row_offset + j``) and loaded on a re-run;
    saved rows whose fingerprint (grid coordinates and plane identity) differs are recomputed.
    """
    rows_y = [None] if y is None else list(y)
    sizes = [float(batches.n_samples) for _, batches in evaluator.sets] + [0.0] * (3 - len(evaluator.sets))
    base_print = np.concatenate([[len(x), x[0], x[-1], len(rows_y)], sizes, mover.fingerprint()])
    done: dict[int, dict[str, np.ndarray]] = {}
    if partial is not None:
        stale = 0
        for index, arrays in partial.load().items():
            j = index - row_offset
            if not 0 <= j < len(rows_y):
                continue
            expected = np.concatenate([[j, 0.0 if rows_y[j] is None else rows_y[j]], base_print])
            saved = arrays.get("fingerprint")
            if saved is not None and saved.shape == expected.shape and np.array_equal(saved, expected):
                done[j] = {k: v for k, v in arrays.items() if k != "fingerprint"}
            else:
                stale += 1
        if stale:
            warnings.warn(f"{stale} saved row(s) belong to another grid or model and are recomputed.",
                          RuntimeWarning, stacklevel=3)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows_y) * len(x), initial=len(done) * len(x), unit="pt", desc=label, leave=False)
    results: list[dict[str, np.ndarray]] = []
    try:
        for j, yj in enumerate(rows_y):
            if j in done:
                results.append(done[j])
                continue
            coords = [(float(xi),) if yj is None else (float(xi), float(yj)) for xi in x]
            arrays = evaluator.row(mover, coords)
            if partial is not None:
                fingerprint = np.concatenate([[j, 0.0 if yj is None else yj], base_print])
                partial.save(row_offset + j, {**arrays, "fingerprint": fingerprint})
            results.append(arrays)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
    keys = sorted(results[-1])
    for j, r in enumerate(results):
        if sorted(r) != keys or any(np.shape(r[k]) != (len(x),) for k in keys):
            raise ValueError(f"saved row {row_offset + j} does not match the grid (keys {sorted(r)}); "
                             "clear the partial rows and run again.")
    return {k: np.stack([r[k] for r in results]) for k in keys}


# ---------------------------------------------------------------------------------------------- helpers
def _batches(model: nn.Module, data: object, name: str) -> Batches:
    return as_batches(data, device=_device_of(model), name=name)


def _detached(model: nn.Module) -> Named:
    return {k: p.detach().clone() for k, p in trainable_parameters(model).items()}


def _touched(origin: Named, directions: Sequence[Named]) -> tuple[Named, list[Named]]:
    """Drop all-zero direction tensors (e.g. biases with ``ignore="biasbn"``) and the origin entries no
    direction moves: they cost a write per point and change nothing."""
    kept = [{k: t for k, t in d.items() if bool(t.any())} for d in directions]
    names = {k for d in kept for k in d}
    return {k: v for k, v in origin.items() if k in names}, kept


def _state_of(item: object, carrier: nn.Module, what: str) -> dict[str, torch.Tensor]:
    """The full state (params and buffers) of a module, a state dict, a checkpoint path or a zero-arg
    callable returning one of these, checked against (and read through) ``carrier``."""
    if callable(item) and not isinstance(item, nn.Module):
        item = item()
    if isinstance(item, Checkpoint):
        item = item.path
    with preserved(carrier):
        if isinstance(item, nn.Module):
            load_into(carrier, item.state_dict(), what)
        elif isinstance(item, Mapping):
            load_into(carrier, item, what)
        elif isinstance(item, (str, Path)):
            load_checkpoint(item, carrier)
        else:
            raise TypeError(f"{what} must be a model, a state dict or a checkpoint path, got {type(item).__name__}.")
        return {k: v.detach().clone() for k, v in carrier.state_dict().items()}


def _carrier(items: Sequence[object], model: nn.Module | None, what: str) -> nn.Module:
    if model is not None:
        return _check_model(model, "model")
    for item in items:
        if isinstance(item, nn.Module):
            return _check_model(item, what)
    raise ValueError(f"{what} holds no torch.nn.Module to evaluate with; pass model= (the architecture to load "
                     "the state dicts or checkpoints into).")


# ------------------------------------------------------------------------------------------- public API
def random_directions(
    model: nn.Module,
    n: int = 2,
    *,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    seed: int = 0,
    orthogonal: bool = True,
) -> list[Named]:
    """``n`` seeded random directions over the trainable parameters, filter-normalized by default and
    orthogonal (see :mod:`landscape.directions` for the exact normalization and ``ignore`` rules)."""
    return _random_directions(_check_model(model), n, norm=norm, ignore=ignore, seed=seed, orthogonal=orthogonal)


def slice_1d(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    direction: Mapping[str, torch.Tensor] | None = None,
    span: object = (-1.0, 1.0),
    steps: int = 51,
    seed: int = 0,
    test_data: object | None = None,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
    progress: bool = False,
) -> Slice:
    """Loss along ``θ + x·d`` for ``x`` in ``span`` (``steps`` points). Without ``direction``, ``d`` is
    the first seeded random direction (the x-axis of :func:`slice_2d` with the same seed and norm)."""
    model = _check_model(model)
    n = _check_steps(steps)
    lo, hi = _check_span(span, 1)
    train = _batches(model, data, "data")
    test = None if test_data is None else _batches(model, test_data, "test_data")
    with preserved(model):
        params = trainable_parameters(model)
        if direction is None:
            d = _random_directions(model, 1, norm=norm, ignore=ignore, seed=seed)[0]
        else:
            if not isinstance(direction, Mapping):
                raise ValueError(f"direction must be a dict of named tensors, got {type(direction).__name__}.")
            d = check_directions(params, [direction], what="direction")[0]
        origin, moving = _touched(_detached(model), [d])
        evaluator = _Evaluator(model, loss_fn, train, test, vectorize=vectorize, points_per_pass=points_per_pass,
                               autocast_dtype=autocast_dtype, factor_input=factor_input)
        x = _axis(lo, hi, n)
        arrays = _grid(evaluator, _Affine(model, origin, moving), x, None, progress=progress, label="slice_1d")
    return Slice(x=x, loss=arrays["loss"][0], accuracy=_row0(arrays, "accuracy"),
                 test_loss=_row0(arrays, "test_loss"), test_accuracy=_row0(arrays, "test_accuracy"), direction=d)


def _row0(arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    return arrays[key][0] if key in arrays else None


def _surface(arrays: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, directions: list[Named],
             points: np.ndarray | None = None) -> Surface:
    return Surface(x=x, y=y, loss=arrays["loss"], accuracy=arrays.get("accuracy"), test_loss=arrays.get("test_loss"),
                   test_accuracy=arrays.get("test_accuracy"), directions=directions, points=points)


def _plane_grid(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    origin: Named,
    directions: list[Named],
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_data: object | None,
    partial: PartialRows | None,
    row_offset: int,
    progress: bool,
    vectorize: bool | str,
    points_per_pass: int | None,
    autocast_dtype: torch.dtype | None,
    factor_input: bool | str,
    label: str,
) -> dict[str, np.ndarray]:
    train = _batches(model, data, "data")
    test = None if test_data is None else _batches(model, test_data, "test_data")
    evaluator = _Evaluator(model, loss_fn, train, test, vectorize=vectorize, points_per_pass=points_per_pass,
                           autocast_dtype=autocast_dtype, factor_input=factor_input)
    return _grid(evaluator, _Affine(model, origin, directions), x, y, partial=partial, row_offset=row_offset,
                 progress=progress, label=label)


def slice_2d(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    directions: Sequence[Mapping[str, torch.Tensor]] | None = None,
    span: object = (-1.0, 1.0, -1.0, 1.0),
    steps: int | tuple[int, int] = (51, 51),
    seed: int = 0,
    test_data: object | None = None,
    partial: PartialRows | None = None,
    progress: bool = False,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    orthogonal: bool = True,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
    row_offset: int = 0,
) -> Surface:
    """Loss over the plane ``θ + x·d1 + y·d2``: ``loss[j, i]`` at ``(x[i], y[j])``.

    ``directions`` (two dicts of named tensors, e.g. Hessian eigenvectors) are used exactly as given;
    without them two seeded random directions are drawn (``norm``, ``ignore``, ``orthogonal``).
    ``steps`` is ``(steps_x, steps_y)`` or one integer; ``span`` is ``(x_lo, x_hi, y_lo, y_hi)``, one
    ``(lo, hi)`` pair for both axes, or a number ``s`` for ``(-s, s)``. With ``partial`` every finished
    row is saved (under index ``row_offset + j``) and a re-run resumes from the saved rows.
    """
    model = _check_model(model)
    nx, ny = _check_steps_2d(steps)
    x_lo, x_hi, y_lo, y_hi = _check_span(span, 2)
    with preserved(model):
        params = trainable_parameters(model)
        if directions is None:
            dirs = _random_directions(model, 2, norm=norm, ignore=ignore, seed=seed, orthogonal=orthogonal)
        else:
            dirs = check_directions(params, directions)
            if len(dirs) != 2:
                raise ValueError(f"directions must hold exactly 2 directions for a plane, got {len(dirs)}.")
        origin, moving = _touched(_detached(model), dirs)
        x, y = _axis(x_lo, x_hi, nx), _axis(y_lo, y_hi, ny)
        arrays = _plane_grid(model, loss_fn, data, origin, moving, x, y, test_data=test_data, partial=partial,
                             row_offset=row_offset, progress=progress, vectorize=vectorize,
                             points_per_pass=points_per_pass, autocast_dtype=autocast_dtype,
                             factor_input=factor_input, label="slice_2d")
    return _surface(arrays, x, y, dirs)


def interpolate(
    model_a: object,
    model_b: object,
    loss_fn: LossFn,
    data: object,
    *,
    steps: int = 51,
    extend: tuple[float, float] = (0.0, 0.0),
    model: nn.Module | None = None,
    test_data: object | None = None,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Slice:
    """Loss along the straight line from model A (x = 0) to model B (x = 1), Goodfellow et al. 2015;
    ``x`` runs from ``-extend[0]`` to ``1 + extend[1]``.

    A and B may be modules, state dicts, checkpoint paths or zero-argument callables returning one.
    Every floating-point state entry is interpolated with ``torch.lerp`` (exactly A at 0 and B at 1,
    BatchNorm statistics included, so the end points give the two models' own losses); buffers use the
    coefficient clipped to [0, 1] beyond the ends. The evaluation runs on ``model`` (default: A or B,
    whichever is a module), which is left as it was.
    """
    carrier = _carrier([model_a, model_b], model, "model_a/model_b")
    n = _check_steps(steps)
    if not (isinstance(extend, Sequence) and len(extend) == 2):
        raise ValueError(f"extend must be a pair (before, after) of non-negative numbers, got {extend!r}.")
    before, after = (float(e) for e in extend)
    if not (math.isfinite(before) and math.isfinite(after)) or before < 0 or after < 0:
        raise ValueError(f"extend must be a pair (before, after) of non-negative numbers, got {extend!r}.")
    state_a = _state_of(model_a, carrier, "model_a")
    state_b = _state_of(model_b, carrier, "model_b")
    train = _batches(carrier, data, "data")
    test = None if test_data is None else _batches(carrier, test_data, "test_data")
    x = np.linspace(-before, 1.0 + after, n)
    for end in (0.0, 1.0):  # the end points are the two models exactly when the grid passes through them
        x[np.abs(x - end) < 1e-12 * (1.0 + before + after)] = end
    with preserved(carrier):
        load_into(carrier, state_a, "model_a")
        evaluator = _Evaluator(carrier, loss_fn, train, test, vectorize=vectorize, points_per_pass=points_per_pass,
                               autocast_dtype=autocast_dtype)
        arrays = _grid(evaluator, _Lerp(carrier, state_a, state_b), x, None, progress=progress, label="interpolate")
    return Slice(x=x, loss=arrays["loss"][0], accuracy=_row0(arrays, "accuracy"),
                 test_loss=_row0(arrays, "test_loss"), test_accuracy=_row0(arrays, "test_accuracy"))


def _box(points: np.ndarray, steps: tuple[int, int], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes covering ``points`` (and the origin) with ``margin`` × the extent added on each side."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a non-negative number (fraction of the extent), got {margin!r}.")
    lo = np.minimum(points.min(axis=0), 0.0)
    hi = np.maximum(points.max(axis=0), 0.0)
    extent = hi - lo
    extent = np.where(extent > 0, extent, max(float(extent.max()), 1e-12))
    lo, hi = lo - margin * extent, hi + margin * extent
    return _axis(lo[0], hi[0], steps[0]), _axis(lo[1], hi[1], steps[1])


def _sub(a: Named, b: Named) -> Named:
    return {k: a[k] - b[k] for k in a}


def _dot(a: Named, b: Named) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def plane(
    models_3: Sequence[object],
    loss_fn: LossFn,
    data: object,
    *,
    steps: int | tuple[int, int] = (25, 25),
    margin: float = 0.2,
    model: nn.Module | None = None,
    test_data: object | None = None,
    partial: PartialRows | None = None,
    progress: bool = False,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
) -> Surface:
    """The plane through three models (the mode-connectivity view of Garipov et al. 2018).

    Origin: model 0. Axes (unit vectors, so coordinates are distances in parameter space):
    ``e1 = (θ1 − θ0)/‖θ1 − θ0‖`` and ``e2`` = the part of ``θ2 − θ0`` orthogonal to ``e1``, normalized.
    ``Surface.points`` holds the three models' coordinates ``(0, 0)``, ``(‖θ1 − θ0‖, 0)``,
    ``(⟨θ2 − θ0, e1⟩, ‖θ2 − θ0 − ⟨θ2 − θ0, e1⟩e1‖)``; the grid covers them with ``margin`` × the extent
    on each side. Only trainable parameters move; buffers (BatchNorm statistics) stay those of model 0.
    """
    if isinstance(models_3, (str, Path, Mapping, nn.Module)) or len(models_3) != 3:
        raise ValueError("models_3 must be a list of exactly 3 models, state dicts or checkpoint paths.")
    carrier = _carrier(models_3, model, "models_3")
    grid_steps = _check_steps_2d(steps)
    states = [_state_of(m, carrier, f"models_3[{i}]") for i, m in enumerate(models_3)]
    names = list(trainable_parameters(carrier))
    thetas = [{k: s[k] for k in names} for s in states]
    u, v = _sub(thetas[1], thetas[0]), _sub(thetas[2], thetas[0])
    u_norm = math.sqrt(_dot(u, u))
    # Differences below ~100 rounding units of the weights are indistinguishable from rounding noise.
    resolution = 100 * torch.finfo(next(iter(thetas[0].values())).dtype).eps
    if u_norm <= resolution * math.sqrt(_dot(thetas[1], thetas[1])):
        raise ValueError("models_3[0] and models_3[1] have the same parameters; the plane is undefined.")
    e1 = {k: (t.double() / u_norm).to(t.dtype) for k, t in u.items()}
    along = _dot(v, e1)
    w = {k: v[k].double() - along * e1[k].double() for k in v}
    w_norm = math.sqrt(_dot(w, w))
    if w_norm <= resolution * math.sqrt(_dot(thetas[2], thetas[2])):
        raise ValueError("the three models lie on one line (or coincide); the plane through them is undefined.")
    e2 = {k: (t / w_norm).to(v[k].dtype) for k, t in w.items()}
    points = np.array([[0.0, 0.0], [u_norm, 0.0], [along, w_norm]])
    x, y = _box(points, grid_steps, margin)
    device = _device_of(carrier)
    dirs = [{k: t.to(device) for k, t in e1.items()}, {k: t.to(device) for k, t in e2.items()}]
    with preserved(carrier):
        load_into(carrier, states[0], "models_3[0]")
        arrays = _plane_grid(carrier, loss_fn, data, _detached(carrier), dirs, x, y, test_data=test_data,
                             partial=partial, row_offset=0, progress=progress, vectorize=vectorize,
                             points_per_pass=points_per_pass, autocast_dtype=autocast_dtype,
                             factor_input=factor_input, label="plane")
    return _surface(arrays, x, y, dirs, points)


_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
_NEGLIGIBLE = 1e-12
"""A PCA component with s_k² below this fraction of Σ s² is rounding noise (float64 Gram matrix)."""


def trajectory(
    models_or_checkpoints: Sequence[object],
    *,
    reference: int = -1,
    n_components: int = 2,
    model: nn.Module | None = None,
    seed: int = 0,
) -> Trajectory:
    """PCA of a training path: SVD of the matrix of ``θ_t − θ_ref`` (one row per checkpoint).

    The SVD is *uncentered*: the slice plane must pass through ``θ_ref`` (its origin), and the best plane
    through ``θ_ref`` for the path is spanned by the top right-singular vectors of ``θ_t − θ_ref``.
    ``explained_variance[k] = s_k² / Σ_i s_i²``. Signs are fixed so the first checkpoint has a
    non-negative coordinate on each axis. When the path spans fewer than ``n_components`` dimensions
    (e.g. a straight line; components below 1e-12 of the total count as absent), the missing axes are
    seeded random unit directions orthogonal to the others, with explained variance 0.

    Items: modules, state dicts, checkpoint paths, :class:`~landscape.checkpoints.Checkpoint` objects,
    or zero-argument callables returning one (loaded one at a time). The parameter names are the
    trainable parameters of ``model`` (or of the first module among the items); with state dicts only,
    every floating-point entry except BatchNorm running statistics.
    """
    items = list(models_or_checkpoints)
    if len(items) < 2:
        raise ValueError(f"models_or_checkpoints must hold at least 2 models or checkpoints, got {len(items)}.")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}.")
    if not isinstance(reference, int) or not -len(items) <= reference < len(items):
        raise ValueError(f"reference must index models_or_checkpoints (length {len(items)}), got {reference!r}.")
    ref = reference % len(items)
    carrier = model if model is not None else next((m for m in items if isinstance(m, nn.Module)), None)

    def params_of(index: int) -> Named:
        item = items[index]
        if carrier is not None:
            state = _state_of(item, carrier, f"models_or_checkpoints[{index}]")
            names = list(trainable_parameters(carrier))
        else:
            if callable(item):
                item = item()
            if isinstance(item, Checkpoint):
                item = item.path
            state = load_checkpoint(item) if isinstance(item, (str, Path)) else item
            if not isinstance(state, Mapping):
                raise TypeError(f"models_or_checkpoints[{index}] must be a model, a state dict or a checkpoint "
                                f"path, got {type(state).__name__}.")
            names = [k for k, v in state.items() if v.is_floating_point() and not k.endswith(_RUNNING_STATS)]
        return {k: state[k].detach().to("cpu") for k in names}

    origin = params_of(ref)
    rows: list[torch.Tensor] = []
    for t in range(len(items)):
        theta = origin if t == ref else params_of(t)
        if set(theta) != set(origin) or any(theta[k].shape != origin[k].shape for k in origin):
            raise ValueError(f"models_or_checkpoints[{t}] does not have the same parameters as the reference.")
        rows.append(torch.cat([(theta[k].double() - origin[k].double()).reshape(-1) for k in origin]))
    deltas = torch.stack(rows)  # [T, P] float64 on CPU
    gram = deltas @ deltas.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0.0), evecs[:, order]
    total = float(evals.sum())
    singular = evals.sqrt()
    vectors: list[torch.Tensor] = []
    real = [k < len(evals) and total > 0 and float(evals[k]) > _NEGLIGIBLE * total for k in range(n_components)]
    for k in range(n_components):
        if real[k]:
            vec = deltas.T @ evecs[:, k] / singular[k]
        else:  # the path has no k-th dimension: a seeded random axis orthogonal to the others
            gen = torch.Generator().manual_seed(seed + k)
            vec = torch.randn(deltas.shape[1], generator=gen, dtype=torch.float64)
            for other in vectors:
                vec -= (vec @ other) * other
            vec /= vec.norm()
        for other in vectors:  # re-orthogonalize against rounding
            vec -= (vec @ other) * other
        vec /= vec.norm()
        coords = deltas @ vec
        first = coords[0] if abs(float(coords[0])) > 0 else coords[int(coords.abs().argmax())]
        if float(first) < 0:
            vec = -vec
        vectors.append(vec)
    basis = torch.stack(vectors, dim=1)  # [P, k]
    coords = (deltas @ basis).numpy()
    explained = np.array([float(evals[k]) / total if real[k] else 0.0 for k in range(n_components)])
    sv = np.array([float(singular[k]) if real[k] else 0.0 for k in range(n_components)])
    directions = []
    for vec in vectors:
        d: Named = {}
        offset = 0
        for k, o in origin.items():
            d[k] = vec[offset : offset + o.numel()].reshape(o.shape).to(o.dtype)
            offset += o.numel()
        directions.append(d)
    return Trajectory(coords=coords, explained_variance=explained, singular_values=sv, directions=directions,
                      origin=origin, reference=ref)


def trajectory_plane(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    path: Trajectory,
    *,
    steps: int | tuple[int, int] = (21, 21),
    margin: float = 0.2,
    test_data: object | None = None,
    partial: PartialRows | None = None,
    row_offset: int = 0,
    progress: bool = False,
    vectorize: bool | str = "auto",
    points_per_pass: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    factor_input: bool | str = "auto",
) -> Surface:
    """The loss over the plane of the first two PCA axes of ``path``, through its reference point,
    covering the path's coordinates (``Surface.points``) with ``margin`` × the extent on each side.

    ``model`` supplies the architecture and the buffers (load the reference checkpoint into it for
    BatchNorm models); its trainable parameters are set to the reference point during the sweep.
    """
    model = _check_model(model)
    if len(path.directions) < 2:
        raise ValueError("path must have at least 2 PCA components for a plane (trajectory(n_components=2)).")
    grid_steps = _check_steps_2d(steps)
    params = trainable_parameters(model)
    if set(path.origin) != set(params):
        raise ValueError("path was computed for other parameter names than this model's trainable parameters.")
    dirs = check_directions(params, path.directions[:2], what="path.directions")
    points = np.asarray(path.coords[:, :2], dtype=np.float64)
    x, y = _box(points, grid_steps, margin)
    device = _device_of(model)
    origin = {k: t.to(device=device, dtype=params[k].dtype) for k, t in path.origin.items()}
    with preserved(model):
        arrays = _plane_grid(model, loss_fn, data, origin, dirs, x, y, test_data=test_data, partial=partial,
                             row_offset=row_offset, progress=progress, vectorize=vectorize,
                             points_per_pass=points_per_pass, autocast_dtype=autocast_dtype,
                             factor_input=factor_input, label="trajectory")
    return _surface(arrays, x, y, dirs, points)


def hessian_directions(model: nn.Module, loss_fn: LossFn, data: object, n: int = 2, *, seed: int = 0) -> list[Named]:
    """The top-``n`` Hessian eigenvectors (unit norm, largest algebraic eigenvalue first) as directions."""
    from probes import hessian

    eigen = hessian.eigenvalues(model, loss_fn, data, k=n, return_vectors=True, seed=seed)
    if eigen.vectors is None or len(eigen.vectors) < n:
        raise RuntimeError(f"hessian.eigenvalues returned {0 if eigen.vectors is None else len(eigen.vectors)} "
                           f"eigenvectors, {n} were asked for.")
    return [dict(v) for v in eigen.vectors[:n]]


# ------------------------------------------------------------------------------------------------- probe
def _interpolation_grid(params: Mapping[str, Any]) -> tuple[int, float]:
    """``interpolation_steps`` and ``interpolation_extend``, checked to put grid points on both checkpoints."""
    steps = _check_steps(params["interpolation_steps"], "interpolation_steps")
    extend = float(params["interpolation_extend"])
    spacing = (1.0 + 2.0 * extend) / (steps - 1)
    if not math.isfinite(extend) or extend < 0 or abs(extend / spacing - round(extend / spacing)) > 1e-9:
        raise ValueError(f"interpolation_steps={steps} with interpolation_extend={extend} puts no grid point "
                         "on the two checkpoints (x = 0 and x = 1); choose them so that extend / spacing is "
                         "a whole number, e.g. 25 steps with extend 0.25.")
    return steps, extend


def _barrier(x: np.ndarray, loss: np.ndarray) -> float:
    """How far the loss rises between the two ends of an interpolation (0 ≤ x ≤ 1) above the higher end:
    max over the segment of loss(x) − max(loss(0), loss(1)), at least 0 (the loss barrier of linear mode
    connectivity; 0 when the path never climbs above its ends)."""
    inside = (x >= 0.0) & (x <= 1.0)
    ends = [loss[np.argmin(np.abs(x - end))] for end in (0.0, 1.0)]
    return float(max(0.0, np.max(loss[inside]) - max(ends)))


def _probe_span(span: object) -> tuple[float, float, float, float]:
    return _check_span(list(span) if isinstance(span, (list, tuple)) else span, 2)  # type: ignore[return-value]


class SlicesProbe:
    """2-D loss surface around each checkpoint (random filter-normalized or Hessian axes), its 1-D line
    along the first axis, the interpolation from the first checkpoint to this one (``interp_*``, with the
    scalar ``interp_barrier``), and at the last checkpoint the PCA plane of the whole training path.

    Directions are drawn with the same seed at every checkpoint and normalized to that checkpoint's
    weights. ``directions="hessian"`` uses the top-2 Hessian eigenvectors instead: unit vectors (so the
    span is a distance in parameter space), with ``norm``, ``ignore`` and ``orthogonal`` unused, since
    rescaling parts of an eigenvector would make it no eigenvector. The 1-D line is the grid's y = 0 row
    when the grid has one (odd ``steps``), else an extra line of ``steps`` points. With a run store, the
    main grid's finished rows are saved as they go (the trajectory plane's too, under row indices from
    100,000), so an interrupted probe resumes.
    """

    name = "slices"
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 21,
        "span": 1.0,
        "norm": "filter",
        "ignore": "biasbn",
        "orthogonal": True,
        "seed": 0,
        "directions": "random",
        "trajectory": True,
        "trajectory_steps": 21,
        "trajectory_margin": 0.2,
        "interpolation": True,
        "interpolation_steps": 25,
        "interpolation_extend": 0.25,
    }

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        if params["directions"] not in ("random", "hessian"):
            raise ValueError(f"directions must be 'random' or 'hessian', got {params['directions']!r}.")
        if params["norm"] not in NORMS:
            raise ValueError(f"norm must be one of 'filter', 'layer', 'model' or None, got {params['norm']!r}.")
        steps = _check_steps_2d(tuple(params["steps"]) if isinstance(params["steps"], list) else params["steps"])
        span = _probe_span(params["span"])
        if params["interpolation"]:
            _interpolation_grid(params)
        model = ctx.model
        if not all(bool(torch.isfinite(p).all()) for p in trainable_parameters(model).values()):
            return Result.invalid(f"the weights hold NaN or infinite values at step {ctx.step}.", dict(params))
        with preserved(model):
            center = evaluate(model, ctx.loss_fn, ctx.train).loss
        if not math.isfinite(center):
            return Result.invalid(f"loss is {center} at step {ctx.step}; the landscape is undefined there.",
                                  dict(params))
        if params["directions"] == "random":
            dirs = random_directions(model, 2, norm=params["norm"], ignore=params["ignore"], seed=params["seed"],
                                     orthogonal=params["orthogonal"])
        else:
            with preserved(model):
                dirs = hessian_directions(model, ctx.loss_fn, ctx.train, 2, seed=params["seed"])
        surface = slice_2d(model, ctx.loss_fn, ctx.train, directions=dirs, span=span, steps=steps,
                           test_data=ctx.test, partial=ctx.partial, progress=ctx.progress)
        arrays: dict[str, np.ndarray] = {"x": surface.x, "y": surface.y, "loss": surface.loss}
        for key in ("accuracy", "test_loss", "test_accuracy"):
            value = getattr(surface, key)
            if value is not None:
                arrays[key] = value
        zero_rows = np.flatnonzero(surface.y == 0.0)
        keys = ("loss", "accuracy", "test_loss", "test_accuracy")
        if len(zero_rows):
            j = int(zero_rows[0])
            line = {k: getattr(surface, k)[j] for k in keys if getattr(surface, k) is not None}
        else:
            evaluator = _Evaluator(model, ctx.loss_fn, ctx.train, ctx.test)
            with preserved(model):
                origin, moving = _touched(_detached(model), dirs[:1])
                row = _grid(evaluator, _Affine(model, origin, moving), surface.x, None, partial=ctx.partial,
                            row_offset=_LINE_ROW_OFFSET, progress=ctx.progress, label="line")
            line = {k: v[0] for k, v in row.items()}
        arrays["line_x"] = surface.x
        arrays.update({f"line_{k}": v for k, v in line.items()})
        finite = surface.loss[np.isfinite(surface.loss)]
        scalars = {"loss_center": center,
                   "loss_min": float(finite.min()) if finite.size else float("nan"),
                   "loss_max": float(finite.max()) if finite.size else float("nan")}
        checkpoints = sorted(ctx.checkpoints)
        if (params["interpolation"] and checkpoints and ctx.load_state is not None
                and ctx.step != checkpoints[0].step):
            interp = self._interpolation(ctx, checkpoints[0], params)
            arrays.update(interp)
            scalars["interp_barrier"] = _barrier(interp["interp_x"], interp["interp_loss"])
        if (params["trajectory"] and len(checkpoints) >= 3 and ctx.load_state is not None
                and ctx.step == checkpoints[-1].step):
            arrays.update(self._trajectory(ctx, checkpoints, params))
        return Result(scalars=scalars, arrays=arrays, params=dict(params))

    @staticmethod
    def _interpolation(ctx: ProbeContext, first: Checkpoint, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The straight line from the first checkpoint (x = 0) to this one (x = 1), extended on both sides."""
        load = ctx.load_state
        assert load is not None
        steps, extend = _interpolation_grid(params)
        line = interpolate(lambda: load(first), ctx.model, ctx.loss_fn, ctx.train, model=ctx.model,
                           steps=steps, extend=(extend, extend), test_data=ctx.test,
                           progress=ctx.progress)
        out = {"interp_x": line.x, "interp_loss": line.loss,
               "interp_from_step": np.array([first.step], dtype=np.int64)}
        for key in ("accuracy", "test_loss", "test_accuracy"):
            value = getattr(line, key)
            if value is not None:
                out[f"interp_{key}"] = value
        return out

    @staticmethod
    def _trajectory(ctx: ProbeContext, checkpoints: list[Checkpoint], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        load = ctx.load_state
        assert load is not None
        items: list[object] = [(lambda c=c: load(c)) for c in checkpoints[:-1]] + [ctx.model]
        path = trajectory(items, reference=-1, n_components=2, model=ctx.model, seed=params["seed"])
        steps = params["trajectory_steps"]
        surface = trajectory_plane(
            ctx.model, ctx.loss_fn, ctx.train, path, steps=tuple(steps) if isinstance(steps, list) else steps,
            margin=params["trajectory_margin"], partial=ctx.partial, row_offset=_PCA_ROW_OFFSET,
            progress=ctx.progress,
        )
        out = {"pca_x": surface.x, "pca_y": surface.y, "pca_loss": surface.loss,
               "path_x": path.coords[:, 0], "path_y": path.coords[:, 1],
               "path_steps": np.array([c.step for c in checkpoints], dtype=np.int64),
               "explained_variance": path.explained_variance}
        if surface.accuracy is not None:
            out["pca_accuracy"] = surface.accuracy
        return out


PROBE = SlicesProbe()
