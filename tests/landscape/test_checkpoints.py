import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from landscape.checkpoints import (
    Checkpoint,
    CheckpointError,
    find_checkpoints,
    load_checkpoint,
    read_metadata,
    step_from_name,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


class _Evil:
    """Pickles into a call that would create a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize(
    "name, step",
    [
        ("step_500.pt", 500),
        ("ckpt-000500.pth", 500),
        ("epoch=3-step=500.ckpt", 500),
        ("model_step1200.safetensors", 1200),
        ("global_step=42.ckpt", 42),
        ("epoch_7.pt", 7),
        ("checkpoint-1000.bin", 1000),
        ("final.pt", None),
    ],
)
def test_step_from_name(name, step):
    assert step_from_name(name) == step


def test_find_orders_by_step_and_reads_step_inside(tmp_path):
    m = _model()
    for step in (1000, 20, 300):
        torch.save(m.state_dict(), tmp_path / f"step_{step}.pt")
    torch.save({"state_dict": m.state_dict(), "global_step": 5}, tmp_path / "warmup.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    found = find_checkpoints(tmp_path)
    assert [c.step for c in found] == [5, 20, 300, 1000]
    assert all(isinstance(c, Checkpoint) for c in found)


def test_find_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        find_checkpoints(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        find_checkpoints(tmp_path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "final.pt")
    with pytest.raises(CheckpointError, match="cannot tell the training step of .*final.pt"):
        find_checkpoints(tmp_path)


def test_duplicate_steps_are_named(tmp_path):
    m = _model()
    torch.save(m.state_dict(), tmp_path / "step_5.pt")
    torch.save(m.state_dict(), tmp_path / "ckpt-5.pth")
    with pytest.raises(CheckpointError, match="several files for step"):
        find_checkpoints(tmp_path)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_load_nested_state_dicts(tmp_path, key):
    source, target = _model(), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.save({key: source.state_dict(), "step": 3, "lr": 0.1}, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt", target)
    assert loaded is target
    assert torch.equal(target[0].weight, source[0].weight)
    assert read_metadata(tmp_path / "c.pt") == {"step": 3, "lr": 0.1}


def test_lightning_prefix_is_stripped(tmp_path):
    source = _model()
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 10, "epoch": 1}, tmp_path / "epoch=1-step=10.ckpt")
    target = load_checkpoint(tmp_path / "epoch=1-step=10.ckpt", _model().apply(lambda m: None))
    assert torch.equal(target[2].bias, source[2].bias)


def test_safetensors_and_plain_state_dict(tmp_path):
    source = _model()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "step_1.safetensors"))
    state = load_checkpoint(tmp_path / "step_1.safetensors")
    assert set(state) == set(source.state_dict())
    assert find_checkpoints(tmp_path)[0].step == 1


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint file .*missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_truncated_file(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "step_1.pt")
    data = (tmp_path / "step_1.pt").read_bytes()
    (tmp_path / "step_1.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "step_1.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"state_dict": _model().state_dict(), "evil": _Evil(marker)}, tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError, match="unsafe=True") as info:
        load_checkpoint(tmp_path / "step_1.pt", _model())
    assert "--unsafe-pickle" in str(info.value)
    assert not marker.exists()
    # The explicit opt-in does unpickle it (that is what it is for).
    load_checkpoint(tmp_path / "step_1.pt", _model(), unsafe=True)
    assert marker.exists()


def test_other_architecture_names_every_problem(tmp_path):
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2), nn.Linear(2, 2))
    torch.save(other.state_dict(), tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "step_1.pt", _model())
    text = str(info.value)
    assert "unexpected keys: 3.weight, 3.bias" in text
    for key in ("0.weight (checkpoint (5, 3), model (4, 3))", "0.bias", "2.weight"):
        assert key in text
    torch.save({"0.weight": torch.zeros(4, 3)}, tmp_path / "step_2.pt")
    with pytest.raises(CheckpointError, match="missing keys: 0.bias, 2.weight, 2.bias"):
        load_checkpoint(tmp_path / "step_2.pt", _model())


def test_payload_without_state_dict(tmp_path):
    torch.save({"optimizer": {"lr": 0.1}, "notes": "x"}, tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError, match="has no state dict"):
        load_checkpoint(tmp_path / "step_1.pt")
