"""Checkpoint folders as trainers write them: Hugging Face ``checkpoint-N/`` folders and Lightning logs.

A *model folder* holds the weights of one checkpoint in one of the layouts ``transformers`` writes:
``model.safetensors``, a sharded ``model.safetensors.index.json`` (its ``weight_map`` names the shard of
every tensor), ``pytorch_model.bin`` or a sharded ``pytorch_model.bin.index.json``. Its training step is
the number in the folder's name (``checkpoint-500``) or, failing that, ``global_step`` in its
``trainer_state.json``; that file's ``log_history`` also gives the learning rate at that step.

:func:`scan` walks a folder recursively and returns model folders and checkpoint files (Lightning's
``lightning_logs/version_*/checkpoints/*.ckpt`` included), leaving out the files a trainer keeps beside
the weights (optimizer and scheduler states, random-number states, training arguments).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["AUX_FILES", "WEIGHT_FILES", "digest", "is_model_folder", "lr_at", "scan", "shard_files", "step_of_folder"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
AUX_FILES = re.compile(r"^(optimizer|scheduler|scaler|rng_state.*|training_args|trainer_state)\.(pt|pth|bin|json)$")
_CHECKPOINT_DIR = re.compile(r"^checkpoint[-_=]?(\d+)$")


class FolderError(ValueError):
    """A checkpoint folder cannot be read; the message names the file and what was expected."""


def is_model_folder(folder: Path) -> bool:
    """A folder holding one checkpoint's weights in a Hugging Face layout."""
    return folder.is_dir() and any((folder / name).is_file() for name in WEIGHT_FILES)


def looks_like_checkpoint_folder(folder: Path) -> bool:
    """A folder named like a trainer's checkpoint (``checkpoint-500``)."""
    return folder.is_dir() and _CHECKPOINT_DIR.match(folder.name) is not None


def _trainer_state(folder: Path) -> dict[str, Any] | None:
    path = folder / "trainer_state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FolderError(f"{path} is not readable JSON ({error}).") from None
    return state if isinstance(state, dict) else None


def step_of_folder(folder: Path) -> int | None:
    """The training step of a model folder: from its name (``checkpoint-500``), else ``trainer_state.json``."""
    match = _CHECKPOINT_DIR.match(folder.name)
    if match:
        return int(match.group(1))
    state = _trainer_state(folder)
    step = None if state is None else state.get("global_step")
    return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def lr_at(folder: Path) -> float | None:
    """The learning rate logged last at or before the folder's step in ``trainer_state.json``, if any."""
    state = _trainer_state(folder)
    if state is None:
        return None
    step = step_of_folder(folder)
    found = None
    for entry in state.get("log_history", []) or []:
        if isinstance(entry, dict) and isinstance(entry.get("learning_rate"), (int, float)):
            if step is None or entry.get("step", 0) <= step:
                found = float(entry["learning_rate"])
    return found


def shard_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, in reading order; a missing shard is an error naming it."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / single).is_file():
            return [folder / single]
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text()).get("weight_map")
            except (OSError, ValueError, AttributeError) as error:
                raise FolderError(f"{index} is not a readable shard index ({error}).") from None
            if not isinstance(weight_map, dict) or not weight_map:
                raise FolderError(f"{index} has no 'weight_map' naming the shard of every tensor.")
            shards = sorted({str(v) for v in weight_map.values()})
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FolderError(f"{index} names shard {missing[0]}, which is not in {folder}"
                                  f"{f' (nor {len(missing) - 1} other shard(s))' if len(missing) > 1 else ''}.")
            return [folder / s for s in shards]
    raise FolderError(f"checkpoint folder {folder} holds no model weights: expected one of {', '.join(WEIGHT_FILES)}.")


def digest(path: Path) -> str:
    """SHA-256 of a checkpoint: a file's bytes, or a model folder's weight files (names and bytes)."""
    files = shard_files(path) if path.is_dir() else [path]
    hasher = hashlib.sha256()
    for file in files:
        if path.is_dir():
            hasher.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
    return hasher.hexdigest()


def scan(root: Path, suffixes: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """``(model folders, checkpoint files)`` under ``root``, recursively; files inside model folders and a
    trainer's auxiliary files are left out. ``checkpoint-N`` folders without weights are returned as model
    folders (reading them then names what is missing)."""
    folders: list[Path] = []
    files: list[Path] = []

    def walk(folder: Path) -> None:
        if folder != root and (is_model_folder(folder) or looks_like_checkpoint_folder(folder)):
            folders.append(folder)
            return
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                walk(entry)
            elif entry.is_file() and entry.suffix in suffixes and not AUX_FILES.match(entry.name):
                if folder == root or not is_model_folder(folder):
                    files.append(entry)

    walk(root)
    if is_model_folder(root):
        # the folder itself holds a model: a final copy beside checkpoint-N folders, or the one checkpoint
        files = [f for f in files if f.name not in WEIGHT_FILES]
        if not folders:
            folders.append(root)
    return folders, files
