"""Features for neural collapse: the inputs of a layer, captured by a hook, per sample or per token."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from landscape.batch import Batch
from landscape.data import as_batches
from landscape.features import POOLINGS, check_pooling, is_decoder, pool_tokens
from landscape.params import preserved
from probes.collapse.geometry import ncc_counts

__all__ = ["POOLINGS", "collect_ncc_counts", "collect_stats", "extract_features", "extract_features_multi", "find_layer"]
from probes.collapse.stats import CollapseError, CollapseStats

Layer = str | nn.Module


def find_layer(model: nn.Module, layer: Layer | None = None) -> tuple[str, nn.Module]:
    """``(name, module)`` for a module name, a module of the model, or None (the last ``nn.Linear``)."""
    named = dict(model.named_modules())
    if layer is None:
        linear = [name for name, module in named.items() if isinstance(module, nn.Linear)]
        if not linear:
            raise CollapseError(f"the model has no nn.Linear; pass layer= one of: {_some(named)}.")
        return linear[-1], named[linear[-1]]
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise CollapseError(f"layer {type(layer).__name__} is not a submodule of the model.")
    if layer not in named:
        raise CollapseError(f"the model has no module named {layer!r}; valid names include: {_some(named)}.")
    return layer, named[layer]


def _some(named: Mapping[str, nn.Module], limit: int = 12) -> str:
    names = [repr(n) for n in named if n]
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@contextmanager
def _captured_inputs(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the first input of each module at every call; the hooks are removed on exit, even on error."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = []

    def recorder(store: list[torch.Tensor]) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            value = args[0] if args else next(iter(kwargs.values()), None)
            if not isinstance(value, torch.Tensor):
                raise CollapseError(f"the input of {type(module).__name__} is not a tensor.")
            store.append(value.detach())

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(recorder(captured[name]), with_kwargs=True))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _per_sample(value: torch.Tensor, batch: Batch, name: str, pooling: str,
                decoder: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [samples, d] and labels [samples] of one batch (module docstring of :mod:`probes.collapse`)."""
    labels = batch.targets.detach().cpu()
    if labels.dim() >= 2 and value.dim() == labels.dim() + 1 and value.shape[:-1] == labels.shape:
        if decoder and labels.dim() == 2:  # the feature at position t predicts the label at t + 1
            value, labels = value[:, :-1], labels[:, 1:]
        return value.reshape(-1, value.shape[-1]), labels.reshape(-1)
    if value.shape[0] != labels.shape[0]:
        raise CollapseError(f"the input of layer {name!r} has {value.shape[0]} rows for a batch of "
                            f"{labels.shape[0]} samples.")
    if labels.dim() != 1:
        raise CollapseError(f"targets must be class indices of shape [batch], got shape {tuple(labels.shape)}.")
    if value.dim() == 3:
        return pool_tokens(value, batch.to("cpu"), pooling, decoder=decoder), labels
    return value.reshape(value.shape[0], -1), labels


def _batches_of_features(model: nn.Module, data: object, names: Sequence[str], modules: Mapping[str, nn.Module],
                         pooling: str = "auto") -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Per batch: the inputs of every named layer (float64, CPU, [samples, d]) and the labels."""
    check_pooling(pooling)
    first = next(model.parameters(), None)
    batches = as_batches(data, device=None if first is None else first.device)
    decoder = is_decoder(model)
    with preserved(model), _captured_inputs({n: modules[n] for n in names}) as captured:
        for batch in batches:
            for store in captured.values():
                store.clear()
            with torch.inference_mode():
                batch.feed(model)
            out: dict[str, torch.Tensor] = {}
            labels = batch.targets.detach().cpu()
            for name in names:
                calls = captured[name]
                if len(calls) != 1:
                    raise CollapseError(f"layer {name!r} ran {len(calls)} times in one forward pass; "
                                        "choose a module that runs exactly once.")
                value, labels = _per_sample(calls[0].to("cpu", torch.float64), batch, name, pooling, decoder)
                out[name] = value
            yield out, labels


def _resolve(model: nn.Module, layers: Sequence[Layer | None]) -> tuple[list[str], dict[str, nn.Module]]:
    names, modules = [], {}
    for layer in layers:
        name, module = find_layer(model, layer)
        if name not in modules:
            names.append(name)
            modules[name] = module
    return names, modules


def extract_features_multi(model: nn.Module, data: object, layers: Sequence[Layer | None], *,
                           pooling: str = "auto") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs of several layers in one pass over ``data``: ``({name: features [N, d_name]}, labels [N])``."""
    names, modules = _resolve(model, layers)
    if not names:
        raise CollapseError("layers is empty; name at least one module.")
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    labels: list[torch.Tensor] = []
    for features, y in _batches_of_features(model, data, names, modules, pooling):
        for name in names:
            chunks[name].append(features[name])
        labels.append(y)
    return {n: torch.cat(chunks[n]) for n in names}, torch.cat(labels)


def extract_features(model: nn.Module, data: object, layer: Layer | None = None, *,
                     pooling: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of ``layer`` (default: the model's last ``nn.Linear``) over ``data``: features [N, d]
    (float64, CPU, flattened per sample; sequences pooled, see :mod:`landscape.features`) and the
    targets [N]. The model is left untouched."""
    name, _ = find_layer(model, layer)
    features, labels = extract_features_multi(model, data, [name], pooling=pooling)
    return features[name], labels


def collect_stats(model: nn.Module, data: object, layers: Sequence[Layer | None] = (None,), *,
                  pooling: str = "auto") -> dict[str, CollapseStats]:
    """:class:`CollapseStats` of the inputs of each layer, streamed over ``data`` in one pass."""
    names, modules = _resolve(model, layers)
    stats = {n: CollapseStats() for n in names}
    for features, y in _batches_of_features(model, data, names, modules, pooling):
        _check_labels(y)
        for name in names:
            stats[name].update(features[name], y)
    return stats


def collect_ncc_counts(model: nn.Module, data: object, stats: Mapping[str, CollapseStats],
                       classifiers: Mapping[str, tuple[Any, Any]] | None = None, *,
                       pooling: str = "auto") -> dict[str, tuple[int, int]]:
    """Second pass: per layer, :func:`ncc_counts` summed over ``data`` given the layer's full statistics."""
    names, modules = _resolve(model, list(stats))
    classifiers = dict(classifiers or {})
    totals = {n: [0, 0] for n in names}
    for features, y in _batches_of_features(model, data, names, modules, pooling):
        for name in names:
            weight, bias = classifiers.get(name, (None, None))
            mismatch, correct = ncc_counts(features[name], y, stats[name], weight, bias)
            totals[name][0] += mismatch
            totals[name][1] += correct
    return {n: (t[0], t[1]) for n, t in totals.items()}


def _check_labels(labels: torch.Tensor) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise CollapseError(f"targets must be integer class indices, got dtype {labels.dtype}.")
