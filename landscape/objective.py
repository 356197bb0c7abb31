"""The full-data objective: how a model's outputs on a batch become its loss, and how batches are weighted.

An :class:`Objective` joins a loss to a model's outputs of any structure:

* ``loss="model"`` uses the model's own loss (``outputs.loss`` / ``outputs["loss"]``, or a leading 0-dim
  tensor of a tuple): the batch's targets are passed to the model (``labels=…`` for dict batches);
* a loss function ``loss_fn(logits, targets)`` receives the logits found in the outputs (a tensor itself,
  ``.logits``, ``["logits"]``, or the first tensor of a tuple; ``logits_key`` chooses another entry) and
  the batch's targets. It returns the mean over the batch.

The full-data loss is ``L = Σ_b w_b·L_b / Σ_b w_b`` where ``w_b`` is the number of terms batch b's mean
runs over, so ``L`` is the mean over every term of the data set however it is batched: the samples, or,
for integer targets, the targets that are not ``ignore_index`` (-100) — the tokens of a token-level loss,
after the causal-LM shift by one when the loss shifts (``shift``; decided from the model for
``loss="model"``: any ``…ForCausalLM``/``…LMHeadModel`` module). ``weight="samples"`` forces sample
weighting. Accuracy counts the same terms (token accuracy for language models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from landscape.batch import Batch

__all__ = [
    "MODEL_LOSS",
    "WEIGHTS",
    "LossError",
    "LossFn",
    "Objective",
    "OutputError",
    "as_objective",
    "check_scalar_loss",
    "describe_outputs",
    "find_logits",
    "find_model_loss",
    "is_causal_lm",
]

MODEL_LOSS = "model"
WEIGHTS = ("auto", "samples", "tokens")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class LossError(ValueError):
    """The loss function does not return what the toolkit needs (a scalar mean)."""


class OutputError(LossError):
    """The model's outputs do not hold what is asked for (logits, or its own loss)."""


def check_scalar_loss(loss: object) -> torch.Tensor:
    """Raise :class:`LossError` unless ``loss`` is a 0-dim tensor (a mean over the batch)."""
    if not isinstance(loss, torch.Tensor):
        raise LossError(f"loss_fn must return a tensor, got {type(loss).__name__}.")
    if loss.dim() != 0:
        raise LossError(
            f"loss_fn must return a scalar (the mean over the batch), got a tensor of shape {tuple(loss.shape)}; "
            "use reduction='mean'."
        )
    return loss


def describe_outputs(outputs: object) -> str:
    """A short phrase for messages: ``a tensor of shape (8, 3)``, ``a SequenceClassifierOutput with keys [...]``."""
    if isinstance(outputs, torch.Tensor):
        return f"a tensor of shape {tuple(outputs.shape)}"
    if isinstance(outputs, Mapping):
        return f"a {type(outputs).__name__} with keys {sorted(map(str, outputs))}"
    if isinstance(outputs, (tuple, list)):
        return f"a {type(outputs).__name__} of {len(outputs)} entries"
    return f"a {type(outputs).__name__}"


def _entry(outputs: object, key: str | int) -> object:
    if isinstance(key, int):
        return outputs[key] if isinstance(outputs, (tuple, list)) and -len(outputs) <= key < len(outputs) else None
    if isinstance(outputs, Mapping):
        return outputs.get(key)
    return getattr(outputs, key, None)


def find_logits(outputs: object, key: str | int | Callable[[object], torch.Tensor] | None = None) -> torch.Tensor:
    """The logits in a model's outputs: the tensor itself, ``.logits`` / ``["logits"]``, or the first tensor of
    a tuple (a leading 0-dim loss skipped); ``key`` (an entry name, a tuple index or a function) overrides."""
    if callable(key):
        found = key(outputs)
    elif key is not None:
        found = _entry(outputs, key)
    elif isinstance(outputs, torch.Tensor):
        found = outputs
    elif isinstance(outputs, (tuple, list)):
        found = next((v for v in outputs if isinstance(v, torch.Tensor) and v.dim() > 0), None)
    else:
        found = _entry(outputs, "logits")
    if not isinstance(found, torch.Tensor):
        where = f"the entry {key!r}" if isinstance(key, (str, int)) else (
            "what logits_key returned" if callable(key) else
            "a tensor, a 'logits' entry or attribute, or a tuple starting with a tensor")
        raise OutputError(f"the model's outputs ({describe_outputs(outputs)}) hold no logits: expected {where}; "
                          "set logits_key (CLI: --logits-key) to the entry that holds them.")
    return found


def find_model_loss(outputs: object) -> torch.Tensor | None:
    """The loss a model computed itself: ``.loss`` / ``["loss"]``, a 0-dim tensor, or a tuple's leading 0-dim tensor."""
    if isinstance(outputs, torch.Tensor):
        return outputs if outputs.dim() == 0 else None
    if isinstance(outputs, (tuple, list)):
        first = outputs[0] if outputs else None
        return first if isinstance(first, torch.Tensor) and first.dim() == 0 else None
    found = _entry(outputs, "loss")
    return found if isinstance(found, torch.Tensor) else None


def is_causal_lm(model: nn.Module) -> bool:
    """Whether the model (or a module inside a wrapper) is a causal language model by its class name."""
    return any(type(m).__name__.endswith(_CAUSAL_SUFFIXES) for m in model.modules())


def _integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


