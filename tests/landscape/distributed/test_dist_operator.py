"""Data-parallel curvature, grids, loss and gradient on 2 and 3 gloo ranks equal one process's.

Float64 throughout: the ranks' partial sums are added in another order than one process adds its
batches, which changes the results by rounding only (~1e-15 relative); 1e-10 leaves room for the
Lanczos/SLQ recurrences to amplify it a few thousand times, far below any real disagreement.
"""

from __future__ import annotations

import numpy as np
import pytest

from landscape.distributed import DistributedError
from landscape.distributed.launch import run_ranks
from tests.landscape.distributed.rank_jobs import CASES, lose_a_rank_mid_product, measure, measure_on_rank

RTOL = 1e-10


def _single(case: str) -> dict:
    model, loss_fn, batches = CASES[case]()
    want = measure(model, loss_fn, batches)
    np.testing.assert_allclose(want["top_in_parts"][0], want["top"][0], rtol=RTOL)  # parts: the same operator
    return want


def _assert_same(got: dict, want: dict, where: str) -> None:
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=RTOL, atol=RTOL * np.max(np.abs(value)),
                                   err_msg=f"{key} on {where}")


@pytest.mark.parametrize(("world", "mode"), [(2, "sharded"), (3, "sharded"), (2, "replicated")])
def test_mlp_measurements_match_one_process(world: int, mode: str) -> None:
    want = _single("mlp")
    for r, got in enumerate(run_ranks(measure_on_rank, world, "mlp", mode, timeout_s=240)):
        _assert_same(got, want, f"rank {r} of {world} ({mode})")


def test_gpt2_dict_batches_on_three_ranks_match_one_process() -> None:
    want = _single("gpt2")
    for r, got in enumerate(run_ranks(measure_on_rank, 3, "gpt2", "replicated", timeout_s=300)):
        _assert_same(got, want, f"rank {r} of 3")


def test_ranks_with_different_models_are_refused_naming_the_rank() -> None:
    with pytest.raises(DistributedError, match=r"rank 1 disagrees with rank 0 on the model's parameters"):
        run_ranks(measure_on_rank, 2, "mlp", "replicated", 7, timeout_s=120)


def test_local_mode_measures_each_rank_alone() -> None:
    """In mode "local" (the checkpoint sweep) no collective runs: a rank measures its own data alone."""
    want = _single("mlp")
    got = run_ranks(measure_on_rank, 2, "mlp", "local", timeout_s=240)
    _assert_same(got[0], want, "rank 0 (all data, alone)")


def test_a_rank_that_dies_mid_product_is_one_clear_error(tmp_path) -> None:
    report = tmp_path / "rank0.txt"
    with pytest.raises(DistributedError, match=r"rank 1 of 2 failed: the process died with exit code 3"):
        run_ranks(lose_a_rank_mid_product, 2, "die", str(report), timeout_s=120, collective_timeout_s=20)
    message = report.read_text()
    assert message.startswith("rank 0 of 2 lost the process group during a curvature product: another rank died")
    assert "nothing of it was written" in message


def test_a_rank_that_stalls_past_the_timeout_is_one_clear_error(tmp_path) -> None:
    report = tmp_path / "rank0.txt"
    results = run_ranks(lose_a_rank_mid_product, 2, "stall", str(report), timeout_s=120, collective_timeout_s=4)
    assert results[1] == "stalled"
    assert results[0].startswith("rank 0 of 2 lost the process group during a curvature product")
    assert "past the 4 s timeout" in results[0]
