"""Find checkpoints in a folder, order them by training step, and load them safely.

A folder is searched recursively: checkpoint files anywhere in it (Lightning's
``lightning_logs/version_*/checkpoints/*.ckpt`` included) and Hugging Face model folders such as a
``Trainer``'s ``checkpoint-N/`` (one checkpoint each; see :mod:`landscape.checkpoint_dirs`), whose
``Checkpoint.path`` is the folder. File formats: ``.pt``/``.pth``/``.bin`` (a state dict, or a dict holding one under ``state_dict``, ``model``,
``model_state_dict`` or ``module``), Lightning ``.ckpt`` (``state_dict`` with ``model.`` prefixes), and
``.safetensors``. :func:`read_optimizer_state` finds the optimizer state saved with a checkpoint (Lightning's
``optimizer_states``, an ``optimizer`` entry, or a Hugging Face ``optimizer.pt`` beside the weights). Pickled files are read with ``torch.load(weights_only=True)``: tensors and plain
containers only, never arbitrary code. ``unsafe=True`` is the one, explicit, way to unpickle anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape import checkpoint_dirs as dirs

SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
STATE_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
STEP_KEYS = ("global_step", "step", "iteration", "iter", "epoch")
OPTIMIZER_KEYS = ("optimizer_states", "optimizer", "optimizer_state_dict", "optimizer_state", "optim")
# Weight files of a Hugging Face Trainer checkpoint folder, which keeps the optimizer in optimizer.pt beside them.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
_STEP_PATTERNS = (
    re.compile(r"(?:^|[^a-z])(?:global_step|step|iter|iteration|it)[=_\-]?(\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])(?:ckpt|checkpoint|model|weights)[=_\-]?(\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])epoch[=_\-]?(\d+)", re.IGNORECASE),
    re.compile(r"(\d+)$"),
)


class CheckpointError(ValueError):
    """A checkpoint file or folder cannot be used; the message names it and says what was expected."""


@dataclass(frozen=True, order=True)
class Checkpoint:
    """One checkpoint file and the training step it was saved at."""

    step: int
    path: Path


def step_from_name(path: Path | str) -> int | None:
    """The training step in a file name such as ``step_500.pt`` or ``epoch=3-step=500.ckpt``, if any."""
    stem = Path(path).name
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for pattern in _STEP_PATTERNS:
        match = pattern.search(stem)
        if match:
            return int(match.group(1))
    return None


def _step_from_content(payload: object) -> int | None:
    if isinstance(payload, Mapping):
        for key in STEP_KEYS:
            value = payload.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return int(value)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                return int(value.item())
    return None


def _step_of_file(path: Path, unsafe: bool = False) -> tuple[int | None, bool]:
    """A file's step and whether it came from the name (a file such as ``model.safetensors`` inside
    ``checkpoint-500/`` takes its folder's step)."""
    step = step_from_name(path)
    if step is not None:
        return step, True
    if path.name in dirs.WEIGHT_FILES:
        step = dirs.step_of_folder(path.parent)
        if step is not None:
            return step, True
    if path.suffix != ".safetensors":
        return _step_from_content(_read(path, unsafe=unsafe)), False
    return None, False


def find_checkpoints(folder: Path | str, *, unsafe: bool = False) -> list[Checkpoint]:
    """Every checkpoint in ``folder`` (searched recursively), sorted by training step.

    The step comes from the file or folder name; failing that, from a ``global_step``/``step``/``epoch``
    entry stored inside (read safely unless ``unsafe``) or a model folder's ``trainer_state.json``. A file
    with neither is an error naming it. A file whose step came from its content and repeats the step of a
    named one (Lightning's ``last.ckpt``) is left out; a model folder without a step beside checkpoints that
    have one (a final copy in a Trainer's output folder) is too.
    """
    root = Path(folder)
    if not root.exists():
        raise CheckpointError(f"checkpoint folder {root} does not exist.")
    if root.is_file():
        step, _ = _step_of_file(root, unsafe)
        return [Checkpoint(step if step is not None else 0, root)]
    try:
        folders, files = dirs.scan(root, SUFFIXES)
        found: list[tuple[Checkpoint, bool]] = []
        unnamed: list[Path] = []
        for path in folders:
            step = dirs.step_of_folder(path)
            if step is None:
                unnamed.append(path)
            else:
                found.append((Checkpoint(step, path), True))
    except dirs.FolderError as error:
        raise CheckpointError(str(error)) from None
    for path in files:
        step, named = _step_of_file(path, unsafe)
        if step is None:
            raise CheckpointError(
                f"cannot tell the training step of {path}: name it like step_500.pt or store a 'step' key inside."
            )
        found.append((Checkpoint(step, path), named))
    if not found and len(unnamed) == 1:
        found.append((Checkpoint(0, unnamed[0]), True))
    elif not found and unnamed:
        raise CheckpointError(f"cannot tell the training steps of the model folders {[str(p) for p in unnamed]}: "
                              "name them like checkpoint-500 or give each a trainer_state.json with global_step.")
    if not found:
        raise CheckpointError(
            f"checkpoint folder {root} holds no checkpoints (expected files ending in {', '.join(SUFFIXES)} or "
            "Hugging Face checkpoint-N folders, searched recursively)."
        )
    by_name = {c.step for c, named in found if named}
    kept = [c for c, named in found if named or c.step not in by_name]
    steps = [c.step for c in kept]
    duplicates = sorted({s for s in steps if steps.count(s) > 1})
    if duplicates:
        names = [str(c.path.relative_to(root)) for c in kept if c.step in duplicates]
        raise CheckpointError(f"checkpoint folder {root} has several files for step(s) {duplicates}: {names}.")
    return sorted(kept)


