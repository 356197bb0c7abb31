"""The example scripts run end to end (in their quick mode) and store what they print."""

import subprocess
import sys
from pathlib import Path

from cli_helpers import tree_env

from landscape.store import Store

ROOT = Path(__file__).resolve().parents[2]


def test_analyze_checkpoints_example(tmp_path):
    script = ROOT / "examples" / "analyze_checkpoints.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "cnn")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=tree_env())
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
                           capture_output=True, text=True, timeout=600, cwd=tmp_path, env=tree_env())
    assert again.returncode == 0, again.stderr
    assert "0 result(s) computed, 16 reused" in again.stdout


def test_adaptive_dynamics_example(tmp_path):
    script = ROOT / "examples" / "adaptive_dynamics.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "dyn")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "with 0 probe error(s)" in done.stdout
    with Store(tmp_path / "dyn" / "dynamics.sqlite", readonly=True) as store:
        sharp = store.scalars(run="adam", probe="sharpness", keys=["lambda_max_preconditioned", "preconditioned_threshold"])
        noise = store.scalars(run="adam", probe="noise", keys=["b_simple", "b_noise"])
        connectivity = store.scalars(run="connectivity", probe="connectivity")
    thresholds = sharp[sharp.key == "preconditioned_threshold"]["value"].to_numpy()
    assert len(thresholds) == 3 and abs(thresholds - 38 / 1e-3).max() <= 1e-9 * 38 / 1e-3  # (2 + 2β₁)/((1 − β₁)η)
    assert (sharp[sharp.key == "lambda_max_preconditioned"]["value"] > 0).all()
    assert sorted(noise["step"].unique()) == [20, 40, 60]
    assert set(connectivity["key"]) == {"line_barrier", "curve_barrier", "aligned_line_barrier"}
    printed = {line.split()[0]: float(line.split()[-1]) for line in done.stdout.splitlines()
               if line.strip().startswith(("straight", "trained")) and "(" not in line}
    stored = dict(zip(connectivity["key"], connectivity["value"]))
    assert abs(printed["trained"] - stored["curve_barrier"]) <= 5e-5


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
