"""The monitor's cheap scalars, measured from what training already has (no extra backward pass).

``read_lr`` reads the optimizer's learning rate; ``logit_scalars`` turns a batch of logits into the
logit norm, the mean top logit, the Softmax Collapse fraction (rows whose softmax in ``sc_dtype`` is
exactly one-hot, i.e. ``Σ exp(z − max z) == 1``) and, with class targets, the accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["logit_scalars", "read_lr"]


def _total_norm(tensors: Sequence[torch.Tensor]) -> float:
    """Euclidean norm of all tensors together (one fused pass where torch offers it)."""
    if not tensors:
        return float("nan")
    detached = [t.detach() for t in tensors]
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if total_norm is not None and len({t.device for t in detached}) == 1:
        return float(total_norm(detached, 2.0))
    norms = torch.stack([torch.linalg.vector_norm(t, dtype=torch.float32).cpu() for t in detached])
    return float(torch.linalg.vector_norm(norms))


def read_lr(optimizer: object | None) -> float | None:
    """The learning rate of the optimizer's first parameter group (None if there is none)."""
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return None
    lr = groups[0].get("lr")
    if isinstance(lr, torch.Tensor):
        lr = float(lr)
    return float(lr) if isinstance(lr, (int, float)) else None


def _class_logits(outputs: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Logits as [samples, classes] (sequence outputs flattened, ignored targets < 0 dropped), or None."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() < 2 or not outputs.is_floating_point() or outputs.shape[-1] < 2:
        return None
    logits = outputs.detach().reshape(-1, outputs.shape[-1])
    if targets is None:
        return logits, None
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.numel() != logits.shape[0]:
        return logits, None
    flat = targets.detach().reshape(-1).to(logits.device)
    keep = flat >= 0
    if not bool(keep.all()):
        return logits[keep], flat[keep]
    return logits, flat


def logit_scalars(outputs: torch.Tensor, targets: torch.Tensor | None, sc_dtype: torch.dtype) -> dict[str, float]:
    """``logit_norm``, ``max_logit_mean``, ``sc_fraction`` and, with class targets, ``train_accuracy``."""
    shaped = _class_logits(outputs, targets)
    if shaped is None or shaped[0].shape[0] == 0:
        return {}
    logits, flat = shaped
    cast = logits.to(sc_dtype)
    top = cast.amax(dim=1, keepdim=True)
    collapsed = (cast - top).exp().sum(dim=1) == 1
    peak = top if cast.dtype == logits.dtype else logits.amax(dim=1)
    values = [logits.float().norm(dim=1).mean(), peak.float().mean(), collapsed.float().mean()]
    if flat is not None and flat.numel():
        values.append((logits.argmax(dim=1) == flat).float().mean())
    numbers = torch.stack(values).tolist()  # one device-to-host transfer
    out = dict(zip(("logit_norm", "max_logit_mean", "sc_fraction", "train_accuracy"), numbers))
    return out


def _float_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(resolved, torch.dtype) and resolved.is_floating_point:
            return resolved
    elif isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(f"sc_dtype must be a floating-point dtype such as 'float32', got {dtype!r}.")