class Objective:
    """A loss joined to a model's outputs, with the batch weights of the full-data mean (module docstring)."""

    def __init__(self, loss: LossFn | str = MODEL_LOSS, *, logits_key: str | int | Callable | None = None,
                 weight: str = "auto", ignore_index: int | None = None, shift: bool | None = None) -> None:
        if isinstance(loss, str) and loss != MODEL_LOSS:
            raise LossError(f"loss must be a function, an Objective or {MODEL_LOSS!r}, got the string {loss!r}.")
        if not isinstance(loss, str) and not callable(loss):
            raise LossError(f"loss must be callable as loss_fn(logits, targets) or {MODEL_LOSS!r}, "
                            f"got {type(loss).__name__}.")
        if weight not in WEIGHTS:
            raise LossError(f"weight must be one of {WEIGHTS}, got {weight!r}.")
        self.loss_fn = loss
        self.logits_key = logits_key
        self.weighting = weight
        default_ignore = getattr(loss, "ignore_index", -100)
        self.ignore_index = int(default_ignore if ignore_index is None else ignore_index)
        self.shift = shift if shift is not None or loss == MODEL_LOSS else bool(getattr(loss, "shift_targets", False))

    @property
    def uses_model_loss(self) -> bool:
        return isinstance(self.loss_fn, str)

    def bind(self, model: nn.Module) -> Objective:
        """This objective with every model-dependent choice (the shift of ``loss="model"``) made for ``model``."""
        if self.shift is not None:
            return self
        bound = Objective(self.loss_fn, logits_key=self.logits_key, weight=self.weighting,
                          ignore_index=self.ignore_index, shift=is_causal_lm(model))
        return bound

    # -- one batch ---------------------------------------------------------------------------------------
    def forward(self, model: Callable[..., Any], batch: Batch) -> Any:
        """The model's outputs on the batch (its targets passed along when the model computes the loss)."""
        return batch.feed(model, with_targets=self.uses_model_loss)

    def logits(self, outputs: object) -> torch.Tensor:
        return find_logits(outputs, self.logits_key)

    def loss(self, outputs: object, batch: Batch) -> torch.Tensor:
        """The batch's mean loss from the model's outputs."""
        if self.uses_model_loss:
            found = find_model_loss(outputs)
            if found is None:
                where = f"under {batch.targets_key!r}" if batch.targets_key else "as the last positional argument"
                raise OutputError(f"with loss 'model' the model must return its own loss (outputs.loss), but it returned "
                                  f"{describe_outputs(outputs)} with no loss although the targets were passed {where}.")
            return check_scalar_loss(found)
        return self.loss_of_logits(self.logits(outputs), batch)

    def loss_of_logits(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The loss as a function of the logits (what the Gauss–Newton matrix needs)."""
        if self.uses_model_loss:
            raise LossError("the model's own loss is not a function of its logits that can be separated from it; "
                            "pass a loss function (e.g. --loss cross_entropy or causal_lm) for this.")
        return check_scalar_loss(self.loss_fn(logits, batch.targets))  # type: ignore[operator]

    def batch_loss(self, model: Callable[..., Any], batch: Batch) -> torch.Tensor:
        return self.loss(self.forward(model, batch), batch)

    def weight(self, batch: Batch) -> float:
        """The number of terms the batch's mean loss runs over (module docstring)."""
        targets = batch.targets
        if self.weighting == "samples":
            return float(batch.n_samples)
        counter = None if self.uses_model_loss else getattr(self.loss_fn, "count", None)
        if callable(counter):
            return float(counter(targets))
        if not _integer(targets):
            if self.weighting == "tokens":
                raise LossError(f"weight='tokens' needs integer targets, got {targets.dtype}.")
            return float(batch.n_samples)
        if self.shift and targets.dim() >= 2:
            targets = targets[:, 1:]
        return float((targets != self.ignore_index).sum())

    def token_level(self, batch: Batch) -> bool:
        """Integer targets with a sequence (or spatial) dimension: a token-level loss."""
        return _integer(batch.targets) and batch.targets.dim() >= 2

    def class_view(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Logits ``[M, C]`` and class targets ``[M]`` of the scored terms (shifted, ignored ones dropped), or
        None when the targets are not class indices of these logits."""
        if not _integer(targets) or not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            return None
        if self.shift and logits.dim() >= 3 and targets.dim() >= 2:
            logits, targets = logits[:, :-1], targets[:, 1:]
        if logits.dim() != targets.dim() + 1:
            return None
        if logits.shape[:-1] != targets.shape:
            if logits.shape[0] == targets.shape[0] and logits.shape[2:] == targets.shape[1:]:
                logits = logits.movedim(1, -1)  # [B, C, ...] as torch's cross-entropy takes them
            else:
                return None
        flat_logits = logits.reshape(-1, logits.shape[-1])
        flat = targets.reshape(-1).to(flat_logits.device)
        keep = (flat != self.ignore_index) & (flat >= 0)
        if not bool(keep.all()):
            flat_logits, flat = flat_logits[keep], flat[keep]
        return flat_logits, flat

    def correct(self, outputs: object, batch: Batch) -> tuple[torch.Tensor, int] | None:
        """(correct top-1 predictions as a tensor, terms counted), or None without class targets."""
        try:
            logits = self.logits(outputs)
        except OutputError:
            if self.uses_model_loss:
                return None
            raise
        view = self.class_view(logits, batch.targets)
        if view is None:
            return None
        flat_logits, flat = view
        return (flat_logits.argmax(dim=-1) == flat).sum(), int(flat.numel())

    def __repr__(self) -> str:
        return f"Objective({self.loss_fn!r}, logits_key={self.logits_key!r}, shift={self.shift})"


def as_objective(loss: LossFn | str | Objective, model: nn.Module | None = None) -> Objective:
    """An :class:`Objective` from a loss function, ``"model"`` or an Objective, bound to ``model`` if given."""
    objective = loss if isinstance(loss, Objective) else Objective(loss)
    return objective if model is None else objective.bind(model)
