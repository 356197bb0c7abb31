"""A real ``transformers.Trainer`` output folder analyzed with the command a user types.

``landscape analyze --model hf:OUT --data ... --loss model --checkpoints OUT`` must find every
``checkpoint-N`` folder the Trainer wrote, build the model from their ``config.json`` without a download,
use the model's own loss from the dict batches' ``labels``, and store each result under step N.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import analyze_hf_trainer as example  # noqa: E402


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "landscape.cli", "analyze", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    return out, example.train(out, steps=4)


def test_trainer_output_dir_is_analyzed_step_by_step(trained):
    out, output_dir = trained
    assert sorted(p.name for p in output_dir.iterdir() if p.is_dir()) == ["checkpoint-2", "checkpoint-4"]
    done = _analyze("--model", f"hf:{output_dir}", "--data", f"{ROOT / 'examples' / 'analyze_hf_trainer.py'}:make_data",
                    "--loss", "model", "--checkpoints", str(output_dir), "--probes", "metrics,hessian",
                    "--preset", "quick", "--store", "s.sqlite", "--quiet", cwd=out)
    assert done.returncode == 0, done.stderr
    assert "estimated cost per checkpoint" in done.stderr
    db = sqlite3.connect(out / "s.sqlite")
    rows = db.execute("SELECT probe, step FROM results ORDER BY probe, step").fetchall()
    assert rows == [("hessian", 2), ("hessian", 4), ("metrics", 2), ("metrics", 4)]
    paths = [Path(p).name for (p,) in db.execute("SELECT path FROM checkpoints ORDER BY step")]
    assert paths == ["checkpoint-2", "checkpoint-4"]
    losses = [v for (v,) in db.execute(
        "SELECT s.value FROM scalars s JOIN results r ON s.result = r.id WHERE r.probe='metrics' AND s.key='train_loss'")]
    assert len(losses) == 2 and all(0 < v < 5 for v in losses)


def test_bad_input_is_one_line(trained, tmp_path):
    out, output_dir = trained
    (tmp_path / "checkpoint-9").mkdir()
    data = f"{ROOT / 'examples' / 'analyze_hf_trainer.py'}:make_data"
    empty = _analyze("--model", f"hf:{output_dir}", "--data", data, "--loss", "model", "--checkpoints",
                     str(tmp_path), "--probes", "metrics", "--store", str(tmp_path / "s.sqlite"), "--quiet", cwd=out)
    assert empty.returncode == 2  # refused as bad input, before any result is written
    assert "holds no model weights: expected one of model.safetensors" in empty.stderr
    assert "Traceback" not in empty.stderr
    wrong_key = _analyze("--model", f"hf:{output_dir}", "--data", data, "--loss", "model", "--targets-key", "label",
                         "--checkpoints", str(output_dir), "--probes", "metrics", "--store",
                         str(tmp_path / "t.sqlite"), "--quiet", cwd=out)
    assert wrong_key.returncode == 2 and "Traceback" not in wrong_key.stderr
    assert "without the targets key 'label'" in wrong_key.stderr
    assert len([line for line in wrong_key.stderr.splitlines() if line.startswith("error:")]) == 1


@pytest.mark.slow
def test_the_example_runs_every_probe(tmp_path):
    assert example.main(["--out", str(tmp_path / "run"), "--steps", "4"]) == 0
