"""Run probes over checkpoints into a store: skip what is stored, resume after interruption, report errors.

Each (checkpoint, probe) result is written in one transaction as soon as it is done, so killing the
process loses at most the result in progress (and long probes keep their finished rows). A probe that
fails is recorded in the store's ``errors`` table and the run goes on with the next one; the caller
gets every error back at the end.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from landscape.checkpoints import (
    Checkpoint,
    CheckpointError,
    load_into,
    read_metadata,
    read_state_dict,
    sha256,
)
from landscape.data import Batches, DataError, as_batches
from landscape.evaluate import LossError, LossFn, check_scalar_loss
from landscape.objective import as_objective, describe_outputs
from landscape.params import preserved
from landscape.store import Store, config_hash


@dataclass
class RunReport:
    """What a run did: results computed, results skipped as already stored, and errors."""

    computed: int = 0
    skipped: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def pick_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; otherwise the named device (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but this torch build sees no CUDA device.")
    return chosen


def result_identity(probe: str, params: Mapping[str, Any], data_settings: Mapping[str, Any]) -> str:
    """The config hash of a result: the probe's params plus the data subset it was measured on."""
    return config_hash(probe, {"params": dict(params), "data": dict(data_settings)})


def _learning_rate(lr: float | None, checkpoint: Checkpoint, unsafe: bool) -> float | None:
    if lr is not None:
        return float(lr)
    if checkpoint.path.suffix == ".safetensors" and not checkpoint.path.is_dir():
        return None
    try:
        meta = read_metadata(checkpoint.path, unsafe=unsafe)
    except CheckpointError:
        return None
    for key in ("lr", "learning_rate"):
        value = meta.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def run_probes(
    *,
    model_factory: Callable[[], nn.Module],
    loss_fn: LossFn,
    train: object,
    checkpoints: Sequence[Checkpoint],
    probes: Mapping[str, Mapping[str, Any]],
    store: Store,
    run: str,
    test: object | None = None,
    device: str | torch.device | None = "auto",
    max_samples: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    lr: float | None = None,
    recompute: bool = False,
    unsafe: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    targets_key: str | None = None,
) -> RunReport:
    """Run every probe in ``probes`` (name → params) at every checkpoint, writing results to ``store``."""
    from landscape import probe as probe_registry

    emit = log or (lambda text: print(text, file=sys.stderr))
    device = pick_device(device)
    selected = {name: probe_registry.get(name) for name in probes}
    resolved = {name: probe_registry.resolve_params(selected[name], probes[name]) for name in probes}
    train_batches: Batches = as_batches(train, device=device, max_samples=max_samples, seed=seed,
                                        batch_size=batch_size, name="train data", targets_key=targets_key)
    test_batches = None if test is None else as_batches(test, device=device, max_samples=max_samples, seed=seed,
                                                        batch_size=batch_size, name="test data",
                                                        targets_key=targets_key)
    data_settings = {"max_samples": max_samples, "seed": seed, "n_train": train_batches.n_samples,
                     "n_test": None if test_batches is None else test_batches.n_samples}
    hashes = {name: result_identity(name, resolved[name], data_settings) for name in probes}
    ordered = sorted(checkpoints)
    store.add_run(run, {"lr": lr} if lr is not None else {})

    report = RunReport()
    model: nn.Module | None = None
    timing = _Timing(emit, len(ordered))
    bar = _progress_bar(len(ordered) * len(selected), progress)
    known = {step: digest for step, _, digest in store.checkpoints(run)}
    try:
        for checkpoint in ordered:
            todo = [n for n in selected if recompute or not store.has_result(run, checkpoint.step, n, hashes[n])]
            digest = None
            if len(todo) < len(selected) and known.get(checkpoint.step) is not None:
                # Stored results are reused only while the checkpoint file is the one they were computed on.
                digest = sha256(checkpoint.path)
                if digest != known[checkpoint.step]:
                    emit(f"note: {checkpoint.path} changed since its results were stored; recomputing step "
                         f"{checkpoint.step}.")
                    todo = list(selected)
            report.skipped += len(selected) - len(todo)
            if not todo:
                bar.update(len(selected))
                continue
            try:
                state = read_state_dict(checkpoint.path, unsafe=unsafe)
                if model is None:
                    model = model_factory().to(device)
                    load_into(model, state, checkpoint.path)
                    _preflight(model, loss_fn, train_batches)
                    _print_costs(emit, selected, resolved, model, train_batches, len(ordered))
                else:
                    load_into(model, state, checkpoint.path)
            except CheckpointError as error:
                message = str(error)
                report.errors.append(message)
                for name in todo:
                    store.write_error(run, checkpoint.step, name, message, config=hashes[name])
                emit(f"error: {message}")
                bar.update(len(selected))
                continue
            store.add_checkpoint(run, checkpoint.step, checkpoint.path, digest or sha256(checkpoint.path))
            step_lr = _learning_rate(lr, checkpoint, unsafe)
            if step_lr is not None and lr is None:
                store.add_run(run, {"lr": step_lr})
            bar.update(len(selected) - len(todo))
            timing.start(checkpoint.step)
            for name in todo:
                bar.set_description(f"step {checkpoint.step} · {name}")
                _run_one(
                    name, selected[name], resolved[name], hashes[name], model, loss_fn, train_batches, test_batches,
                    device, checkpoint, ordered, run, step_lr, unsafe, store, report, progress, emit,
                )
                bar.update(1)
            timing.done(ordered.index(checkpoint))
    finally:
        bar.close()
    return report


