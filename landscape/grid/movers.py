"""Points of a grid written into a model in place: the two ways the slicing engine moves the weights.

* :class:`Affine` sets the trainable parameters to ``θ + Σₖ cₖ·dₖ`` (a line, a plane, any span of
  directions), computed afresh from the saved origin at every point so rounding never accumulates;
* :class:`Lerp` sets every floating-point state entry to ``lerp(a, b, t)`` (the straight line between two
  models, BatchNorm statistics included).

Both also give the stacked parameters of many points at once (for ``torch.func.vmap``) and a float64
fingerprint of the plane they move along, so that saved grid rows are recognized on a re-run. Neither
restores the model: the caller wraps the sweep in :func:`landscape.params.preserved`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape.params import Named, trainable_parameters

__all__ = ["Affine", "Lerp", "Mover"]


class Affine:
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


class Lerp:
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


Mover = Affine | Lerp
"""Either way of writing grid points into the model."""
