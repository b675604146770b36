"""Figures of evaluation reports that stay readable for one model, for 6 calibrations x 3 pruning configurations, or
for the papers' 4 x 4 grids.

Every model is placed by its (calibration, pruning) label: the recipes name a pruned model `<calibration>__<pruning>`
(`ssgr__sparsegpt-2of4`) and the dense model `dense`, which `model_label` reads; any other name is a calibration of
its own under one unnamed pruning configuration, and `labels=` gives the labels explicitly. The dense model is a
reference (a line, a band, a first row), never one bar among the others.

- `plot_accuracy`: bars grouped by pruning configuration, one colour per calibration (the same in every group and
  every figure), the dense model as a horizontal line with its standard-error band, error bars of one standard error,
  one panel per task (and their average), the legend outside the axes.
- `plot_length_distributions`: one small panel per pruning configuration, a box per calibration (and the dense model
  in each panel), the mean length with its standard error.
- `plot_per_level`: a heatmap of pass@1, models x difficulty levels, one panel per task that records levels.

Each `plot_*` writes a file (PNG, SVG or PDF, by the extension) and returns its path; the `*_figure` functions return
the matplotlib `Figure` instead, to be adjusted or inspected.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from .registry import BENCHMARKS
from .stats import standard_error

__all__ = [
    "model_label",
    "calibration_colors",
    "accuracy_figure",
    "plot_accuracy",
    "lengths_figure",
    "plot_length_distributions",
    "per_level_figure",
    "plot_per_level",
]

DENSE = "dense"
DENSE_COLOR = "0.15"
# Known calibrations keep their colour across figures (tab10 without its grey, which would read as the dense model).
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
_KNOWN = ["text", "human", "prompt_only", "sgr", "ssgr", "rac"]
_EXTRA = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#756bb1", "#ad494a", "#a55194", "#b5cf6b",
          "#e7ba52", "#6b6ecf", "#ce6dbd", "#9c9ede", "#cedb9c", "#e7969c"]  # dark and light, none near the known


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'hf-ssgr[plot]'.") from err
    return plt


def _reports(reports) -> dict[str, Any]:
    """`label -> EvalReport` from a mapping, a list (labelled by model) or one report."""
    if hasattr(reports, "tasks"):
        return {reports.model: reports}
    if isinstance(reports, Mapping):
        return dict(reports)
    return {r.model: r for r in reports}


def model_label(name: str) -> tuple[str, str | None]:
    """The (calibration, pruning) of a model's name: `dense` -> ("dense", None); `ssgr__sparsegpt-2of4` ->
    ("ssgr", "sparsegpt-2of4"); any other name -> (name, "") (its own calibration, one unnamed pruning group)."""
    if name == DENSE:
        return DENSE, None
    calibration, sep, pruning = name.partition("__")
    return (calibration, pruning) if sep and calibration and pruning else (name, "")


def _layout(names, labels: Mapping[str, tuple[str, str | None]] | None):
    """The dense model's name (or None), the pruning groups and the calibrations in order of first appearance, and
    `(pruning, calibration) -> name`."""
    labels = dict(labels or {})
    dense, groups, cals, cell = None, [], [], {}
    for name in names:
        cal, pruning = labels.get(name) or model_label(name)
        if pruning is None:
            if dense is not None:
                raise ValueError(f"Two dense models ({dense!r}, {name!r}): label one of them (calibration, pruning).")
            dense = name
            continue
        if (pruning, cal) in cell:
            raise ValueError(f"{cell[(pruning, cal)]!r} and {name!r} have the same label ({cal!r}, {pruning!r}).")
        groups += [pruning] if pruning not in groups else []
        cals += [cal] if cal not in cals else []
        cell[(pruning, cal)] = name
    return dense, groups, cals, cell


def calibration_colors(calibrations) -> dict[str, str]:
    """A distinct colour per calibration: the known policies always get the same one (`ssgr` is purple in every
    figure), the others the next free colours. None of them is the dense model's near-black."""
    out, free = {}, [c for i, c in enumerate(_PALETTE) if i >= len(_KNOWN)] + _EXTRA
    for cal in calibrations:
        if cal in _KNOWN:
            out[cal] = _PALETTE[_KNOWN.index(cal)]
    for cal in calibrations:
        if cal not in out:
            out[cal] = free[len([c for c in out if c not in _KNOWN]) % len(free)]
    return out


def _title(task: str) -> str:
    return BENCHMARKS[task].title if task in BENCHMARKS else ("average" if task == "average" else task)