class _Timing:
    """Measures the first checkpoint that does work and prints how long the rest will take."""

    def __init__(self, emit: Callable[[str], None], total: int) -> None:
        self.emit, self.total, self.started, self.step, self.reported = emit, total, 0.0, 0, False

    def start(self, step: int) -> None:
        self.started, self.step = time.perf_counter(), step

    def done(self, position: int) -> None:
        if self.reported:
            return
        self.reported = True
        elapsed = time.perf_counter() - self.started
        left = self.total - position - 1
        if left > 0:
            self.emit(f"step {self.step} took {elapsed:.1f} s; the {left} remaining checkpoint(s) will take about "
                      f"{elapsed * left:.0f} s.")


def _print_costs(emit: Callable[[str], None], selected: Mapping[str, Any], resolved: Mapping[str, Mapping[str, Any]],
                 model: nn.Module, train: Batches, n_checkpoints: int) -> None:
    from landscape.params import parameter_count
    from landscape.presets import describe_costs

    n_params, n_samples = parameter_count(model), train.n_samples
    costs = {}
    for name, probe in selected.items():
        estimate = getattr(probe, "cost", None)
        costs[name] = estimate(dict(resolved[name]), n_params, n_samples) if callable(estimate) else None
    for line in describe_costs(costs, n_params, n_samples, n_checkpoints):
        emit(line)


def _preflight(model: nn.Module, loss_fn: LossFn | str, train: Batches) -> None:
    """Fail before any work when the loss cannot be used (not a scalar mean, wrong targets, no logits)."""
    objective = as_objective(loss_fn, model)
    batch = train.batches[0].rows(0, 8)
    with preserved(model), torch.no_grad():
        try:
            outputs = objective.forward(model, batch)
        except Exception as error:
            shape = tuple(batch.inputs.shape) if isinstance(batch.inputs, torch.Tensor) else None
            raise DataError(f"the model cannot process the first train batch ({batch.describe()}"
                            f"{f', inputs of shape {shape}' if shape else ''}): {type(error).__name__}: {error}") from None
        try:
            loss = objective.loss(outputs, batch)
        except LossError:
            raise
        except Exception as error:
            raise LossError(f"the loss fails on the model's outputs ({describe_outputs(outputs)}) and targets "
                            f"{tuple(batch.targets.shape)}: {type(error).__name__}: {error}") from None
        check_scalar_loss(loss)


def _run_one(name, probe, params, chash, model, loss_fn, train, test, device, checkpoint, ordered, run, lr,
             unsafe, store, report, progress, emit) -> None:  # noqa: ANN001 - internal, called in one place
    from landscape.probe import ProbeContext

    ctx = ProbeContext(
        model=model, loss_fn=loss_fn, train=train, test=test, device=device, step=checkpoint.step, run=run,
        checkpoints=list(ordered), load_state=lambda c: read_state_dict(c.path, unsafe=unsafe, map_location=device),
        lr=lr, partial=store.partial(run, checkpoint.step, name, chash), progress=progress,
    )
    try:
        with preserved(model):
            result = probe.run(ctx, **params)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # one failing probe must not stop the others; every error is reported.
        message = f"probe {name!r} failed at step {checkpoint.step}: {type(error).__name__}: {error}"
        report.errors.append(message)
        store.write_error(run, checkpoint.step, name, message + "\n" + traceback.format_exc(limit=6), config=chash)
        emit(f"error: {message}")
        return
    store.write_result(run, checkpoint.step, name, result, config=chash)
    report.computed += 1
    if not result.valid:
        report.invalid += 1
        emit(f"warning: {name} at step {checkpoint.step} stored as invalid: {result.message}")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="result", dynamic_ncols=True, file=sys.stderr)
