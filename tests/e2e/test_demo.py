"""`landscape demo` end to end: train, analyze with every registered probe, and reproduce from run.toml."""

import os
import subprocess
import sys

import probes
from landscape.store import Store


def _landscape(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "landscape.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def test_demo_builds_every_probe_at_every_checkpoint_and_its_config_reproduces_it(tmp_path):
    done = _landscape("demo", "--out", "demo", "--no-serve", "--quiet", "--steps", "40", "--checkpoints", "4",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    store_path = tmp_path / "demo" / "demo.sqlite"
    assert f"store: {os.path.join('demo', 'demo.sqlite')}" in done.stderr
    assert len(list((tmp_path / "demo" / "checkpoints").glob("step_*.pt"))) == 4

    with Store(store_path, readonly=True) as store:
        frame = store.results()
        saved_steps = [step for step, _, _ in store.checkpoints("digits-mlp")]
    at_checkpoints = frame[frame["probe"] != "monitor"]
    checkpoint_steps = sorted(int(s) for s in at_checkpoints["step"].unique())
    assert len(checkpoint_steps) == 4 and checkpoint_steps[0] == 0 and checkpoint_steps[-1] == 40
    assert sorted(saved_steps) == checkpoint_steps
    for name in probes.available():
        got = sorted(int(s) for s in at_checkpoints.loc[at_checkpoints["probe"] == name, "step"].unique())
        assert got == checkpoint_steps, f"probe {name!r} has results at {got}"
    monitor_steps = sorted(int(s) for s in frame.loc[frame["probe"] == "monitor", "step"].unique())
    assert monitor_steps == list(range(0, 40, 5))

    ls = _landscape("ls", str(store_path), cwd=tmp_path)
    assert ls.returncode == 0, ls.stderr
    for name in probes.available():
        assert name in ls.stdout

    again = _landscape("analyze", "--config", "demo/run.toml", "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"0 computed, {4 * len(probes.available())} already stored" in again.stderr
