"""Time the dashboard's first view on a large synthetic store (server side, no browser).

Builds (once, cached in the output folder) a store with RUNS runs × CHECKPOINTS checkpoints × every probe
(51×51 surfaces, 200-point spectral densities, a training-monitor row every 25 steps), then times:
``create_app`` (opening the stores), the page layout, and the callbacks the page fires on first load
(focus, slider label, summary cards, the Overview figure; the other tabs answer "not active"). Then it
times each other tab's first render, and the live path: a poll with no change, and one after a new row.

    python benchmarks/dashboard_first_view.py [--checkpoints 200] [--runs 2] [--out runs/bench-dashboard]
    python benchmarks/dashboard_first_view.py --quick    # 1 run × 40 checkpoints, 25×25 surfaces
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from dash.exceptions import PreventUpdate

ROOT = Path(__file__).resolve().parents[1]


def _synthetic():
    spec = importlib.util.spec_from_file_location("synthetic_runs", ROOT / "tests" / "dashboard" / "synthetic_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(label: str, fn, rows: list) -> object:
    start = time.perf_counter()
    try:
        value = fn()
    except PreventUpdate as error:  # what inactive tabs answer: part of the first view
        value = error
    rows.append((label, time.perf_counter() - start))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=200)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--grid", type=int, default=51)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-dashboard"))
    parser.add_argument("--quick", action="store_true", help="a small store: 1 run × 40 checkpoints, 25×25 surfaces")
    args = parser.parse_args()
    if args.quick:
        args.checkpoints, args.runs, args.grid = 40, 1, 25

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"store_{args.runs}x{args.checkpoints}_g{args.grid}.sqlite"
    if not path.exists():
        start = time.perf_counter()
        synthetic = _synthetic()
        synthetic.write_synthetic_store(path.with_suffix(".tmp"), runs=[f"run{i}" for i in range(args.runs)],
                                        n_steps=args.checkpoints, every=100, grid=args.grid, monitor_every=25)
        path.with_suffix(".tmp").rename(path)
        print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")

    # The import in a fresh interpreter (this one may have imported the store writer's dependencies).
    probe = ("import sys, time; t = time.perf_counter(); from dashboard import create_app; "
             "print(time.perf_counter() - t, 'torch' in sys.modules)")
    seconds, torch_flag = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                         check=True, cwd=ROOT).stdout.split()
    import_s, torch_loaded = float(seconds), torch_flag == "True"

    from dashboard import create_app

    rows: list[tuple[str, float]] = []
    first = time.perf_counter()
    app = _timed("create_app", lambda: create_app([path]), rows)
    cb = app.callbacks
    layout = _timed("layout (page load)", app.layout, rows)
    tokens = app.catalog.tokens()
    runs = [r.key for r in app.catalog.runs(tokens)][:4]
    focus = runs[0]
    steps = app.catalog.steps(app.catalog.ref(focus), None, tokens)
    index = len(steps) - 1
    _timed("checkpoint label", lambda: cb.checkpoint_text(index, steps), rows)
    _timed("summary cards", lambda: cb.summary(runs, tokens), rows)
    overview = _timed("overview figure", lambda: cb.overview("overview", runs, tokens, None), rows)
    for name, call in [
        ("landscape (inactive)", lambda: cb.landscape("overview", runs, focus, index, steps, "loss", "random", "slice",
                                                             tokens, None)),
        ("hessian (inactive)", lambda: cb.hessian("overview", runs, focus, tokens, None)),
        ("sharpness (inactive)", lambda: cb.sharpness("overview", runs, tokens, None)),
        ("collapse (inactive)", lambda: cb.collapse("overview", runs, tokens, None)),
        ("grokking (inactive)", lambda: cb.grokking("overview", runs, tokens, None)),
    ]:
        _timed(name, call, rows)
    first_view = time.perf_counter() - first
    # What the browser receives: the JSON of the layout and the overview figure.
    import plotly.io as pio

    payload = len(pio.to_json(overview[0])) + len(str(layout))

    later: list[tuple[str, float]] = []
    _timed("landscape tab, first render", lambda: cb.landscape("landscape", runs, focus, index, steps, "loss",
                                                               "random", "slice", tokens, None), later)
    _timed("landscape, slider moved", lambda: cb.landscape("landscape", runs, focus, index - 1, steps, "loss",
                                                           "random", "slice", tokens, None), later)
    _timed("landscape, PCA plane", lambda: cb.landscape("landscape", runs, focus, index, steps, "loss", "pca",
                                                        "slice", tokens, None), later)
    _timed("landscape, interpolation", lambda: cb.landscape("landscape", runs, focus, index, steps, "loss",
                                                            "random", "interpolation", tokens, None), later)
    _timed("hessian tab (incl. spectrogram)", lambda: cb.hessian("hessian", runs, focus, tokens, None), later)
    _timed("hessian density at step", lambda: cb.hessian_density("hessian", runs, index, steps, tokens, None), later)
    _timed("sharpness tab", lambda: cb.sharpness("sharpness", runs, tokens, None), later)
    _timed("collapse tab", lambda: cb.collapse("collapse", runs, tokens, None), later)
    _timed("collapse cosine at step", lambda: cb.collapse_cosine("collapse", focus, index, steps, tokens, None), later)
    _timed("grokking tab", lambda: cb.grokking("grokking", runs, tokens, None), later)
    _timed("poll, nothing new", lambda: cb.poll(1, tokens), later)
    fingerprint = overview[-1]
    _timed("overview on poll, nothing new", lambda: cb.overview("overview", runs, tokens, fingerprint), later)

    print(f"\nstore: {path.name}  ({args.runs} runs × {args.checkpoints} checkpoints × all probes, "
          f"{args.grid}×{args.grid} surfaces)")
    print(f"from dashboard import create_app: {import_s:.2f} s (torch imported: {torch_loaded})")
    print(f"{'first view, server side':<36}{'seconds':>9}")
    for label, seconds in rows:
        print(f"  {label:<34}{seconds:>9.3f}")
    print(f"  {'TOTAL first view':<34}{first_view:>9.3f}   (payload ≈ {payload / 1e3:.0f} kB)")
    print(f"\n{'later views':<36}{'seconds':>9}")
    for label, seconds in later:
        print(f"  {label:<34}{seconds:>9.3f}")
    print("\nfirst-view figure:")
    fig = overview[0]
    print(f"  {fig.layout.title.text!r}: {len(fig.data)} traces, "
          f"{sum(len(t.x) for t in fig.data if t.x is not None)} points")
    for trace in fig.data:
        panel = "loss" if trace.xaxis == "x" else "accuracy"
        print(f"    {trace.name + ' ' + panel:<28} {len(trace.x):>5} points, steps {trace.x[0]}–{trace.x[-1]}")
    app.catalog.close()


if __name__ == "__main__":
    main()
