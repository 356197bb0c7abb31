"""Grokking on modular addition, watched live: Softmax Collapse vs ⊥Grad vs weight decay.

Task: learn ``(a + b) mod p`` from one-hot pairs, half of the p² pairs for training, full-batch AdamW on
a bias-free MLP with two hidden ReLU layers of 200. Three runs, logged with ``landscape.callbacks.Monitor``
into one store so the dashboard compares them side by side:

* ``float32-ce``   — cross-entropy, no weight decay: the training set is fitted at once, the logits keep
                     growing, more and more samples fall into Softmax Collapse (their float32 loss and
                     gradient are exactly 0) and test accuracy stays at chance.
* ``orthograd``    — the same, with ⊥Grad (the gradient's component along the weights removed): no
                     runaway logit growth, and the network generalizes without any weight decay.
* ``weight-decay`` — AdamW with weight decay 1.0: classic grokking, test accuracy jumps long after the
                     training set is fitted.

Every run records the cheap ``monitor`` scalars every 10 steps and the ``grokking`` probe (SC fraction,
logit gaps, NLM alignment, feature change, ...) every 100 steps. On a quiet 2-core CPU the default
(1,500 steps per run) takes about 2 minutes; ``--quick`` is a seconds-long smoke run.

    python examples/grokking_modular_addition.py [--steps 1500] [--quick] [--out runs/grokking]
    landscape dashboard runs/grokking/grokking.sqlite
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from landscape.callbacks import Monitor
from landscape.store import Store
from probes.grokking import OrthoGrad


@dataclass(frozen=True)
class Setting:
    modulus: int
    train_fraction: float
    hidden: int
    lr: float
    steps: int
    every: int
    test_every: int
    probe_every: int


FULL = Setting(modulus=97, train_fraction=0.5, hidden=200, lr=5e-3, steps=1500, every=10, test_every=50, probe_every=100)
QUICK = Setting(modulus=17, train_fraction=0.5, hidden=32, lr=5e-3, steps=40, every=5, test_every=10, probe_every=20)


def modular_addition(modulus: int, train_fraction: float, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """All pairs (a, b) as concatenated one-hot vectors with label (a + b) mod p, split at random."""
    a, b = torch.meshgrid(torch.arange(modulus), torch.arange(modulus), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    inputs = torch.cat([F.one_hot(a, modulus), F.one_hot(b, modulus)], dim=1).float()
    labels = (a + b) % modulus
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = int(train_fraction * len(labels))
    train, test = order[:cut], order[cut:]
    return (inputs[train], labels[train]), (inputs[test], labels[test])


def mlp(modulus: int, hidden: int) -> nn.Module:
    """Bias-free ReLU MLP (positively homogeneous: its NLM direction is the weight vector itself)."""
    return nn.Sequential(
        nn.Linear(2 * modulus, hidden, bias=False), nn.ReLU(),
        nn.Linear(hidden, hidden, bias=False), nn.ReLU(),
        nn.Linear(hidden, modulus, bias=False),
    )


RUNS: dict[str, dict] = {
    "float32-ce": {"weight_decay": 0.0, "orthograd": False, "label": "float32 CE, AdamW, no weight decay"},
    "orthograd": {"weight_decay": 0.0, "orthograd": True, "label": "⊥Grad (AdamW), no weight decay"},
    "weight-decay": {"weight_decay": 1.0, "orthograd": False, "label": "AdamW, weight decay 1.0"},
}


def train_one(store: Store, run: str, options: dict, setting: Setting, data: tuple, seed: int,
              log: Callable[[str], None]) -> None:
    """Full-batch training of one run with a Monitor attached."""
    (x_train, y_train), test = data
    torch.manual_seed(seed)
    model = mlp(setting.modulus, setting.hidden)
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(
        model.parameters(), lr=setting.lr, betas=(0.9, 0.98), weight_decay=options["weight_decay"]
    )
    if options["orthograd"]:
        optimizer = OrthoGrad(optimizer)
    monitor = Monitor(
        store, run, probes={"grokking": {}}, every=setting.every, data=(x_train, y_train), loss_fn=F.cross_entropy,
        test_data=test, probe_every=setting.probe_every, test_every=setting.test_every, label=options["label"],
        meta={"modulus": setting.modulus, "train_fraction": setting.train_fraction, "hidden": [setting.hidden] * 2,
              "weight_decay": options["weight_decay"], "orthograd": options["orthograd"]},
    )
    start = time.perf_counter()
    for step in range(setting.steps + 1):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        outputs = model(x_train)
        loss = F.cross_entropy(outputs, y_train)
        loss.backward()
        optimizer.step()
        row = monitor.step(model, step, optimizer, loss=loss, outputs=outputs, targets=y_train,
                           force=step == setting.steps)
        if row and "test_accuracy" in row and step % (setting.test_every * 5) == 0:
            log(f"  {run:<13} step {step:>5}  loss {row['train_loss']:.3g}  train {row.get('train_accuracy', 0):.3f}  "
                f"test {row['test_accuracy']:.3f}  SC {row.get('sc_fraction', 0):.3f}  ({time.perf_counter() - start:.0f} s)")
    monitor.close()


def summarize(store: Store, runs: Sequence[str]) -> list[dict]:
    """Final train/test accuracy, peak SC fraction and first step with ≥99% test accuracy, per run."""
    rows = []
    for run in runs:
        frame = store.scalars(run=run, probe="monitor")
        series = {key: group.set_index("step")["value"] for key, group in frame.groupby("key")}
        test = series["test_accuracy"]
        reached = test[test >= 0.99]
        rows.append({
            "run": run,
            "train_accuracy": float(series["train_accuracy"].iloc[-1]),
            "test_accuracy": float(test.iloc[-1]),
            "peak_sc_fraction": float(series["sc_fraction"].max()),
            "step_test_99": int(reached.index[0]) if len(reached) else None,
        })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'run':<14}{'train acc':>10}{'test acc':>10}{'peak SC':>9}{'test>=99% at':>14}")
    for row in rows:
        reached = "-" if row["step_test_99"] is None else str(row["step_test_99"])
        print(f"{row['run']:<14}{row['train_accuracy']:>10.3f}{row['test_accuracy']:>10.3f}"
              f"{row['peak_sc_fraction']:>9.3f}{reached:>14}")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 1500; 40 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny problem and few steps: a smoke run of a few seconds")
    parser.add_argument("--out", type=Path, default=Path("runs/grokking"), help="folder for the store (grokking.sqlite)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    if args.steps is not None:
        if args.steps < 1:
            parser.error(f"--steps must be a positive integer, got {args.steps}.")
        setting = Setting(**{**setting.__dict__, "steps": args.steps})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "grokking.sqlite"
    if path.exists():
        print(f"replacing the earlier store {path}")
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
    data = modular_addition(setting.modulus, setting.train_fraction, args.seed)
    print(f"modular addition mod {setting.modulus}: {len(data[0][1])} train / {len(data[1][1])} test pairs, "
          f"{setting.steps} full-batch steps per run")
    with Store(path) as store:
        for run, options in RUNS.items():
            print(f"run {run}: {options['label']}")
            train_one(store, run, options, setting, data, args.seed, print)
        rows = summarize(store, list(RUNS))
    print_table(rows)
    print(f"\nstore: {path}\nopen the dashboard with:  landscape dashboard {path}")
    return rows


if __name__ == "__main__":
    main()
