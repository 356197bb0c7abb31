"""The :class:`Monitor`: cheap scalars and registered probes written into a run store during training.

The training thread measures; on a fast loop the records are finished a batch at a time (``pending.py``:
their logit sums reduced together, one transfer), and they go to a background writer (``writer.py``) that
commits them in batches, so a reader follows the run live (about ``linger`` seconds behind) and the
training thread never waits for SQLite. Everything pending or queued is committed at ``flush``/``close``
and at interpreter exit; only a crash of the process loses the records not yet committed. Under ``torch.distributed`` only rank 0
opens and writes the store. Measuring leaves the training state exactly as it was (weights, buffers,
modes, gradients, optimizer state, random number generators); a failing probe or store write is recorded
or warned about once, and training goes on. The package docstring (``landscape.callbacks``) lists what
each record holds.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from landscape.callbacks.cadence import Cadence
from landscape.callbacks.loss_guard import MeanLossGuard
from landscape.callbacks.pending import PendingRecords, RecordScalars
from landscape.callbacks.scalars import Gather, _float_dtype, add_logits, add_norms, read_lr
from landscape.callbacks.sinks import SinkSet
from landscape.callbacks.state import _device_of, _eval_mode, rng_preserved
from landscape.callbacks.writer import WRITE_ERRORS, Record, StoreWriter, writes_here
from landscape.checkpoints import Checkpoint, sha256
from landscape.data import Batches, as_batches
from landscape.evaluate import LossError, LossFn, check_scalar_loss, evaluate
from landscape.objective import Objective, as_objective, find_logits, find_model_loss
from landscape.params import preserved

if TYPE_CHECKING:
    from landscape.probe import Probe, Result
    from landscape.store import Store

__all__ = ["MONITOR_PROBE", "Monitor", "rng_preserved"]

MONITOR_PROBE = "monitor"


# -- the monitor ------------------------------------------------------------------------------------------
@dataclass
class _ProbeSpec:
    name: str
    probe: Probe
    params: dict[str, Any]
    config: str
    cadence: Cadence
    warned: bool = False


@dataclass
class _MemoryCheckpoint:
    """The weights at the previous probe step, kept in memory when no checkpoint files are written."""

    step: int
    state: dict[str, torch.Tensor] = field(default_factory=dict)


class Monitor:
    """Log cheap training scalars and run registered probes during training, into a run store.

    ``store``: a path (opened once, closed by :meth:`close`) or an open ``landscape.store.Store``.
    ``data``/``test_data``: any accepted data argument (materialized once; ``max_samples`` keeps a fixed
    seeded subset for the probes, ``subset_size`` the one for the cheap forward pass). ``loss_fn`` returns
    the mean loss of a batch. ``save_checkpoints`` writes ``step_XXXXXXX.pt`` files (state dicts) to
    ``checkpoint_dir`` at every probe step (and every ``checkpoint_every`` steps if given) and registers
    them in the store; otherwise the weights of the previous probe step are kept in memory
    (``keep_previous``) so trajectory quantities (feature change) still work. ``probe_device`` runs the
    probes on a copy of the model on that device. ``sc_dtype``: the softmax dtype whose collapse
    ``sc_fraction`` counts. ``sync`` sets the store connection's commit durability (``"normal"``: a
    committed batch survives a crash of the training process, only an OS crash or power loss may drop
    the latest ones — several times cheaper per commit than ``"full"``; None leaves the store as it is).
    ``sinks``: objects that also receive every scalar recorded, as ``(name, value, step)``, and the
    histograms (see :mod:`landscape.callbacks.sinks`); a failing sink warns once.

    Records are written by a background thread (:class:`~landscape.callbacks.writer.StoreWriter`):
    ``max_pending`` bounds its queue (a full queue makes ``step`` wait, it never drops a record) and
    ``linger`` is about the longest a record waits to be finished and committed with others (while records
    arrive faster than that, they are measured in part at their step and finished together: see
    :mod:`landscape.callbacks.pending`). The store is opened at the first
    ``step`` (or the first read of :attr:`store`), once a ``torch.distributed`` process group, if any, is
    up: on ranks other than 0 it is never opened and the sinks are not fed, though every rank measures
    and runs the probes alike (a model's collectives stay matched).
    """

    def __init__(
        self,
        store: Store | str | Path,
        run: str,
        probes: Mapping[str, Mapping[str, Any] | None] | Sequence[str] | None = None,
        every: int = 10,
        data: object | None = None,
        loss_fn: LossFn | None = None,
        test_data: object | None = None,
        *,
        probe_every: int = 100,
        schedule: str = "linear",
        points_per_decade: int = 10,
        test_every: int | None = None,
        save_checkpoints: bool = False,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        keep_previous: bool = True,
        probe_device: str | torch.device | None = None,
        subset_size: int = 512,
        max_samples: int | None = None,
        sc_dtype: torch.dtype | str = "float32",
        label: str | None = None,
        meta: Mapping[str, Any] | None = None,
        seed: int = 0,
        sync: str | None = "normal",
        sinks: Sequence[Any] | None = None,
        max_pending: int = 1024,
        linger: float = 0.05,
    ) -> None:
        from landscape.store import Store

        if not isinstance(run, str) or not run:
            raise ValueError(f"run must be a non-empty string naming the run, got {run!r}.")
        if loss_fn is not None and not callable(loss_fn) and loss_fn != "model" and not isinstance(loss_fn, Objective):
            raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}.")
        if not isinstance(subset_size, int) or subset_size < 1:
            raise ValueError(f"subset_size must be a positive integer, got {subset_size!r}.")
        self.run = run
        self.sinks = SinkSet(sinks)
        self.loss_fn = loss_fn
        self.cadence = Cadence(every)
        self.test_cadence = Cadence(test_every if test_every is not None else every)
        self.sc_dtype = _float_dtype(sc_dtype)
        self.subset_size = subset_size
        self.max_samples = max_samples
        self.seed = seed
        self.probe_device = None if probe_device is None else torch.device(probe_device)
        self.keep_previous = keep_previous
        self._data = None if data is None else as_batches(data, name="data")
        self._test = None if test_data is None else as_batches(test_data, name="test data")
        self._batches: dict[tuple[str, str], Batches] = {}
        self._specs = self._resolve_probes(probes, probe_every, schedule, points_per_decade)
        from landscape.probe import needs_data

        hungry = [s.name for s in self._specs if needs_data(s.probe)]
        if hungry and (self._data is None or loss_fn is None):
            raise ValueError(f"the probe(s) {', '.join(hungry)} need training data and a loss: pass data= and "
                             "loss_fn= (data-free probes such as weights run without them).")
        self.save_checkpoints = bool(save_checkpoints)
        self.checkpoint_cadence = None if checkpoint_every is None else Cadence(checkpoint_every)
        if isinstance(store, Store):
            if store.readonly:
                raise ValueError(f"store {store.path} is open read-only; the monitor needs to write.")
            self._store, self._store_path, self._owns_store = store, store.path, False
        elif isinstance(store, (str, Path)):
            self._store, self._store_path, self._owns_store = None, Path(store), True
        else:
            raise TypeError(f"store must be a path or a landscape.store.Store, got {type(store).__name__}.")
        if sync is not None and str(sync).upper() not in ("FULL", "NORMAL"):
            raise ValueError(f"sync must be 'normal', 'full' or None, got {sync!r}.")
        self._sync = sync
        self._writer_options = {"max_pending": max_pending, "linger": linger}
        StoreWriter.check_options(**self._writer_options)
        self._writer: StoreWriter | None = None
        self._writes: bool | None = None  # decided at the first step: False on ranks other than 0
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else (
            self._store_path.parent / "checkpoints" / _safe_name(run)
        )
        self._checkpoints: list[Checkpoint] = []
        self._previous: _MemoryCheckpoint | None = None
        self._lr: float | None = None
        self._warned: set[str] = set()
        self._wake = -(2**63)  # no step is skipped before the first call
        self._loss_guard = MeanLossGuard(loss_fn)
        self._pending = PendingRecords(self._emit_record, lambda step, message: self._fail(MONITOR_PROBE, step, message),
                                       linger=linger)
        from landscape.store import config_hash

        self._record_params = {"every": self.cadence.every, "sc_dtype": str(self.sc_dtype)}
        self._record_config = config_hash(MONITOR_PROBE, self._record_params)  # hashed once, not per record
        self._run_meta: dict[str, Any] = {
            "monitor_every": every,
            "probes": {s.name: s.params for s in self._specs},
            **dict(meta or {}),
        }
        if label is not None:
            self._run_meta["label"] = label

    # -- the store, opened on first use ------------------------------------------------------------------
    def _open(self) -> bool:
        """Open the store and start its writer on the first call (the rank is known by then); True where
        this process writes."""
        if self._writes is None:
            self._writes = writes_here()
            if self._writes:
                from landscape.store import Store

                if self._store is None:
                    self._store = Store(self._store_path)
                if self._sync is not None:
                    self._store.set_synchronous(self._sync)
                self._store.add_run(self.run, self._run_meta)
                self._writer = StoreWriter(self._store, self._warn_once, **self._writer_options)
                self._writer.before_exit = self._pending.finish  # records still pending at interpreter exit
        return self._writes

    @property
    def store(self) -> Store | None:
        """The run store (opened here if no step has opened it yet); every record queued so far is
        committed before it is returned, so what is read from it is up to date. None on a rank other
        than 0 that was given a path (it never opens the store)."""
        if self._open():
            self._pending.finish()
            self._commit_queued()
        return self._store

    def _commit_queued(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.report()

    def _write(self, what: str, step: int | None, write: Callable[[Store], object],
               together: Callable[[Store, list[Any]], object] | None = None, item: Any = None) -> None:
        """Queue one store write for the background writer (nothing on ranks that do not write);
        ``together``/``item``: see :class:`Record` (records written with their neighbours in one call)."""
        if self._writer is not None:
            self._writer.put(Record(what, step, write, atomic=True, together=together, item=item))

    def _write_records(self, store: Store, items: list[tuple[int, Result]]) -> None:
        """Many monitor records at once (the writer's ``together`` call for them)."""
        store.write_results(self.run, MONITOR_PROBE, items, config=self._record_config,
                            params_hash=self._record_config)

    # -- setup -----------------------------------------------------------------------------------------
    @staticmethod
    def _resolve_probes(probes: object, probe_every: int, schedule: str, points_per_decade: int) -> list[_ProbeSpec]:
        if probes is None:
            return []
        from landscape.probe import get, resolve_params
        from landscape.store import config_hash

        if isinstance(probes, str):
            probes = [probes]
        if isinstance(probes, Mapping):
            items = [(str(k), dict(v or {})) for k, v in probes.items()]
        elif isinstance(probes, Sequence):
            items = [(str(k), {}) for k in probes]
        else:
            raise TypeError(f"probes must be a dict {{name: params}} or a list of names, got {type(probes).__name__}.")
        specs = []
        for name, params in items:
            if name == MONITOR_PROBE:
                raise ValueError(f"{MONITOR_PROBE!r} is the monitor's own record; it cannot be registered as a probe.")
            probe = get(name)
            cadence = Cadence(
                int(params.pop("every", probe_every)), str(params.pop("schedule", schedule)), points_per_decade
            )
            resolved = resolve_params(probe, params)
            specs.append(_ProbeSpec(name, probe, resolved, config_hash(name, resolved), cadence))
        return specs

    def _on(self, data: Batches, device: torch.device, which: str, max_samples: int | None) -> Batches:
        key = (which, str(device))
        if key not in self._batches:
            self._batches[key] = as_batches(data, device=device, max_samples=max_samples, seed=self.seed)
        return self._batches[key]

    # -- the per-step entry point ------------------------------------------------------------------------
    def step(
        self,
        model: nn.Module,
        step: int,
        optimizer: object | None = None,
        loss: torch.Tensor | float | None = None,
        outputs: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        *,
        force: bool = False,
    ) -> Mapping[str, float] | None:
        """Record what is due at ``step`` (with ``force``, everything not yet recorded at this very step);
        returns the monitor scalars recorded, if any (a mapping measured at this step and finished when
        first read: see :mod:`landscape.callbacks.pending`).

        Call it after the optimizer step of iteration ``step``. ``loss``, ``outputs`` and ``targets`` are
        the ones the training step just computed (optional; they save a forward pass).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        step = int(step)
        if not force and step < self._wake:  # the common case: nothing due, return at once
            if self._pending.stale():
                self._pending.finish()
            return None
        # force skips what already ran at this step (e.g. a train-end call after the last batch's): a re-run
        # would replace those records, without the previous-step trajectory quantities and the batch loss
        cheap = self.cadence.due(step) or (force and not self.cadence.ran_at(step))
        due = [s for s in self._specs if s.cadence.due(step) or (force and not s.cadence.ran_at(step))]
        save = self.save_checkpoints and (bool(due) or (self.checkpoint_cadence is not None and self.checkpoint_cadence.due(step)))
        if not (cheap or due or save):
            self._wake = self._first_due(step)
            return None
        writes = self._open()
        lr = read_lr(optimizer)
        if lr is not None and lr != self._lr:
            self._write("the learning rate", step, lambda store: store.add_run(self.run, {"lr": lr}))
            self._lr = lr
        written = None
        if cheap:
            self.cadence.mark(step)
            written = self._record_monitor(model, step, optimizer, loss, outputs, targets, force)
        if save and writes:  # rank 0 writes the files; the weights are the same on every rank
            self._save_checkpoint(model, step)
        if due:
            self._pending.finish()  # the records before a probe's, in step order
            with rng_preserved():
                self._run_probes(model, step, due, optimizer)
        self._wake = self._first_due(step + 1)
        if self._writer is not None:
            self._writer.report()
        return written

    def _first_due(self, step: int) -> int:
        cadences = [self.cadence, *(s.cadence for s in self._specs)]
        if self.save_checkpoints and self.checkpoint_cadence is not None:
            cadences.append(self.checkpoint_cadence)
        return min(c.first_due(step) for c in cadences)

    # -- cheap scalars -------------------------------------------------------------------------------------
    def _record_monitor(self, model: nn.Module, step: int, optimizer: object | None, loss: object,
                        outputs: torch.Tensor | None, targets: torch.Tensor | None, force: bool) -> RecordScalars | None:
        try:
            gather = self._monitor_scalars(model, step, optimizer, loss, outputs, targets, force)
        except Exception as error:  # a broken measurement must not stop training
            self._fail(MONITOR_PROBE, step, f"{type(error).__name__}: {error}")
            return None
        return self._pending.add(step, gather, now=force)

    def _emit_record(self, step: int, scalars: dict[str, float]) -> None:
        """Write one finished record and feed it to the sinks."""
        from landscape.probe import Result

        bad = sorted(k for k, v in scalars.items() if not math.isfinite(v))
        result = Result(scalars=scalars, params=self._record_params)
        if bad:
            result.valid, result.message = False, f"non-finite: {', '.join(bad)}"
            self._warn_once(MONITOR_PROBE, f"monitor scalars are not finite at step {step} ({', '.join(bad)}).")
        self._write("the monitor scalars", step, lambda store: store.write_result(
            self.run, step, MONITOR_PROBE, result, config=self._record_config, params_hash=self._record_config),
            together=self._write_records, item=(step, result))
        if self._writes:
            self.sinks.record(MONITOR_PROBE, scalars, step)

    def _monitor_scalars(self, model: nn.Module, step: int, optimizer: object | None, loss: object,
                         outputs: torch.Tensor | None, targets: torch.Tensor | None, force: bool) -> Gather:
        """The record's values, left on the device where they are measured (one transfer for all, later);
        small logits are kept to be reduced with other records' unless ``force``."""
        scalars = Gather()
        lr = read_lr(optimizer)
        if lr is not None:
            scalars.add("lr", lr)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad for p in params if p.grad is not None]
        add_norms(scalars, {"grad_norm": grads, "weight_norm": params} if grads else {"weight_norm": params})
        if outputs is not None:
            if loss is None:
                loss = find_model_loss(outputs)
            logits = find_logits(outputs)
            if loss is None and targets is not None and callable(self.loss_fn):
                self._loss_guard.check(logits.detach(), targets)
                with rng_preserved(), torch.no_grad():
                    loss = check_scalar_loss(self.loss_fn(logits.detach(), targets))
            add_logits(scalars, logits, targets, self.sc_dtype, keep=not force)
        elif self._data is not None:
            measured = self._forward_subset(model, scalars, keep=not force)
            if loss is None:
                loss = measured
        if isinstance(loss, torch.Tensor) and loss.device.type == "cpu":  # read now: no wait on the CPU
            scalars.add("train_loss", loss.item())
        elif isinstance(loss, torch.Tensor):  # a copy: the record may be finished after the next step
            scalars.add("train_loss", loss.detach().clone())
        elif loss is not None:
            scalars.add("train_loss", float(loss))
        if self._test is not None and self.loss_fn is not None and (force or self.test_cadence.due(step)):
            self.test_cadence.mark(step)
            test_data = self._on(self._test, _device_of(model), "test", None)
            with rng_preserved(), _eval_mode(model):
                self._loss_guard.check_on(model, test_data)
                test = evaluate(model, self.loss_fn, test_data)
            scalars.add("test_loss", test.loss)
            if test.accuracy is not None:
                scalars.add("test_accuracy", test.accuracy)
        return scalars

    def _forward_subset(self, model: nn.Module, scalars: Gather, keep: bool) -> float | None:
        """One forward pass over the fixed subset: its logit scalars onto ``scalars``; returns its mean loss."""
        assert self._data is not None
        subset = self._on(self._data, _device_of(model), "subset", self.subset_size)
        objective = as_objective(self.loss_fn if self.loss_fn is not None else _no_loss, model)
        with rng_preserved(), _eval_mode(model), torch.inference_mode():
            logits, targets, total, weights = [], [], 0.0, 0.0
            for batch in subset:
                outputs = batch.feed(model, with_targets=objective.uses_model_loss)
                found = objective.logits(outputs)
                view = objective.class_view(found, batch.targets)
                logits.append(found.reshape(-1, found.shape[-1]) if view is None else view[0])
                targets.append(batch.targets.reshape(-1) if view is None else view[1])
                if callable(self.loss_fn) and not self._loss_guard.confirmed:
                    self._loss_guard.check(found, batch.targets)
                weight = objective.weight(batch)
                if self.loss_fn is not None and weight:
                    total += float(objective.loss(outputs, batch)) * weight
                    weights += weight
            flat = torch.cat(targets)
            add_logits(scalars, torch.cat(logits), flat if flat.numel() == sum(len(x) for x in logits) else None,
                       self.sc_dtype, keep=keep)
        return total / weights if weights else None

    # -- registered probes -----------------------------------------------------------------------------------
    def _run_probes(self, model: nn.Module, step: int, due: list[_ProbeSpec], optimizer: object | None = None) -> None:
        from landscape.probe import ProbeContext

        device = self.probe_device or _device_of(model)
        optimizer_state: object | None = None
        if isinstance(optimizer, torch.optim.Optimizer) and any(getattr(s.probe, "uses_optimizer_state", False)
                                                                for s in due):
            from landscape.preconditioner import named_state_dict

            # a probe copy of the model on another device is not the model the optimizer holds: map by name
            optimizer_state = optimizer if self.probe_device is None else named_state_dict(model, optimizer)
        checkpoints, load_state = self._trajectory(model, step, device)
        # Only data-free probes are registered when there is no data; they get an empty set of batches.
        train = Batches(()) if self._data is None else self._on(self._data, device, "probe", self.max_samples)
        test = None if self._test is None else self._on(self._test, device, "probe-test", self.max_samples)
        if self.probe_device is not None:
            target = copy.deepcopy(model).to(device)
            target.eval()
            context = preserved(target)
        else:
            target, context = model, preserved(model)
        try:
            self._loss_guard.check_on(target, train)
        except LossError as error:
            for spec in due:
                spec.cadence.mark(step)
                self._fail(spec.name, step, f"LossError: {error}", spec.config)
            return
        with context:
            for spec in due:
                spec.cadence.mark(step)
                ctx = ProbeContext(
                    model=target, loss_fn=self.loss_fn, train=train, test=test,  # type: ignore[arg-type]
                    device=device, step=step, run=self.run, checkpoints=checkpoints, load_state=load_state,
                    lr=self._lr, progress=False,
                    partial=None if self._writer is None else self._store.partial(self.run, step, spec.name, spec.config),
                    optimizer_state=optimizer_state,
                )
                self._run_one(spec, ctx, step)
        if not self.save_checkpoints and self.keep_previous:
            self._previous = _MemoryCheckpoint(step, {k: v.detach().clone() for k, v in target.state_dict().items()})

    def _run_one(self, spec: _ProbeSpec, ctx: Any, step: int) -> None:
        try:
            result: Result = spec.probe.run(ctx, **copy.deepcopy(spec.params))
        except Exception as error:  # a failing probe is recorded; training goes on
            self._fail(spec.name, step, f"{type(error).__name__}: {error}", spec.config)
            return
        if not result.params:
            result.params = dict(spec.params)
        if result.has_nonfinite():
            bad = sorted(k for k, v in result.scalars.items() if not math.isfinite(v))
            result.valid = False
            result.message = f"non-finite scalars: {', '.join(bad)}"
        self._write(f"probe {spec.name!r}", step,
                    lambda store: store.write_result(self.run, step, spec.name, result, config=spec.config))
        if result.valid:
            if self._writes:
                self.sinks.record(spec.name, result.scalars, step, result.arrays)
        else:
            self._fail(spec.name, step, result.message or "invalid result", spec.config)

    def _trajectory(self, model: nn.Module, step: int, device: torch.device) -> tuple[list[Checkpoint], Callable | None]:
        if self.save_checkpoints:
            from landscape.checkpoints import load_checkpoint

            def load_file(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
                return load_checkpoint(checkpoint.path, map_location=device)

            return list(self._checkpoints), load_file
        if self._previous is None:
            return [], None
        previous = self._previous
        here = Checkpoint(step, Path(f"<memory>/step_{step:07d}"))
        kept = Checkpoint(previous.step, Path(f"<memory>/step_{previous.step:07d}"))

        def load_memory(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
            if checkpoint.step == previous.step:
                return {k: v.to(device) for k, v in previous.state.items()}
            if checkpoint.step == step:
                return {k: v.detach().clone().to(device) for k, v in model.state_dict().items()}
            raise KeyError(f"no weights kept in memory for step {checkpoint.step}.")

        return [kept, here], load_memory

    def _save_checkpoint(self, model: nn.Module, step: int) -> None:
        """Write the weights file here (the weights change with the next step) and queue its registration;
        a file that cannot be written warns once and training goes on."""
        if self.checkpoint_cadence is not None and self.checkpoint_cadence.due(step):
            self.checkpoint_cadence.mark(step)
        if any(c.step == step for c in self._checkpoints):
            return
        path = self.checkpoint_dir / f"step_{step:07d}.pt"
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".pt.tmp")
            torch.save({"state_dict": model.state_dict(), "step": step}, temporary)
            temporary.replace(path)
            digest = sha256(path)
        except WRITE_ERRORS as error:
            self._warn_once("store: the checkpoint", f"could not write the checkpoint at step {step} "
                                                     f"({type(error).__name__}: {error}); training continues without it.")
            return
        self._write("the checkpoint", step, lambda store: store.add_checkpoint(self.run, step, path, digest))
        self._checkpoints.append(Checkpoint(step, path))

    # -- failures ------------------------------------------------------------------------------------------
    def _fail(self, probe: str, step: int, message: str, config: str | None = None) -> None:
        self._write(f"the error of probe {probe!r}", step,
                    lambda store: store.write_error(self.run, step, probe, message, config=config))
        self._warn_once(probe, f"probe {probe!r} failed at step {step}: {message} (recorded in the store; "
                               "training continues, further failures are recorded silently).")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # -- lifetime ---------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Finish and commit every pending record (reporting failed writes) and flush the sinks."""
        self._pending.finish()
        self._commit_queued()
        if self._writes:
            self.sinks.flush()

    def close(self) -> None:
        """Commit every queued record and stop the writer; close the sinks, and the store if the monitor
        opened it. A monitor that never stepped still registers its run (on the rank that writes)."""
        if self._writes is None:
            self._open()
        self._pending.finish()
        if self._writer is not None:
            self._writer.close()
            self._writer.report()
            self._writer = None
        if self._writes:
            self.sinks.close()
        if self._owns_store and self._store is not None:
            self._store.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _no_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Stands in for a missing loss function: the monitor then measures logits only."""
    return logits.new_zeros(())


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# -- shared by the framework adapters ---------------------------------------------------------------------
def _monitor_from(monitor: Monitor | None, kwargs: dict[str, Any], what: str) -> Monitor:
    if monitor is not None:
        if kwargs:
            raise ValueError(f"{what}: pass either monitor= or the Monitor arguments, not both.")
        if not isinstance(monitor, Monitor):
            raise TypeError(f"{what}: monitor must be a landscape.callbacks.Monitor, got {type(monitor).__name__}.")
        return monitor
    return Monitor(**kwargs)
