"""Outputs of every structure, the model's own loss, and the batch weights of the full-data mean."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from landscape.batch import Batch
from landscape.losses import TokenCrossEntropy
from landscape.objective import Objective, OutputError, find_logits, find_model_loss


class Output(OrderedDict):
    """Stands in for a Hugging Face ModelOutput: a mapping with attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def test_logits_are_found_in_every_structure():
    logits = torch.randn(3, 4)
    loss = torch.tensor(1.5)
    assert find_logits(logits) is logits
    assert find_logits((loss, logits, "cache")) is logits  # a leading 0-dim loss is skipped
    assert find_logits({"logits": logits, "hidden": torch.zeros(1)}) is logits
    assert find_logits(Output(loss=loss, logits=logits)) is logits
    assert find_logits({"start": logits}, "start") is logits
    assert find_logits((logits, loss), 1) is loss
    assert find_model_loss(Output(loss=loss, logits=logits)) is loss
    assert find_model_loss((loss, logits)) is loss
    assert find_model_loss(logits) is None


def test_missing_logits_name_the_outputs_and_the_key():
    with pytest.raises(OutputError) as info:
        find_logits(Output(hidden=torch.zeros(2)))
    assert "(a Output with keys ['hidden']) hold no logits" in str(info.value)
    assert "logits_key (CLI: --logits-key)" in str(info.value)
    with pytest.raises(OutputError, match="expected the entry 'scores'"):
        find_logits({"logits": torch.zeros(2)}, "scores")


def test_model_loss_without_a_loss_is_one_sentence():
    batch = Batch("mapping", (), {"x": torch.zeros(2, 3)}, torch.zeros(2, dtype=torch.long), "labels")
    with pytest.raises(OutputError, match=r"outputs\.loss.*passed under 'labels'"):
        Objective("model").loss({"logits": torch.zeros(2, 3)}, batch)


def test_loss_function_gets_the_logits_and_the_targets_and_the_model_no_labels():
    received = {}

    def spy(logits, targets):
        received.update(logits=logits, targets=targets)
        return nn.functional.cross_entropy(logits, targets)

    class Model(nn.Module):
        def forward(self, x, labels=None):
            received["labels_passed"] = labels is not None
            return Output(logits=x * 2)

    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    batch = Batch("mapping", (), {"x": x}, y, "labels")
    Objective(spy).batch_loss(Model(), batch)
    assert torch.equal(received["logits"], x * 2) and received["targets"] is y
    assert received["labels_passed"] is False
    Objective("model").forward(Model(), batch)
    assert received["labels_passed"] is True


def test_weights_count_the_terms_each_batch_mean_runs_over():
    labels = torch.tensor([[5, 6, -100, -100], [-100, 7, 8, 9]])
    batch = Batch("mapping", (), {}, labels, "labels")
    assert Objective(TokenCrossEntropy()).weight(batch) == 5
    assert Objective(TokenCrossEntropy(shift=True)).weight(batch) == 4  # position 0 predicts nothing
    assert Objective(nn.CrossEntropyLoss()).weight(batch) == 5
    assert Objective(nn.CrossEntropyLoss(), weight="samples").weight(batch) == 2
    assert Objective(nn.CrossEntropyLoss(ignore_index=5)).weight(batch) == 7
    floats = Batch("pair", (torch.zeros(3, 2),), {}, torch.zeros(3, 2))
    assert Objective(nn.MSELoss()).weight(floats) == 3


def test_shift_is_decided_from_the_model_for_its_own_loss():
    class GPTLMHeadModel(nn.Module):
        pass

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = GPTLMHeadModel()

    assert Objective("model").bind(Wrapper()).shift is True
    assert Objective("model").bind(nn.Linear(2, 2)).shift is False


def test_token_accuracy_is_shifted_and_skips_ignored_tokens():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = logits[0, 1, 3] = logits[0, 2, 0] = 1.0  # predicts 2, 3, 0 at positions 0, 1, 2
    labels = torch.tensor([[-100, 2, 1]])
    batch = Batch("mapping", (), {}, labels, "labels")
    hits = Objective(TokenCrossEntropy(shift=True)).correct({"logits": logits}, batch)
    assert (int(hits[0]), hits[1]) == (1, 2)  # position 0 → label 2 right, position 1 → label 1 wrong
    hits = Objective(TokenCrossEntropy()).correct({"logits": logits}, batch)
    assert (int(hits[0]), hits[1]) == (0, 2)
