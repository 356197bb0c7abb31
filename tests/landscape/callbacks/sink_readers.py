"""Readers for what the sinks wrote: TensorBoard event files and offline Weights & Biases run files."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def synthetic_runs():
    """The synthetic-store writer of the dashboard tests."""
    spec = importlib.util.spec_from_file_location("synthetic_runs", ROOT / "tests" / "dashboard" / "synthetic_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tensorboard_events(logdir: Path):
    """An EventAccumulator over ``logdir`` with every scalar and histogram loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def _wandb_records(path: Path) -> Iterator[bytes]:
    """Records of a ``.wandb`` file: a 7-byte header (":W&B", magic, version), then LevelDB-log records
    (4-byte checksum, 2-byte length, 1-byte type: full 1, first 2, middle 3, last 4) in 32 KiB blocks."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(raw):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[position:position + 7])
        if kind == 0 and length == 0:
            position += left
            continue
        data = raw[position + 7:position + 7 + length]
        position += 7 + length
        pending = data if kind == 2 else pending + data
        if kind in (1, 4):
            yield pending
            pending = b""


def wandb_history(run_dir: Path) -> list[dict]:
    """The logged rows (key → decoded value) of the one offline run under ``run_dir``."""
    from wandb.proto import wandb_internal_pb2

    files = sorted(run_dir.rglob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one offline run under {run_dir}, found {files}"
    rows = []
    for data in _wandb_records(files[0]):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
