"""Analyses of a model at a checkpoint. Each module offers plain functions and one registered probe.

A module registers its probe by defining a module-level ``PROBE``; :func:`registry` discovers every
module of this package, so a new probe module is picked up by the runner, the CLI and the demo with no
other change.
"""

from __future__ import annotations

import importlib
import pkgutil

from probes.base import Probe, ProbeContext, Result, resolve_params

__all__ = ["Probe", "ProbeContext", "Result", "available", "get", "registry", "resolve_params"]

_INFRASTRUCTURE = {"base"}
_registry: dict[str, Probe] | None = None


def registry() -> dict[str, Probe]:
    """All registered probes by name (modules imported on first call)."""
    global _registry
    if _registry is None:
        found: dict[str, Probe] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name in _INFRASTRUCTURE or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            probe = getattr(module, "PROBE", None)
            if probe is not None:
                found[probe.name] = probe
        _registry = found
    return _registry


def available() -> list[str]:
    """Names of the registered probes, in their default running order."""
    order = ["metrics", "grokking", "sharpness", "hessian", "collapse", "slices"]
    names = list(registry())
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def get(name: str) -> Probe:
    """The probe called ``name``; the error lists the known ones."""
    probes = registry()
    if name not in probes:
        raise KeyError(f"unknown probe {name!r}; registered probes: {', '.join(available())}.")
    return probes[name]
