"""Every figure of a set of stores, in order: what the report shows and the static export writes.

The figures come from :mod:`dashboard.views` — the functions behind the dashboard's tabs — so the report, the
image files and the live page are one set of figures. Each run gets a section with its figures alone (the
per-checkpoint views at its last checkpoint, and the trajectory animation); with several runs a first
section overlays them all in the views over steps. Figures without any trace (a view with nothing to show)
are left out, with the view's notice kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import plotly.graph_objects as go

from dashboard import views
from dashboard.data import MONITOR, Catalog, RunRef

ALL_RUNS = "all runs"


@dataclass
class Entry:
    """One figure: the probes whose data it shows, a file-name slug, and whether it is animated."""

    probes: tuple[str, ...]
    name: str
    figure: go.Figure
    animated: bool = False


@dataclass
class Section:
    """The figures of one run (``ref``) or of all runs together (``ref`` None), with the notices of the views
    that had nothing to draw."""

    key: str
    ref: RunRef | None
    entries: list[Entry] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def add(self, view: views.View | None, probes: tuple[str, ...], names: list[str], *, animated: bool = False) -> None:
        if view is None:
            return
        for figure, name in zip(view.figures, names):
            if len(figure.data):
                self.entries.append(Entry(probes, name, figure, animated))
        if view.notice and not any(len(f.data) for f in view.figures):
            self.notices.append(view.notice)


def _run_section(catalog: Catalog, ref: RunRef, metric: str) -> Section:
    section = Section(ref.key, ref)
    keys, has = [ref.key], (lambda probe: catalog.has(ref, probe))
    if has("metrics") or has(MONITOR):
        section.add(views.overview(catalog, None, keys), ("metrics", MONITOR), ["training-curves"])
    last = catalog.steps(ref, "slices")[-1] if has("slices") else None
    if last is not None:
        section.add(views.surface(catalog, None, ref.key, last, metric, "random"), ("slices",), ["surface"])
        section.add(views.trajectory(catalog, None, ref.key, metric), ("slices",), ["trajectory"], animated=True)
        section.add(views.slices_1d(catalog, None, keys, last), ("slices",), ["slice-1d"])
        section.add(views.slices_1d(catalog, None, keys, last, line="interpolation"), ("slices",), ["interpolation"])
    if has("hessian"):
        section.add(views.hessian(catalog, None, keys, ref.key), ("hessian",),
                    ["hessian-eigenvalues", "hessian-trace", "spectrogram"])
        section.add(views.density(catalog, None, keys, None), ("hessian",), ["hessian-density"])
    if has("sharpness"):
        section.add(views.sharpness(catalog, None, keys), ("sharpness",), ["sharpness"])
        section.add(views.preconditioned(catalog, None, keys), ("sharpness",), ["sharpness-preconditioned"])
    if has("collapse"):
        section.add(views.collapse(catalog, None, keys), ("collapse",), ["collapse"])
        section.add(views.cosine(catalog, None, ref.key, None), ("collapse",), ["cosine"])
    if has("grokking"):
        section.add(views.grokking(catalog, None, keys), ("grokking",), ["grokking"])
    if has("weights"):
        section.add(views.weights_esd(catalog, None, ref.key, None, None), ("weights",), ["weights-esd"])
        section.add(views.weights(catalog, None, keys, ref.key), ("weights",), ["weights-heatmap", "weights-alpha"])
    if has("noise") or has("connectivity"):
        section.add(views.dynamics(catalog, None, keys), ("noise", "connectivity"),
                    ["dynamics-noise", "dynamics-connectivity"])
    return section


def _overlay_section(catalog: Catalog, refs: list[RunRef]) -> Section:
    section = Section(ALL_RUNS, None)
    keys = [r.key for r in refs]

    def some(probe: str) -> bool:
        return any(catalog.has(r, probe) for r in refs)

    if some("metrics") or some(MONITOR):
        section.add(views.overview(catalog, None, keys), ("metrics", MONITOR), ["training-curves"])
    if some("slices"):
        section.add(views.slices_1d(catalog, None, keys, None), ("slices",), ["slice-1d"])
    if some("hessian"):
        view = views.hessian(catalog, None, keys, None)
        if view is not None:
            view.figures = view.figures[:2]  # the spectrogram is one run's: it stays in the run sections
        section.add(view, ("hessian",), ["hessian-eigenvalues", "hessian-trace"])
        section.add(views.density(catalog, None, keys, None), ("hessian",), ["hessian-density"])
    overlays: list[tuple[str, Callable]] = [("sharpness", views.sharpness), ("collapse", views.collapse),
                                            ("grokking", views.grokking)]
    for probe, view_of in overlays:
        if some(probe):
            section.add(view_of(catalog, None, keys), (probe,), [probe])
    return section


def gallery(catalog: Catalog, *, metric: str = "loss") -> list[Section]:
    """The sections of every run of the catalog's stores (with an all-runs section first when there are
    several runs); surfaces and the trajectory show ``metric`` (``loss``, ``accuracy``, ``test_loss``,
    ``test_accuracy``)."""
    refs = catalog.runs()
    sections = [_overlay_section(catalog, refs)] if len(refs) > 1 else []
    sections += [_run_section(catalog, ref, metric) for ref in refs]
    return sections


def entries(sections: list[Section]) -> Iterator[tuple[Section, Entry]]:
    """Every (section, entry) pair in order."""
    for section in sections:
        for entry in section.entries:
            yield section, entry
