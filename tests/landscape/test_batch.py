"""Batches of every structure: parsing, feeding, subsetting, re-batching, and one sentence on bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from landscape.batch import Batch, concat
from landscape.data import DataError, as_batches
from landscape.evaluate import evaluate


@dataclass
class Pixels:
    pixel_values: torch.Tensor
    labels: torch.Tensor


class Keyword(nn.Module):
    """A model called with keywords: ``model(features=..., scale=...)``; returns a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, features: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
        return {"logits": self.linear(features) * scale}


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(z)


def _data(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g), torch.arange(n) % 2


def test_every_structure_is_fed_the_way_it_came():
    x, z, y = _data()
    torch.manual_seed(0)
    keyword, two = Keyword(), TwoInputs()
    reference = nn.functional.cross_entropy(keyword.linear(x) * 2.0, y)
    mapping = as_batches({"features": x, "scale": 2.0, "labels": y})
    assert mapping.structure == "mapping" and mapping.n_samples == 6
    assert evaluate(keyword, nn.CrossEntropyLoss(), [{"features": x, "scale": 2.0, "labels": y}]).loss == \
        pytest.approx(float(reference))
    tupled = as_batches([(x, z, y)])
    assert tupled.structure == "tuple"
    assert evaluate(two, nn.CrossEntropyLoss(), tupled).loss == pytest.approx(
        float(nn.functional.cross_entropy(two(x, z), y)))
    pixels = as_batches([Pixels(x, y)], targets_key="labels")
    assert pixels.structure == "dataclass"
    assert torch.equal(pixels.batches[0].kwargs["pixel_values"], x)


def test_targets_key_is_configurable_and_kept_out_of_the_call():
    x, _, y = _data()
    batches = as_batches([{"features": x, "target": y}], targets_key="target")
    batch = batches.batches[0]
    assert "target" not in batch.kwargs and torch.equal(batch.targets, y)
    seen = {}
    batch.feed(lambda **kw: seen.update(kw))
    assert set(seen) == {"features"}
    batch.feed(lambda **kw: seen.update(kw), with_targets=True)
    assert torch.equal(seen["target"], y)


def test_subsets_are_the_same_samples_for_every_structure():
    x, z, y = _data(20)
    pairs = as_batches([(x[:7], y[:7]), (x[7:], y[7:])], max_samples=9, seed=4).merged()
    dicts = as_batches([{"features": x[:12], "other": z[:12], "flag": True, "labels": y[:12]},
                        {"features": x[12:], "other": z[12:], "flag": True, "labels": y[12:]}],
                       max_samples=9, seed=4).merged()
    assert torch.equal(pairs.inputs, dicts.kwargs["features"]) and torch.equal(pairs.targets, dicts.targets)
    assert dicts.kwargs["other"].shape == (9, 4) and dicts.kwargs["flag"] is True


def test_padded_sequences_rebatch_with_mask_and_ignored_labels():
    a = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long),
         "labels": torch.ones(2, 3, dtype=torch.long)}
    b = {"input_ids": torch.ones(1, 5, dtype=torch.long), "attention_mask": torch.ones(1, 5, dtype=torch.long),
         "labels": torch.ones(1, 5, dtype=torch.long)}
    merged = as_batches([a, b]).merged()
    assert merged.kwargs["input_ids"].shape == (3, 5)
    assert merged.kwargs["attention_mask"][:2, 3:].sum() == 0
    assert (merged.targets[:2, 3:] == -100).all() and (merged.targets[2] == 1).all()
    assert [bb.n_samples for bb in as_batches([a, b], batch_size=2)] == [2, 1]


def test_pair_batches_still_unpack():
    x, _, y = _data()
    inputs, targets = as_batches((x, y)).batches[0]
    assert torch.equal(inputs, x) and torch.equal(targets, y)
    with pytest.raises(DataError, match="only .* pair batches unpack"):
        _, _ = as_batches({"features": x, "labels": y}).batches[0]


@pytest.mark.parametrize("bad, fragment", [
    ([{"input_ids": torch.zeros(2, 3), "label": torch.zeros(2)}],
     "batch 0 is a dict without the targets key 'labels' (keys: ['input_ids', 'label'])"),
    ([(torch.zeros(2, 3), torch.zeros(2)), {"x1": torch.zeros(2, 3), "labels": torch.zeros(2)}],
     "batch 1 is a dict with keys ['labels', 'x1'] but batch 0 is an (inputs, targets) pair"),
    ([{"input_ids": torch.zeros(3, 2), "labels": torch.zeros(2)}], "entry 'input_ids' has 3 rows"),
])
def test_bad_batches_are_one_sentence(bad, fragment):
    with pytest.raises(DataError) as info:
        as_batches(bad, name="train data")
    message = str(info.value)
    assert message.startswith("train data: ") and fragment in message and "\n" not in message


def test_unequal_lengths_without_a_mask_cannot_be_joined():
    a = Batch("mapping", (), {"ids": torch.zeros(2, 3)}, torch.zeros(2, 3), "labels")
    b = Batch("mapping", (), {"ids": torch.zeros(1, 4)}, torch.zeros(1, 4), "labels")
    with pytest.raises(DataError, match="has shapes .* in different batches"):
        concat([a, b])
