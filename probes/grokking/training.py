"""Training remedies for Softmax Collapse: the StableMax loss and the ⊥Grad optimizer wrapper.

StableMax replaces the softmax's exponential by ``s(x) = x + 1`` (x ≥ 0), ``1/(1 − x)`` (x < 0), so the
probabilities ``s(xᵢ) / Σⱼ s(xⱼ)`` grow only linearly with a logit gap and never round to exactly 0 or
1 where the softmax collapses. ⊥Grad keeps only the part of each gradient orthogonal to its weights,

    g⊥ = g − (⟨w, g⟩ / ⟨w, w⟩) w,   rescaled to ‖g‖,

dropping the component along the naive-loss-minimization direction θ, which for a positively
homogeneous network only scales the logits up and so drives them towards SC. (Prieto et al. 2025,
"Grokking at the Edge of Numerical Stability".)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from probes.grokking.diagnostics import _check_logits


# -- StableMax ----------------------------------------------------------------------------------------
def _stable_s(x: torch.Tensor) -> torch.Tensor:
    # s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0. Each branch sees a clamped input, so the branch
    # that is not selected stays finite and its (zero) gradient never becomes 0 * inf = NaN.
    positive = x.clamp(min=0) + 1
    negative = 1 / (1 - x.clamp(max=0))
    return torch.where(x >= 0, positive, negative)


def stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """StableMax probabilities ``s(x_i) / Σ_j s(x_j)``, with ``s(x) = x + 1`` (x ≥ 0), ``1/(1 − x)`` (x < 0).

    ``s`` grows linearly instead of exponentially, so no finite logit gives a probability of exactly 0
    or 1 at the gaps where the softmax collapses.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor.")
    s = _stable_s(logits)
    return s / s.sum(dim=dim, keepdim=True)


def stablemax_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Cross-entropy of StableMax probabilities: ``−log s(x_t) + log Σ_j s(x_j)``.

    Computed in float64 by default (as the paper does) and returned in that dtype; gradients flow back
    to ``logits`` in their own dtype. ``reduction``: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    targets = _check_logits(logits, targets)
    s = _stable_s(logits.to(dtype))
    losses = s.sum(dim=1).log() - s.gather(1, targets[:, None]).squeeze(1).log()
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


# -- ⊥Grad --------------------------------------------------------------------------------------------
class OrthoGrad(torch.optim.Optimizer):
    """⊥Grad: wrap any optimizer so that each step uses gradients orthogonal to the weights.

    Before the wrapped optimizer steps, for every parameter tensor ``w`` with gradient ``g``:
    ``g⊥ = g − (⟨w, g⟩ / (⟨w, w⟩ + eps)) w``, rescaled to ``‖g‖`` (``g⊥ · ‖g‖ / (‖g⊥‖ + eps)``), written
    back into ``.grad``. The wrapped optimizer then steps as usual (its weight decay, momentum and
    learning rate still apply). The projection is computed in at least float32.

    It behaves like the wrapped optimizer: ``param_groups``, ``state``, ``defaults``, ``zero_grad``,
    ``state_dict`` and ``load_state_dict`` pass through, and learning-rate schedulers accept it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, eps: float = 1e-30) -> None:
        # The base constructor is not called: every piece of optimizer state lives in the wrapped one.
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        if not (eps >= 0):
            raise ValueError(f"eps must be >= 0, got {eps!r}.")
        self.optimizer = optimizer
        self.eps = float(eps)

    # pass-through of the optimizer's state
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "eps": self.eps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"OrthoGrad({self.optimizer!r})"

    @torch.no_grad()
    def orthogonalize_(self) -> None:
        """Replace every ``.grad`` by its rescaled component orthogonal to its parameter tensor."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None or p.grad.is_sparse:
                    continue
                work = torch.promote_types(p.dtype, torch.float32)
                w = p.detach().reshape(-1).to(work)
                g = p.grad.reshape(-1).to(work)
                projection = torch.dot(w, g) / (torch.dot(w, w) + self.eps)
                orthogonal = g - projection * w
                orthogonal.mul_(g.norm() / (orthogonal.norm() + self.eps))
                p.grad.copy_(orthogonal.view_as(p.grad))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Evaluate ``closure`` (if given) for fresh gradients, orthogonalize them, step the wrapped optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.orthogonalize_()
        self.optimizer.step()
        return loss
