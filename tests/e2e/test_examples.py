"""The example scripts run end to end (in their quick mode) and store what they print."""

import subprocess
import sys
from pathlib import Path

from landscape.store import Store

ROOT = Path(__file__).resolve().parents[2]


def test_analyze_checkpoints_example(tmp_path):
    script = ROOT / "examples" / "analyze_checkpoints.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "cnn")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "16 result(s) computed, 0 reused, 0 error(s)" in done.stdout
    assert len(list((tmp_path / "cnn" / "checkpoints").glob("epoch=*-step=*.ckpt"))) == 4
    with Store(tmp_path / "cnn" / "cnn.sqlite", readonly=True) as store:
        frame = store.scalars(run="cnn-lr0.1", probe="hessian")
    lambda_max = frame[frame["key"] == "lambda_max"].sort_values("step")["value"].to_numpy()
    assert len(lambda_max) == 4 and (lambda_max > 0).all()
    # The printed table shows the stored λ_max of the last checkpoint.
    last_row = done.stdout.split("view it with")[0].strip().splitlines()[-1].split()
    assert abs(float(last_row[2]) - float(lambda_max[-1])) <= 0.005 + 1e-9

    again = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "cnn")],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 result(s) computed, 16 reused" in again.stdout


def test_grokking_transformer_example(tmp_path):
    script = ROOT / "examples" / "grokking_transformer.py"
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "gt")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    with Store(tmp_path / "gt" / "grokking.sqlite", readonly=True) as store:
        for run in ("float32-ce", "weight-decay"):
            frame = store.scalars(run=run, probe="grokking")
            keys = set(frame["key"])
            assert {"sc_fraction", "near_sc_fraction", "logit_gap_mean", "nlm_cosine", "feature_change"} <= keys
            monitor = store.scalars(run=run, probe="monitor")
            accuracy = monitor[monitor["key"] == "train_accuracy"].sort_values("step")["value"].to_numpy()
            assert accuracy[-1] > accuracy[0]  # it learns
    assert "lambda_max" in done.stdout
