"""Run probes over checkpoints into a store: check first, skip what is stored, share work, resume, report.

:func:`prepare_run` does everything that can fail on bad input before a store is touched: it resolves the
probes, materializes the data, fingerprints what results will be computed from (``landscape.identity``),
builds the model and runs the preflight checks (``landscape.preflight``). :func:`execute_run` then
measures each (checkpoint, probe) whose result is not stored for exactly these inputs, under a lease
(``landscape.leases``) so a second process on the same run computes other results and waits for the ones
it leaves to the first. Each result is written in one transaction as soon as it is done, so killing the
process loses at most the results in progress (and long probes keep their finished rows). A probe that
fails is recorded in the store's ``errors`` table and the run goes on; the caller gets every error back.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from landscape.checkpoints import (
    Checkpoint,
    CheckpointError,
    SavedOptimizer,
    load_into,
    read_metadata,
    read_optimizer_state,
    read_state_dict,
    sha256,
)
from landscape.data import Batches, DataError, as_batches
from landscape.evaluate import LossFn
from landscape.identity import changed_inputs, describe, identity, params_identity, result_inputs, run_inputs
from landscape.leases import DEFAULT_TTL, Claim, Leases
from landscape.params import preserved
from landscape.preflight import preflight
from landscape.store import Store


@dataclass
class RunReport:
    """What a run did: results computed here, skipped as already stored, computed by another process
    meanwhile, measured again because their inputs changed (``stale``) or kept despite that (``reused``)."""

    computed: int = 0
    skipped: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)
    by_other: int = 0
    stale: int = 0
    reused: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class RunPlan:
    """A checked run: probes with resolved params and identities, the data, the built model."""

    probes: dict[str, Any]
    params: dict[str, dict[str, Any]]
    inputs: dict[str, dict[str, Any]]
    hashes: dict[str, str]
    params_hashes: dict[str, str]
    model: nn.Module
    loss_fn: LossFn
    train: Batches
    test: Batches | None
    device: torch.device
    checkpoints: list[Checkpoint]


def pick_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; otherwise the named device (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but this torch build sees no CUDA device.")
    return chosen


def prepare_run(
    *,
    model_factory: Callable[[], nn.Module],
    loss_fn: LossFn,
    train: object,
    checkpoints: Sequence[Checkpoint],
    probes: Mapping[str, Mapping[str, Any]],
    test: object | None = None,
    device: str | torch.device | None = "auto",
    max_samples: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
    targets_key: str | None = None,
) -> RunPlan:
    """Check every input of a run and fingerprint it; nothing is written.

    ``inputs`` may describe the ``"model"``, ``"loss"`` and ``"data"`` factories (``identity.target_spec``:
    target string and kwargs); the ones not given are described from the objects (``identity.describe``).
    """
    from landscape import probe as probe_registry

    device = pick_device(device)
    selected = {name: probe_registry.get(name) for name in probes}
    resolved = {name: probe_registry.resolve_params(selected[name], probes[name]) for name in probes}
    data_free = {name for name, probe in selected.items() if not probe_registry.needs_data(probe)}
    uses_data = len(data_free) < len(selected)
    if uses_data and train is None:
        raise DataError(f"train data is required by the probe(s) {', '.join(sorted(set(selected) - data_free))}; "
                        "only data-free probes (such as weights) run without it.")
    given = dict(inputs or {})
    model_inputs = given.get("model") or describe(model_factory)
    if uses_data:
        train_batches = as_batches(train, device=device, max_samples=max_samples, seed=seed, batch_size=batch_size,
                                   name="train data", targets_key=targets_key)
        test_batches = None if test is None else as_batches(test, device=device, max_samples=max_samples, seed=seed,
                                                            batch_size=batch_size, name="test data",
                                                            targets_key=targets_key)
        shared = run_inputs(train=train_batches, test=test_batches, loss=given.get("loss") or describe(loss_fn),
                            model=model_inputs, data_source=given.get("data"))
    else:  # every probe reads only the weights: the data are neither loaded nor checked
        train_batches, test_batches, shared = Batches(()), None, {}
    # A data-free probe's result depends on the weights alone: data and loss stay out of its identity.
    weights_only = {"data": None, "n_train": None, "n_test": None, "loss": None, "model": dict(model_inputs)}
    per_probe = {name: result_inputs(weights_only if name in data_free else shared, selected[name])
                 for name in probes}
    model = model_factory().to(device)
    if uses_data:
        preflight(model, loss_fn, train_batches, test_batches)
    return RunPlan(
        probes=selected, params=resolved, inputs=per_probe,
        hashes={name: identity(name, resolved[name], per_probe[name]) for name in probes},
        params_hashes={name: params_identity(name, resolved[name]) for name in probes},
        model=model, loss_fn=loss_fn, train=train_batches, test=test_batches, device=device,
        checkpoints=sorted(checkpoints),
    )


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
    reuse: bool = False,
    unsafe: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
    lease_ttl: float = DEFAULT_TTL,
    targets_key: str | None = None,
) -> RunReport:
    """Run every probe in ``probes`` (name → params) at every checkpoint, writing results to ``store``
    (:func:`prepare_run`, then :func:`execute_run`)."""
    plan = prepare_run(model_factory=model_factory, loss_fn=loss_fn, train=train, checkpoints=checkpoints,
                       probes=probes, test=test, device=device, max_samples=max_samples, batch_size=batch_size,
                       seed=seed, inputs=inputs, targets_key=targets_key)
    return execute_run(plan, store=store, run=run, lr=lr, recompute=recompute, reuse=reuse, unsafe=unsafe,
                       progress=progress, log=log, lease_ttl=lease_ttl)


def execute_run(plan: RunPlan, *, store: Store | None, run: str, lr: float | None = None, recompute: bool = False,
                reuse: bool = False, unsafe: bool = False, progress: bool = True,
                log: Callable[[str], None] | None = None, lease_ttl: float = DEFAULT_TTL,
                poll_seconds: float = 0.5, shard: str = "data") -> RunReport:
    """Measure what ``plan`` asks for into ``store``.

    A result is skipped when stored for the same probe, params, probe version, data, loss, model factory
    and checkpoint file; ``recompute`` measures everything again; ``reuse`` keeps any stored result of the
    same probe and params whatever it was computed from (said in a note). Inside a process group of
    several ranks (``torchrun``) the ranks share the work as ``shard`` says (``"data"`` or
    ``"checkpoints"``, :mod:`landscape.distributed.sweep`) and only rank 0 uses ``store`` (None elsewhere).
    """
    from landscape.distributed import is_active

    if is_active():  # launched by torchrun (or inside a process group): share the work among the ranks
        from landscape.distributed.sweep import execute_distributed

        return execute_distributed(plan, store=store, run=run, shard=shard, emit=log, lr=lr, recompute=recompute,
                                   reuse=reuse, unsafe=unsafe, progress=progress, lease_ttl=lease_ttl,
                                   poll_seconds=poll_seconds)
    execution = _Execution(plan, store, run, lr, recompute, reuse, unsafe, progress,
                           log or (lambda text: print(text, file=sys.stderr)), Leases(store, lease_ttl), poll_seconds)
    return execution.run()


class _Execution:
    """The state of one :func:`execute_run` call."""

    def __init__(self, plan: RunPlan, store: Store, run: str, lr: float | None, recompute: bool, reuse: bool,
                 unsafe: bool, progress: bool, emit: Callable[[str], None], leases: Leases, poll: float) -> None:
        self.plan, self.store, self.run_name, self.lr = plan, store, run, lr
        self.recompute, self.reuse, self.unsafe, self.progress, self.emit = recompute, reuse, unsafe, progress, emit
        self.leases, self.poll = leases, poll
        self.report = RunReport()
        self.started = time.time()
        self.reasons: Counter[str] = Counter()
        self.deferred: list[tuple[Checkpoint, str, str]] = []
        self.bar = _progress_bar(len(plan.checkpoints) * len(plan.probes), progress)
        self.timing = _Timing(emit, len(plan.checkpoints))
        self.costs_shown = False

    def run(self) -> RunReport:
        self.store.add_run(self.run_name, {"lr": self.lr} if self.lr is not None else {})
        try:
            with self.leases.heartbeat():
                for checkpoint in self.plan.checkpoints:
                    digest = self._digest(checkpoint)
                    if digest is not None:
                        self._measure(checkpoint, digest, self._todo(checkpoint, digest))
                self._wait_for_others()
        finally:
            self.bar.close()
        self._notes()
        return self.report

    def _digest(self, checkpoint: Checkpoint) -> str | None:
        try:
            return sha256(checkpoint.path)
        except OSError as error:
            self._checkpoint_error(checkpoint, list(self.plan.probes), f"checkpoint file {checkpoint.path} cannot be "
                                   f"read ({error.strerror or error}).", release=False)
            return None

    def _todo(self, checkpoint: Checkpoint, digest: str) -> list[str]:
        """The probes to measure at this checkpoint; counts the skipped ones and why others are stale."""
        plan, step, todo, rewritten = self.plan, checkpoint.step, [], False
        for name in plan.probes:
            if not self.recompute and self.store.has_result(self.run_name, step, name, plan.hashes[name], digest):
                self._skip(name)
                continue
            alike = [] if self.recompute else self.store.results_like(self.run_name, step, name, plan.params_hashes[name])
            if alike and self.reuse:
                self.report.reused += 1
                self._skip(name)
                continue
            if any(other["config_hash"] == plan.hashes[name] for other in alike):
                rewritten = True  # same inputs, but the checkpoint file is not the one they were measured on
            elif alike:  # say what differs from the closest stored result
                self.report.stale += 1
                self.reasons.update(min((changed_inputs(o["inputs"], plan.inputs[name]) for o in alike), key=len))
            todo.append(name)
        if rewritten:
            self.emit(f"note: {checkpoint.path} changed since its results were stored; recomputing step {step}.")
        return todo

    def _skip(self, name: str) -> None:
        self.report.skipped += 1
        self.bar.update(1)

    def _measure(self, checkpoint: Checkpoint, digest: str, todo: list[str]) -> None:
        if not todo:
            return
        plan, step = self.plan, checkpoint.step
        mine = self._claim(checkpoint, digest, todo)
        if not mine:
            return
        try:
            self._load(checkpoint)
        except CheckpointError as error:
            self._checkpoint_error(checkpoint, mine, str(error), release=True)
            return
        self.store.add_checkpoint(self.run_name, step, checkpoint.path, digest)
        step_lr = _learning_rate(self.lr, checkpoint, self.unsafe)
        if step_lr is not None and self.lr is None:
            self.store.add_run(self.run_name, {"lr": step_lr})
        optimizer_state = self._optimizer_state(checkpoint) if _wants_optimizer(plan, mine) else None
        if not self.costs_shown:
            self.costs_shown = True
            _print_costs(self.emit, {n: plan.probes[n] for n in mine}, plan.params, plan.model, plan.train,
                         len(plan.checkpoints))
        self.timing.start(step)
        for name in mine:
            self.bar.set_description(f"step {step} · {name}")
            self._run_one(name, checkpoint, digest, step_lr, optimizer_state)
            self.bar.update(1)
        self.timing.done(plan.checkpoints.index(checkpoint))

    def _claim(self, checkpoint: Checkpoint, digest: str, todo: list[str]) -> list[str]:
        """Lease ``todo`` at this checkpoint; the probes this run now holds. Results another process has
        stored meanwhile are counted, the ones it is computing are deferred (:meth:`_wait_for_others`)."""
        claims = self.leases.claim(self.run_name, checkpoint.step, [(n, self.plan.hashes[n]) for n in todo], digest,
                                   done_after=self.started if self.recompute else float("-inf"))
        for name in todo:
            if claims[name] is Claim.DONE:
                self.report.by_other += 1
                self.bar.update(1)
            elif claims[name] is Claim.BUSY:
                self.deferred.append((checkpoint, name, digest))
        return [n for n in todo if claims[n] is Claim.MINE]

    def _load(self, checkpoint: Checkpoint) -> None:
        load_checkpoint(self.plan, checkpoint, self.unsafe)

    def _checkpoint_error(self, checkpoint: Checkpoint, names: list[str], message: str, release: bool) -> None:
        self.report.errors.append(message)
        for name in names:
            self.store.write_error(self.run_name, checkpoint.step, name, message, config=self.plan.hashes[name],
                                   owner=self.leases.owner if release else None)
        self.emit(f"error: {message}")
        self.bar.update(len(names))

    def _optimizer_state(self, checkpoint: Checkpoint) -> SavedOptimizer | None:
        return saved_optimizer(checkpoint, self.unsafe, self.emit)

    def _run_one(self, name: str, checkpoint: Checkpoint, digest: str, lr: float | None,
                 optimizer_state: SavedOptimizer | None = None) -> None:
        partial = self.store.partial(self.run_name, checkpoint.step, name, self.plan.hashes[name])
        self._record(name, checkpoint, digest,
                     compute_one(self.plan, name, checkpoint, lr, optimizer_state, partial=partial,
                                 progress=self.progress, unsafe=self.unsafe, run=self.run_name))

    def _record(self, name: str, checkpoint: Checkpoint, digest: str, outcome: Outcome) -> None:
        """Write one probe's result, or its error, in one transaction (the lease is released with it)."""
        plan, chash = self.plan, self.plan.hashes[name]
        if outcome.result is None:
            self.report.errors.append(outcome.error)
            self.store.write_error(self.run_name, checkpoint.step, name, outcome.error + "\n" + outcome.trace,
                                   config=chash, owner=self.leases.owner)
            self.emit(f"error: {outcome.error}")
            return
        result = outcome.result
        self.store.write_result(self.run_name, checkpoint.step, name, result, config=chash,
                                params_hash=plan.params_hashes[name], inputs=plan.inputs[name],
                                checkpoint_sha256=digest)
        self.report.computed += 1
        if not result.valid:
            self.report.invalid += 1
            self.emit(f"warning: {name} at step {checkpoint.step} stored as invalid: {result.message}")

    def _wait_for_others(self) -> None:
        """Results another process holds a lease on: count them once stored; take over the ones whose
        holder let go without storing them (it failed, or died and its lease expired)."""
        announced = False
        while self.deferred:
            pending, self.deferred = self.deferred, []
            waiting = []
            for checkpoint, name, digest in pending:
                chash = self.plan.hashes[name]
                if self.store.has_result(self.run_name, checkpoint.step, name, chash, digest,
                                         since=self.started if self.recompute else None):
                    self.report.by_other += 1
                    self.bar.update(1)
                elif self.leases.live_holder(self.run_name, checkpoint.step, name, chash):
                    waiting.append((checkpoint, name, digest))
                else:
                    self._measure(checkpoint, digest, [name])
            self.deferred.extend(waiting)
            if waiting:
                if not announced:
                    self.emit(f"waiting for {len(waiting)} result(s) being computed by another process.")
                    announced = True
                time.sleep(self.poll)

    def _notes(self) -> None:
        if self.report.stale:
            what = ", ".join(reason for reason, _ in self.reasons.most_common())
            self.emit(f"note: {self.report.stale} stored result(s) were computed from other inputs ({what}); "
                      "measured again (--reuse keeps stored results whatever they were computed from).")
        if self.report.reused:
            self.emit(f"note: --reuse kept {self.report.reused} stored result(s) computed from other inputs "
                      "(other data, loss, model factory, probe version or checkpoint file); see `landscape ls`.")


