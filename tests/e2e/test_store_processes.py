"""Store cases that need separate processes: a real read-only filesystem, and two `analyze` at once."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import textwrap

import pytest
import torch
from cli_helpers import cli_command, landscape, tree_env
from torch import nn

USER = textwrap.dedent(
    """
    import time
    import torch
    from torch import nn

    def make_model():
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def make_data():
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(60, 4, generator=g), torch.randint(0, 3, (60,), generator=g)
        return (x[:40], y[:40]), (x[40:], y[40:])

    def slow_loss(outputs, targets):
        if len(targets) > 8:  # the probes' batches, not the preflight's few samples
            time.sleep(0.3)
        return nn.functional.cross_entropy(outputs, targets)
    """
)
ANALYZE = ("analyze", "--model", "user.py:make_model", "--data", "user.py:make_data", "--checkpoints", "ckpts",
           "--probes", "metrics", "--quiet")


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "user.py").write_text(USER)
    (tmp_path / "ckpts").mkdir()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    for step in range(0, 60, 10):
        with torch.no_grad():
            model[2].weight.mul_(1.1)
        torch.save({"state_dict": model.state_dict(), "step": step}, tmp_path / "ckpts" / f"step_{step}.pt")
    return tmp_path


# -- a read-only filesystem -----------------------------------------------------------------------------------
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'


def _read_only_prefix(folder) -> tuple[str, ...]:
    """Run a command in a private mount namespace where ``folder`` is a read-only bind mount (a real
    read-only filesystem: EROFS for root too). Skips when user namespaces or mount are not available."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a read-only bind mount.")
    prefix = ("unshare", "-rm", "sh", "-c", READ_ONLY, "sh", str(folder))
    probe = subprocess.run([*prefix, "sh", "-c", f'! touch "{folder}/.probe" 2>/dev/null'], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here ({probe.stderr.decode().strip() or 'writable'}).")
    return prefix


def _wal_store(path) -> None:
    """A store as `analyze` leaves it (WAL mode), written without importing torch in the subprocesses."""
    import numpy as np

    from landscape.store import Store
    from probes.base import Result

    with Store(path) as store:
        for step in range(0, 60, 10):
            store.write_result("ckpts", step, "metrics", Result(scalars={"train_loss": 1.0 / (step + 1)},
                                                                arrays={"a": np.arange(3.0)}, params={}))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_ls_and_export_of_a_store_on_a_read_only_filesystem(project, tmp_path_factory):
    runs = project / "runs"
    runs.mkdir()
    _wal_store(runs / "s.sqlite")
    before = sorted(p.name for p in runs.iterdir())
    prefix = _read_only_prefix(runs)

    listing = landscape("ls", "runs/s.sqlite", cwd=project, prefix=prefix)
    assert listing.returncode == 0, listing.stderr
    assert "run ckpts" in listing.stdout and "6 result(s)" in listing.stdout and "read-only" in listing.stdout

    refused = landscape("export", "runs/s.sqlite", cwd=project, prefix=prefix)
    assert refused.returncode == 2 and "it is on a read-only filesystem; pass --out" in refused.stderr
    out = tmp_path_factory.mktemp("export")
    exported = landscape("export", "runs/s.sqlite", "--out", str(out), cwd=project, prefix=prefix)
    assert exported.returncode == 0, exported.stderr
    assert (out / "scalars.csv").read_text().count("\n") == 7
    assert sorted(p.name for p in runs.iterdir()) == before


@pytest.mark.slow
def test_dashboard_and_analyze_on_a_read_only_filesystem(project):
    runs = project / "runs"
    runs.mkdir()
    _wal_store(runs / "s.sqlite")
    before = sorted(p.name for p in runs.iterdir())
    prefix = _read_only_prefix(runs)
    serve = ("from dashboard import create_app; app = create_app(['runs/s.sqlite']); "
             "client = app.server.test_client(); print(client.get('/').status_code, "
             "[r.run for r in app.catalog.runs()], app.catalog.stores[0].immutable)")
    served = subprocess.run([*prefix, *cli_command()[:1], "-c", serve], cwd=project, capture_output=True, text=True,
                            env=tree_env(), timeout=300)
    assert served.returncode == 0, served.stderr
    assert served.stdout.split() == ["200", "['ckpts']", "True"]

    again = landscape(*ANALYZE, "--store", "runs/s.sqlite", cwd=project, prefix=prefix)
    assert again.returncode == 2 and "runs/s.sqlite is read-only (its folder is on a read-only filesystem)" in again.stderr
    fresh = landscape(*ANALYZE, "--store", "runs/new/deeper/s.sqlite", cwd=project, prefix=prefix)
    assert fresh.returncode == 2 and "Traceback" not in fresh.stderr
    assert "cannot create store runs/new/deeper/s.sqlite: its folder runs/new/deeper cannot be made (the nearest " \
           "existing folder runs is on a read-only filesystem)" in fresh.stderr
    assert sorted(p.name for p in runs.iterdir()) == before


# -- two processes on one run --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_analyze_processes_share_the_work(project):
    command = cli_command(*ANALYZE, "--loss", "user.py:slow_loss", "--store", "s.sqlite")
    processes = [subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=tree_env()) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    computed = [int(err.split(" computed,")[0].rsplit(" ", 1)[-1]) for err in outputs]
    assert sum(computed) == 6 and all(n < 6 for n in computed), outputs  # each result once, both did some
    assert any("computed by another process" in err for err in outputs)
    db = sqlite3.connect(project / "s.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT step) FROM results").fetchone() == (6, 6)
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    db.close()
