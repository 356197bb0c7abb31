"""Checkpoint folders as trainers write them: Hugging Face output folders, shards, Lightning logs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from landscape.checkpoints import CheckpointError, find_checkpoints, load_checkpoint, read_metadata, sha256


class Tied(nn.Module):
    """An embedding and an output layer sharing one weight (stored once by safetensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight


def _output_dir(root, steps=(2, 4, 10)):
    for step in steps:
        folder = root / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        torch.manual_seed(step)
        save_file({"embed.weight": torch.randn(5, 3)}, folder / "model.safetensors")
        (folder / "config.json").write_text("{}")
        torch.save({"lr": 1.0}, folder / "optimizer.pt")
        (folder / "trainer_state.json").write_text(json.dumps(
            {"global_step": step, "log_history": [{"step": s, "learning_rate": 0.1 / s} for s in range(1, step + 1)]}))
    torch.save({"a": 1}, root / "training_args.bin")
    save_file({"embed.weight": torch.zeros(5, 3)}, root / "model.safetensors")  # the final copy, no step
    return root


def test_trainer_output_dir_gives_every_checkpoint_by_step(tmp_path):
    found = find_checkpoints(_output_dir(tmp_path / "out"))
    assert [c.step for c in found] == [2, 4, 10]
    assert [c.path.name for c in found] == ["checkpoint-2", "checkpoint-4", "checkpoint-10"]
    model = load_checkpoint(found[1].path, Tied())
    torch.manual_seed(4)
    assert torch.equal(model.embed.weight, torch.randn(5, 3)) and model.head.weight is model.embed.weight
    assert read_metadata(found[1].path) == {"learning_rate": pytest.approx(0.025), "global_step": 4}
    assert sha256(found[0].path) != sha256(found[1].path)


def test_a_weight_file_takes_its_folders_step(tmp_path):
    _output_dir(tmp_path / "out")
    assert [c.step for c in find_checkpoints(tmp_path / "out" / "checkpoint-4" / "model.safetensors")] == [4]


def test_step_from_trainer_state_when_the_name_has_none(tmp_path):
    folder = tmp_path / "run" / "best"
    folder.mkdir(parents=True)
    save_file({"embed.weight": torch.zeros(5, 3)}, folder / "model.safetensors")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 30}))
    assert [c.step for c in find_checkpoints(tmp_path / "run")] == [30]


def test_sharded_safetensors_are_merged(tmp_path):
    folder = tmp_path / "checkpoint-7"
    folder.mkdir()
    save_file({"embed.weight": torch.ones(5, 3)}, folder / "model-00001-of-00002.safetensors")
    save_file({"head.weight": torch.ones(5, 3)}, folder / "model-00002-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "embed.weight": "model-00001-of-00002.safetensors", "head.weight": "model-00002-of-00002.safetensors"}}))
    state = load_checkpoint(find_checkpoints(tmp_path)[0].path)
    assert set(state) == {"embed.weight", "head.weight"}
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as info:
        find_checkpoints(tmp_path) and load_checkpoint(folder)
    assert "names shard model-00002-of-00002.safetensors, which is not in" in str(info.value)


def test_pytorch_model_bin_folders(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    torch.save({"embed.weight": torch.ones(5, 3)}, folder / "pytorch_model.bin")
    torch.save({}, folder / "rng_state.pth")
    found = find_checkpoints(tmp_path)
    assert [(c.step, c.path.name) for c in found] == [(3, "checkpoint-3")]
    assert torch.equal(load_checkpoint(found[0].path)["embed.weight"], torch.ones(5, 3))


def test_checkpoint_folder_without_weights_is_one_sentence(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "config.json").write_text("{}")
    [checkpoint] = find_checkpoints(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(checkpoint.path)
    message = str(info.value)
    assert message.startswith(f"checkpoint folder {tmp_path / 'checkpoint-5'} holds no model weights: expected one of")
    assert "model.safetensors" in message and "\n" not in message


def test_lightning_logs_are_searched_and_last_ckpt_is_not_a_second_step(tmp_path):
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    state = {"state_dict": {"model.embed.weight": torch.zeros(5, 3)}, "global_step": 12}
    torch.save(state, folder / "epoch=1-step=12.ckpt")
    torch.save(state, folder / "last.ckpt")
    torch.save({**state, "global_step": 6}, folder / "epoch=0-step=6.ckpt")
    found = find_checkpoints(tmp_path)
    assert [(c.step, c.path.name) for c in found] == [(6, "epoch=0-step=6.ckpt"), (12, "epoch=1-step=12.ckpt")]