def _value_se(report, task: str, metric: str) -> tuple[float, float | None]:
    """A model's `metric` on `task` in percent, and its standard error (pass@1 only; `average`: over the tasks)."""
    if report is None:
        return float("nan"), None
    if task == "average":
        if metric != "pass_at_1":
            return 100 * statistics.fmean(getattr(r, metric) for r in report.tasks.values()), None
        se = report.average_pass_at_1_se
        return 100 * report.average_pass_at_1, None if se is None else 100 * se
    r = report.tasks.get(task)
    if r is None:
        return float("nan"), None
    se = r.pass_at_1_se if metric == "pass_at_1" else None
    return 100 * getattr(r, metric), None if se is None else 100 * se


# ----------------------------------------------------------------------------------------------------------------
# Accuracy


def accuracy_figure(
    reports,
    metric: str = "pass_at_1",
    title: str | None = None,
    labels: Mapping[str, tuple[str, str | None]] | None = None,
    tasks: list[str] | None = None,
    average: bool | None = None,
):
    """The accuracy figure of `plot_accuracy`, as a matplotlib `Figure`.

    One panel per task (and an `average` panel when there are several tasks and `average` is not False); in each,
    one group of bars per pruning configuration and one bar per calibration, coloured by calibration; error bars of
    one standard error across problems (pass@1); the dense model as a dark horizontal line with its ±1 SE band.
    """
    plt = _pyplot()
    reports = _reports(reports)
    if not reports:
        raise ValueError("No report to plot.")
    dense, groups, cals, cell = _layout(list(reports), labels)
    if not groups:  # the dense model alone: its bar
        dense, groups, cals, cell = None, [""], [DENSE], {("", DENSE): dense}
    tasks = tasks or list(dict.fromkeys(t for r in reports.values() for t in r.tasks))
    if not tasks:
        raise ValueError("The reports hold no accuracy task to plot.")
    every = all(t in r.tasks for r in reports.values() for t in tasks)
    panels = tasks + (["average"] if (average if average is not None else len(tasks) > 1) and every else [])
    colors = {**calibration_colors(cals), DENSE: DENSE_COLOR}
    # each group holds a bar for each calibration it has (a grid with gaps is not padded with empty slots): bars are
    # one width everywhere, groups as wide as their bars, 0.2 apart; a full grid puts group i at x = i
    present = {g: [c for c in cals if (g, c) in cell] for g in groups}
    n_bars = sum(len(v) for v in present.values())
    bar_w = 0.8 / max(1, max(len(v) for v in present.values()))
    centers = []
    for i, g in enumerate(groups):
        n = len(present[g])
        centers.append(0.0 if i == 0 else centers[-1] + (len(present[groups[i - 1]]) + n) * bar_w / 2 + 0.2)
    ncols = 1 if n_bars > 12 else min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = max(4.2, 1.2 + 0.32 * max(1, n_bars) + 0.3 * len(groups))
    height = max(2.9 * nrows, 0.17 * (len(cals) + 2) + 0.8)  # room for the legend's entries
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 2.0, height), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, task in zip(axes.flat, panels):
        top = 0.0
        for cal in cals:
            xs, ys, errs = [], [], []
            for i, group in enumerate(groups):
                if cal not in present[group]:
                    continue
                value, se = _value_se(reports.get(cell.get((group, cal))), task, metric)
                j = present[group].index(cal)
                xs.append(centers[i] - len(present[group]) * bar_w / 2 + bar_w * (j + 0.5))
                ys.append(value)
                errs.append(se if se is not None else 0.0)
                top = max(top, value + (se or 0.0)) if value == value else top
            ax.bar(xs, ys, width=bar_w * 0.92, color=colors[cal], label=cal, yerr=errs if any(errs) else None,
                   error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.25"})  # fmt: skip
        if dense is not None:
            value, se = _value_se(reports[dense], task, metric)
            if value == value:
                text = f"{value:.1f}" + (f" ± {se:.1f}" if se is not None else "")
                ax.axhline(value, color=DENSE_COLOR, linestyle="--", linewidth=1.2, zorder=3,
                           label=f"dense{' (band: ±1 SE)' if se is not None else ''}")  # fmt: skip
                ax.annotate(f"dense {text}", (1.0, value), xycoords=("axes fraction", "data"), xytext=(-3, 3),
                            textcoords="offset points", ha="right", va="bottom", fontsize=7,
                            color=DENSE_COLOR)  # fmt: skip
                if se is not None:
                    ax.axhspan(value - se, value + se, color=DENSE_COLOR, alpha=0.12, linewidth=0, zorder=0)
                top = max(top, value + (se or 0.0))
        ax.set_xticks(centers)
        ax.set_xticklabels(groups, fontsize=8, rotation=90 if n_bars > 40 else 0)
        ax.set_xlim(centers[0] - len(present[groups[0]]) * bar_w / 2 - 0.15,
                    centers[-1] + len(present[groups[-1]]) * bar_w / 2 + 0.15)  # fmt: skip
        ax.set_ylim(0, min(100.0, top * 1.12) if top > 0 else 100.0)
        se_note = ", ±1 SE" if metric == "pass_at_1" else ""
        ax.set_ylabel(f"{metric.replace('_at_', '@')} (%){se_note}", fontsize=8)
        ax.set_title(_title(task), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(panels) :]:
        ax.remove()
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize=8, frameon=False,
               title="calibration" if groups != [""] else "model", title_fontsize=8)  # fmt: skip
    what = "by pruning configuration and calibration" if groups != [""] else "per model"
    fig.suptitle(title or f"{metric.replace('_at_', '@')} {what}", fontsize=10)
    return fig


