"""Bad and surprising inputs to `landscape analyze`, `ls`, `export` and `dashboard`: each gets one clear
sentence (exit 2 when nothing could be done) and the store is left unchanged, or holds exactly the valid
results. The command runs in this process (``landscape.cli.main``) to keep the corpus fast; the cases
that need separate processes are in ``test_store_processes.py``."""

from __future__ import annotations

import argparse
import os
import sqlite3
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from landscape.cli import main
from landscape.store import Store

USER = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make_model():
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def same_model():
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def broken_model():
        raise RuntimeError("no GPU in this sandbox")

    def _xy(seed=0, n=60):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)

    def make_data():
        x, y = _xy()
        return (x[:40], y[:40]), (x[40:], y[40:])

    def other_data():
        x, y = _xy(seed=1)
        return (x[:40], y[:40]), (x[40:], y[40:])

    def broken_data():
        raise OSError("dataset folder /data/missing is not mounted")

    def late_bad_label():
        x, y = _xy()
        y = y.clone()
        y[30] = 5
        return x[:40], y[:40]

    def empty_data():
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)

    def int_inputs():
        x, y = _xy()
        return (x * 10).long(), y

    def float_labels():
        x, y = _xy()
        return x, y.float()

    def sum_loss(outputs, targets):
        return nn.functional.cross_entropy(outputs, targets, reduction="sum")

    def make_loss():
        return nn.CrossEntropyLoss()

    def smoothed_loss():
        return nn.CrossEntropyLoss(label_smoothing=0.1)

    def picky_loss(outputs, targets):
        raise ValueError("wants one-hot targets")
    """
)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    (tmp_path / "user.py").write_text(USER)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    for step in (0, 10, 20):
        with torch.no_grad():
            model[2].weight.mul_(1.2)
        torch.save({"model_state_dict": model.state_dict(), "step": step}, folder / f"step_{step:03d}.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def analyze(capsys, *extra, model="user.py:make_model", data="user.py:make_data", loss="torch.nn:CrossEntropyLoss",
            store="s.sqlite", checkpoints="ckpts", probes="metrics"):
    """Run `landscape analyze` in-process; (exit code, stderr)."""
    code = main(["analyze", "--model", model, "--data", data, "--loss", loss, "--checkpoints", checkpoints,
                 "--probes", probes, "--store", store, "--quiet", *extra])
    return code, capsys.readouterr().err


def last_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    return lines[-1]


def snapshot(path: Path):
    """What a store holds, to compare before/after: None without a file, else its rows by table."""
    if not path.exists():
        return None
    db = sqlite3.connect(path)
    try:
        tables = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
        return {t: sorted(map(repr, db.execute(f'SELECT * FROM "{t}"').fetchall())) for t in tables}
    finally:
        db.close()


def valid_steps(path: Path) -> list[int]:
    with Store(path, readonly=True) as store:
        frame = store.results()
    return sorted(int(s) for s in frame[frame.valid == 1].step)


# -- 1. stale results are measured again ------------------------------------------------------------------
def test_another_data_loss_or_model_factory_is_measured_again(project, capsys):
    code, err = analyze(capsys)
    assert code == 0 and "3 computed, 0 already stored" in err
    code, err = analyze(capsys, data="user.py:other_data")
    assert code == 0 and "3 computed, 0 already stored" in err, err
    assert "3 stored result(s) were computed from other inputs (data)" in err and "--reuse" in err
    code, err = analyze(capsys, loss="user.py:smoothed_loss")
    assert code == 0 and "3 computed, 0 already stored" in err and "(loss)" in err
    code, err = analyze(capsys, model="user.py:same_model")
    assert code == 0 and "3 computed, 0 already stored" in err and "(model factory)" in err
    code, err = analyze(capsys, model="user.py:same_model")
    assert code == 0 and "0 computed, 3 already stored" in err
    with Store(project / "s.sqlite", readonly=True) as store:
        frame = store.results()
        losses = store.scalars(keys=["train_loss"])
    assert len(frame) == 12 and frame.inputs_json.nunique() == 4
    # every data set gave its own numbers: other data, other loss values at the same step
    assert losses[losses.step == 0].value.nunique() >= 3

    main(["ls", "s.sqlite"])
    listing = capsys.readouterr().out
    assert listing.count("computed from: data ") == 4 and "user.py:other_data" in listing
    assert "loss user.py:smoothed_loss" in listing and "model factory user.py:same_model" in listing


def test_reuse_keeps_results_computed_from_other_inputs_and_says_so(project, capsys):
    analyze(capsys)
    before = snapshot(project / "s.sqlite")
    code, err = analyze(capsys, "--reuse", data="user.py:other_data")
    assert code == 0 and "0 computed, 3 already stored" in err
    assert "--reuse kept 3 stored result(s) computed from other inputs" in err
    assert snapshot(project / "s.sqlite")["results"] == before["results"]
    code, err = analyze(capsys, "--reuse", "--recompute")
    assert code == 2 and "contradict" in last_error(err)


# -- 2. a loss that sums -------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, extra", [("user.py:sum_loss", ()), ("torch.nn:CrossEntropyLoss", ("--config", "run.toml"))])
def test_a_summing_loss_is_refused_before_anything_is_written(project, capsys, loss, extra):
    if extra:
        (project / "run.toml").write_text(
            '[run]\nstore = "s.sqlite"\ncheckpoints = "ckpts"\n[model]\nfactory = "user.py:make_model"\n'
            '[data]\nfactory = "user.py:make_data"\n[loss]\nfactory = "torch.nn:CrossEntropyLoss"\n'
            'kwargs = { reduction = "sum" }\n')
        code = main(["analyze", "--config", "run.toml", "--probes", "metrics", "--quiet"])
        err = capsys.readouterr().err
    else:
        code, err = analyze(capsys, loss=loss)
    line = last_error(err)
    assert code == 2 and "must return the mean loss over the batch" in line and "it is their sum" in line
    assert snapshot(project / "s.sqlite") is None


# -- 4. another application's database ------------------------------------------------------------------------
def test_a_foreign_sqlite_file_is_refused_and_left_alone(project, capsys):
    other = project / "other_app.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.execute("INSERT INTO customers VALUES (1, 'Ada')")
    db.commit()
    db.close()
    before = other.read_bytes()
    code, err = analyze(capsys, store="other_app.db")
    line = last_error(err)
    assert code == 2 and "other_app.db is an SQLite database of another application (tables: customers, orders)" in line
    for command in (["ls", "other_app.db"], ["export", "other_app.db"], ["dashboard", "other_app.db"]):
        assert main(command) == 2
        assert "another application" in last_error(capsys.readouterr().err)
    assert other.read_bytes() == before
    assert sorted(p.name for p in project.iterdir() if p.name.startswith("other_app")) == ["other_app.db"]


# -- 5. the dashboard beyond loopback --------------------------------------------------------------------------
def test_dashboard_on_all_interfaces_warns_and_needs_a_token(project, capsys, monkeypatch):
    analyze(capsys)
    served = {}
    monkeypatch.setattr("dashboard.app.serve", lambda paths, **kwargs: served.update(kwargs))
    monkeypatch.delenv("LANDSCAPE_TOKEN", raising=False)
    assert main(["dashboard", "s.sqlite", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "warning: --host 0.0.0.0 serves the dashboard beyond this machine" in err
    assert "pass --token SECRET (or set LANDSCAPE_TOKEN)" in last_error(err) and not served
    assert main(["dashboard", "s.sqlite", "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "at least 8 characters" in last_error(capsys.readouterr().err)
    assert main(["dashboard", "s.sqlite", "--host", "0.0.0.0", "--token", "s3cret-token", "--debug"]) == 2
    assert "debugger" in last_error(capsys.readouterr().err)
    monkeypatch.setenv("LANDSCAPE_TOKEN", "from-the-environment")
    assert main(["dashboard", "s.sqlite", "--host", "0.0.0.0", "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "http://0.0.0.0:8123/?token=from-the-environment" in err
    assert served == {"host": "0.0.0.0", "port": 8123, "debug": False, "token": "from-the-environment"}
    monkeypatch.delenv("LANDSCAPE_TOKEN")
    served.clear()
    assert main(["dashboard", "s.sqlite"]) == 0  # loopback: no warning, no token needed
    assert "warning" not in capsys.readouterr().err and served["token"] is None


# -- 6. messages -------------------------------------------------------------------------------------------------
def test_a_pickle_calling_os_system_is_an_unsafe_pickle_naming_the_global(project, capsys):
    marker = project / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "payload": Evil()}, project / "ckpts" / "step_030.pt")
    code, err = analyze(capsys)
    assert code == 1 and not marker.exists()
    message = next(line for line in err.splitlines() if "step_030.pt" in line)
    assert "is an unsafe pickle: it needs the Python global posix.system" in message or \
        "is an unsafe pickle: it needs the Python global nt.system" in message
    assert "--unsafe-pickle" in message and "truncated" not in message
    assert valid_steps(project / "s.sqlite") == [0, 10, 20]


def test_unsafe_pickle_is_honoured_while_finding_steps(project, capsys):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    torch.save({"state_dict": model.state_dict(), "step": 70, "hparams": argparse.Namespace(lr=0.1)},
               project / "ckpts" / "final.pt")
    code, err = analyze(capsys)
    line = last_error(err)
    assert code == 2 and "final.pt is an unsafe pickle" in line and "argparse.Namespace" in line
    assert snapshot(project / "s.sqlite") is None
    code, err = analyze(capsys, "--unsafe-pickle")
    assert code == 0, err
    assert valid_steps(project / "s.sqlite") == [0, 10, 20, 70]


@pytest.mark.parametrize("flag, target, gist", [
    ("model", "user.py:broken_model", "model factory 'user.py:broken_model' raised RuntimeError: no GPU in this sandbox."),
    ("data", "user.py:broken_data", "data factory 'user.py:broken_data' raised OSError: dataset folder /data/missing "
                                    "is not mounted."),
])
def test_a_factory_that_raises_is_one_sentence(project, capsys, flag, target, gist):
    code, err = analyze(capsys, **{flag: target})
    assert code == 2 and gist in last_error(err)
    assert snapshot(project / "s.sqlite") is None


def test_a_text_file_named_pt_is_a_clear_sentence(project, capsys):
    (project / "ckpts" / "step_030.pt").write_text("loss went down nicely\n")
    code, err = analyze(capsys)
    assert code == 1
    assert "checkpoint file ckpts/step_030.pt is a text file (it starts with 'loss went down nicely')" in err
    assert "KeyError" not in err
    assert valid_steps(project / "s.sqlite") == [0, 10, 20]


def test_a_label_beyond_the_preflight_samples_is_reported_once_before_any_work(project, capsys):
    code, err = analyze(capsys, "--probes", "metrics,sharpness", data="user.py:late_bad_label")
    line = last_error(err)
    assert code == 2 and line == ("error: train data batch 0 holds the class label 5, but the model has 3 outputs "
                                  "per sample: labels must lie in 0..2.")
    assert err.count("class label 5") == 1
    assert snapshot(project / "s.sqlite") is None


def test_a_zero_argument_loss_factory_is_called(project, capsys):
    code, err = analyze(capsys, loss="user.py:make_loss")
    assert code == 0 and "3 computed" in err
    assert valid_steps(project / "s.sqlite") == [0, 10, 20]


def test_loss_errors_show_outputs_and_targets_of_the_same_samples(project, capsys):
    code, err = analyze(capsys, loss="user.py:picky_loss")
    line = last_error(err)
    assert code == 2 and "outputs (a tensor of shape (8, 3)) and the train data targets (8,)" in line and "wants one-hot" in line
    assert snapshot(project / "s.sqlite") is None


def test_export_of_odd_run_and_probe_names_stays_in_its_folder(project, capsys):
    from probes.base import Result

    odd = ["a/b", "../../escape", "x'); DROP TABLE results; --", "名前", ".hidden", "a_b"]
    with Store(project / "s.sqlite") as store:
        for i, name in enumerate(odd):
            store.write_result(name, i, name, Result(scalars={"v": float(i)}, arrays={"a": [i, i]}, params={"i": i}))
    assert main(["export", "s.sqlite", "--out", "out"]) == 0
    files = sorted((project / "out" / "arrays").iterdir())
    assert len(files) == len(odd) and all(f.parent == project / "out" / "arrays" for f in files)
    assert not (project.parent / "escape").exists() and not any(f.name.startswith(".") for f in files)
    import numpy as np

    assert sorted(int(np.load(f)["a"][0]) for f in files) == list(range(len(odd)))
    with Store(project / "s.sqlite", readonly=True) as store:
        assert sorted(store.runs()) == sorted(odd) and len(store.results()) == len(odd)


def test_max_samples_zero_is_refused_before_a_store_exists(project, capsys):
    for flag, value in (("--max-samples", "0"), ("--batch-size", "-3")):
        code, err = analyze(capsys, flag, value)
        assert code == 2 and f"{flag} must be a positive integer, got {value}" in last_error(err)
    assert not (project / "s.sqlite").exists()


# -- already fine: kept so --------------------------------------------------------------------------------------
def _write_checkpoint_bytes(project: Path, name: str, payload: bytes) -> None:
    (project / "ckpts" / name).write_bytes(payload)


def _truncated(project: Path) -> bytes:
    data = (project / "ckpts" / "step_000.pt").read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize("name, payload, gist", [
    ("step_030.pt", _truncated, "step_030.pt is truncated or not a checkpoint"),
    ("step_030.pt", lambda p: b"", "step_030.pt is empty (0 bytes)"),
    ("step_030.safetensors", lambda p: b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}",
     "step_030.safetensors is not a readable safetensors file"),
    ("step_030.pt", lambda p: (torch.save(nn.Linear(4, 3).state_dict(), p / "tmp.bin"),
                               (p / "tmp.bin").read_bytes())[1], "step_030.pt does not fit the model (missing keys"),
])
def test_a_bad_checkpoint_is_reported_and_the_others_measured(project, capsys, name, payload, gist):
    _write_checkpoint_bytes(project, name, payload(project))
    code, err = analyze(capsys)
    assert code == 1 and gist in err
    assert valid_steps(project / "s.sqlite") == [0, 10, 20]
    with Store(project / "s.sqlite", readonly=True) as store:
        assert store.errors().step.tolist() == [30]


def test_nan_weights_are_stored_as_invalid_with_the_reason(project, capsys):
    state = torch.load(project / "ckpts" / "step_010.pt", weights_only=True)
    state["model_state_dict"]["2.weight"][0, 0] = float("nan")
    torch.save(state, project / "ckpts" / "step_010.pt")
    code, err = analyze(capsys)
    assert code == 0 and "metrics at step 10 stored as invalid: train loss is nan" in err
    assert valid_steps(project / "s.sqlite") == [0, 20]


def test_duplicate_steps_are_refused(project, capsys):
    (project / "ckpts" / "ckpt-10.pth").write_bytes((project / "ckpts" / "step_010.pt").read_bytes())
    code, err = analyze(capsys)
    assert code == 2 and "has several files for step(s) [10]" in last_error(err)
    assert snapshot(project / "s.sqlite") is None


@pytest.mark.parametrize("data, gist", [
    ("user.py:empty_data", "train data is empty: it holds no samples."),
    ("user.py:int_inputs", "the model cannot process the first train data samples (an (inputs, targets) pair, "
                           "inputs of shape (8, 4), dtype torch.int64)"),
    ("user.py:float_labels", "the loss fails on the model's outputs (a tensor of shape (8, 3)) and the train data "
                             "targets (8,) (dtype torch.float32)"),
])
def test_unusable_data_is_refused_before_a_store_exists(project, capsys, data, gist):
    code, err = analyze(capsys, data=data)
    assert code == 2 and gist in last_error(err)
    assert snapshot(project / "s.sqlite") is None


@pytest.mark.parametrize("run", ["x'); DROP TABLE results; --", "../../etc/passwd"])
def test_sql_and_path_looking_run_names_are_plain_names(project, capsys, run):
    code, err = analyze(capsys, "--run", run)
    assert code == 0, err
    with Store(project / "s.sqlite", readonly=True) as store:
        assert store.runs() == [run] and len(store.results(run=run)) == 3
    main(["ls", "s.sqlite"])
    assert f"run {run}" in capsys.readouterr().out
    assert main(["export", "s.sqlite", "--out", "out"]) == 0
    assert [p.parent for p in (project / "out").rglob("*") if p.is_file()] and \
        all(project / "out" in p.parents for p in (project / "out").rglob("*"))
