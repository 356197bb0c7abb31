"""One self-contained HTML file with every figure of every run: a report to send or archive.

The file embeds plotly.js once (inline, so it opens with no network) and then every figure of
:func:`dashboard.gallery.gallery` — the dashboard's own views — each in a ``<div class="figure">``
whose ``data-probes`` names the probes it draws. Per run it also holds the run's metadata and the params of
each probe, a table of the last value of every scalar of every probe, and per store its errors table. A
store without runs gives a report that says so. Dash is not imported.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.io as pio

from dashboard.data import Catalog, RunRef
from dashboard.gallery import ALL_RUNS, Section, gallery

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:#1f2937;margin:0;background:#f9fafb}
header{background:#111827;color:#f9fafb;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#d1d5db;font-size:13px}main{padding:8px 32px 40px;max-width:1500px}
nav{font-size:14px;margin:16px 0}nav a{margin-right:14px;color:#1d4ed8}
section.run{background:white;border:1px solid #e5e7eb;border-radius:8px;padding:8px 20px 16px;margin:18px 0}
h2{font-size:19px;margin:12px 0}h3{font-size:15px;margin:18px 0 6px;color:#374151}
table{border-collapse:collapse;font-size:13px;margin:4px 0 10px}td,th{border:1px solid #e5e7eb;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.figure{margin:10px 0 18px;border-top:1px solid #f3f4f6;padding-top:6px}.notice{color:#6b7280;font-style:italic}
.tables{display:flex;flex-wrap:wrap;gap:10px 28px;align-items:flex-start}h4{margin:6px 0 2px;font-size:13px}pre{white-space:pre-wrap;margin:0;font-size:12px}
.empty{font-size:16px;padding:40px 0}code{background:#f3f4f6;padding:1px 4px;border-radius:3px}
"""
_FIGURE_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}


@dataclass
class ReportInfo:
    """What :func:`write_report` wrote: the file, its size, the runs and the figures it holds."""

    path: Path
    bytes: int
    runs: int
    figures: int


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[object]], numeric: Sequence[bool] | None = None,
           css: str = "") -> str:
    width = len(headers) if headers else (len(rows[0]) if rows else 0)
    numeric = numeric or [False] * width
    head = "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead>" if headers else ""
    body = "".join("<tr>" + "".join(f'<td{" class=num" if n else ""}>{_e(_fmt(v))}</td>' for v, n in zip(row, numeric))
                   + "</tr>" for row in rows)
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}>{head}<tbody>{body}</tbody></table>"


def last_values(catalog: Catalog, ref: RunRef) -> pd.DataFrame:
    """The last valid value of every scalar of every probe of a run: columns probe, key, value, step."""
    frame = catalog.scalars([ref], list(catalog.probes(ref)))
    frame = frame[frame["valid"]].sort_values("step", kind="stable")
    last = frame.groupby(["probe", "key"], sort=True).tail(1)
    return last[["probe", "key", "value", "step"]].sort_values(["probe", "key"]).reset_index(drop=True)


def _probe_params(catalog: Catalog, ref: RunRef) -> list[tuple[str, str]]:
    results = catalog.stores[ref.store].results(run=ref.run).sort_values("id")
    newest = results.drop_duplicates("probe", keep="last")
    return [(str(p), str(c)) for p, c in zip(newest["probe"], newest["config_json"])]


def _run_tables(catalog: Catalog, ref: RunRef) -> str:
    summary = catalog.summary(ref)
    steps = (f"{summary['checkpoints']} checkpoint(s), steps {summary['first_step']:,}–{summary['last_step']:,}"
             if summary["checkpoints"] else "no checkpoint results")
    facts = [("store", summary["store"]), ("run", ref.run), ("checkpoints", steps)]
    if summary.get("monitor_last_step") is not None:
        facts.append(("training monitor", f"to step {summary['monitor_last_step']:,}"))
    facts += [("probes", ", ".join(f"{p} ({n})" for p, n in summary["probes"].items()) or "none"),
              ("errors", summary["errors"]), ("invalid results", summary["invalid"])]
    meta = sorted(catalog.meta(ref).items())
    values = last_values(catalog, ref)
    parts = ['<div class="tables">', "<div><h3>Run</h3>", _table(None, facts), "</div>",
             "<div><h3>Metadata</h3>", _table(["key", "value"], meta) if meta else '<p class="notice">none</p>',
             "</div>", "<div><h3>Probe parameters (newest result)</h3>"]
    params = _probe_params(catalog, ref)
    parts += [_table(["probe", "params"], params) if params else '<p class="notice">none</p>', "</div></div>"]
    parts.append("<h3>Last value of each scalar</h3>")
    if len(values):
        parts.append('<div class="tables">')
        for probe, group in values.groupby("probe", sort=True):
            rows = [(k, float(v), f"{int(s):,}") for k, v, s in group[["key", "value", "step"]].itertuples(index=False)]
            table = _table(["scalar", "last value", "at step"], rows, [False, True, True], css="last-values")
            parts.append(f'<div data-probe="{_e(probe)}"><h4>{_e(probe)}</h4>{table}</div>')
        parts.append("</div>")
    else:
        parts.append('<p class="notice">No scalars recorded yet.</p>')
    return "".join(parts)


