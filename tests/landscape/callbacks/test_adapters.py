"""Tests for the Lightning and Hugging Face adapters of landscape.callbacks, and its lazy attributes."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from callback_helpers import _data, _model, _steps
from torch import nn

from landscape import callbacks
from landscape.callbacks import HFHooks, LightningHooks, LogitsOnly


# -- adapters ------------------------------------------------------------------------------------------------------
def test_lightning_hooks_feed_the_monitor(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    hooks = LightningHooks(store=tmp_path / "s.sqlite", run="pl", every=2, data=_data(), loss_fn=F.cross_entropy)
    for step in range(1, 6):
        trainer = SimpleNamespace(global_step=step, optimizers=[optimizer])
        hooks.on_train_batch_end(trainer, model, {"loss": torch.tensor(0.5)}, None, step - 1)
    hooks.on_train_end(SimpleNamespace(global_step=5, optimizers=[optimizer]), model)
    store = hooks.monitor.store
    assert _steps(store, "pl", "monitor") == [2, 4, 5]
    losses = store.scalars(run="pl", probe="monitor", keys=["train_loss"])
    assert list(losses.value[:2]) == [0.5, 0.5]
    assert store.run_meta("pl")["lr"] == 0.3
    with pytest.raises(ValueError, match="either monitor= or the Monitor arguments"):
        LightningHooks(hooks.monitor, run="x")
    hooks.monitor.close()


def test_train_end_at_an_already_recorded_step_does_not_overwrite_its_records(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    x, y = _data()
    hooks = LightningHooks(store=tmp_path / "s.sqlite", run="pl", every=2, probes={"grokking": {"every": 2}},
                           data=(x, y), loss_fn=F.cross_entropy)
    for step in range(1, 5):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        hooks.on_train_batch_end(SimpleNamespace(global_step=step, optimizers=[optimizer]), model,
                                 {"loss": torch.tensor(0.25)}, None, step - 1)
    hooks.on_train_end(SimpleNamespace(global_step=4, optimizers=[optimizer]), model)  # same step as the last batch
    store = hooks.monitor.store
    grokking = store.scalars(run="pl", probe="grokking")
    assert "feature_change" in set(grokking[grokking.step == 4]["key"])  # not replaced by a run without a previous
    losses = store.scalars(run="pl", probe="monitor", keys=["train_loss"])
    assert list(losses.step) == [2, 4] and list(losses.value) == [0.25, 0.25]  # the batch loss is kept
    assert store.errors().empty
    hooks.monitor.close()


class _DictOutputModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _model()

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.body(inputs)}


def test_hf_hooks_view_the_model_through_its_logits(tmp_path: Path) -> None:
    model = _DictOutputModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    hooks = HFHooks(store=tmp_path / "s.sqlite", run="hf", every=2, probes={"metrics": {"every": 2}}, data=_data(),
                    loss_fn=F.cross_entropy)
    for step in range(1, 5):
        hooks.on_step_end(None, SimpleNamespace(global_step=step), None, model=model, optimizer=optimizer)
    hooks.on_train_end(None, SimpleNamespace(global_step=4), None, model=model, optimizer=optimizer)
    store = hooks.monitor.store
    assert _steps(store, "hf", "monitor") == [2, 4]
    assert _steps(store, "hf", "metrics") == [2, 4]
    assert "sc_fraction" in set(store.scalars(run="hf", probe="monitor")["key"])
    assert store.errors().empty
    hooks.monitor.close()
    x, _ = _data(4)
    torch.testing.assert_close(LogitsOnly(model)(x), model.body(x), rtol=0, atol=0)
    with pytest.raises(TypeError, match="no 'logits' tensor"):
        LogitsOnly(nn.Identity(), key="logits")(x.tolist())  # type: ignore[arg-type]


def test_lightning_callback_in_a_real_trainer(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning", reason="PyTorch Lightning is an optional extra (landscape[lightning])")

    class Classifier(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _model()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    callback = callbacks.LandscapeCallback(store=tmp_path / "s.sqlite", run="pl", every=2,
                                           probes={"metrics": {"every": 4}}, data=(x, y), loss_fn=F.cross_entropy)
    assert callbacks.MonitorCallback is callbacks.LandscapeCallback
    trainer = lightning.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(Classifier(), loader)
    store = callback.monitor.store
    assert _steps(store, "pl", "monitor") == [2, 4, 6]
    assert _steps(store, "pl", "metrics") == [4, 6]
    assert store.run_meta("pl")["lr"] == 0.1
    callback.monitor.close()


def test_adapters_name_the_extra_to_install_when_their_framework_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callbacks, "_ADAPTERS", {})
    for module in ("transformers", "lightning", "lightning.pytorch", "lightning.pytorch.callbacks", "pytorch_lightning",
                   "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: importing it raises ImportError
    with pytest.raises(ImportError, match=r"pip install landscape\[hf\]"):
        callbacks.LandscapeTrainerCallback  # noqa: B018
    with pytest.raises(ImportError, match=r"pip install landscape\[lightning\]"):
        callbacks.LandscapeCallback  # noqa: B018


def test_unknown_module_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        callbacks.Nope  # noqa: B018


def test_hf_callback_in_a_real_trainer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="Hugging Face transformers is an optional extra (landscape[hf])")
    pytest.importorskip("accelerate", reason="the transformers Trainer needs accelerate")

    class Classifier(nn.Module):  # the shape of a transformers model: keyword inputs, a dict with loss and logits
        def __init__(self) -> None:
            super().__init__()
            self.body = _model()

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            logits = self.body(input_ids)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = F.cross_entropy(logits, labels)
            return out

    x, y = _data()
    dataset = [{"input_ids": xi, "labels": yi} for xi, yi in zip(x, y)]
    callback = callbacks.LandscapeTrainerCallback(store=tmp_path / "s.sqlite", run="hf", every=2,
                                                  probes={"metrics": {"every": 4}}, data=(x, y),
                                                  loss_fn=F.cross_entropy)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=16,
                                          learning_rate=0.1, lr_scheduler_type="constant", optim="sgd",
                                          report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                          disable_tqdm=True)
    transformers.Trainer(model=Classifier(), args=args, train_dataset=dataset, callbacks=[callback]).train()
    store = callback.monitor.store
    assert _steps(store, "hf", "monitor") == [2, 4, 6]
    assert _steps(store, "hf", "metrics") == [4, 6]
    assert store.run_meta("hf")["lr"] == pytest.approx(0.1)
    assert store.errors().empty
    callback.monitor.close()
