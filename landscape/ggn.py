"""Gauss–Newton products by a forward-mode JVP and one VJP: no second derivative through the model.

For a batch with logits z(θ), Jacobian J = ∂z/∂θ and mean loss ℓ(z), the Gauss–Newton product is

    G v = Jᵀ (∇²_z ℓ) (J v),

and each factor needs only first derivatives of the model:

1. ``J v``: forward-mode differentiation of the logits in direction v (``torch.func.jvp`` over
   ``torch.func.functional_call``), run under ``torch.no_grad()``: no graph is kept, each layer's primal
   and tangent are freed as soon as the next layer has read them.
2. ``(∇²_z ℓ) u``: the loss's Hessian in its logits, by differentiating ℓ's gradient once more with the
   logits as a detached leaf — a second derivative of the loss alone (its cost is the size of the
   logits, not of the model), in float32 at least, so a half-precision model's logits are scored in
   float32.
3. ``Jᵀ w``: one reverse pass through the graph of an ordinary forward pass, built once per batch and
   reused for every column of the block.

The backends that differentiate twice (``"autograd"``, ``"autograd_batched"``) keep, besides that forward
graph, the graph of a backward pass built with ``create_graph=True`` (Jᵀ as a function of its cotangent)
and differentiate through it; here only the forward graph (the activations of one gradient step) and one
forward pass's transient tangents are alive at once. Activation checkpointing in the model
(``torch.utils.checkpoint(..., use_reentrant=False)``) is honoured: the reverse pass recomputes the
checkpointed segments, and the forward-mode pass keeps nothing anyway. Reentrant checkpointing has no
forward-mode derivative; it is refused with one sentence.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from landscape.batch import Batch
from landscape.objective import Objective

__all__ = ["ForwardModeError", "jvp_ggn_rows", "scoring_dtype"]


def scoring_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision models, otherwise the model's dtype: where sums and losses are kept."""
    return torch.promote_types(dtype, torch.float32)


def _split(flat: torch.Tensor, params: Mapping[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    named, offset = {}, 0
    for name, param in params.items():
        count = param.numel()
        named[name] = flat[offset : offset + count].view(param.shape)
        offset += count
    return named


class ForwardModeError(RuntimeError):
    """An operation of the model has no forward-mode derivative, so backend ``"jvp"`` cannot run on it."""


def _no_forward_mode(error: RuntimeError) -> bool:
    text = str(error)
    return "setup_context" in text or "forward AD" in text or "jvp" in text.lower()


def jvp_ggn_rows(model: nn.Module, objective: Objective, params: Mapping[str, nn.Parameter], batch: Batch,
                 rows: torch.Tensor) -> torch.Tensor:
    """``(G_b v)ᵀ`` for every row v of ``rows`` ([k, n], the model's dtype): the batch's GGN products.

    The result is in :func:`scoring_dtype` of the model's dtype (float32 for bf16/fp16 models). The caller
    runs it with gradients enabled and the model in eval mode (:class:`landscape.curvature.CurvatureOperator`).
    """
    from torch.func import functional_call, jvp

    tensors = list(params.values())
    primals = {name: p.detach() for name, p in params.items()}
    wide = scoring_dtype(rows.dtype)

    def logits_at(named: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = objective.forward(lambda *a, **k: functional_call(model, named, a, k), batch)
        return objective.logits(outputs)

    # the one reverse graph of this batch: an ordinary forward pass
    outputs = objective.logits(objective.forward(model, batch))
    logits = outputs.detach().to(wide).requires_grad_(True)
    (loss_grad,) = torch.autograd.grad(objective.loss_of_logits(logits, batch), logits, create_graph=True)
    out = torch.zeros(rows.shape, dtype=wide, device=rows.device)
    if not outputs.requires_grad or not loss_grad.requires_grad:
        return out  # the logits do not depend on these parameters, or the loss is linear in them
    last = rows.shape[0] - 1
    for i, row in enumerate(rows):
        try:
            with torch.no_grad():
                _, jv = jvp(logits_at, (primals,), (_split(row, params),))
        except RuntimeError as error:
            if not _no_forward_mode(error):
                raise
            raise ForwardModeError(
                "backend 'jvp' differentiates the model in forward mode, and an operation of this model has no "
                "forward-mode derivative (torch.utils.checkpoint with use_reentrant=True is one: use "
                f"use_reentrant=False, or backend='autograd'); torch said: {str(error).splitlines()[0]}"
            ) from None
        (hjv,) = torch.autograd.grad(loss_grad, logits, jv.to(wide), retain_graph=True)
        grads = torch.autograd.grad(outputs, tensors, hjv.to(outputs.dtype), retain_graph=i < last,
                                    allow_unused=True, materialize_grads=True)
        flat = [g.reshape(-1) for g in grads]
        if grads[0].dtype == wide:
            torch.cat(flat, out=out[i])  # straight into the result: no second flat copy of the gradient
        else:
            out[i] = torch.cat(flat).to(wide)
        del grads, flat  # not alive during the next column's forward-mode pass
    return out
