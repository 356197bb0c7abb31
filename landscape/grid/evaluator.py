"""Rows of grid points evaluated over fixed batches, and whole grids with resumable rows.

An :class:`Evaluator` gives the weighted mean loss ``Σ_b n_b·L_b / Σ_b n_b`` (n_b: the samples, or scored
tokens, of batch b; see :mod:`landscape.objective`) and top-1 accuracy for class targets at each point of a row, one point at a time (with the input-layer shortcut of
:mod:`landscape.grid.factoring`) or many points per forward pass under ``torch.func.vmap``.
:func:`evaluate_grid` runs it row by row over a grid, saving each finished row with a fingerprint of the
grid and the plane so that a re-run recomputes only what is missing or stale.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.batch import Batch
from landscape.data import Batches
from landscape.distributed.agreement import local_share
from landscape.distributed.group import all_reduce_sum, broadcast_object, is_main
from landscape.evaluate import LossError, LossFn, autocast_context
from landscape.grid.checks import device_of
from landscape.grid.factoring import FACTOR_BYTES, FACTOR_MIN_FAN_IN, InputLayers
from landscape.grid.movers import Affine, Mover
from landscape.objective import as_objective
from landscape.params import Named, trainable_parameters
from landscape.probe import PartialRows

__all__ = ["VMAP_BYTES", "VMAP_MAX_PARAMS", "Evaluator", "evaluate_grid"]

VMAP_MAX_PARAMS = 5_000_000
"""Largest model (trainable parameters) that ``vectorize="auto"`` evaluates with vmap on CUDA."""
VMAP_BYTES = 512 * 2**20
"""Memory budget for the stacked parameter copies of one vectorized pass (points × parameter bytes)."""


class Evaluator:
    """Evaluates rows of points of a mover over fixed train (and test) batches."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train: Batches,
        test: Batches | None,
        *,
        vectorize: bool | str = "auto",
        points_per_pass: int | None = None,
        autocast_dtype: torch.dtype | None = None,
        factor_input: bool | str = "auto",
    ) -> None:
        if factor_input not in ("auto", True, False):
            raise ValueError(f"factor_input must be 'auto', True or False, got {factor_input!r}.")
        if vectorize not in ("auto", True, False):
            raise ValueError(f"vectorize must be 'auto', True or False, got {vectorize!r}.")
        if points_per_pass is not None and (isinstance(points_per_pass, bool) or not isinstance(points_per_pass, int)
                                            or points_per_pass < 1):
            raise ValueError(f"points_per_pass must be a positive integer or None, got {points_per_pass!r}.")
        self.model, self.loss_fn = model, loss_fn
        self.objective = as_objective(loss_fn, model)
        # Under torch.distributed each rank keeps its shard of the samples; rows are summed over the ranks.
        shares = [(prefix, local_share(data))
                  for prefix, data in [("", train)] + ([("test_", test)] if test is not None else [])]
        self.summed = any(summed for _, (_, summed) in shares)
        self.sets = [(prefix, Batches(tuple(b for b in data if self.objective.weight(b) > 0), data.spec))
                     for prefix, (data, _) in shares]
        for prefix, data in self.sets:
            if not len(data):
                raise LossError(f"the {'test' if prefix else 'train'} data has no target to score "
                                "(every target equals ignore_index).")
        self.weights = {prefix: [self.objective.weight(b) for b in data] for prefix, data in self.sets}
        # the full-data weight of each set (over all ranks): the denominators of the mean losses
        local_totals = [float(sum(self.weights[prefix])) for prefix, _ in self.sets]
        totals = _summed_over_ranks(local_totals, "the grid's data weight") if self.summed else local_totals
        self.totals = {prefix: total for (prefix, _), total in zip(self.sets, totals)}
        self.counts: dict[str, list[int]] = {}
        self.device = device_of(model)
        self.autocast_dtype = autocast_dtype
        n_params = sum(p.numel() for p in trainable_parameters(model).values())
        bytes_per_point = max(1, sum(p.numel() * p.element_size() for p in trainable_parameters(model).values()))
        self.points_per_pass = points_per_pass or max(1, min(32, VMAP_BYTES // bytes_per_point))
        if vectorize == "auto":
            self.vectorize = self.device.type == "cuda" and n_params <= VMAP_MAX_PARAMS
            self.strict = False
        else:
            self.vectorize, self.strict = bool(vectorize), True
        self._batched: Callable[..., Any] | None = None
        self._has_accuracy: list[bool] = []
        self._vmap_counts: list[int] = []
        # Input-layer factoring changes rounding only; it is left out under autocast (other rounding).
        self.factor_input = factor_input if autocast_dtype is None else False
        self._factored: dict[int, InputLayers | None] = {}

    # one point at a time ------------------------------------------------------------------------
    def _input_layers(self, mover: Mover) -> InputLayers | None:
        if self.factor_input is False or not isinstance(mover, Affine):
            return None
        if id(mover) not in self._factored:
            self._factored[id(mover)] = InputLayers.prepare(
                self.model, mover, self.sets, min_fan_in=FACTOR_MIN_FAN_IN if self.factor_input == "auto" else 1,
                budget=FACTOR_BYTES)
        return self._factored[id(mover)]

    def _loop(self, mover: Mover, coords: Sequence[Sequence[float]]) -> dict[str, torch.Tensor | None]:
        """Loss sums and correct counts per point, one point at a time. Per-batch losses stay on the
        device and are weighted and summed once per row (no per-point host sync or bookkeeping ops)."""
        losses: dict[str, list[torch.Tensor]] = {prefix: [] for prefix, _ in self.sets}
        corrects: dict[str, list[torch.Tensor] | None] = {prefix: [] for prefix, _ in self.sets}
        layers = self._input_layers(mover)
        with layers.patched() if layers is not None else nullcontext():
            for c in coords:
                if layers is None:
                    mover.write(c)
                else:
                    mover.write(c, skip=layers.skipped)
                    layers.coords = c
                for prefix, batches in self.sets:
                    counts: list[int] = []
                    for index, batch in enumerate(batches):
                        if layers is not None:
                            layers.batch = (prefix, index)
                        outputs = self.objective.forward(self.model, batch)
                        losses[prefix].append(self.objective.loss(outputs, batch))
                        counted = corrects[prefix]
                        if counted is not None:
                            hits = self.objective.correct(outputs, batch)
                            if hits is None:
                                corrects[prefix] = None
                            else:
                                counted.append(hits[0])
                                counts.append(hits[1])
                    self.counts[prefix] = counts
        sums: dict[str, torch.Tensor | None] = {}
        for prefix, batches in self.sets:
            shape = (len(coords), len(batches))
            sizes = torch.tensor(self.weights[prefix], dtype=torch.float64, device=self.device)
            sums[prefix + "loss"] = (torch.stack(losses[prefix]).detach().double().view(shape) * sizes).sum(1)
            counted = corrects[prefix]
            sums[prefix + "accuracy"] = None if counted is None else torch.stack(counted).view(shape).sum(1)
        return sums

    # many points per forward pass ----------------------------------------------------------------
    def _make_batched(self) -> Callable[..., Any]:
        from torch.func import functional_call, vmap

        model, objective, flags, counts = self.model, self.objective, self._has_accuracy, self._vmap_counts

        def one_point(params: Named, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
            outputs = objective.forward(lambda *a, **k: functional_call(model, params, a, k), batch)
            loss = objective.loss(outputs, batch)
            hits = objective.correct(outputs, batch)  # decided from dtypes and shapes while tracing: no host sync
            flags.append(hits is not None)
            if hits is None:
                return loss, torch.zeros((), dtype=torch.int64, device=loss.device)
            counts.append(hits[1])
            return loss, hits[0]

        def batched(params: Named, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
            return vmap(lambda p: one_point(p, batch), in_dims=(0,))(params)

        return batched

    def _vectorized(self, mover: Mover,
                    coords: Sequence[Sequence[float]]) -> dict[str, torch.Tensor | None]:
        if self._batched is None:
            self._batched = self._make_batched()
        parts: dict[str, list] = {}
        for start in range(0, len(coords), self.points_per_pass):
            chunk = coords[start : start + self.points_per_pass]
            params = mover.stacked(chunk)
            for prefix, batches in self.sets:
                total = torch.zeros(len(chunk), dtype=torch.float64, device=self.device)
                correct: torch.Tensor | None = torch.zeros(len(chunk), dtype=torch.int64, device=self.device)
                counts: list[int] = []
                for batch, weight in zip(batches, self.weights[prefix]):
                    self._has_accuracy.clear()
                    self._vmap_counts.clear()
                    loss, c = self._batched(params, batch)
                    total += loss.detach().double() * weight
                    counts.extend(self._vmap_counts[:1])
                    correct = None if correct is None or not all(self._has_accuracy) else correct + c
                self.counts[prefix] = counts
                parts.setdefault(prefix + "loss", []).append(total)
                parts.setdefault(prefix + "accuracy", []).append(correct)
        return {key: None if any(v is None for v in values) else torch.cat(values) for key, values in parts.items()}

    def row(self, mover: Mover, coords: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        """Mean loss/accuracy (train and test) at each point of ``coords``, as float64 arrays."""
        with torch.inference_mode(), autocast_context(self.device, self.autocast_dtype):
            if self.vectorize:
                try:
                    sums = self._vectorized(mover, coords)
                except LossError:
                    raise
                except Exception as error:  # vmap cannot trace every model; "auto" falls back to the loop.
                    if self.strict:
                        raise RuntimeError(
                            f"vectorize=True failed: this model or loss cannot run under torch.func.vmap "
                            f"({type(error).__name__}: {error}); use vectorize=False."
                        ) from error
                    warnings.warn(f"vectorized slices unavailable ({type(error).__name__}); using the loop.",
                                  RuntimeWarning, stacklevel=3)
                    self.vectorize = False
                    sums = self._loop(mover, coords)
            else:
                sums = self._loop(mover, coords)
        values: dict[str, np.ndarray] = {}
        counted: dict[str, float] = {}
        for prefix, _ in self.sets:
            loss = sums[prefix + "loss"]
            assert loss is not None
            values[prefix + "loss"] = loss.cpu().numpy()
            acc = sums[prefix + "accuracy"]
            if acc is not None:
                values[prefix + "accuracy"] = acc.cpu().numpy().astype(np.float64)
                counted[prefix] = float(sum(self.counts.get(prefix, [])))
        if self.summed:
            values, counted = self._reduce_row(values, counted)
        out: dict[str, np.ndarray] = {}
        for prefix, _ in self.sets:
            out[prefix + "loss"] = values[prefix + "loss"] / self.totals[prefix]
            if prefix + "accuracy" in values and counted.get(prefix):
                out[prefix + "accuracy"] = values[prefix + "accuracy"] / counted[prefix]
        return out

    def _reduce_row(self, values: dict[str, np.ndarray],
                    counted: dict[str, float]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The ranks' loss sums, correct counts and counted samples of one row, summed (one collective)."""
        keys, count_keys = sorted(values), sorted(counted)
        flat = np.concatenate([values[k] for k in keys] + [np.array([counted[k] for k in count_keys])])
        total = np.asarray(_summed_over_ranks(flat.tolist(), "a row of the grid"))
        out, offset = {}, 0
        for key in keys:
            size = values[key].size
            out[key] = total[offset : offset + size]
            offset += size
        return out, {key: float(total[offset + i]) for i, key in enumerate(count_keys)}


def _summed_over_ranks(values: Sequence[float], what: str) -> list[float]:
    """Element-wise sums of ``values`` over the ranks, in float64."""
    return all_reduce_sum(torch.tensor(list(values), dtype=torch.float64), what).tolist()


def evaluate_grid(
    evaluator: Evaluator,
    mover: Mover,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    partial: PartialRows | None = None,
    row_offset: int = 0,
    progress: bool = False,
    label: str = "slice",
) -> dict[str, np.ndarray]:
    """Evaluate every point of the grid (one row per ``y`` value; ``y=None`` is a single 1-D row).

    Finished rows are saved to ``partial`` (under index ``row_offset + j``) and loaded on a re-run;
    saved rows whose fingerprint (grid coordinates and plane identity) differs are recomputed.
    """
    rows_y = [None] if y is None else list(y)
    sizes = [evaluator.totals[p] for p, _ in evaluator.sets] + [0.0] * (3 - len(evaluator.sets))
    base_print = np.concatenate([[len(x), x[0], x[-1], len(rows_y)], sizes, mover.fingerprint()])
    done: dict[int, dict[str, np.ndarray]] = {}
    if partial is not None:
        stale = 0
        for index, arrays in partial.load().items():
            j = index - row_offset
            if not 0 <= j < len(rows_y):
                continue
            expected = np.concatenate([[j, 0.0 if rows_y[j] is None else rows_y[j]], base_print])
            saved = arrays.get("fingerprint")
            if saved is not None and saved.shape == expected.shape and np.array_equal(saved, expected):
                done[j] = {k: v for k, v in arrays.items() if k != "fingerprint"}
            else:
                stale += 1
        if stale:
            warnings.warn(f"{stale} saved row(s) belong to another grid or model and are recomputed.",
                          RuntimeWarning, stacklevel=3)
    if evaluator.summed:  # ranks evaluate rows together: all skip the rows rank 0 (the store's writer) has
        done = broadcast_object(done if is_main() else None, "loading the grid's saved rows")
        progress = progress and is_main()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows_y) * len(x), initial=len(done) * len(x), unit="pt", desc=label, leave=False)
    results: list[dict[str, np.ndarray]] = []
    try:
        for j, yj in enumerate(rows_y):
            if j in done:
                results.append(done[j])
                continue
            coords = [(float(xi),) if yj is None else (float(xi), float(yj)) for xi in x]
            arrays = evaluator.row(mover, coords)
            if partial is not None and (is_main() or not evaluator.summed):
                fingerprint = np.concatenate([[j, 0.0 if yj is None else yj], base_print])
                partial.save(row_offset + j, {**arrays, "fingerprint": fingerprint})
            results.append(arrays)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
    keys = sorted(results[-1])
    for j, r in enumerate(results):
        if sorted(r) != keys or any(np.shape(r[k]) != (len(x),) for k in keys):
            raise ValueError(f"saved row {row_offset + j} does not match the grid (keys {sorted(r)}); "
                             "clear the partial rows and run again.")
    return {k: np.stack([r[k] for r in results]) for k in keys}
