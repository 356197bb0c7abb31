"""Weight spectra: landscape's ``weights`` probe vs WeightWatcher 0.7.7 on the same CPU, in one run.

Models: an MLP and a small CNN trained briefly on scikit-learn's digits (so their spectra have started to
grow heavy tails), and BERT encoders built from ``transformers.BertConfig`` (random init, nothing is
downloaded). Both tools see the same layers: every Linear, Conv2d (kernel position slices pooled) and
Embedding.

Alpha agreement, per layer, two ways:

* same convention: ours with WeightWatcher's fit settings, ``ks="lower"`` (its one-sided KS distance) and
  ``min_tail=2`` (it accepts tails down to two eigenvalues). Layers where WeightWatcher switches to its
  small-sample fit (fewer than 20 eigenvalues) are left out; they are counted in the ``skipped`` column.
* defaults: ours with the exact two-sided KS distance and ``min_tail=10``; the differences are genuine
  differences of the xmin chosen, not of the arithmetic.

Wall time: ``watcher.analyze()`` against ``weights.layer_spectra()``, both without and with the
randomized ESD (WeightWatcher ``randomize=True, mp_fit=True``; ours always fits the MP bulk). Also the
xmin search alone on one 4096-eigenvalue spectrum, and (full mode) a whole 4096×4096 layer.

    python benchmarks/weights_vs_weightwatcher.py            # full: larger BERTs and the 4096² layer
    python benchmarks/weights_vs_weightwatcher.py --quick    # under 5 minutes on 2 CPU cores
    python benchmarks/weights_vs_weightwatcher.py --threads 16   # both tools on 16 threads
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from torch import nn

from probes import weights
from probes._powerlaw import fit_power_law

warnings.filterwarnings("ignore")


# -- models -----------------------------------------------------------------------------------------------
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(bunch.target, dtype=torch.long)


def train(model: nn.Module, epochs: int, seed: int = 0) -> nn.Module:
    """A few epochs of Adam on digits: enough for the large layers' spectra to leave Marchenko–Pastur."""
    x, y = digits()
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval()


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def make_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128 * 64, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def make_bert(hidden: int, layers: int, heads: int, vocab: int) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, max_position_embeddings=128)
    return BertModel(config).eval()


# -- the two tools ----------------------------------------------------------------------------------------
def ww_analyze(model: nn.Module, randomize: bool) -> pd.DataFrame:
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        watcher = ww.WeightWatcher(model=model)
        return watcher.analyze(randomize=randomize, mp_fit=randomize)


