"""`torchrun -m landscape analyze`: the same results as one process, rank 0 alone writes, kills resume.

The ranks run on gloo over 127.0.0.1 (``torchrun --standalone``). The user's model is float64, so the
data-parallel sums agree with one process's to rounding (1e-9 relative leaves room for the Krylov
recurrences); the exactness of each kernel on 2 and 3 ranks is tested in tests/landscape/distributed.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from cli_helpers import cli_command, tree_env
from torch import nn

from landscape.store import Store

USER = textwrap.dedent(
    """
    import os
    import torch
    from torch import nn

    def make_model():
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()

    def make_data():
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (50,), generator=g)
        return [(x[i:i + 15], y[i:i + 15]) for i in range(0, 35, 15)], (x[35:], y[35:])

    CALLS = [0]

    def counted_loss(outputs, targets):
        CALLS[0] += 1
        count = os.environ.get("COUNT_FILE")
        if count and os.environ.get("RANK", "0") == "0" and len(targets) > 8:
            with open(count, "a") as handle:
                handle.write("x")
        kill = os.environ.get("KILL_RANK1_AFTER")
        if kill and os.environ.get("RANK") == "1" and CALLS[0] > int(kill):
            os._exit(9)
        return nn.functional.cross_entropy(outputs, targets)
    """
)
PROBES = "metrics,grokking,sharpness,hessian,noise,collapse,slices,weights"  # every registered probe


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "user.py").write_text(USER)
    (tmp_path / "ckpts").mkdir()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    for step in (0, 10, 20):
        with torch.no_grad():
            model[2].weight.mul_(1.3)
        torch.save({"state_dict": model.state_dict(), "step": step}, tmp_path / "ckpts" / f"step_{step}.pt")
    return tmp_path


def _analyze(project, store: str, *extra: str, ranks: int = 0, probes: str = PROBES, timeout: float = 300,
             **env: str) -> subprocess.CompletedProcess:
    args = ["analyze", "--model", "user.py:make_model", "--data", "user.py:make_data", "--loss",
            "user.py:counted_loss", "--checkpoints", "ckpts", "--probes", probes, "--preset", "quick",
            "--store", store, "--quiet", *extra]
    if ranks:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                   "-m", "landscape", *args]
    else:
        command = cli_command(*args)
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=timeout,
                          env=tree_env(LANDSCAPE_DIST_TIMEOUT="60", **env))


def _contents(path) -> dict:
    with Store(path, readonly=True) as store:
        scalars = store.scalars()
        values = {(r.step, r.probe, r.key): r.value for r in scalars.itertuples()}
        arrays = {(step, probe): store.arrays("ckpts", step, probe)
                  for step, probe in store.results()[["step", "probe"]].itertuples(index=False)}
    return {"scalars": values, "arrays": arrays}


def _assert_same_results(got: dict, want: dict) -> None:
    assert got["scalars"].keys() == want["scalars"].keys()
    for key, value in want["scalars"].items():
        if key[2] == "peak_memory_mb":  # each process its own
            continue
        np.testing.assert_allclose(got["scalars"][key], value, rtol=1e-9, atol=1e-12, err_msg=str(key))
    assert got["arrays"].keys() == want["arrays"].keys()
    for key, arrays in want["arrays"].items():
        assert got["arrays"][key].keys() == arrays.keys(), key
        for name, value in arrays.items():
            if value.dtype.kind in "fc":
                np.testing.assert_allclose(got["arrays"][key][name], value, rtol=1e-9, atol=1e-12,
                                           err_msg=f"{key} {name}")


@pytest.fixture()
def single(project):
    done = _analyze(project, "one.sqlite")
    assert done.returncode == 0, done.stderr
    return _contents(project / "one.sqlite")


@pytest.mark.parametrize("shard", ["data", "checkpoints"])
def test_two_ranks_store_what_one_process_stores(project, single, shard):
    done = _analyze(project, "two.sqlite", "--shard", shard, ranks=2)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("analyzing 3 checkpoint(s)") == 1  # rank 0 alone speaks
    assert "on 2 ranks" in done.stderr
    _assert_same_results(_contents(project / "two.sqlite"), single)


def test_more_ranks_than_checkpoints_say_they_are_idle(project):
    (project / "ckpts" / "step_20.pt").unlink()
    done = _analyze(project, "three.sqlite", "--shard", "checkpoints", ranks=3, probes="metrics")
    assert done.returncode == 0, done.stderr
    assert "rank 2 of 3: idle, the 2 checkpoint(s) left to measure are fewer than the 3 ranks." in done.stderr
    with Store(project / "three.sqlite", readonly=True) as store:
        assert sorted(store.results()["step"]) == [0, 10]
        assert store.errors().empty


def test_a_rank_killed_during_a_grid_loses_nothing_committed_and_the_rerun_resumes(project, single, tmp_path):
    full = tmp_path / "full.count"
    fresh = _analyze(project, "fresh.sqlite", ranks=2, probes="slices", COUNT_FILE=str(full))
    assert fresh.returncode == 0, fresh.stderr
    killed = _analyze(project, "k.sqlite", ranks=2, probes="slices", KILL_RANK1_AFTER="400")
    assert killed.returncode != 0
    db = sqlite3.connect(project / "k.sqlite")
    saved_rows = db.execute("SELECT COUNT(DISTINCT row) FROM partial_rows").fetchone()[0]
    assert saved_rows > 0, killed.stderr
    db.close()
    rest = tmp_path / "rest.count"
    resumed = _analyze(project, "k.sqlite", ranks=2, probes="slices", COUNT_FILE=str(rest))
    assert resumed.returncode == 0, resumed.stderr
    assert len(rest.read_text()) < len(full.read_text())  # the saved rows were not evaluated again
    got = _contents(project / "k.sqlite")
    want = {"scalars": {k: v for k, v in single["scalars"].items() if k[1] == "slices"},
            "arrays": {k: v for k, v in single["arrays"].items() if k[1] == "slices"}}
    _assert_same_results(got, want)
