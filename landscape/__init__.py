"""landscape: loss-landscape and training-dynamics analysis for PyTorch.

The core (this package) holds checkpoint loading, data handling, parameter-space helpers, curvature
operators, the run store, the runner, training callbacks and the CLI; the analyses live in ``probes``
and the web app in ``dashboard``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from landscape.checkpoints import Checkpoint, CheckpointError, find_checkpoints, load_checkpoint
    from landscape.data import Batches, DataError, as_batches
    from landscape.store import Store

__all__ = [
    "Batches",
    "Checkpoint",
    "CheckpointError",
    "DataError",
    "Store",
    "as_batches",
    "find_checkpoints",
    "load_checkpoint",
]


# The public names load on first use, so that `import landscape.store` (the dashboard's only import from
# the core) does not pull in torch.
_LAZY = {
    "Batches": "landscape.data", "DataError": "landscape.data", "as_batches": "landscape.data",
    "Checkpoint": "landscape.checkpoints", "CheckpointError": "landscape.checkpoints",
    "find_checkpoints": "landscape.checkpoints", "load_checkpoint": "landscape.checkpoints",
    "Store": "landscape.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
