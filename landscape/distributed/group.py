"""The process group the toolkit runs in, and the few collectives it needs.

Everything here is a no-op outside an initialized ``torch.distributed`` process group, so the same code
runs in one process, under ``torchrun`` on one node, or across nodes. Inside a group the *data mode* says
how each rank's data relates to the others' (:data:`DATA_MODES`):

``"sharded"``     (the default) each rank already holds its own disjoint part of the sample set, as in a
                  DDP training loop; measurements are sums over the ranks.
``"replicated"``  every rank holds the whole sample set (``torchrun -m landscape analyze`` loads the same
                  data on every rank); each rank keeps a contiguous shard of it, then as ``"sharded"``.
``"local"``       ranks work alone (the ``--shard checkpoints`` sweep): no collective at all.

Errors of a collective (a rank that died, or stalled past the group's timeout) become one
:class:`DistributedError` naming this rank and what it was doing.
"""

from __future__ import annotations

import datetime
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DATA_MODES",
    "DistributedError",
    "agree_on_failure",
    "all_gather_objects",
    "all_reduce_named",
    "all_reduce_sum",
    "broadcast_object",
    "check_agreement",
    "data_mode",
    "data_parallel",
    "init_from_env",
    "is_active",
    "is_main",
    "rank",
    "world_size",
]

DATA_MODES = ("sharded", "replicated", "local")
DEFAULT_TIMEOUT_S = 600.0

_mode: ContextVar[str] = ContextVar("landscape_data_mode", default="sharded")


class DistributedError(RuntimeError):
    """The ranks of a process group disagree, or one of them is gone."""


def is_active() -> bool:
    """True inside an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks (1 outside a group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the rank that writes the store, prints and shows progress bars."""
    return rank() == 0


def data_mode() -> str | None:
    """The data mode in effect, or None when no collective applies (no group, or mode ``"local"``)."""
    if not is_active():
        return None
    mode = _mode.get()
    return None if mode == "local" else mode


@contextmanager
def data_parallel(mode: str) -> Iterator[None]:
    """Run the enclosed measurements in data mode ``mode`` (one of :data:`DATA_MODES`)."""
    if mode not in DATA_MODES:
        raise ValueError(f"data mode must be one of {DATA_MODES}, got {mode!r}.")
    token = _mode.set(mode)
    try:
        yield
    finally:
        _mode.reset(token)


def _timeout_s() -> float:
    """The timeout of the group's collectives, in seconds, as set by :func:`init_from_env` (for messages)."""
    return float(os.environ.get("LANDSCAPE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def _lost(what: str, error: BaseException) -> DistributedError:
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return DistributedError(
        f"rank {rank()} of {world_size()} lost the process group during {what}: another rank died or stalled "
        f"past the {_timeout_s():.0f} s timeout ({reason}); nothing of it was written."
    )


def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Join the process group described by ``torchrun``'s environment (``WORLD_SIZE`` > 1); True if joined.

    The backend is NCCL when CUDA is available, else gloo. Each rank takes the GPU of its ``LOCAL_RANK``.
    A no-op (False) when ``WORLD_SIZE`` is unset or 1, or when a group is already initialized.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if timeout_s is None:
        timeout_s = float(os.environ.get("LANDSCAPE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    os.environ["LANDSCAPE_DIST_TIMEOUT"] = str(timeout_s)
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def _collective_device() -> torch.device:
    """Where tensors for a collective live: the current GPU under NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (a new tensor on ``tensor``'s device and dtype)."""
    if not is_active():
        return tensor
    device = _collective_device()
    work = tensor.detach().to(device).contiguous().clone()
    try:
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
    except Exception as error:  # noqa: BLE001 - every backend failure is a lost rank to the user
        raise _lost(what, error) from None
    return work.to(tensor.device)


def all_reduce_named(named: dict[str, torch.Tensor], what: str) -> None:
    """Sum every tensor of ``named`` over the ranks, in place, in one collective."""
    if not is_active() or not named:
        return
    flat = all_reduce_sum(torch.cat([t.reshape(-1) for t in named.values()]), what)
    offset = 0
    for tensor in named.values():
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def all_gather_objects(value: Any, what: str) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` outside a group)."""
    if not is_active():
        return [value]
    out: list[Any] = [None] * world_size()
    try:
        dist.all_gather_object(out, value)
    except Exception as error:  # noqa: BLE001
        raise _lost(what, error) from None
    return out


def broadcast_object(value: Any, what: str, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every rank."""
    if not is_active():
        return value
    box = [value if rank() == source else None]
    try:
        dist.broadcast_object_list(box, src=source)
    except Exception as error:  # noqa: BLE001
        raise _lost(what, error) from None
    return box[0]


def check_agreement(what: str, value: Any, advice: str) -> None:
    """Raise :class:`DistributedError` on every rank unless all ranks hold an equal ``value``.

    The message names the first rank that differs from rank 0 and both values.
    """
    values = all_gather_objects(value, f"the check of {what}")
    for other, theirs in enumerate(values):
        if pickle.dumps(theirs) != pickle.dumps(values[0]):
            raise DistributedError(f"rank {other} disagrees with rank 0 on {what}: {theirs!r} against "
                                   f"{values[0]!r}; {advice}")


def agree_on_failure(error: BaseException | None, what: str) -> None:
    """Make one rank's failure every rank's failure, so no rank waits alone in the next collective.

    Every rank calls this with the exception it caught (or None). If any rank failed, the ranks that
    failed re-raise their own error and the others raise a :class:`DistributedError` naming the failed rank.
    """
    if not is_active():
        if error is not None:
            raise error
        return
    messages = all_gather_objects(None if error is None else f"{type(error).__name__}: {error}", what)
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if not failed:
        return
    if error is not None:
        raise error
    first, message = failed[0]
    raise DistributedError(f"rank {first} failed during {what} ({message}); every rank stops.")