def plot_accuracy(
    reports,
    path: str,
    metric: str = "pass_at_1",
    title: str | None = None,
    labels: Mapping[str, tuple[str, str | None]] | None = None,
    tasks: list[str] | None = None,
    average: bool | None = None,
) -> str:
    """Accuracy grouped by pruning configuration and coloured by calibration, the dense model as a reference line.

    Args:
        reports: `label -> EvalReport` (or a list of reports, labelled by model name).
        path: the file written (PNG, SVG or PDF).
        metric: a `TaskResult` accuracy (`pass_at_1`, with standard errors; `pass_at_k`).
        labels: `label -> (calibration, pruning)`, pruning `None` for the dense model; by default read from the
            names (`model_label`: `dense`, `<calibration>__<pruning>`, anything else its own calibration).
        tasks: the tasks to draw (default: all); average: add an `average` panel (default: with several tasks).
    """
    fig = accuracy_figure(reports, metric=metric, title=title, labels=labels, tasks=tasks, average=average)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    plt = _pyplot()
    try:
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Lengths


def _lengths(report, task: str | None) -> list[int]:
    if task is not None and task not in report.tasks:
        raise ValueError(f"{report.model} has no task {task!r} (it has {list(report.tasks)}).")
    chosen = [report.tasks[task]] if task else list(report.tasks.values())
    return [n for r in chosen for n in r.lengths]


