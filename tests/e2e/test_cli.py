"""The `landscape` command end to end, in subprocesses, as a user runs it."""

import signal
import sqlite3
import subprocess
import textwrap
import time

import pytest
import torch
from cli_helpers import cli_command, landscape, tree_env
from torch import nn

USER_MODULE = textwrap.dedent(
    """
    import time
    import torch
    from torch import nn

    def make_model():
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def make_data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(60, 4, generator=g)
        y = torch.randint(0, 3, (60,), generator=g)
        return (x[:40], y[:40]), (x[40:], y[40:])

    def no_data():
        return None

    def per_sample_loss(outputs, targets):
        return nn.functional.cross_entropy(outputs, targets, reduction="none")

    def slow_loss(outputs, targets):
        time.sleep(0.05)
        return nn.functional.cross_entropy(outputs, targets)
    """
)


def _landscape(*args, cwd, timeout=300):
    return landscape(*args, cwd=cwd, timeout=timeout)


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "user.py").write_text(USER_MODULE)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    for step in range(0, 60, 10):
        with torch.no_grad():
            model[2].weight.mul_(1.2)
        torch.save({"model_state_dict": model.state_dict(), "step": step}, folder / f"ckpt-{step:06d}.pth")
    return tmp_path


def _analyze(project, *extra, loss="torch.nn:CrossEntropyLoss", probes="metrics", store="s.sqlite"):
    return _landscape("analyze", "--model", "user.py:make_model", "--data", "user.py:make_data", "--loss", loss,
                      "--checkpoints", "ckpts", "--probes", probes, "--store", store, "--quiet", *extra, cwd=project)


def _count(path, table="results"):
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # the file exists but its tables are still being created
        return 0
    finally:
        db.close()


def test_analyze_ls_export(project):
    done = _analyze(project, "--run", "mlp")
    assert done.returncode == 0, done.stderr
    assert "6 computed" in done.stderr
    listing = _landscape("ls", "s.sqlite", cwd=project)
    assert listing.returncode == 0
    assert "run mlp" in listing.stdout and "metrics" in listing.stdout and "6 result(s)" in listing.stdout
    again = _analyze(project, "--run", "mlp")
    assert "0 computed, 6 already stored" in again.stderr
    export = _landscape("export", "s.sqlite", "--format", "csv", "--out", "exported", cwd=project)
    assert export.returncode == 0 and (project / "exported" / "scalars.csv").is_file()


