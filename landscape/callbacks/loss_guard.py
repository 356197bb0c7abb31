"""The Monitor's check that its loss is a batch mean, decided once and remembered.

A loss that sums over the batch (``reduction="sum"``) makes every loss-based number the Monitor and its
probes record wrong by a factor of the batch size, so the first outputs it can judge decide it
(``landscape.evaluate.check_mean_reduction``); once refused, every later use raises the same error
(recorded and warned about once by the Monitor; training goes on).
"""

from __future__ import annotations

import torch
from torch import nn

from landscape.data import Batches
from landscape.evaluate import LossError, LossFn, check_mean_reduction


class MeanLossGuard:
    """Checks ``loss_fn`` on outputs until the answer is known, then remembers it."""

    def __init__(self, loss_fn: LossFn | None) -> None:
        self.loss_fn = loss_fn
        self.confirmed = False
        self.error: LossError | None = None

    def check(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Raise :class:`LossError` when the loss is not a mean (now or before); no-op once confirmed."""
        if self.error is not None:
            raise self.error
        if self.confirmed or not callable(self.loss_fn):
            return
        try:
            with torch.no_grad():
                self.confirmed = check_mean_reduction(self.loss_fn, outputs.detach(), targets)
        except LossError as error:
            self.error = error
            raise

    def check_on(self, model: nn.Module, data: Batches) -> None:
        """:meth:`check` on the model's outputs for the first samples of ``data`` (eval mode, no grad)."""
        if self.error is not None:
            raise self.error
        if self.confirmed or not callable(self.loss_fn):
            return
        from landscape.objective import find_logits
        from landscape.params import preserved
        from landscape.preflight import first_samples

        batch = first_samples(data)
        with preserved(model), torch.no_grad():
            model.eval()
            outputs = batch.feed(model)
        self.check(find_logits(outputs), batch.targets)
