"""Kernels that read a symmetric operator only through block products ``H @ V``.

* :mod:`landscape.krylov.operators`: the :class:`Operator` interface and :class:`DenseOperator`.
* :mod:`landscape.krylov.block_lanczos`: :func:`lanczos`, extreme eigenpairs by block Lanczos with full
  reorthogonalization, thick restart and convergence on Ritz residuals.
* :mod:`landscape.krylov.trace`: :func:`exact_trace` and the randomized estimators :func:`hutchinson`,
  :func:`hutch_plus_plus` and :func:`xtrace` (``TRACE_METHODS`` by name, ``TRACE_MIN_MATVEC`` their
  smallest budgets).
* :mod:`landscape.krylov.quadrature`: :func:`slq`, stochastic Lanczos quadrature of the spectral density
  (all chains advanced together, one ``matmat`` per step).

None of them imports the curvature operator; :mod:`landscape.curvature` re-exports them all.
"""

from __future__ import annotations

from landscape.krylov.block_lanczos import LanczosResult, lanczos
from landscape.krylov.operators import DenseOperator, Operator
from landscape.krylov.quadrature import Quadrature, slq
from landscape.krylov.trace import (
    TRACE_METHODS,
    TRACE_MIN_MATVEC,
    TraceResult,
    exact_trace,
    hutch_plus_plus,
    hutchinson,
    xtrace,
)

__all__ = [
    "TRACE_METHODS",
    "TRACE_MIN_MATVEC",
    "DenseOperator",
    "LanczosResult",
    "Operator",
    "Quadrature",
    "TraceResult",
    "exact_trace",
    "hutch_plus_plus",
    "hutchinson",
    "lanczos",
    "slq",
    "xtrace",
]
