"""Train a tiny BERT classifier with a real ``transformers.Trainer``, then analyze its output folder.

    python examples/analyze_hf_trainer.py --out hf-run [--steps 6] [--serve]

The Trainer writes ``hf-run/trainer/checkpoint-2/``, ``checkpoint-4/``, … (``model.safetensors``,
``config.json``, ``trainer_state.json``); the analysis is the command line a user would type:

    landscape analyze --model hf:hf-run/trainer --data examples/analyze_hf_trainer.py:make_data \\
        --loss model --checkpoints hf-run/trainer --store hf-run/landscape.sqlite --preset quick

``--model hf:DIR`` builds the model from the checkpoints' ``config.json`` (no download), ``--loss model``
uses the model's own loss from the ``labels`` of each dict batch, and every ``checkpoint-N`` becomes step
N in the store. ``--serve`` then opens the dashboard on it. The data is a fixed synthetic task (the class
is which of three token ranges dominates a padded sequence), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

VOCAB, CLASSES, LENGTH = 30, 3, 12


def make_data(n: int = 96, seed: int = 0, batch_size: int = 16) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Train and test lists of dict batches (``input_ids``, ``attention_mask``, ``labels``), right-padded."""
    generator = torch.Generator().manual_seed(seed)

    def split(count: int) -> list[dict[str, torch.Tensor]]:
        labels = torch.randint(0, CLASSES, (count,), generator=generator)
        lengths = torch.randint(4, LENGTH + 1, (count,), generator=generator)
        ids = torch.randint(1, VOCAB, (count, LENGTH), generator=generator)
        band = VOCAB // CLASSES
        favoured = 1 + labels[:, None] * band + torch.randint(0, band - 1, (count, LENGTH), generator=generator)
        ids = torch.where(torch.rand(count, LENGTH, generator=generator) < 0.6, favoured, ids)
        mask = (torch.arange(LENGTH)[None] < lengths[:, None]).long()
        ids = ids * mask
        return [{"input_ids": ids[i : i + batch_size], "attention_mask": mask[i : i + batch_size],
                 "labels": labels[i : i + batch_size]} for i in range(0, count, batch_size)]

    return {"train": split(n), "test": split(n // 2)}


def make_model() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=CLASSES)
    return BertForSequenceClassification(config)


class _Rows(torch.utils.data.Dataset):
    """The train batches as single samples, the way a Trainer reads a dataset."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.rows[index]


def train(out: Path, steps: int) -> Path:
    """Train with a real Trainer, saving every 2 steps; returns its output_dir."""
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging

    logging.set_verbosity_error()
    output_dir = out / "trainer"
    args = TrainingArguments(output_dir=str(output_dir), max_steps=steps, save_steps=2, per_device_train_batch_size=16,
                             learning_rate=5e-3, logging_steps=1, report_to=[], use_cpu=True, save_only_model=True,
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=make_model(), args=args, train_dataset=_Rows(make_data()["train"]))
    trainer.train()
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="hf-run")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--probes", default=None, help="comma-separated probes (default: all)")
    parser.add_argument("--serve", action="store_true", help="serve the dashboard afterwards")
    args = parser.parse_args(argv)
    out = Path(args.out)
    output_dir = train(out, args.steps)
    store = out / "landscape.sqlite"
    command = [sys.executable, "-m", "landscape.cli", "analyze", "--model", f"hf:{output_dir}",
               "--data", f"{Path(__file__).resolve()}:make_data", "--loss", "model",
               "--checkpoints", str(output_dir), "--store", str(store), "--preset", args.preset, "--quiet"]
    if args.probes:
        command += ["--probes", args.probes]
    print(" ".join(command[2:]), file=sys.stderr)
    status = subprocess.run(command).returncode
    if status == 0 and args.serve:
        status = subprocess.run([sys.executable, "-m", "landscape.cli", "dashboard", str(store)]).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