@dataclass
class Outcome:
    """One probe at one checkpoint: its result, or the error it raised (message and short traceback)."""

    result: Any = None
    error: str = ""
    trace: str = ""


def compute_one(plan: RunPlan, name: str, checkpoint: Checkpoint, lr: float | None,
                optimizer_state: SavedOptimizer | None, *, partial: Any, progress: bool, unsafe: bool,
                run: str) -> Outcome:
    """Run probe ``name`` on the model as loaded from ``checkpoint``; nothing is written.

    A probe's own failure becomes an :class:`Outcome` with its error (the run goes on); an interrupt, or a
    lost rank of a process group (:class:`~landscape.distributed.DistributedError`), propagates.
    """
    from landscape.distributed import DistributedError
    from landscape.probe import ProbeContext

    device = plan.device
    ctx = ProbeContext(
        model=plan.model, loss_fn=plan.loss_fn, train=plan.train, test=plan.test, device=device,
        step=checkpoint.step, run=run, checkpoints=list(plan.checkpoints),
        load_state=lambda c: read_state_dict(c.path, unsafe=unsafe, map_location=device),
        lr=lr, partial=partial, progress=progress, optimizer_state=optimizer_state,
    )
    try:
        with preserved(plan.model):
            return Outcome(plan.probes[name].run(ctx, **plan.params[name]))
    except (KeyboardInterrupt, DistributedError):
        raise
    except Exception as error:  # one failing probe must not stop the others; every error is reported.
        message = f"probe {name!r} failed at step {checkpoint.step}: {type(error).__name__}: {error}"
        return Outcome(None, message, traceback.format_exc(limit=6))


def load_checkpoint(plan: RunPlan, checkpoint: Checkpoint, unsafe: bool) -> None:
    """Load the checkpoint's weights into the plan's model (a :class:`CheckpointError` if it cannot)."""
    load_into(plan.model, read_state_dict(checkpoint.path, unsafe=unsafe), checkpoint.path)


def saved_optimizer(checkpoint: Checkpoint, unsafe: bool,
                    emit: Callable[[str], None] | None = None) -> SavedOptimizer | None:
    """The optimizer state saved with the checkpoint, if any (a file that cannot be read is noted, not fatal)."""
    try:
        return read_optimizer_state(checkpoint.path, unsafe=unsafe)
    except CheckpointError as error:
        if emit is not None:
            emit(f"note: no optimizer state for step {checkpoint.step}: {error}")
        return None


def _wants_optimizer(plan: RunPlan, names: Sequence[str]) -> bool:
    return any(getattr(plan.probes[n], "uses_optimizer_state", False) for n in names)


def _learning_rate(lr: float | None, checkpoint: Checkpoint, unsafe: bool) -> float | None:
    if lr is not None:
        return float(lr)
    if checkpoint.path.suffix == ".safetensors":
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

