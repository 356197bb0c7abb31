"""Running the probes on ``torch.distributed``: data-parallel curvature, grids and checkpoint sweeps.

``group`` (the process group, data modes, collectives with clear errors), ``shard`` (deterministic
shards), ``agreement`` (what ranks must agree on), ``operator`` (the data-parallel curvature operator) and
``launch`` (spawning local gloo ranks for tests and benchmarks). The operator is loaded on first use, so
that the core's lower modules can import the group helpers without a cycle.
"""

from __future__ import annotations

from typing import Any

from landscape.distributed.group import (
    DATA_MODES,
    DistributedError,
    agree_on_failure,
    all_gather_objects,
    all_reduce_named,
    all_reduce_sum,
    broadcast_object,
    check_agreement,
    data_mode,
    data_parallel,
    init_from_env,
    is_active,
    is_main,
    rank,
    world_size,
)
from landscape.distributed.shard import shard_batches, shard_bounds

__all__ = [
    "DATA_MODES",
    "DataParallelOperator",
    "DistributedError",
    "agree_on_failure",
    "all_gather_objects",
    "all_reduce_named",
    "all_reduce_sum",
    "broadcast_object",
    "check_agreement",
    "check_same_model",
    "curvature_operator",
    "data_mode",
    "data_parallel",
    "init_from_env",
    "is_active",
    "is_main",
    "local_share",
    "parameter_fingerprint",
    "rank",
    "shard_batches",
    "shard_bounds",
    "world_size",
]

_LAZY = {
    "DataParallelOperator": "landscape.distributed.operator",
    "curvature_operator": "landscape.distributed.operator",
    "check_same_model": "landscape.distributed.agreement",
    "local_share": "landscape.distributed.agreement",
    "parameter_fingerprint": "landscape.distributed.agreement",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'landscape.distributed' has no attribute {name!r}")
