import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from landscape.data import Batches, DataError, as_batches


def _xy(n=10, d=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.arange(n) % 3


def test_single_pair_becomes_one_batch():
    x, y = _xy()
    b = as_batches((x, y))
    assert len(b) == 1 and b.n_samples == 10
    assert torch.equal(b.batches[0].inputs, x)


def test_numpy_pair_and_list_of_unequal_batches():
    x, y = _xy()
    b = as_batches([(x[:7].numpy(), y[:7].numpy()), (x[7:], y[7:])])
    assert [len(t) for t, _ in b] == [7, 3]
    assert torch.equal(b.merged().inputs, x)


def test_dataloader_is_materialized_once_and_reiterable():
    x, y = _xy(20)
    loader = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=False)
    b = as_batches(loader)
    assert [len(t) for t, _ in b] == [6, 6, 6, 2]
    assert list(b) == list(b)


def test_max_samples_is_a_fixed_seeded_subset_independent_of_batching():
    x, y = _xy(50)
    one = as_batches((x, y), max_samples=12, seed=3).merged().inputs
    split = as_batches([(x[:20], y[:20]), (x[20:], y[20:])], max_samples=12, seed=3).merged().inputs
    again = as_batches((x, y), max_samples=12, seed=3).merged().inputs
    assert one.shape == (12, 3)
    assert torch.equal(one, split) and torch.equal(one, again)
    other = as_batches((x, y), max_samples=12, seed=4).merged().inputs
    assert not torch.equal(one, other)


def test_max_samples_above_total_keeps_everything():
    x, y = _xy(5)
    assert as_batches((x, y), max_samples=100).n_samples == 5


def test_rebatched_keeps_order():
    x, y = _xy(10)
    b = as_batches((x, y), batch_size=4)
    assert [len(t) for t, _ in b] == [4, 4, 2]
    assert torch.equal(b.merged().targets, y)


def test_split_cuts_each_batch_on_its_own_and_keeps_order():
    x, y = _xy(10)
    b = as_batches([(x[:7], y[:7]), (x[7:], y[7:])]).split(3)
    assert [len(t) for t, _ in b] == [3, 3, 1, 3]  # 7 → 3 + 3 + 1, then 3: never merged across batches
    assert torch.equal(b.merged().targets, y)
    with pytest.raises(DataError, match="max_batch_size must be a positive integer"):
        b.split(0)


def test_device_placement_cpu():
    x, y = _xy()
    b = as_batches((x, y), device="cpu")
    assert b.device.type == "cpu"
    assert isinstance(b.to("cpu"), Batches)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (None, "is None"),
        ("path.csv", "must be an (X, y) tuple"),
        ([(torch.zeros(0, 3), torch.zeros(0))], "empty"),
        ([(torch.zeros(3, 2), torch.zeros(4))], "3 inputs but 4 targets"),
        ([torch.zeros(3)], "must be an (inputs, targets) pair"),
        ([({"a": 1}, torch.zeros(1))], "must be a tensor"),
    ],
)
def test_bad_data_gives_clear_error(bad, fragment):
    with pytest.raises(DataError, match=None) as info:
        as_batches(bad, name="train data")
    assert fragment in str(info.value)
    assert str(info.value).startswith("train data")


def test_bad_max_samples():
    with pytest.raises(DataError, match="max_samples"):
        as_batches(_xy(), max_samples=0)


def test_dict_batches_accepted():
    x, y = _xy(4)
    b = as_batches([{"inputs": x, "targets": y}])
    assert b.n_samples == 4
    assert np.array_equal(b.merged().targets.numpy(), y.numpy())
