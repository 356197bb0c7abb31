"""The Hugging Face adapter: a :class:`~landscape.callbacks.monitor.Monitor` fed from ``Trainer`` events.

:class:`HFHooks` holds the behaviour and needs no transformers, so it is tested on its own; the real
``LandscapeTrainerCallback`` (a subclass of it and of ``transformers.TrainerCallback``) is built on first
access by :func:`build_hf_callback`, so importing ``landscape.callbacks`` never needs the framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from landscape.callbacks.monitor import Monitor, _monitor_from

__all__ = ["HFHooks", "LogitsOnly", "build_hf_callback"]


class LogitsOnly(nn.Module):
    """Present a model whose forward returns a dict/ModelOutput as one returning its ``logits`` tensor."""

    def __init__(self, model: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, Mapping) and self.key in out:
            return out[self.key]
        value = getattr(out, self.key, None)
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        raise TypeError(f"model output has no {self.key!r} tensor (got {type(out).__name__}).")


class HFHooks:
    """The Hugging Face callback's behaviour (framework-free, so it is testable without transformers).

    The model is seen through :class:`LogitsOnly` (``logits_only=True``) so probes and the cheap forward
    get a logits tensor from ``model(input_ids)``; data must then be ``(input_ids, labels)`` pairs.
    """

    def __init__(self, monitor: Monitor | None = None, *, logits_only: bool = True, **monitor_kwargs: Any) -> None:
        self.monitor = _monitor_from(monitor, monitor_kwargs, "LandscapeTrainerCallback")
        self.logits_only = logits_only
        self._view: tuple[int, nn.Module] | None = None

    def _model(self, model: nn.Module) -> nn.Module:
        if not self.logits_only:
            return model
        if self._view is None or self._view[0] != id(model):
            self._view = (id(model), LogitsOnly(model))
        return self._view[1]

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                    optimizer: object | None = None, **kwargs: Any) -> None:
        if model is not None:
            self.monitor.step(self._model(model), int(state.global_step), optimizer=optimizer)

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                     optimizer: object | None = None, **kwargs: Any) -> None:
        if model is not None:
            self.monitor.step(self._model(model), int(state.global_step), optimizer=optimizer, force=True)
        self.monitor.flush()  # the sinks' records of the run are on disk when train() returns


def build_hf_callback(cache: dict[str, type]) -> type:
    """The ``LandscapeTrainerCallback`` class, built once and kept in ``cache`` under ``"hf"``."""
    if "hf" not in cache:
        try:
            from transformers import TrainerCallback
        except ImportError:
            raise ImportError(
                "LandscapeTrainerCallback needs Hugging Face transformers; install it with: pip install landscape[hf]"
            ) from None

        class LandscapeTrainerCallback(HFHooks, TrainerCallback):  # type: ignore[misc, valid-type]
            """Hugging Face ``Trainer`` callback: a :class:`Monitor` fed after every optimizer step."""

        cache["hf"] = LandscapeTrainerCallback
    return cache["hf"]