def _figures(section: Section, first: list[bool]) -> str:
    parts = []
    for i, entry in enumerate(section.entries):
        div_id = f"fig-{_slug(section.key)}-{entry.name}-{i}"
        plot = pio.to_html(entry.figure, full_html=False, include_plotlyjs=first[0], div_id=div_id,
                           config=_FIGURE_CONFIG, default_width="100%",
                           auto_play=False)  # animations open on their last frame and play on request
        first[0] = False
        animated = ' data-animated="1"' if entry.animated else ""
        parts.append(f'<div class="figure" data-run="{_e(section.key)}" data-probes="{_e(" ".join(entry.probes))}" '
                     f'data-name="{_e(entry.name)}"{animated}>{plot}</div>')
    parts += [f'<p class="notice">{_e(n)}</p>' for n in section.notices]
    return "".join(parts)


def _errors(catalog: Catalog) -> str:
    parts = ['<section class="run" id="errors"><h2>Errors</h2>']
    for path, store in zip(catalog.paths, catalog.stores):
        errors = store.errors()
        parts.append(f"<h3>{_e(path)}</h3>")
        if errors.empty:
            parts.append('<p class="notice">No errors recorded.</p>')
            continue
        rows = [(r, "" if pd.isna(s) else f"{int(s):,}", p, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)), m)
                for r, s, p, m, t in errors[["run", "step", "probe", "message", "created_at"]].itertuples(index=False)]
        head = "".join(f"<th>{h}</th>" for h in ("run", "step", "probe", "when", "message"))
        body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row[:4]) + f"<td><pre>{_e(row[4])}</pre></td></tr>"
                       for row in rows)
        parts.append(f'<table class="errors"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "".join(parts) + "</section>"


def build_report(catalog: Catalog, *, metric: str = "loss", title: str | None = None) -> tuple[str, int]:
    """The report's HTML text for the catalog's stores, and the number of figures in it."""
    stores = ", ".join(str(p) for p in catalog.paths)
    title = title or "landscape report"
    generated = time.strftime("%Y-%m-%d %H:%M")
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>Generated {generated} from {_e(stores)}</p></header><main>")
    refs = catalog.runs()
    if not refs:
        body = (f'<p class="empty" id="no-runs">No runs in {_e(stores)} yet — train with the '
                "<code>landscape.callbacks.Monitor</code> callback or run <code>landscape analyze</code>, "
                "then make the report again.</p>")
        return head + body + _errors(catalog) + "</main></body></html>", 0
    sections = gallery(catalog, metric=metric)
    toc = "".join(f'<a href="#run-{_slug(s.key)}">{_e(s.key)}</a>' for s in sections)
    parts = [head, f'<nav>Runs: {toc}<a href="#errors">errors</a></nav>']
    first, count = [True], 0
    for section in sections:
        heading = "All runs overlaid" if section.key == ALL_RUNS and section.ref is None else f"Run {section.key}"
        parts.append(f'<section class="run" id="run-{_slug(section.key)}" data-run="{_e(section.key)}"><h2>{_e(heading)}</h2>')
        if section.ref is not None:
            parts.append(_run_tables(catalog, section.ref))
            if not section.entries:
                parts.append('<p class="notice">No results to draw for this run yet.</p>')
        parts += ["<h3>Figures</h3>" if section.entries else "", _figures(section, first), "</section>"]
        count += len(section.entries)
    parts += [_errors(catalog), "</main></body></html>"]
    return "".join(parts), count


def write_report(store_paths: Sequence[str | Path] | str | Path, out: str | Path, *, metric: str = "loss",
                 title: str | None = None) -> ReportInfo:
    """Write the report of the stores at ``store_paths`` to ``out`` (opened read-only; see :func:`build_report`)."""
    catalog = Catalog(store_paths)
    try:
        text, count = build_report(catalog, metric=metric, title=title)
        runs = len(catalog.runs())
    finally:
        catalog.close()
    target = Path(out)
    target.write_text(text, encoding="utf-8")
    return ReportInfo(target, target.stat().st_size, runs, count)


def report_info_line(info: ReportInfo, seconds: float) -> str:
    """One line for the terminal: what was written and how big it is."""
    size = f"{info.bytes / 1e6:.1f} MB" if info.bytes >= 1e6 else f"{info.bytes / 1e3:.0f} kB"
    return (f"wrote {info.path} ({size}): {info.figures} figure(s) of {info.runs} run(s) "
            f"in {seconds:.1f} s")
