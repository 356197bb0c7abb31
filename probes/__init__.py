"""Analyses of a model at a checkpoint. Each module offers plain functions and one registered probe.

A module registers its probe by defining a module-level ``PROBE``; the core's registry
(:func:`landscape.probe.registry`) discovers every module of this package, so a new probe module is picked
up by the runner, the CLI and the demo with no other change.
"""

from __future__ import annotations

from landscape.probe import Probe, ProbeContext, Result, available, get, registry, resolve_params

__all__ = ["Probe", "ProbeContext", "Result", "available", "get", "registry", "resolve_params"]
