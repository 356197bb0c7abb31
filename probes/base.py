"""The probe protocol, re-exported from the core (:mod:`landscape.probe`) where it lives."""

from landscape.probe import PartialRows, Probe, ProbeContext, Result, resolve_params

__all__ = ["PartialRows", "Probe", "ProbeContext", "Result", "resolve_params"]
