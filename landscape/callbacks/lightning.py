"""The PyTorch Lightning adapter: a :class:`~landscape.callbacks.monitor.Monitor` fed from Lightning's hooks.

:class:`LightningHooks` holds the behaviour and needs no Lightning, so it is tested on its own; the real
``LandscapeCallback`` (a subclass of it and of Lightning's ``Callback``) is built on first access by
:func:`build_lightning_callback`, so importing ``landscape.callbacks`` never needs the framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from landscape.callbacks.monitor import Monitor, _monitor_from

__all__ = ["LightningHooks", "build_lightning_callback"]


def _loss_of(outputs: object) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 0:
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


class LightningHooks:
    """The Lightning callback's behaviour (framework-free, so it is testable without Lightning)."""

    def __init__(self, monitor: Monitor | None = None, **monitor_kwargs: Any) -> None:
        self.monitor = _monitor_from(monitor, monitor_kwargs, "LandscapeCallback")

    @staticmethod
    def _optimizer(trainer: Any) -> object | None:
        optimizers = getattr(trainer, "optimizers", None) or []
        return optimizers[0] if optimizers else None

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.monitor.step(pl_module, int(trainer.global_step), optimizer=self._optimizer(trainer), loss=_loss_of(outputs))

    def on_train_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self.monitor.step(pl_module, int(trainer.global_step), optimizer=self._optimizer(trainer), force=True)


def build_lightning_callback(cache: dict[str, type]) -> type:
    """The ``LandscapeCallback`` class, built once and kept in ``cache`` under ``"lightning"``."""
    if "lightning" not in cache:
        try:
            from lightning.pytorch.callbacks import Callback
        except ImportError:
            try:
                from pytorch_lightning.callbacks import Callback  # the older package name
            except ImportError:
                raise ImportError(
                    "LandscapeCallback needs PyTorch Lightning; install it with: pip install landscape[lightning]"
                ) from None

        class LandscapeCallback(LightningHooks, Callback):  # type: ignore[misc, valid-type]
            """PyTorch Lightning callback: a :class:`Monitor` fed after every training batch."""

        cache["lightning"] = LandscapeCallback
    return cache["lightning"]