def lengths_figure(
    reports, task: str | None = None, labels: Mapping[str, tuple[str, str | None]] | None = None, title=None
):
    """The figure of `plot_length_distributions`: one panel per pruning configuration, a box per calibration (the
    dense model first, in every panel): quartiles, whiskers at the 5th and 95th percentiles, and the mean with ±1
    standard error (over replies) as a black dot and bar; the tick labels give mean ± SE."""
    plt = _pyplot()
    reports = _reports(reports)
    series = {name: _lengths(r, task) for name, r in reports.items()}
    if not any(series.values()):
        raise ValueError("The reports hold no per-reply lengths (they are recorded by evaluate(); log_samples).")
    empty = [n for n, v in series.items() if not v]
    dense, groups, cals, cell = _layout([n for n in reports if n not in empty], labels)
    colors = calibration_colors(cals)
    groups = groups or [None]  # the dense model alone
    # each panel as wide as its boxes: the dense model and the calibrations that group has
    counts = [(dense is not None) + sum((g, c) in cell for c in cals) for g in groups]
    ratios = [0.5 + 0.42 * max(1, n) for n in counts]
    fig, axes = plt.subplots(1, len(groups), figsize=(max(5.0, 1.0 + sum(ratios)), 3.6), sharey=True, squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": ratios})  # fmt: skip
    for ax, group, per_panel in zip(axes[0], groups, counts):
        names = ([dense] if dense is not None else []) + [cell[(group, c)] for c in cals if (group, c) in cell]
        data = [series[n] for n in names]
        boxes = ax.boxplot(data, positions=range(len(names)), whis=(5, 95), widths=0.6, showfliers=False,
                           patch_artist=True, medianprops={"color": "white", "linewidth": 1.2})  # fmt: skip
        for patch, name in zip(boxes["boxes"], names):
            cal = DENSE if name == dense else (labels or {}).get(name, model_label(name))[0]
            patch.set_facecolor(DENSE_COLOR if name == dense else colors[cal])
            patch.set_alpha(0.85)
        means = [statistics.fmean(v) for v in data]
        ses = [standard_error(v) or 0.0 for v in data]
        ax.errorbar(range(len(names)), means, yerr=ses, fmt="o", color="black", markersize=3, capsize=2,
                    elinewidth=1, zorder=4)  # fmt: skip
        ticks = []
        for name, m, se in zip(names, means, ses):
            cal = DENSE if name == dense else (labels or {}).get(name, model_label(name))[0]
            ticks.append(f"{cal}{' ' if per_panel > 5 else chr(10)}{m:.0f}±{se:.0f}")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(ticks, fontsize=7, rotation=90 if per_panel > 5 else 0)
        ax.set_title(group or ("dense" if group is None else "pruned"), fontsize=9)
        ax.grid(axis="y", color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(axis="y", labelsize=7)
    axes[0][0].set_ylabel("response length (tokens)", fontsize=8)
    name = title or ("Response lengths" + (f" — {_title(task)}" if task else ""))
    fig.suptitle(f"{name}\nbox: quartiles, whiskers: 5th–95th percentile\ndot and tick: mean ± 1 SE", fontsize=9)
    return fig


def plot_length_distributions(
    reports,
    path: str,
    task: str | None = None,
    bins: int | None = None,
    labels: Mapping[str, tuple[str, str | None]] | None = None,
    title: str | None = None,
) -> str:
    """Response length (tokens) per model over one task or all of them (SSGR Fig. 5): one small panel per pruning
    configuration with a box per calibration and the dense model in each, the mean ± SE marked (see
    `lengths_figure`). `bins` is accepted for compatibility with the histograms of earlier versions and unused."""
    del bins
    return _save(lengths_figure(reports, task=task, labels=labels, title=title), path)


# ----------------------------------------------------------------------------------------------------------------
# Per level


def _level_key(level: str):
    return (len(level), level)


def per_level_figure(reports, labels: Mapping[str, tuple[str, str | None]] | None = None, tasks=None, title=None):
    """The figure of `plot_per_level`: per task with difficulty levels, a heatmap of pass@1 (%) with one row per
    model (dense first, then by pruning configuration and calibration) and one column per level, each cell
    annotated."""
    plt = _pyplot()
    reports = _reports(reports)
    tasks = tasks or list(dict.fromkeys(t for r in reports.values() for t in r.tasks))
    tasks = [t for t in tasks if any(t in r.tasks and r.tasks[t].per_level() for r in reports.values())]
    if not tasks:
        raise ValueError("No task of these reports records difficulty levels (problem_levels).")
    dense, groups, cals, cell = _layout(list(reports), labels)
    rows = ([dense] if dense is not None else []) + [cell[(g, c)] for g in groups for c in cals if (g, c) in cell]
    row_group = ([None] if dense is not None else []) + [g for g in groups for c in cals if (g, c) in cell]
    fig, axes = plt.subplots(1, len(tasks), squeeze=False, layout="constrained",
                             figsize=(1.8 + 2.6 * len(tasks), 1.2 + 0.26 * len(rows)))  # fmt: skip
    image = None
    for ax, task in zip(axes[0], tasks):
        per = {n: reports[n].tasks[task].per_level() if task in reports[n].tasks else {} for n in rows}
        levels = sorted({lv for v in per.values() for lv in v}, key=_level_key)
        grid = [[100 * per[n].get(lv, float("nan")) for lv in levels] for n in rows]
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto", interpolation="nearest")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                            color="black" if v > 60 else "white")  # fmt: skip
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([f"L{lv}" if lv.isdigit() else lv for lv in levels], fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows if ax is axes[0][0] else [], fontsize=7)
        ax.set_title(_title(task), fontsize=9)
        for i in range(1, len(rows)):  # a white line under the dense row and between pruning groups
            if row_group[i] != row_group[i - 1]:
                ax.axhline(i - 0.5, color="white", linewidth=2)
    fig.colorbar(image, ax=list(axes[0]), label="pass@1 (%)", shrink=0.9)
    fig.suptitle(title or "pass@1 by difficulty level", fontsize=10)
    return fig


def plot_per_level(reports, path: str, labels=None, tasks: list[str] | None = None, title: str | None = None) -> str:
    """A heatmap of pass@1 by difficulty level (models x levels; the tiny task's levels 1-5, MATH-500's 1-5), one
    panel per task that records levels (see `per_level_figure`). Raises `ValueError` when no task has levels."""
    return _save(per_level_figure(reports, labels=labels, tasks=tasks, title=title), path)
