"""Measurements run on every rank of a spawned gloo group (module-level, so ``spawn`` can import them).

Each case builds the same float64 model and data on every rank; :func:`measure` returns what one
process would compute, so the tests compare each rank's answer with a single-process run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.distributed import data_parallel, rank, shard_batches


def mlp_case(seed: int = 0) -> tuple[nn.Module, Any, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A float64 tanh MLP on 3 unequal batches (37 samples) of a Gaussian mixture."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(37, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (37,), generator=generator)
    cuts = [0, 16, 29, 37]
    return model, nn.CrossEntropyLoss(), [(x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]


def gpt2_case(seed: int = 0) -> tuple[nn.Module, Any, list[dict[str, torch.Tensor]]]:
    """A tiny float64 GPT-2 on padded dict batches of unequal lengths, with the token-weighted next-token
    cross-entropy (the model's own loss casts its logits to float32, which would hide float64 agreement)."""
    from landscape.losses import causal_lm_cross_entropy
    from tests.real_models import tiny_gpt2, token_batches

    model = tiny_gpt2(seed=seed).double()
    return model, causal_lm_cross_entropy(), token_batches([[6, 4, 5], [3, 7], [5, 5, 2, 4]], seed=3)


CASES = {"mlp": mlp_case, "gpt2": gpt2_case}


def measure(model: nn.Module, loss_fn: Any, data: Any, params: Any = None) -> dict[str, Any]:
    """Top-3 eigenvalues (and the top one with products on parts of two samples), Hutch++ trace, SLQ
    nodes/weights, a 2-D grid, loss and gradient norm."""
    from landscape.evaluate import evaluate, gradient
    from probes import hessian
    from probes.slices import slice_2d

    top = hessian.eigenvalues(model, loss_fn, data, k=3, tol=1e-10, params=params)
    # each rank cuts its own batches into parts of two samples: the same operator, summed over parts and ranks
    parts = hessian.eigenvalues(model, loss_fn, data, k=1, tol=1e-10, params=params, max_batch_size=2)
    trace = hessian.trace(model, loss_fn, data, method="hutch++", n_matvec=30, seed=4, params=params)
    dens = hessian.density(model, loss_fn, data, n_runs=2, n_steps=6, seed=5, params=params)
    plane = slice_2d(model, loss_fn, data, steps=(4, 3), seed=2, vectorize=False)
    grads = gradient(model, loss_fn, data)
    return {
        "top": np.asarray(top.values),
        "top_in_parts": np.asarray(parts.values),
        "trace": trace.value,
        "nodes": np.asarray(dens.nodes),
        "weights": np.asarray(dens.weights),
        "grid": np.asarray(plane.loss),
        "loss": evaluate(model, loss_fn, data).loss,
        "grad_norm": float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))),
    }


def measure_on_rank(rank_index: int, world: int, case: str, mode: str, seed_offset: int = 0) -> dict[str, Any]:
    """:func:`measure` on this rank: ``"replicated"`` gives every rank all the data; ``"sharded"`` gives each
    rank only its contiguous part (cut here, as a DDP data loader would); ``seed_offset`` on rank 1 builds
    a different model there."""
    torch.manual_seed(0)
    model, loss_fn, batches = CASES[case](seed=seed_offset if rank() == 1 else 0)
    if mode == "sharded":
        from landscape.data import as_batches

        batches = shard_batches(as_batches(batches), rank_index, world)
    with data_parallel(mode):
        return measure(model, loss_fn, batches)


def lose_a_rank_mid_product(rank_index: int, world: int, how: str, report: str) -> str:
    """Rank 1 dies (``how="die"``) or stalls past the collective timeout (``"stall"``) before the first
    product; rank 0 writes the error it gets to ``report``."""
    import os
    import time

    from landscape.curvature import lanczos
    from landscape.distributed import DistributedError, curvature_operator

    model, loss_fn, batches = mlp_case()
    with data_parallel("replicated"):
        op = curvature_operator(model, loss_fn, batches)
        if rank_index == 1:
            if how == "die":
                os._exit(3)
            time.sleep(12)
            return "stalled"
        try:
            lanczos(op, 2)
        except DistributedError as error:
            with open(report, "w") as handle:
                handle.write(str(error))
            return str(error)
    return "no error"
