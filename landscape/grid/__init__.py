"""The fast grid evaluation engine behind the loss-landscape slices: the sample-weighted mean loss (and
accuracy for class targets) at every point of a grid, written into the model in place.

Every view (a line, a plane, the straight line between two models) evaluates the sample-weighted mean
loss (and accuracy for class targets) at points ``θ + a·d1 + b·d2`` of a plane: :func:`evaluate_grid`
runs an :class:`Evaluator` over the rows of a grid, with a mover (:class:`Affine` for ``θ + Σ cₖ·dₖ``,
:class:`Lerp` for interpolation) writing each point into the model. How it is made fast without changing
what is measured:

* no copy of the model: each point is written *in place* from a saved origin (``origin + Σ cₖ·dₖ``
  computed afresh at every point, so rounding never accumulates) and the weights, buffers, modes and
  ``.grad`` are restored bit for bit at the end;
* ``torch.inference_mode()``, losses summed on the device with one host sync per grid row;
* the layers that read the raw input (a linear or convolution layer fed the batch, e.g. after
  ``Flatten``) are linear in their weights, so their output at ``θ + a·d1 + b·d2`` is
  ``f(x; θ) + a·f(x; d1) + b·f(x; d2)``: those three outputs are computed once per batch and each point
  costs two axpys instead of the layer (:mod:`landscape.grid.factoring`; ``factor_input="auto"``: when
  each output reads ≥ 32 inputs; measured on 2 CPU cores: a 784→112→10 MLP went from 0.47 to 0.16 ms
  per point, below the 0.37 ms of a bare forward pass; a 1-channel 3×3 first convolution would gain
  nothing and is left alone). The values differ from moving the layer's weights only by float rounding;
* optionally many points per forward pass: ``vectorize=True`` stacks the parameters of several grid
  points and runs ``torch.func.functional_call`` under ``vmap``, so each data batch is shared by those
  points. On CPU it was slower than the plain loop for CNNs and MLPs alike (each point is already a
  full forward over the batch), so ``vectorize="auto"`` uses it only on CUDA, for models up to
  ``VMAP_MAX_PARAMS`` parameters (:mod:`landscape.grid.evaluator`), where small models leave the GPU
  idle one point per launch (a design choice not yet timed on a GPU; ``vectorize=False`` turns it off);
* ``autocast_dtype`` (e.g. ``torch.bfloat16``) autocasts on CUDA only; CPU always runs in full precision
  (CPU bfloat16 autocast was both slower and inaccurate).

BatchNorm and other buffers: the model runs in eval mode, so running statistics are used as they are
(fixed at the origin's values) and never updated by the evaluations.

Long 2-D grids save each finished row through a ``PartialRows`` store (``partial=``); a re-run loads
finished rows and computes only the rest, giving exactly the surface an uninterrupted run gives.

The callers (``probes.slices``) wrap a sweep in :func:`landscape.params.preserved`, which restores the
model; this package only moves and evaluates.

The package: :mod:`~landscape.grid.movers` (writing points into the model),
:mod:`~landscape.grid.factoring` (the input-layer shortcut), :mod:`~landscape.grid.evaluator` (rows of
points, whole grids, resumable rows) and :mod:`~landscape.grid.checks` (grid arguments and axes).
"""

from __future__ import annotations

from landscape.grid.checks import axis, check_model, check_span, check_steps, check_steps_2d, device_of
from landscape.grid.evaluator import Evaluator, evaluate_grid
from landscape.grid.movers import Affine, Lerp, Mover

__all__ = [
    "Affine",
    "Evaluator",
    "Lerp",
    "Mover",
    "axis",
    "check_model",
    "check_span",
    "check_steps",
    "check_steps_2d",
    "device_of",
    "evaluate_grid",
]
