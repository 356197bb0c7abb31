"""Input-layer factoring: the exact shortcut that spares a grid point the model's first layer.

A linear or convolution layer ``f`` is linear in its weight and bias, so at the grid point
``θ + a·d1 + b·d2`` its output on a batch ``x`` is

    f(x; θ + a·d1 + b·d2) = f(x; θ) + a·f(x; d1) + b·f(x; d2).

For the layers that read the raw batch input, the origin output and one output per direction are computed
once per batch; each point then costs one axpy per direction instead of the layer. The values differ from
moving the layer's weights only by float rounding. Narrow layers gain nothing (a 1-channel 3×3 first
convolution) and are left alone under ``factor_input="auto"`` (:data:`FACTOR_MIN_FAN_IN`); the measured
speed-ups are in :mod:`landscape.grid`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from landscape.data import Batches
from landscape.grid.movers import Affine

__all__ = ["FACTOR_BYTES", "FACTOR_MIN_FAN_IN", "InputLayers"]

FACTOR_MIN_FAN_IN = 32
"""``factor_input="auto"`` factors an input layer only when each output reads at least this many inputs
(in_features, or in_channels/groups × kernel size): below that the two axpys per point cost about as much
as the layer itself (measured: a 1-channel 3×3 convolution gains nothing, a 784-input linear layer ~3×
on the whole MLP)."""
FACTOR_BYTES = 1 << 30
"""Memory budget for the cached input-layer outputs (origin + one per direction, every batch)."""
_LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype and a.device == b.device)


class InputLayers:
    """Exact shortcut for the layers that read the raw input: they are linear in their weights, so

        f(x; W₀ + Σₖ cₖ·Dₖ, b₀ + Σₖ cₖ·δₖ) = f(x; W₀, b₀) + Σₖ cₖ · f(x; Dₖ, δₖ)

    for a linear or convolution layer ``f``. The origin output and one output per direction are computed
    once per batch; a grid point then costs one axpy per direction instead of the layer (the result
    differs from evaluating the moved layer only by float rounding). A layer qualifies when it is a plain
    ``nn.Linear``/``nn.Conv1d/2d/3d`` whose weight the directions move, that is called once per forward
    pass on a view of the batch input itself. At every call the input is checked to be that same view;
    anything else runs the real layer.
    """

    def __init__(self, mover: Affine) -> None:
        self.mover = mover
        self.entries: dict[tuple[nn.Module, str, int], tuple[torch.Tensor, torch.Tensor, list]] = {}
        self.modules: list[nn.Module] = []
        self.names: dict[nn.Module, frozenset[str]] = {}
        self.skipped: frozenset[str] = frozenset()
        """Parameters of the factored layers: not written per point (only when a layer runs for real)."""
        self.batch: tuple[str, int] = ("", 0)
        self.coords: Sequence[float] = ()

    @classmethod
    def prepare(cls, model: nn.Module, mover: Affine, sets: Sequence[tuple[str, Batches]], *,
                min_fan_in: int, budget: int) -> InputLayers | None:
        candidates: dict[nn.Module, tuple[str, str]] = {}
        for prefix, module in model.named_modules():
            if type(module) not in _LINEAR_LAYERS or "forward" in module.__dict__:
                continue
            weight = f"{prefix}.weight" if prefix else "weight"
            bias = f"{prefix}.bias" if prefix else "bias"
            if weight in mover.origin and module.weight[0].numel() >= min_fan_in:
                candidates[module] = (weight, bias)
        if not candidates or any(batches.structure != "pair" for _, batches in sets):
            return None  # only a single positional input can be the raw batch input of a layer
        self = cls(mover)
        calls: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}

        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            calls.setdefault(module, []).append((args[0] if args else None, output.clone()))

        mover.write([0.0] * len(mover.directions))
        used = 0
        total_samples = sum(b.n_samples for _, b in sets)
        eligible = set(candidates)
        for prefix, batches in sets:
            for index, batch in enumerate(batches):
                x = batch.inputs
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
        for i, batch in enumerate(batches):
            total += batch.n_samples
            if name == prefix and i == index:
                return total
    return total


def _linear_layer(module: nn.Module, inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return nn.functional.linear(inp, weight, bias)
    return module._conv_forward(inp, weight, bias)  # type: ignore[operator]  # honours padding_mode


class _Patched:
    """Context manager that routes the qualifying input layers through the cached outputs."""

    def __init__(self, layers: InputLayers) -> None:
        self.layers = layers

    def __enter__(self) -> InputLayers:
        for module in self.layers.modules:
            module.forward = self.layers.forward_for(module, type(module).forward.__get__(module))  # type: ignore[method-assign]
        return self.layers

    def __exit__(self, *exc: object) -> None:
        for module in self.layers.modules:
            module.__dict__.pop("forward", None)