def test_analyze_with_config(project):
    (project / "run.toml").write_text(
        '[run]\nname = "cfg"\nstore = "c.sqlite"\ncheckpoints = "ckpts"\nmax_samples = 20\nlr = 0.5\n'
        '[model]\nfactory = "user.py:make_model"\n[data]\nfactory = "user.py:make_data"\n'
        '[probes.metrics]\ngradient = false\n'
    )
    done = _landscape("analyze", "--config", "run.toml", "--quiet", cwd=project)
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(project / "c.sqlite")
    keys = {k for (k,) in db.execute("SELECT DISTINCT key FROM scalars")}
    assert "grad_norm" not in keys and "test_accuracy" in keys
    assert db.execute("SELECT meta_json FROM runs WHERE name='cfg'").fetchone()[0] == '{"lr": 0.5}'


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--model", "user.py:nope"), "has no attribute 'nope'"),
        (("--model", "missing_module_xyz:make"), "module 'missing_module_xyz' not found"),
        (("--data", "user.py:no_data"), "returned None"),
        (("--loss", "user.py:per_sample_loss"), "must return a scalar"),
        (("--checkpoints", "empty"), "holds no checkpoints"),
        (("--checkpoints", "nowhere"), "does not exist"),
        (("--probes", "nonexistent"), "unknown probe 'nonexistent'"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(project, args, fragment):
    (project / "empty").mkdir()
    base = {"--model": "user.py:make_model", "--data": "user.py:make_data", "--loss": "cross_entropy",
            "--checkpoints": "ckpts", "--probes": "metrics"}
    base.update(dict(zip(args[::2], args[1::2])))
    flat = [item for pair in base.items() for item in pair]
    done = _landscape("analyze", *flat, "--store", "s.sqlite", "--quiet", cwd=project)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and fragment in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert _count(project / "s.sqlite") == 0


def test_bad_checkpoints_are_reported_and_skipped(project):
    (project / "ckpts" / "step_000070.pt").write_bytes(b"not a checkpoint at all")
    torch.save(nn.Linear(2, 2).state_dict(), project / "ckpts" / "step_000080.pt")
    done = _analyze(project)
    assert done.returncode == 1
    assert "checkpoint file ckpts/step_000070.pt is a text file (it starts with " in done.stderr
    assert "step_000080.pt does not fit the model" in done.stderr
    assert _count(project / "s.sqlite") == 6 and _count(project / "s.sqlite", "errors") == 2


def test_malicious_checkpoint_is_refused(project):
    marker = project / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    torch.save({"state_dict": {}, "payload": Evil()}, project / "ckpts" / "step_000090.pt")
    done = _analyze(project)
    assert done.returncode == 1 and "--unsafe-pickle" in done.stderr
    assert not marker.exists()


def _snapshot(path):
    """Every stored number, bit for bit: (run, step, probe, key, value) scalars and (…, key, npy bytes) arrays."""
    db = sqlite3.connect(path)
    try:
        scalars = db.execute("SELECT r.run, r.step, r.probe, s.key, s.value FROM scalars s JOIN results r "
                             "ON r.id = s.result ORDER BY 1, 2, 3, 4").fetchall()
        arrays = db.execute("SELECT r.run, r.step, r.probe, a.key, a.npy FROM arrays a JOIN results r "
                            "ON r.id = a.result ORDER BY 1, 2, 3, 4").fetchall()
    finally:
        db.close()
    return scalars, arrays


def _integrity(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


KILL_CMD = ("analyze", "--model", "user.py:make_model", "--data", "user.py:make_data", "--loss", "user.py:slow_loss",
            "--checkpoints", "ckpts", "--probes", "metrics", "--store", "s.sqlite", "--quiet")


def _run_and_kill(project, until):
    """Start the analysis and kill -9 it as soon as ``until(store)`` holds; the number of results then stored."""
    store = project / "s.sqlite"
    process = subprocess.Popen(cli_command(*KILL_CMD), cwd=project, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=tree_env())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None and not until(store):
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert store.exists(), "the run should have created its store before it was killed"
    assert _integrity(store) == "ok"
    return _count(store)


def test_killed_analyze_resumes_without_recomputing(project, monkeypatch, capsys):
    """kill -9 once the store file appears (its creation and first writes), then again two results later: each
    time the store passes SQLite's integrity check, and the same command finishes it with results bit for bit
    those of an uninterrupted run."""
    first = _run_and_kill(project, lambda store: store.exists())
    assert first < 6, "the run should have been killed part-way"
    second = _run_and_kill(project, lambda store: store.exists() and _count(store) >= first + 2)
    assert first + 2 <= second < 6, "the resumed run should have been killed part-way"
    done = _landscape(*KILL_CMD, cwd=project)
    assert done.returncode == 0, done.stderr
    assert f"{6 - second} computed, {second} already stored" in done.stderr
    store = project / "s.sqlite"
    assert _integrity(store) == "ok"
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT step) FROM results").fetchone() == (6, 6)
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    db.close()
    from landscape.cli import main

    monkeypatch.chdir(project)  # the uninterrupted reference, in this process
    assert main([*KILL_CMD[:-2], "reference.sqlite", "--quiet"]) == 0, capsys.readouterr().err
    assert _snapshot(store) == _snapshot(project / "reference.sqlite")


def test_probes_listing_and_version(project):
    listing = _landscape("probes", cwd=project)
    assert listing.returncode == 0 and "metrics:" in listing.stdout
    assert _landscape("--version", cwd=project).stdout.startswith("landscape ")


def test_dashboard_refuses_a_missing_store_or_a_file_that_is_no_store(tmp_path):
    missing = _landscape("dashboard", "nowhere.sqlite", cwd=tmp_path)
    assert missing.returncode == 2 and "store nowhere.sqlite does not exist" in missing.stderr
    (tmp_path / "notes.sqlite").write_text("not a database")
    garbage = _landscape("dashboard", "notes.sqlite", cwd=tmp_path)
    assert garbage.returncode == 2 and "notes.sqlite is not a landscape store" in garbage.stderr
    assert "dashboard on" not in garbage.stderr
