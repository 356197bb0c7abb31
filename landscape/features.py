"""Per-sample features of sequence models: one vector per sequence at a chosen pooling.

A layer of a sequence model sees ``[batch, seq, d]``; with one label per sequence, the feature of a sample
is one of its token vectors or their mean:

* ``"cls"`` — the first token (BERT-style classifiers read it);
* ``"last"`` — the last non-padding token (where a causal model has read the whole sequence; the padding
  is found from the batch's ``attention_mask``, left or right, else the last position);
* ``"mean"`` — the mean over the non-padding tokens;
* ``"auto"`` — ``"last"`` for decoder (causal) models, ``"cls"`` otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from landscape.batch import Batch
from landscape.objective import is_causal_lm

__all__ = ["POOLINGS", "check_pooling", "is_decoder", "pool_tokens"]

POOLINGS = ("auto", "cls", "last", "mean")
_DECODER_TYPES = ("gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen3", "phi",
                  "phi3", "opt", "bloom", "falcon", "gemma", "gemma2", "olmo", "starcoder2", "codegen")


def check_pooling(pooling: object) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    return str(pooling)


def is_decoder(model: nn.Module) -> bool:
    """A causal (decoder-only) model: a causal LM class, or a config whose model type is a decoder."""
    if is_causal_lm(model):
        return True
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and (getattr(config, "is_decoder", False)
                                   or getattr(config, "model_type", None) in _DECODER_TYPES):
            return True
    return False


def _mask(batch: Batch, value: torch.Tensor) -> torch.Tensor | None:
    mask = batch.kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and tuple(mask.shape) == tuple(value.shape[:2]):
        return mask.to(value.device)
    return None


def pool_tokens(value: torch.Tensor, batch: Batch, pooling: str, *, decoder: bool = False) -> torch.Tensor:
    """``[B, T, d]`` token vectors → ``[B, d]`` per-sequence features (module docstring)."""
    pooling = check_pooling(pooling)
    if pooling == "auto":
        pooling = "last" if decoder else "cls"
    if pooling == "cls":
        return value[:, 0]
    mask = _mask(batch, value)
    if pooling == "last":
        if mask is None:
            return value[:, -1]
        positions = torch.arange(value.shape[1], device=value.device)
        last = (mask.bool() * (positions + 1)).argmax(dim=1)  # the largest position with mask 1
        return value[torch.arange(value.shape[0], device=value.device), last]
    if mask is None:
        return value.mean(dim=1)
    weights = mask.to(value.dtype).unsqueeze(-1)
    return (value * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)
