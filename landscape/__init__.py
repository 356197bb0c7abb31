"""landscape: loss-landscape and training-dynamics analysis for PyTorch.

The core (this package) holds checkpoint loading, data handling, parameter-space helpers, curvature
operators, the run store, the runner, training callbacks and the CLI; the analyses live in ``probes``
and the web app in ``dashboard``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from landscape.checkpoints import Checkpoint, CheckpointError, find_checkpoints, load_checkpoint
from landscape.data import Batches, DataError, as_batches

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # The store pulls in pandas; import it only when asked for.
    if name == "Store":
        from landscape.store import Store

        return Store
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
