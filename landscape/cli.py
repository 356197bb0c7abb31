"""The ``landscape`` command: demo, analyze, dashboard, report, ls, export, probes."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
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
    from landscape.distributed import DistributedError
    from landscape.evaluate import LossError
    from landscape.factories import FactoryError
    from landscape.store import StoreError

    return (CommandError, CheckpointError, DataError, LossError, FactoryError, StoreError, DistributedError, KeyError,
            ValueError)


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


def _positive(flag: str, value: object, kind: type = int) -> None:
    if value is None:
        return
    ok = isinstance(value, kind) and not isinstance(value, bool) and value > 0
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        ok = math.isfinite(value) and value > 0
    if not ok:
        raise CommandError(f"{flag} must be a positive {'integer' if kind is int else 'number'}, got {value!r}.")


def _data_free(names: list[str] | None) -> bool:
    """Whether every named probe reads only the weights (then ``--data`` may be left out)."""
    from landscape import probe as probes

    if not names:
        return False
    return all(not probes.needs_data(probes.get(name)) for name in names)


def cmd_analyze(args: argparse.Namespace) -> int:
    from landscape import factories
    from landscape.checkpoints import find_checkpoints
    from landscape.identity import target_spec
    from landscape.runner import execute_run, prepare_run
    from landscape.store import Store

    names = _parse_probe_list(args.probes)
    if args.config:
        config = factories.read_config(args.config)
    else:
        needed = [("--model", args.model), ("--data", args.data or _data_free(names)),
                  ("--checkpoints", args.checkpoints)]
        missing = [flag for flag, value in needed if not value]
        if missing:
            raise CommandError(f"analyze needs --config or the flags {', '.join(missing)}.")
        config = factories.RunConfig(model=args.model, data=args.data or "", loss=args.loss or "cross_entropy",
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
    if args.recompute and args.reuse:
        raise CommandError("--recompute and --reuse contradict each other; pass one of them.")
    _positive("--max-samples", config.max_samples)
    _positive("--batch-size", config.batch_size)
    _positive("--lr", config.lr, float)

    from landscape.objective import Objective
    from landscape.presets import apply_budget

    # Everything that can fail on bad input runs before the store is opened: nothing is written then.
    selected = apply_budget(_probe_params(names, config.probes), config.preset, config.param_groups)
    checkpoints = find_checkpoints(config.checkpoints, unsafe=config.unsafe_pickle)
    build = factories.model_factory(config.model, config.model_kwargs)
    # Without --data (every selected probe data-free) there is nothing to load.
    train, test = factories.data_factory(config.data, config.data_kwargs) if config.data else (None, None)
    loss_fn = factories.loss_function(config.loss, config.loss_kwargs)
    if config.logits_key is not None:
        loss_fn = Objective(loss_fn, logits_key=config.logits_key)
    loss_target = factories.LOSS_SHORTHANDS.get(config.loss, config.loss)
    inputs = {"model": target_spec(config.model, config.model_kwargs), "loss": target_spec(loss_target, config.loss_kwargs),
              "data": target_spec(config.data, config.data_kwargs)}
    plan = prepare_run(model_factory=build, loss_fn=loss_fn, train=train, test=test, checkpoints=checkpoints,
                       probes=selected, device=config.device, max_samples=config.max_samples,
                       batch_size=config.batch_size, seed=config.seed, inputs=inputs,
                       targets_key=config.targets_key)
    run = config.run or Path(config.checkpoints).resolve().name
    from contextlib import nullcontext

    from landscape.distributed import is_active, is_main, world_size

    ranks = f" on {world_size()} ranks (--shard {args.shard})" if is_active() else ""
    if is_main():
        print(f"analyzing {len(checkpoints)} checkpoint(s) of run {run!r} with probes {', '.join(selected)} "
              f"into {config.store}{ranks}", file=sys.stderr)
    started = time.perf_counter()
    # Under torchrun rank 0 alone opens and writes the store; the other ranks compute alongside it.
    with Store(config.store) if is_main() else nullcontext(None) as store:
        report = execute_run(plan, store=store, run=run, lr=config.lr, recompute=args.recompute, reuse=args.reuse,
                             unsafe=config.unsafe_pickle, progress=not args.quiet and is_main(), shard=args.shard)
    if not is_main():
        return EXIT_FAILED if report.errors else EXIT_OK
    return _report(report, started, config.store)


def _grouped(messages: list[str]) -> list[str]:
    """Errors with the same text at several steps, once each with the steps listed."""
    groups: dict[str, list[str]] = {}
    for message in messages:
        found = re.search(r" at step (-?\d+)", message)
        key = message if found is None else message[: found.start()] + " at step {}" + message[found.end():]
        groups.setdefault(key, []).append(found.group(1) if found else "")
    out = []
    for key, steps in groups.items():
        if "{}" not in key:
            out.append(key + (f" (×{len(steps)})" if len(steps) > 1 else ""))
        elif len(steps) == 1:
            out.append(key.replace("{}", steps[0]))
        else:
            out.append(key.replace(" at step {}", f" at {len(steps)} steps ({', '.join(steps)})"))
    return out


def _report(report: object, started: float, store: Path) -> int:
    """Print the run's summary and its errors; the exit status."""
    elapsed = time.perf_counter() - started
    other = f", {report.by_other} computed by another process" if getattr(report, "by_other", 0) else ""
    print(f"done in {elapsed:.1f} s: {report.computed} computed, {report.skipped} already stored{other}, "
          f"{report.invalid} invalid, {len(report.errors)} error(s); store: {store}", file=sys.stderr)
    if report.errors:
        print("errors:", file=sys.stderr)
        for message in _grouped(report.errors):
            print(f"  - {message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from landscape.identity import summary
    from landscape.store import Store

    with Store(args.store, readonly=True) as store:
        results = store.results()
        errors = store.errors()
        if store.immutable:
            print(f"(read-only: {args.store} is opened as an immutable file)")
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
                kinds = group.inputs_json.fillna("").value_counts(sort=False)
                for text, count in kinds.items():
                    line = summary(json.loads(text) if text else None)
                    print(f"  {'':<10} computed from: {line}" + (f"  [{count} result(s)]" if len(kinds) > 1 else ""))
            run_errors = errors[errors.run == run]
            if not run_errors.empty:
                print(f"  {len(run_errors)} error(s); latest: {run_errors.message.iloc[-1].splitlines()[0]}")
    return EXIT_OK


TABLE_FORMATS = ("csv", "parquet")
FIGURE_FORMATS = ("png", "svg", "pdf", "gif", "mp4", "vtk")


def _writable_file(path: Path, what: str) -> None:
    """Fail now, with one sentence, if ``path`` cannot be written (checked by opening it, then left as it was)."""
    if path.is_dir():
        raise CommandError(f"cannot write the {what} to {path}: it is a folder; give a file name such as "
                           f"{path / 'report.html'}.")
    if not path.parent.is_dir():
        raise CommandError(f"cannot write the {what} to {path}: folder {path.parent} does not exist.")
    existed = path.exists()
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as error:
        raise CommandError(f"cannot write the {what} to {path}: {error.strerror or error}.") from None
    if not existed:
        path.unlink()


def _writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and check that files can be made in it; one sentence if not."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        raise CommandError(f"cannot write the {what} to {folder}: it is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise CommandError(f"cannot write the {what} to {folder}: {error.strerror or error}.") from None


def _open_stores(paths: Sequence[str]) -> None:
    from landscape.store import Store

    for path in paths:
        if not Path(path).is_file():
            raise CommandError(f"store {path} does not exist.")
        Store(path, readonly=True).close()  # a file that is no store fails here, with its name


def _not_empty(path: str, what: str) -> None:
    from landscape.store import Store

    with Store(path, readonly=True) as store:
        if store.results().empty:
            raise CommandError(f"store {path} has no results to {what} yet; run `landscape analyze` or train with "
                               "the Monitor callback first.")


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _writable_file(out, "report")
    _open_stores(args.stores)
    try:
        from dashboard.report import report_info_line, write_report
    except ImportError as error:
        raise CommandError(f"the report cannot be made: {error}.") from None
    started = time.perf_counter()
    info = write_report(list(args.stores), out, metric=args.metric, title=args.title)
    print(report_info_line(info, time.perf_counter() - started))
    return EXIT_OK


def _export_figures(args: argparse.Namespace, fmt: str) -> list[Path]:
    folder = Path(args.figures)
    if fmt == "vtk":
        from landscape.vtk import export_surfaces

        written = export_surfaces(args.store, folder)
        if not written:
            raise CommandError(f"store {args.store} has no 2-D slices grids to write as VTK; run "
                               "`landscape analyze --probes slices` first.")
        return written
    try:
        from dashboard import static
    except ImportError as error:
        raise CommandError(f"static figures cannot be made: {error}.") from None
    options = dict(width=args.width, height=args.height, metric=args.metric)
    try:
        if fmt in static.ANIMATION_FORMATS:
            written = static.export_animations([args.store], folder, fmt, scale=args.scale or 1.0, fps=args.fps,
                                               **options)
            if not written:
                raise CommandError(f"no run in {args.store} has a trajectory to animate: the slices probe stores it "
                                   "with the last checkpoint once a run has at least three.")
            return written
        written = static.export_images([args.store], folder, fmt, scale=args.scale or static.PUBLICATION_SCALE,
                                       **options)
    except static.ExportError as error:
        raise CommandError(str(error)) from None
    if not written:
        raise CommandError(f"store {args.store} has no results to draw.")
    return written


def cmd_export(args: argparse.Namespace) -> int:
    from landscape.store import Store

    fmt = args.format
    if args.figures is not None and args.tensorboard is not None:
        raise CommandError("give one of --figures DIR and --tensorboard DIR per export.")
    if args.figures is not None:
        fmt = fmt or "png"
        if fmt not in FIGURE_FORMATS:
            raise CommandError(f"--format {fmt} is a table format; with --figures give one of {', '.join(FIGURE_FORMATS)}.")
        _open_stores([args.store])
        _not_empty(args.store, "draw")
        _writable_folder(Path(args.figures), "figures")
        started = time.perf_counter()
        written = _export_figures(args, fmt)
        print(f"wrote {len(written)} {fmt} file(s) to {args.figures} in {time.perf_counter() - started:.1f} s")
        return EXIT_OK
    if args.tensorboard is not None:
        if fmt is not None:
            raise CommandError("--tensorboard writes event files; leave out --format.")
        _open_stores([args.store])
        _not_empty(args.store, "write")
        _writable_folder(Path(args.tensorboard), "TensorBoard logs")
        try:
            from landscape.callbacks.sinks import export_tensorboard

            folders = export_tensorboard(args.store, args.tensorboard)
        except ImportError as error:
            raise CommandError(f"{error}") from None
        if not folders:
            raise CommandError(f"store {args.store} has no valid results to write.")
        print(f"wrote TensorBoard event files of {len(folders)} run(s) to {args.tensorboard} "
              f"(view with: tensorboard --logdir {args.tensorboard})")
        return EXIT_OK
    fmt = fmt or "csv"
    if fmt not in TABLE_FORMATS:
        raise CommandError(f"--format {fmt} is a figure format; give --figures DIR as well.")
    out = Path(args.out or Path(args.store).with_suffix("").as_posix() + f"-{fmt}")
    with Store(args.store, readonly=True) as store:
        try:
            written = store.export(out, fmt)
        except OSError as error:
            reason = "it is on a read-only filesystem" if error.errno == errno.EROFS else (error.strerror or str(error))
            raise CommandError(f"cannot write the export to {out}: {reason}; pass --out with a writable folder.") from None
    print(f"wrote {len(written)} file(s) to {out}")
    return EXIT_OK


def _serve(stores: Sequence[str], host: str, port: int, debug: bool, token: str | None = None) -> int:
    try:
        from dashboard import serve
        from dashboard.auth import ENV_VAR, MIN_LENGTH, is_loopback
    except ImportError as error:
        raise CommandError(f"the dashboard cannot start: {error}.") from None
    from urllib.parse import quote


    token = token or os.environ.get(ENV_VAR) or None
    if not is_loopback(host):
        print(f"warning: --host {host} serves the dashboard beyond this machine: anyone who can reach port {port} "
              "and has the token can read these stores (use HTTPS in front of it on an untrusted network).",
              file=sys.stderr)
        if token is None:
            raise CommandError(f"--host {host} is not a loopback address: pass --token SECRET (or set {ENV_VAR}) "
                               "so that only people given the token can open the dashboard.")
        if debug:
            raise CommandError(f"--debug with --host {host} would let anyone who reaches the port run code through "
                               "the debugger; use --debug only on 127.0.0.1.")
    if token is not None and len(token) < MIN_LENGTH:
        raise CommandError(f"the dashboard token must have at least {MIN_LENGTH} characters.")
    _open_stores(stores)  # a file that is no store fails here, with its name, not in the page
    address = f"http://{host}:{port}/" + (f"?token={quote(token)}" if token else "")
    print(f"dashboard on {address} (Ctrl-C to stop)", file=sys.stderr)
    serve(list(stores), host=host, port=port, debug=debug, token=token)
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    return _serve(args.stores, args.host, args.port, args.debug, args.token)


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
            run="digits-mlp", device=args.device, lr=lr, progress=not args.quiet, inputs=demo.INPUTS,
        )
    print(f"config: {config} (re-run with `landscape analyze --config {config}`)", file=sys.stderr)
    status = _report(report, started, store_path)
    if status != EXIT_OK:
        return status
    if args.no_serve:
        print(f"view it with: landscape dashboard {store_path}", file=sys.stderr)
        return EXIT_OK
    return _serve([str(store_path)], args.host, args.port, debug=False, token=args.token)


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
    demo.add_argument("--token", help="dashboard access token (required for a non-loopback --host)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    analyze = sub.add_parser("analyze", help="run probes over the checkpoints of a run into a store")
    analyze.add_argument("--config", help="TOML run config (flags below override it)")
    analyze.add_argument("--model", help="model factory, 'package.module:function', 'file.py:function' or "
                         "'hf:DIR' (a Hugging Face model from DIR's config.json)")
    analyze.add_argument("--data", help="data factory returning train, (train, test) or {'train', 'test'} "
                                        "(not needed when every probe is data-free, e.g. --probes weights)")
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
    analyze.add_argument("--reuse", action="store_true",
                         help="keep stored results of the same probe and params even when computed from other data, "
                              "loss, model factory, probe version or checkpoint file (said in a note)")
    analyze.add_argument("--quiet", action="store_true", help="no progress bars")
    analyze.add_argument("--shard", choices=["data", "checkpoints"], default="data",
                         help="under torchrun: split each checkpoint's samples among the ranks (data, default) or "
                              "give each rank whole checkpoints (checkpoints)")
    analyze.set_defaults(func=cmd_analyze)

    dash = sub.add_parser("dashboard", help="serve the web dashboard for one or more stores")
    dash.add_argument("stores", nargs="+")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8050)
    dash.add_argument("--debug", action="store_true", help="Dash debug mode (development only, loopback hosts)")
    dash.add_argument("--token", help="access token every request must carry; required for a non-loopback --host "
                                      "(default: the LANDSCAPE_TOKEN environment variable)")
    dash.set_defaults(func=cmd_dashboard)

    report = sub.add_parser("report", help="write one self-contained HTML file with every figure of the stores")
    report.add_argument("stores", nargs="+")
    report.add_argument("-o", "--out", default="report.html", help="output file (default: ./report.html)")
    report.add_argument("--title", help="the report's title")
    report.add_argument("--metric", default="loss", choices=["loss", "accuracy", "test_loss", "test_accuracy"],
                        help="what the surfaces and the trajectory show (default: loss)")
    report.set_defaults(func=cmd_report)

    ls = sub.add_parser("ls", help="list what a store holds")
    ls.add_argument("store")
    ls.set_defaults(func=cmd_ls)

    export = sub.add_parser("export", help="export a store's tables and arrays, its figures, or TensorBoard logs")
    export.add_argument("store")
    export.add_argument("--format", choices=[*TABLE_FORMATS, *FIGURE_FORMATS],
                        help="tables: csv (default) or parquet; with --figures: png (default), svg, pdf, gif or mp4 "
                             "(the trajectory animation), vtk (2-D surfaces for ParaView)")
    export.add_argument("--out", help="tables: output folder (default: next to the store)")
    export.add_argument("--figures", metavar="DIR", help="write every figure into DIR, one subfolder per run")
    export.add_argument("--tensorboard", metavar="DIR", help="write the scalars as TensorBoard event files, one run per subfolder")
    export.add_argument("--width", type=int, default=900, help="figure width in layout pixels (default 900)")
    export.add_argument("--height", type=int, help="figure height in layout pixels (default: each figure's own)")
    export.add_argument("--scale", type=float, help="pixels per layout pixel (default 2 for images, 1 for animations)")
    export.add_argument("--fps", type=float, default=4.0, help="animation frames per second (default 4)")
    export.add_argument("--metric", default="loss", choices=["loss", "accuracy", "test_loss", "test_accuracy"],
                        help="what the surfaces and the trajectory show (default: loss)")
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
