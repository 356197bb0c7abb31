"""Second derivatives through real models: attention on the math kernel, and a clear word when it cannot be done.

Hessian-vector products differentiate the gradient graph once more. PyTorch's fused attention kernels
(flash, memory-efficient, and the CPU flash kernel that ``scaled_dot_product_attention`` picks by default)
have no second derivative, so stock ``attn_implementation="sdpa"`` models fail there with a raw
"derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented".
:func:`math_attention` runs the forward passes of curvature products on the math kernel, which is
ordinary differentiable tensor algebra (same values up to rounding). When some other operation of a
model still cannot be differentiated twice, :func:`explain_double_backward` finds the innermost module
that fails on its own recorded inputs and says, in one sentence, which module it is and what to do.

:func:`affine_batch_norm` runs eval-mode batch normalization (running statistics) as the per-channel
affine map it is, ``(x − mean) · weight/√(var + eps) + bias``: the same function, so the same
derivatives, but built from elementwise operations whose double backward is a few multiplications,
where the native kernel's double backward (written for batch statistics too) costs several passes over
the activations: about a fifth of a Hessian-vector product's time on a conv-BN network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "DoubleBackwardError",
    "affine_batch_norm",
    "explain_double_backward",
    "is_double_backward_error",
    "math_attention",
]

_MARKERS = ("derivative for", "differentiate twice", "double backward", "is not differentiable twice")


class DoubleBackwardError(RuntimeError):
    """A model (or one of its modules) cannot be differentiated twice."""


@contextmanager
def math_attention() -> Iterator[None]:
    """Run ``scaled_dot_product_attention`` on the math backend (it has a double backward) inside."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # an old torch without the selector: it has no fused CPU kernel either
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def _eval_batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                     weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
                     momentum: float | None = 0.1, eps: float = 1e-5) -> torch.Tensor | None:
    """``F.batch_norm`` with running statistics as elementwise algebra; None where it does not apply
    (batch statistics, or half precision, whose native kernel computes in float32)."""
    if (training or running_mean is None or running_var is None or input.dim() < 2
            or input.dtype not in (torch.float32, torch.float64)):
        return None
    shape = (1, -1) + (1,) * (input.dim() - 2)
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    out = (input - running_mean.reshape(shape)) * scale.reshape(shape)
    return out if bias is None else out + bias.reshape(shape)


class _AffineBatchNorm(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm:
            out = _eval_batch_norm(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


@contextmanager
def affine_batch_norm() -> Iterator[None]:
    """Inside, ``F.batch_norm`` with running statistics (eval mode) runs as its affine map (see above)."""
    with _AffineBatchNorm():
        yield


def is_double_backward_error(error: BaseException) -> bool:
    """Whether ``error`` is autograd refusing a second derivative."""
    text = str(error)
    return isinstance(error, RuntimeError) and any(m in text for m in _MARKERS) and (
        "not implemented" in text or "twice" in text or "double backward" in text)


def _operation(error: BaseException) -> str:
    found = re.search(r"derivative for (\S+)", str(error))
    return found.group(1) if found else "an operation"


def _float_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        return [t for v in value.values() for t in _float_tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _float_tensors(v)]
    values = getattr(value, "values", None)  # ModelOutput-like
    return [t for v in values() for t in _float_tensors(v)] if callable(values) else []


def _fails_twice(module: nn.Module, args: tuple, kwargs: dict) -> BaseException | None:
    """Differentiate ``module`` twice on recorded inputs; the error if autograd refuses, else None."""
    def fresh(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.detach().requires_grad_(True)
        return value

    args = tuple(fresh(a) for a in args)
    kwargs = {k: fresh(v) for k, v in kwargs.items()}
    leaves = [p for p in module.parameters() if p.requires_grad]
    leaves += [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not leaves:
        return None
    try:
        outputs = _float_tensors(module(*args, **kwargs))
        outputs = [o for o in outputs if o.requires_grad]
        if not outputs:
            return None
        generator = torch.Generator().manual_seed(0)
        scalar = sum((o * torch.randn(o.shape, generator=generator).to(o)).sum() for o in outputs)
        grads = torch.autograd.grad(scalar, leaves, create_graph=True, allow_unused=True)
        second = [(g * g).sum() for g in grads if g is not None and g.requires_grad]
        if second:
            torch.autograd.grad(sum(second), leaves, allow_unused=True)
    except RuntimeError as error:
        return error if is_double_backward_error(error) else None
    return None


def explain_double_backward(model: nn.Module, run: Callable[[], Any], error: BaseException) -> str:
    """One sentence naming the innermost module of ``model`` that cannot be differentiated twice.

    ``run()`` performs one forward pass (on a small batch); every module's inputs are recorded during it,
    then each module is differentiated twice on its own inputs, innermost first.
    """
    calls: dict[nn.Module, tuple[tuple, dict]] = {}

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.setdefault(module, (args, kwargs))

    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()]
    try:
        with torch.enable_grad(), math_attention():
            run()
    except Exception:  # noqa: BLE001 - the diagnosis must never hide the original error
        pass
    finally:
        for handle in handles:
            handle.remove()
    names = {m: n for n, m in model.named_modules()}
    culprit, detail = None, error
    with torch.enable_grad(), math_attention():
        for module in reversed(list(model.modules())):  # reversed pre-order: every module after its children
            if module not in calls:
                continue
            found = _fails_twice(module, *calls[module])
            if found is not None:
                culprit, detail = module, found
                break
    operation = _operation(detail)
    if culprit is None:
        where = "an operation of the model"
    else:
        where = f"module {names.get(culprit) or '(the model itself)'!r} ({type(culprit).__name__})"
    advice = ("load the model with attn_implementation='eager'" if "attention" in operation or "attn" in operation
              else "replace that operation by one PyTorch can differentiate twice")
    return (f"the model cannot be differentiated twice, which curvature products need: {where} uses {operation}, "
            f"which has no second derivative in PyTorch; {advice}, or leave out the probes that need second "
            "derivatives (hessian, sharpness's first_order_flatness).")
