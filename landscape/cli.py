"""The ``landscape`` command: demo, analyze, dashboard, ls, export, probes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from landscape.checkpoints import CheckpointError
    from landscape.data import DataError
    from landscape.evaluate import LossError
    from landscape.factories import FactoryError
    from landscape.store import StoreError

    return CommandError, CheckpointError, DataError, LossError, FactoryError, StoreError, KeyError, ValueError


def _parse_probe_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CommandError("--probes is empty; give names such as hessian,slices (see `landscape probes`).")
    return names


def _probe_params(names: list[str] | None, configured: dict[str, dict]) -> dict[str, dict]:
    from landscape import probe as probes

    if names is None:
        names = list(configured) if configured else probes.available()
    for name in names:
        probes.get(name)  # raises KeyError listing the registered probes
    return {name: dict(configured.get(name, {})) for name in names}


def cmd_analyze(args: argparse.Namespace) -> int:
    from landscape import factories
    from landscape.checkpoints import find_checkpoints
    from landscape.runner import run_probes
    from landscape.store import Store

    if args.config:
        config = factories.read_config(args.config)
    else:
        missing = [flag for flag, value in (("--model", args.model), ("--data", args.data),
                                            ("--checkpoints", args.checkpoints)) if not value]
        if missing:
            raise CommandError(f"analyze needs --config or the flags {', '.join(missing)}.")
        config = factories.RunConfig(model=args.model, data=args.data, loss=args.loss or "cross_entropy",
                                     checkpoints=args.checkpoints, store=args.store or "runs/landscape.sqlite")
    for attr, value in (("checkpoints", args.checkpoints), ("store", args.store), ("loss", args.loss),
                        ("run", args.run), ("device", args.device), ("max_samples", args.max_samples),
                        ("batch_size", args.batch_size), ("lr", args.lr), ("targets_key", args.targets_key),
                        ("logits_key", args.logits_key), ("preset", args.preset)):
        if value is not None:
            setattr(config, attr, value)
    if args.params is not None:
        config.param_groups = [p.strip() for p in args.params.split(",") if p.strip()]
    if args.unsafe_pickle:
        config.unsafe_pickle = True

    from landscape.objective import Objective
    from landscape.presets import apply_budget

    selected = apply_budget(_probe_params(_parse_probe_list(args.probes), config.probes), config.preset,
                            config.param_groups)
    checkpoints = find_checkpoints(config.checkpoints)
    build = factories.model_factory(config.model, config.model_kwargs)
    build()  # fail early, before any work, if the factory is broken
    train, test = factories.data_factory(config.data, config.data_kwargs)
    loss_fn = factories.loss_function(config.loss, config.loss_kwargs)
    if config.logits_key is not None:
        loss_fn = Objective(loss_fn, logits_key=config.logits_key)
    run = config.run or Path(config.checkpoints).resolve().name
    print(f"analyzing {len(checkpoints)} checkpoint(s) of run {run!r} with probes {', '.join(selected)} "
          f"into {config.store}", file=sys.stderr)
    started = time.perf_counter()
    with Store(config.store) as store:
        report = run_probes(
            model_factory=build, loss_fn=loss_fn, train=train, test=test, checkpoints=checkpoints,
            probes=selected, store=store, run=run, device=config.device, max_samples=config.max_samples,
            batch_size=config.batch_size, seed=config.seed, lr=config.lr, recompute=args.recompute,
            unsafe=config.unsafe_pickle, progress=not args.quiet, targets_key=config.targets_key,
        )
    return _report(report, started, config.store)


def _report(report: object, started: float, store: Path) -> int:
    """Print the run's summary and its errors; the exit status."""
    elapsed = time.perf_counter() - started
    print(f"done in {elapsed:.1f} s: {report.computed} computed, {report.skipped} already stored, "
          f"{report.invalid} invalid, {len(report.errors)} error(s); store: {store}", file=sys.stderr)
    if report.errors:
        print("errors:", file=sys.stderr)
        for message in report.errors:
            print(f"  - {message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from landscape.store import Store

    with Store(args.store, readonly=True) as store:
        results = store.results()
        errors = store.errors()
        if results.empty and errors.empty:
            print(f"{args.store}: no results yet.")
            return EXIT_OK
        for run in store.runs():
            rows = results[results.run == run]
            meta = store.run_meta(run)
            print(f"run {run}" + (f"  (lr={meta['lr']})" if "lr" in meta else ""))
            if rows.empty:
                print("  no results")
            for probe, group in rows.groupby("probe", sort=False):
                steps = sorted(group.step.unique())
                invalid = int((group.valid == 0).sum())
                shown = ", ".join(map(str, steps[:6])) + (" …" if len(steps) > 6 else "")
                print(f"  {probe:<10} {len(group):>4} result(s) at {len(steps)} step(s): {shown}"
                      + (f"  [{invalid} invalid]" if invalid else ""))
            run_errors = errors[errors.run == run]
            if not run_errors.empty:
                print(f"  {len(run_errors)} error(s); latest: {run_errors.message.iloc[-1].splitlines()[0]}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from landscape.store import Store

    out = Path(args.out or Path(args.store).with_suffix("").as_posix() + f"-{args.format}")
    with Store(args.store, readonly=True) as store:
        written = store.export(out, args.format)
    print(f"wrote {len(written)} file(s) to {out}")
    return EXIT_OK


def _serve(stores: Sequence[str], host: str, port: int, debug: bool) -> int:
    try:
        from dashboard import serve
    except ImportError as error:
        raise CommandError(f"the dashboard cannot start: {error}.") from None
    from landscape.store import Store

    for path in stores:
        if not Path(path).is_file():
            raise CommandError(f"store {path} does not exist.")
        Store(path, readonly=True).close()  # a file that is no store fails here, with its name, not in the page
    print(f"dashboard on http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr)
    serve(list(stores), host=host, port=port, debug=debug)
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    return _serve(args.stores, args.host, args.port, args.debug)


def cmd_probes(args: argparse.Namespace) -> int:
    from landscape import probe as probes

    for name in probes.available():
        probe = probes.get(name)
        doc = (type(probe).__doc__ or "").strip().splitlines()
        print(f"{name}: {doc[0] if doc else ''}")
        print(f"    params: {json.dumps(probe.defaults, default=str)}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from torch import nn

    from landscape import demo
    from landscape import probe as probes
    from landscape.callbacks import Monitor
    from landscape.checkpoints import find_checkpoints
    from landscape.runner import run_probes
    from landscape.store import Store

    started = time.perf_counter()
    out = Path(args.out)
    checkpoint_dir = out / "checkpoints"
    store_path = out / "demo.sqlite"
    lr = 0.05
    data = demo.make_data()
    if not find_checkpoints_or_none(checkpoint_dir):
        print(f"training a {args.steps}-step MLP on scikit-learn's digits; checkpoints in {checkpoint_dir}",
              file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        # Training curves every 5 steps go into the same store as the checkpoint probes.
        with Monitor(store_path, "digits-mlp", every=5, data=data["train"], test_data=data["test"],
                     loss_fn=nn.CrossEntropyLoss(), meta={"lr": lr}) as monitor:
            demo.train(checkpoint_dir, steps=args.steps, n_checkpoints=args.checkpoints, lr=lr, monitor=monitor)
    else:
        print(f"reusing the checkpoints in {checkpoint_dir}", file=sys.stderr)
    names = probes.available()
    params = {name: dict(demo.DEMO_PROBE_PARAMS.get(name, {})) for name in names}
    config = demo.write_config(out, store_path, checkpoint_dir, lr, params)
    with Store(store_path) as store:
        report = run_probes(
            model_factory=demo.make_model, loss_fn=nn.CrossEntropyLoss(), train=data["train"],
            test=data["test"], checkpoints=find_checkpoints(checkpoint_dir), probes=params, store=store,
            run="digits-mlp", device=args.device, lr=lr, progress=not args.quiet,
        )
    print(f"config: {config} (re-run with `landscape analyze --config {config}`)", file=sys.stderr)
    status = _report(report, started, store_path)
    if status != EXIT_OK:
        return status
    if args.no_serve:
        print(f"view it with: landscape dashboard {store_path}", file=sys.stderr)
        return EXIT_OK
    return _serve([str(store_path)], args.host, args.port, debug=False)


def find_checkpoints_or_none(folder: Path) -> list:
    from landscape.checkpoints import CheckpointError, find_checkpoints

    try:
        return find_checkpoints(folder)
    except CheckpointError:
        return []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landscape", description="Loss-landscape and training-dynamics analysis.")
    parser.add_argument("--version", action="version", version=f"landscape {__import__('landscape').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small model on bundled data, analyze it, serve the dashboard")
    demo.add_argument("--out", default="landscape-demo", help="output folder (default: ./landscape-demo)")
    demo.add_argument("--no-serve", action="store_true", help="stop after the analysis")
    demo.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    demo.add_argument("--checkpoints", type=int, default=10, help="checkpoints to save (default 10)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8050)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    analyze = sub.add_parser("analyze", help="run probes over the checkpoints of a run into a store")
    analyze.add_argument("--config", help="TOML run config (flags below override it)")
    analyze.add_argument("--model", help="model factory, 'package.module:function', 'file.py:function' or "
                         "'hf:DIR' (a Hugging Face model from DIR's config.json)")
    analyze.add_argument("--data", help="data factory returning train, (train, test) or {'train', 'test'}")
    analyze.add_argument("--loss", help="loss: 'model' (the model's own outputs.loss), 'torch.nn:CrossEntropyLoss', "
                         "a function, or cross_entropy/mse/causal_lm/token_cross_entropy")
    analyze.add_argument("--targets-key", help="key of the targets in dict batches (default: labels)")
    analyze.add_argument("--logits-key", help="entry of the model's outputs holding the logits (default: logits)")
    analyze.add_argument("--preset", choices=["quick", "default", "thorough"],
                         help="budget of every probe (explicit probe params win)")
    analyze.add_argument("--params", help="comma-separated parameter-name prefixes the curvature probes use")
    analyze.add_argument("--checkpoints", help="checkpoint folder (or one file)")
    analyze.add_argument("--probes", help="comma-separated probe names (default: every registered probe)")
    analyze.add_argument("--store", help="store file (default runs/landscape.sqlite)")
    analyze.add_argument("--run", help="run name in the store (default: the checkpoint folder's name)")
    analyze.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default)")
    analyze.add_argument("--max-samples", type=int, help="measure on a fixed, seeded subset of this many samples")
    analyze.add_argument("--batch-size", type=int, help="re-cut the data into batches of this size")
    analyze.add_argument("--lr", type=float, help="learning rate, for the stability ratios")
    analyze.add_argument("--unsafe-pickle", action="store_true",
                         help="allow checkpoints that need full unpickling (can run arbitrary code: trusted files only)")
    analyze.add_argument("--recompute", action="store_true", help="recompute results already in the store")
    analyze.add_argument("--quiet", action="store_true", help="no progress bars")
    analyze.set_defaults(func=cmd_analyze)

    dash = sub.add_parser("dashboard", help="serve the web dashboard for one or more stores")
    dash.add_argument("stores", nargs="+")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8050)
    dash.add_argument("--debug", action="store_true", help="Dash debug mode (development only)")
    dash.set_defaults(func=cmd_dashboard)

    ls = sub.add_parser("ls", help="list what a store holds")
    ls.add_argument("store")
    ls.set_defaults(func=cmd_ls)

    export = sub.add_parser("export", help="export a store's tables and arrays")
    export.add_argument("store")
    export.add_argument("--format", choices=["csv", "parquet"], default="csv")
    export.add_argument("--out", help="output folder (default: next to the store)")
    export.set_defaults(func=cmd_export)

    listing = sub.add_parser("probes", help="list the registered probes and their parameters")
    listing.set_defaults(func=cmd_probes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\ninterrupted: finished results are stored; re-run the same command to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_errors() as error:
        if os.environ.get("LANDSCAPE_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
