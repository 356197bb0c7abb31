"""Token-level losses for sequence models, with the conventions Hugging Face models use for their own loss.

:class:`TokenCrossEntropy` is the mean cross-entropy over the tokens whose label is not ``ignore_index``
(-100: padding, prompt tokens). With ``shift=True`` (causal language models) the logits at position t
are scored against the label at t + 1, so the loss of a ``[B, T]`` label tensor counts the non-ignored
labels of positions 1..T−1. :meth:`TokenCrossEntropy.count` is that number of tokens, the batch's weight
in the full-data mean (see :class:`landscape.objective.Objective`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["TokenCrossEntropy", "causal_lm_cross_entropy", "token_cross_entropy"]


class TokenCrossEntropy:
    """Mean cross-entropy over non-ignored tokens; logits ``[..., V]`` and integer labels ``[...]``."""

    def __init__(self, ignore_index: int = -100, shift: bool = False) -> None:
        self.ignore_index = int(ignore_index)
        self.shift = bool(shift)

    @property
    def shift_targets(self) -> bool:
        """Whether the targets are shifted by one position against the logits (causal LM)."""
        return self.shift

    def _aligned(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shift:
            if logits.dim() < 3 or labels.dim() < 2:
                raise ValueError(f"a shifted (causal LM) loss needs logits [batch, seq, vocab] and labels [batch, seq], "
                                 f"got {tuple(logits.shape)} and {tuple(labels.shape)}.")
            logits, labels = logits[:, :-1], labels[:, 1:]
        if logits.shape[:-1] != labels.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}: expected "
                             "logits with one more (last, vocabulary) dimension than the labels.")
        return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat_logits, flat_labels = self._aligned(logits, labels)
        return F.cross_entropy(flat_logits.float() if flat_logits.dtype in (torch.float16, torch.bfloat16)
                               else flat_logits, flat_labels.long(), ignore_index=self.ignore_index)

    def count(self, labels: torch.Tensor) -> int:
        """Tokens the mean runs over: non-ignored labels (after the shift)."""
        if self.shift and labels.dim() >= 2:
            labels = labels[:, 1:]
        return int((labels != self.ignore_index).sum())

    def __repr__(self) -> str:
        return f"TokenCrossEntropy(ignore_index={self.ignore_index}, shift={self.shift})"


def token_cross_entropy(ignore_index: int = -100) -> TokenCrossEntropy:
    """Token-level cross-entropy without shift (token classification, masked LM)."""
    return TokenCrossEntropy(ignore_index, shift=False)


def causal_lm_cross_entropy(ignore_index: int = -100) -> TokenCrossEntropy:
    """Next-token cross-entropy of a causal language model (labels shifted by one, as Hugging Face does)."""
    return TokenCrossEntropy(ignore_index, shift=True)