def sha256(path: Path | str) -> str:
    """Hex digest of a checkpoint's bytes (identifies it in the store); a model folder's weight files."""
    try:
        return dirs.digest(Path(path))
    except dirs.FolderError as error:
        raise CheckpointError(str(error)) from None


def _read_folder(folder: Path, *, unsafe: bool, map_location: Any) -> dict[str, torch.Tensor]:
    """All tensors of a model folder's weight files (shards merged)."""
    try:
        files = dirs.shard_files(folder)
    except dirs.FolderError as error:
        raise CheckpointError(str(error)) from None
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(extract_state_dict(_read(file, unsafe=unsafe, map_location=map_location), file))
    return state


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # pickle protocol 2 and later start with this byte (torch's legacy format)


def _sniff(path: Path) -> None:
    """Refuse, with one sentence, a file that cannot be a pickled torch checkpoint (empty, text, other)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        raise CheckpointError(f"checkpoint file {path} is empty (0 bytes): it was not saved completely.")
    if head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTOCOL:
        return
    text = head.decode("utf-8", errors="replace")
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        shown = text.splitlines()[0][:40] if text.strip() else text[:40]
        raise CheckpointError(f"checkpoint file {path} is a text file (it starts with {shown!r}), not a PyTorch "
                              "checkpoint (a torch.save zip archive or pickle).")
    raise CheckpointError(f"checkpoint file {path} is not a PyTorch checkpoint: it is neither a torch.save zip "
                          f"archive nor a pickle (it starts with bytes {head[:8]!r}).")


def _unsafe_global(text: str) -> str | None:
    """The global a weights-only load refused, when ``text`` is such a refusal (torch words it differently
    across versions: "Unsupported global: GLOBAL x", "unsupported GLOBAL x whose module y is blocked")."""
    if "weights only load failed" not in text.lower() and "unsupported global" not in text.lower():
        return None
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    return found.group(1) if found else "an object that is not a tensor or plain container"


def _read(path: Path, *, unsafe: bool, map_location: Any = "cpu") -> object:
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist.")
    if path.is_dir():
        return _read_folder(path, unsafe=unsafe, map_location=map_location)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location) if isinstance(map_location, str) else "cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"checkpoint file {path} is not a readable safetensors file ({error}).") from None
    try:
        _sniff(path)
    except OSError as error:
        raise CheckpointError(f"checkpoint file {path} cannot be read ({error.strerror or error}).") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=not unsafe)
    except Exception as error:  # torch raises many types for bad files; each becomes one clear sentence.
        text = str(error)
        blocked = None if unsafe else _unsafe_global(text)
        if blocked is not None:
            raise CheckpointError(
                f"checkpoint file {path} is an unsafe pickle: it needs the Python global {blocked}, which a safe "
                "(weights-only) load refuses; if you trust this file, pass unsafe=True (CLI: --unsafe-pickle) to "
                "unpickle it, which can run arbitrary code."
            ) from None
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        detail = found.group(1).strip() if found else (text.splitlines()[0] if text else "")
        raise CheckpointError(
            f"checkpoint file {path} is truncated or not a checkpoint ({type(error).__name__}: {detail or 'no detail'})."
        ) from None


def extract_state_dict(payload: object, path: Path | str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The tensor state dict inside a loaded checkpoint payload."""
    if isinstance(payload, nn.Module):
        return payload.state_dict()
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a state dict.")
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return dict(payload)
    for key in STATE_KEYS:
        inner = payload.get(key)
        if isinstance(inner, nn.Module):
            return inner.state_dict()
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if tensors and len(tensors) >= len(payload) - len(STEP_KEYS):
        return tensors
    raise CheckpointError(
        f"checkpoint {path} has no state dict: expected tensors at the top level or under one of "
        f"{', '.join(STATE_KEYS)}; found keys {sorted(map(str, payload))[:10]}."
    )


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (Lightning's ``model.``, DDP's ``module.``, ``_orig_mod.``) the model lacks."""
    for prefix in ("model.", "module.", "_orig_mod.", "net."):
        if expected and not any(k in expected for k in state) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
        elif expected and any(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if set(stripped) & expected:
                state = stripped
    return state


def _fill_tied(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the tensors a checkpoint leaves out because the model ties them to one it holds (safetensors
    stores shared weights once, e.g. a language model's output layer tied to its embedding)."""
    groups: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for key, tensor in expected.items():
        if tensor.numel():
            groups.setdefault((tensor.untyped_storage().data_ptr(), tuple(tensor.shape)), []).append(key)
    for keys in groups.values():
        present = [k for k in keys if k in state]
        if present and len(present) < len(keys):
            for k in keys:
                state.setdefault(k, state[present[0]])
    return state


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path | str = "<checkpoint>") -> nn.Module:
    """Copy ``state`` into ``model`` strictly; every missing, unexpected or mis-shaped key is named."""
    expected = model.state_dict()
    state = _fill_tied(_strip_prefixes(dict(state), set(expected)), expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {', '.join(mismatched)}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({'; '.join(problems)}).")
    model.load_state_dict(state, strict=True)
    return model


def read_state_dict(path: Path | str, *, map_location: Any = "cpu", unsafe: bool = False) -> dict[str, torch.Tensor]:
    """The state dict stored in a checkpoint file, read safely unless ``unsafe``."""
    path = Path(path)
    return extract_state_dict(_read(path, unsafe=unsafe, map_location=map_location), path)


def read_metadata(path: Path | str, *, unsafe: bool = False) -> dict[str, Any]:
    """Scalar entries stored beside the weights (step, epoch, lr, ...), if the file has any."""
    path = Path(path)
    if path.is_dir():
        lr = dirs.lr_at(path)
        step = dirs.step_of_folder(path)
        return {k: v for k, v in (("learning_rate", lr), ("global_step", step)) if v is not None}
    if path.suffix == ".safetensors":
        return {}
    payload = _read(path, unsafe=unsafe)
    if not isinstance(payload, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, (int, float, str, bool)):
            out[str(key)] = value
        elif isinstance(value, torch.Tensor) and value.numel() == 1 and key not in STATE_KEYS:
            out[str(key)] = value.item()
    return out


def load_checkpoint(
    path: Path | str,
    model: nn.Module | None = None,
    *,
    map_location: Any = "cpu",
    unsafe: bool = False,
) -> nn.Module | dict[str, torch.Tensor]:
    """Load a checkpoint file: into ``model`` (returned) when given, else return its state dict."""
    state = read_state_dict(path, map_location=map_location, unsafe=unsafe)
    if model is None:
        return state
    return load_into(model, state, path)


@dataclass(frozen=True)
class SavedOptimizer:
    """An optimizer state dict (``{"state": ..., "param_groups": ...}``) saved with a checkpoint.

    ``layout`` says how its parameter indices map to the model's parameters: ``"order"`` (the order of
    ``model.parameters()``, as for an optimizer built from them) or ``"transformers"`` (the Hugging Face
    Trainer's two groups, weight-decayed parameters first); ``source`` is the file it came from.
    """

    state_dict: Mapping[str, Any]
    source: Path
    layout: str = "order"
    type_name: str | None = None


def _is_optimizer_state(value: object) -> bool:
    return isinstance(value, Mapping) and "state" in value and "param_groups" in value


def read_optimizer_state(path: Path | str, *, unsafe: bool = False, map_location: Any = "cpu") -> SavedOptimizer | None:
    """The optimizer state saved with the checkpoint at ``path``, or None when there is none.

    Looked for in the file itself (Lightning ``optimizer_states[0]``, or a state dict under ``optimizer``,
    ``optimizer_state_dict``, ``optimizer_state`` or ``optim``), then, for a Hugging Face weights file
    (``model.safetensors``, ``pytorch_model.bin``), in ``optimizer.pt`` in the same folder.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        payload = _read(path, unsafe=unsafe, map_location=map_location)
        if isinstance(payload, Mapping):
            for key in OPTIMIZER_KEYS:
                value = payload.get(key)
                if isinstance(value, (list, tuple)) and value and _is_optimizer_state(value[0]):
                    return SavedOptimizer(value[0], path)
                if _is_optimizer_state(value):
                    return SavedOptimizer(value, path)
    beside = path.parent / "optimizer.pt"
    if path.name in HF_WEIGHT_FILES and beside.is_file():
        payload = _read(beside, unsafe=unsafe, map_location=map_location)
        if not _is_optimizer_state(payload):
            raise CheckpointError(f"{beside} holds no optimizer state dict (expected 'state' and 'param_groups').")
        return SavedOptimizer(payload, beside, layout="transformers")
    return None