def ours(model: nn.Module, randomize: bool, **params: Any) -> pd.DataFrame:
    """Our table over the same layers WeightWatcher sees (it includes embeddings)."""
    return weights.layer_spectra(model, embeddings=True, randomize=randomize, device="cpu", **params)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """The result and the best wall time of ``repeats`` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


@dataclass
class Row:
    model: str
    layers: int
    compared: int
    skipped: int
    same_median: float
    same_max: float
    default_median: float
    default_max: float
    lambda_rel: float
    ww_s: float
    ours_s: float
    gram_s: float
    ww_rand_s: float
    ours_rand_s: float


def _ww_alpha(details: pd.DataFrame) -> pd.DataFrame:
    frame = details[["longname", "alpha", "num_evals", "lambda_max", "layer_type"]].copy()
    return frame.rename(columns={"longname": "layer", "alpha": "alpha_ww"})


def compare(name: str, model: nn.Module, repeats: int, with_random: bool) -> Row:
    ww_analyze(model, False)  # warm-up for both tools: first calls pay one-time set-up, not per-model work
    ours(model, False)
    ww_plain, ww_s = timed(lambda: ww_analyze(model, False), repeats)
    # WeightWatcher's randomized ESD with its MP fit takes minutes on a BERT-base sized model: optional.
    ww_rand_s = timed(lambda: ww_analyze(model, True), 1)[1] if with_random else float("nan")
    default, ours_s = timed(lambda: ours(model, False), repeats)
    _, gram_s = timed(lambda: ours(model, False, solver="gram"), repeats)
    _, ours_rand_s = timed(lambda: ours(model, True), repeats)
    same = ours(model, False, ks="lower", min_tail=2, esd_scale="none")
    table = _ww_alpha(ww_plain).merge(same[["layer", "alpha", "spectral_norm", "n_evals"]], on="layer")
    table = table.merge(default[["layer", "alpha"]].rename(columns={"alpha": "alpha_default"}), on="layer")
    small = table.num_evals < 20  # WeightWatcher's small-sample fit: another estimator
    usable = table[~small]
    same_gap = (usable.alpha - usable.alpha_ww).abs()
    fitted = usable[np.isfinite(usable.alpha_default)]
    default_gap = (fitted.alpha_default - fitted.alpha_ww).abs()
    # WeightWatcher scales a pooled conv layer's weights by sqrt(1/2) (its conv2d_norm), i.e. λ by 1/2.
    factor = np.where(usable.layer_type.astype(str).str.contains("conv2d", case=False), 0.5, 1.0)
    lambda_rel = float(np.max(np.abs(usable.spectral_norm * factor / usable.lambda_max - 1.0))) if len(usable) else np.nan
    return Row(name, len(default), len(usable), int(small.sum()), float(same_gap.median()), float(same_gap.max()),
               float(default_gap.median()), float(default_gap.max()), lambda_rel, ww_s, ours_s, gram_s, ww_rand_s,
               ours_rand_s)


def fit_only(n: int = 4096, repeats: int = 3) -> tuple[float, float, float]:
    """The xmin search alone on the ESD of a 4096×4096 layer with a planted heavy tail:
    (ours s, WeightWatcher's WWFit s, |Δalpha|) in the same (one-sided) convention."""
    from weightwatcher.WW_powerlaw import WWFit

    rng = np.random.default_rng(0)
    evals = np.sort(np.concatenate([rng.chisquare(4, n - 400) / 4, (1 - rng.uniform(size=400)) ** (-1 / 1.5)]))
    mine, ours_s = timed(lambda: fit_power_law(evals, ks="lower", min_tail=2), repeats)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs, ww_s = timed(lambda: WWFit(evals), repeats)
    return ours_s, ww_s, abs(mine.alpha - float(theirs.alpha))


def big_layer() -> tuple[float, float, float, float, float]:
    """A whole 4096×4096 Linear: (ours s, ours with solver="gram" s, of which the fit and the MP bulk s,
    ours with the randomized ESD (gram) s, WeightWatcher s)."""
    from probes import _marchenko_pastur

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4096, 4096))
    _, ours_s = timed(lambda: ours(model, False), 1)
    _, gram_s = timed(lambda: ours(model, False, solver="gram"), 1)
    evals = weights.esd(model, "0", solver="gram")
    _, fit_s = timed(lambda: (fit_power_law(evals), _marchenko_pastur.fit_bulk(evals, 4096, 4096)), 1)
    _, ours_rand_s = timed(lambda: ours(model, True, solver="gram"), 1)
    _, ww_s = timed(lambda: ww_analyze(model, False), 1)
    return ours_s, gram_s, fit_s, ours_rand_s, ww_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, one timing each (under 5 minutes)")
    parser.add_argument("--big", action="store_true", help="also time one 4096x4096 layer (on by default without --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for both tools (default 1: reproducible on a shared machine)")
    args = parser.parse_args()
    import weightwatcher
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    epochs, repeats = (3, 1) if args.quick else (10, 3)
    models: list[tuple[str, Callable[[], nn.Module], bool]] = [
        ("MLP 64-512-512-256-10", lambda: train(make_mlp(), epochs), True),
        ("CNN 3 conv + 2 linear", lambda: train(make_cnn(), epochs), True),
        ("BERT 2x128 (random)", lambda: make_bert(128, 2, 2, 1000), True),
    ]
    if not args.quick:
        models += [("BERT 4x256 (random)", lambda: make_bert(256, 4, 4, 3000), True),
                   ("BERT 12x768 (random)", lambda: make_bert(768, 12, 12, 8000), False)]
    print(f"weightwatcher {weightwatcher.__version__}, torch {torch.__version__}, {args.threads} thread(s); "
          f"best of {repeats} timing(s)")
    rows = []
    with threadpool_limits(args.threads):
        for name, build, with_random in models:
            model = build()
            with torch.no_grad():
                rows.append(compare(name, model, repeats, with_random))
        fit = fit_only(repeats=repeats)
        big = big_layer() if args.big or not args.quick else None
    print(f"{'model':22s} {'layers':>6s} {'cmp':>4s} {'skip':>4s} {'same Δα med':>11s} {'max':>7s} {'dflt Δα med':>11s} "
          f"{'max':>6s} {'λmax rel':>8s} {'WW s':>6s} {'ours s':>6s} {'×':>5s} {'gram s':>6s} {'×':>5s} "
          f"{'WW+rand':>7s} {'ours+rand':>9s} {'×':>5s}")
    for r in rows:
        print(f"{r.model:22s} {r.layers:6d} {r.compared:4d} {r.skipped:4d} {r.same_median:11.1e} {r.same_max:7.1e} "
              f"{r.default_median:11.3f} {r.default_max:6.2f} {r.lambda_rel:8.0e} {r.ww_s:6.2f} {r.ours_s:6.2f} "
              f"{r.ww_s / r.ours_s:5.1f} {r.gram_s:6.2f} {r.ww_s / r.gram_s:5.1f} {r.ww_rand_s:7.1f} "
              f"{r.ours_rand_s:9.2f} {r.ww_rand_s / r.ours_rand_s:5.1f}")

    def total(attr: str) -> float:
        return sum(getattr(r, attr) for r in rows)

    timed_rows = [r for r in rows if np.isfinite(r.ww_rand_s)]
    ww_rand, ours_rand = sum(r.ww_rand_s for r in timed_rows), sum(r.ours_rand_s for r in timed_rows)
    print(f"all models: WeightWatcher {total('ww_s'):.2f} s, ours {total('ours_s'):.2f} s "
          f"({total('ww_s') / total('ours_s'):.1f}x; gram {total('ww_s') / total('gram_s'):.1f}x); with the "
          f"randomized ESD ({len(timed_rows)} models) {ww_rand:.1f} s vs {ours_rand:.2f} s ({ww_rand / ours_rand:.1f}x)")
    ours_fit, ww_fit, gap = fit
    print(f"xmin search on 4096 eigenvalues: ours {ours_fit:.3f} s, WeightWatcher {ww_fit:.3f} s "
          f"({ww_fit / ours_fit:.1f}x), |Δalpha| = {gap:.1e}")
    if big is not None:
        ours_s, gram_s, fit_s, rand_s, ww_s = big
        print(f"one 4096x4096 Linear: ours {ours_s:.1f} s with svdvals, {gram_s:.1f} s with gram (of which the "
              f"xmin search and MP bulk {fit_s:.2f} s), gram with randomized ESD {rand_s:.1f} s; WeightWatcher "
              f"{ww_s:.1f} s ({ww_s / ours_s:.1f}x; gram {ww_s / gram_s:.1f}x)")
    print("same: ours with ks='lower', min_tail=2 (WeightWatcher's convention); dflt: ours with the exact two-sided "
          "KS distance and min_tail=10; skip: layers under 20 eigenvalues (WeightWatcher's small-sample fit); "
          "λmax rel: largest relative gap of λ_max on WeightWatcher's scale; gram: ours with solver='gram'; "
          "+rand: WeightWatcher randomize=True, mp_fit=True vs ours with the randomized ESD")


if __name__ == "__main__":
    main()
