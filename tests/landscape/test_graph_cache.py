"""The memory estimate that decides which per-batch gradient graphs the curvature operator keeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.graph_cache import GraphCache, GraphMeter, free_memory, graphs_to_keep


def test_graphs_to_keep_counts_the_leading_batches_that_fit() -> None:
    # 100 bytes measured for 10 samples: 10 bytes a sample
    assert graphs_to_keep(100, 10, [10, 20, 5], budget=350) == 3
    assert graphs_to_keep(100, 10, [10, 20, 5], budget=300) == 2
    assert graphs_to_keep(100, 10, [10, 20, 5], budget=299) == 1
    assert graphs_to_keep(100, 10, [10, 20, 5], budget=0) == 0


def test_free_memory_of_the_cpu_is_positive() -> None:
    assert free_memory(torch.device("cpu")) > 0


def test_meter_counts_saved_activations_not_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 400), nn.Tanh(), nn.Linear(400, 3)).double()
    params = list(model.parameters())
    sizes = {}
    for n in (100, 200):
        x = torch.randn(n, 50, dtype=torch.float64)
        with GraphMeter(params, torch.device("cpu")) as meter:
            loss = model(x).square().mean()
            torch.autograd.grad(loss, params, create_graph=True)
        sizes[n] = meter.bytes
    activations = 100 * 400 * 8  # the hidden layer of 100 samples in float64
    assert sizes[100] >= activations
    # the parameters (about 21k float64 values) are not counted: the estimate grows with the batch
    assert 1.8 <= sizes[200] / sizes[100] <= 2.2


def test_forced_modes_do_not_wait_for_a_measurement() -> None:
    cpu = torch.device("cpu")
    assert GraphCache(True, None, [3, 4], cpu, [], 0).kept == 2
    assert GraphCache(False, None, [3, 4], cpu, [], 0).kept == 0
    assert GraphCache(None, None, [3, 4], cpu, [], 0).kept is None
    assert GraphCache(None, 0, [3], cpu, [], 0).kept == 1


@pytest.mark.parametrize(("mode", "budget", "message"), [
    ("auto", None, "cache_graph must be True, False or None"),
    (None, -5, "cache_budget must be a number of bytes"),
    (None, True, "cache_budget must be a number of bytes"),
])
def test_bad_arguments_are_one_sentence_errors(mode, budget, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GraphCache(mode, budget, [3], torch.device("cpu"), [], 0)
