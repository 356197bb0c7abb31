"""Loss-landscape slices: 1-D lines and 2-D planes through parameter space (Li et al. 2018), linear
interpolation between two models (Goodfellow et al. 2015), the plane through three models (mode
connectivity), and the PCA plane of a training trajectory.

Every view is the sample-weighted mean loss (and accuracy for class targets) at the points
``θ + a·d1 + b·d2`` of a plane (or along a line), evaluated by the in-place grid engine of
:mod:`landscape.grid`, which also states how it is made fast and what stays exact. The package is split by
job:

* :mod:`probes.slices.lines`: :func:`random_directions`, :func:`slice_1d`, :func:`slice_2d`,
  :func:`interpolate`, :func:`hessian_directions` and the result types :class:`Slice`, :class:`Surface`;
* :mod:`probes.slices.trajectory`: :func:`plane` (three models), :func:`trajectory` (PCA of a training
  path, :class:`Trajectory`) and :func:`trajectory_plane`;
* :mod:`probes.slices.probe`: the registered ``slices`` probe (:class:`SlicesProbe`, ``PROBE``).

Long 2-D grids save each finished row through a ``PartialRows`` store (``partial=``); a re-run loads
finished rows and computes only the rest, giving exactly the surface an uninterrupted run gives.
"""

from __future__ import annotations

from probes.slices.lines import (
    Slice,
    Surface,
    hessian_directions,
    interpolate,
    random_directions,
    slice_1d,
    slice_2d,
)
from probes.slices.probe import PROBE, SlicesProbe
from probes.slices.trajectory import Trajectory, plane, trajectory, trajectory_plane

__all__ = [
    "PROBE",
    "Slice",
    "SlicesProbe",
    "Surface",
    "Trajectory",
    "hessian_directions",
    "interpolate",
    "plane",
    "random_directions",
    "slice_1d",
    "slice_2d",
    "trajectory",
    "trajectory_plane",
]
