"""The curvature operator of data spread over ranks: each rank multiplies on its shard, ``all_reduce`` adds.

With batch weights ``n_b`` over all ranks' batches and ``N = Σ n_b`` (all ranks), rank r's product is
``Σ_{b on r} (n_b / N) · H_b v``; the sum over ranks is exactly the full-data product ``H v``, so every
Krylov kernel (Lanczos, Hutch++, XTrace, SLQ) run on it gives the single-process answer on every rank. The
kernels draw their random vectors from a seeded CPU generator, hence identically on all ranks.
"""

from __future__ import annotations

import torch
from torch import nn

from landscape.curvature import CurvatureOperator
from landscape.data import Batches, as_batches
from landscape.distributed.agreement import check_same_model, local_share
from landscape.distributed.group import agree_on_failure, all_reduce_sum, data_mode
from landscape.evaluate import LossFn

__all__ = ["DataParallelOperator", "curvature_operator"]


class DataParallelOperator(CurvatureOperator):
    """:class:`~landscape.curvature.CurvatureOperator` over the union of the ranks' data.

    ``data`` is this rank's shard (build it in data mode ``"sharded"``, or pass the whole set in mode
    ``"replicated"`` through :func:`curvature_operator`). ``total_weight`` and ``loss`` are those of the
    full data; ``matmat`` returns the full-data product on every rank. The ranks first agree that they
    hold the same parameters; a rank whose operator cannot be built stops every rank with its error.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Batches | object, **options: object) -> None:
        failure: BaseException | None = None
        try:
            super().__init__(model, loss_fn, data, **options)
        except Exception as error:  # noqa: BLE001 - re-raised on this rank, reported on the others
            failure = error
        agree_on_failure(failure, "building the curvature operator")
        check_same_model(self.params)
        local_weight = float(self.total_weight)
        sums = torch.tensor([local_weight, self.loss * local_weight], dtype=torch.float64)
        weight, loss_sum = all_reduce_sum(sums, "the full-data loss").tolist()
        self.local_weight = local_weight
        self.total_weight = weight
        self.loss = loss_sum / weight

    def _apply(self, block: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(super()._apply(block).contiguous(), "a curvature product")


def curvature_operator(model: nn.Module, loss_fn: LossFn, data: Batches | object,
                       **options: object) -> CurvatureOperator:
    """The curvature operator for the current process group and data mode.

    A plain :class:`~landscape.curvature.CurvatureOperator` outside a group (or in mode ``"local"``);
    otherwise a :class:`DataParallelOperator` on this rank's part of ``data``.
    """
    if data_mode() is None:
        return CurvatureOperator(model, loss_fn, data, **options)
    batches = data if isinstance(data, Batches) else as_batches(data)
    local, summed = local_share(batches)
    if not summed:
        return CurvatureOperator(model, loss_fn, local, **options)
    return DataParallelOperator(model, loss_fn, local, **options)
