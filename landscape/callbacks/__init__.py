"""Watch a training run live: cheap scalars every few steps, registered probes on their own cadence.

:class:`Monitor` is called from any training loop (``monitor.step(model, step, ...)``) and writes into a
run store through a background writer that commits the records in batches (``writer``), so the dashboard
follows the run while it trains (about ``linger`` seconds behind), the training thread never waits for
SQLite, and only a crash of the process loses the records not yet committed. On a fast loop the records
are finished a batch at a time (``pending``). Under ``torch.distributed``
only rank 0 writes. Two kinds of records:

* ``monitor`` (every ``every`` steps, cheap): ``train_loss`` (the loss passed in, else measured), ``lr``
  (read from the optimizer), ``grad_norm`` (from the ``.grad`` already there — no extra backward),
  ``weight_norm``, ``logit_norm``, ``max_logit_mean``, ``sc_fraction`` and ``train_accuracy`` (from the
  ``outputs``/``targets`` passed in, else one forward pass over a fixed small subset of ``data``), and
  ``test_loss``/``test_accuracy`` when test data is given.
* any registered probe (``probes={"grokking": {...}}``), each on its own cadence: every ``probe_every``
  steps (``schedule="linear"``) or log-spaced (``schedule="log"``: the gap between runs grows with the
  step, at least ``probe_every``). A probe's params dict may hold ``"every"`` and ``"schedule"`` to set
  its own cadence. A probe that reads optimizer state (``uses_optimizer_state``, e.g. ``sharpness`` for
  λ_max(P⁻¹H) of Adam) gets the optimizer passed to ``step`` as ``ctx.optimizer_state``.

Measuring never disturbs training: after ``step`` returns, the weights and buffers (bit for bit), every
module's train/eval mode, every ``.grad``, the optimizer state and the Python, NumPy and torch random
number generator states are exactly as before. A probe that raises, or returns NaN, is recorded with
``Store.write_error`` (a warning is shown once per probe) and training goes on.

The Lightning and Hugging Face adapters (``LandscapeCallback``/``MonitorCallback`` and
``LandscapeTrainerCallback``) are thin layers over :class:`Monitor`; they are built on first access and
need their framework only then. ``Monitor(..., sinks=[TensorBoardSink(logdir), WandbSink(project)])`` also
sends every scalar it records (and the histograms) to TensorBoard or Weights & Biases.

The package, one job per module: ``cadence`` (when things run), ``scalars`` (the cheap measurements),
``state`` (training state kept untouched), ``monitor`` (the :class:`Monitor`: what is recorded when),
``pending`` (records finished a batch at a time), ``writer`` (the background store writer), ``sinks`` (TensorBoard, Weights & Biases), ``lightning`` and
``hf`` (the adapters).
"""

from __future__ import annotations

from typing import Any

# Each private name imported as itself (`_x as _x`) was importable from landscape.callbacks before it became
# a package, and stays importable from here.
from landscape.callbacks.cadence import Cadence
from landscape.callbacks.hf import HFHooks, LogitsOnly, build_hf_callback
from landscape.callbacks.lightning import LightningHooks, build_lightning_callback
from landscape.callbacks.lightning import _loss_of as _loss_of
from landscape.callbacks.monitor import MONITOR_PROBE as MONITOR_PROBE
from landscape.callbacks.monitor import Monitor
from landscape.callbacks.monitor import _MemoryCheckpoint as _MemoryCheckpoint
from landscape.callbacks.monitor import _monitor_from as _monitor_from
from landscape.callbacks.monitor import _ProbeSpec as _ProbeSpec
from landscape.callbacks.monitor import _safe_name as _safe_name
from landscape.callbacks.scalars import _class_logits as _class_logits
from landscape.callbacks.scalars import _float_dtype as _float_dtype
from landscape.callbacks.scalars import _total_norm as _total_norm
from landscape.callbacks.scalars import logit_scalars, read_lr
from landscape.callbacks.sinks import Sink, SinkSet, TensorBoardSink, WandbSink
from landscape.callbacks.state import _device_of as _device_of
from landscape.callbacks.state import _eval_mode as _eval_mode
from landscape.callbacks.state import rng_preserved
from landscape.callbacks.writer import StoreWriter

# The adapters LandscapeCallback/MonitorCallback and LandscapeTrainerCallback are served by __getattr__ below
# (built on first access), so they are not listed here: `import *` must not need either framework.
__all__ = ["Cadence", "HFHooks", "LightningHooks", "LogitsOnly", "Monitor", "Sink", "SinkSet", "StoreWriter",
           "TensorBoardSink", "WandbSink", "logit_scalars", "read_lr", "rng_preserved"]

# The built adapter classes, read from this namespace at every lookup (a test may swap it for an empty one).
_ADAPTERS: dict[str, type] = {}


def _lightning_callback() -> type:
    return build_lightning_callback(_ADAPTERS)


def _hf_callback() -> type:
    return build_hf_callback(_ADAPTERS)


def __getattr__(name: str) -> Any:
    # The adapters are built on first access so that importing this package never needs either framework.
    if name in ("LandscapeCallback", "MonitorCallback"):
        return _lightning_callback()
    if name in ("LandscapeTrainerCallback", "HFMonitorCallback"):
        return _hf_callback()
    raise AttributeError(f"module 'landscape.callbacks' has no attribute {name!r}")
