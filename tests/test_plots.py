"""The evaluation figures: grouped by pruning configuration and coloured by calibration, the dense model as a
reference, standard errors drawn, one panel per task or pruning configuration, per-level heatmaps; checked on the
matplotlib objects (bars, boxes, lines, images), not only on the files written."""

import random

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from hf_ssgr.evaluation.plots import (  # noqa: E402
    DENSE_COLOR,
    accuracy_figure,
    calibration_colors,
    lengths_figure,
    model_label,
    per_level_figure,
    plot_accuracy,
    plot_length_distributions,
    plot_per_level,
)
from hf_ssgr.evaluation.report import EvalReport, TaskResult  # noqa: E402
from hf_ssgr.evaluation.stats import standard_error  # noqa: E402

QUICKSTART_CALS = ["text", "human", "prompt_only", "sgr", "ssgr", "rac"]
QUICKSTART_PRUNING = ["sparsegpt-50", "wanda-50", "sparsegpt-2of4"]


def _task(name, acc, rng, n=40, k=4, mean_len=300):
    per = [min(1.0, max(0.0, round(4 * rng.gauss(acc, 0.3)) / 4)) for _ in range(n)]
    lengths = [max(5, int(rng.gauss(mean_len, mean_len / 3))) for _ in range(n * k)]
    return TaskResult(task=name, title=name, num_problems=n, num_samples=k, pass_at_1=sum(per) / n,
                      pass_at_k=min(1.0, sum(per) / n + 0.1), mean_length=sum(lengths) / len(lengths),
                      median_length=sorted(lengths)[len(lengths) // 2], truncated=0.0, gen_seconds=1.0,
                      lengths=lengths, pass_at_1_per_problem=per, problem_levels=[str(1 + i % 5) for i in range(n)],
                      problem_ids=[str(i) for i in range(n)])  # fmt: skip


def _grid(cals, prunings, tasks=("ssgr_tiny_arith",), seed=0):
    rng = random.Random(seed)
    out = {"dense": EvalReport("dense", {t: _task(t, 0.6, rng) for t in tasks})}
    for i, p in enumerate(prunings):
        for j, c in enumerate(cals):
            name = f"{c}__{p}"
            out[name] = EvalReport(name, {t: _task(t, 0.5 - 0.1 * i + 0.02 * j, rng, mean_len=300 + 30 * i)
                                          for t in tasks})  # fmt: skip
    return out


def _bars(ax):
    return [p for c in ax.containers if hasattr(c, "patches") for p in c.patches]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_model_label_reads_recipe_names_and_falls_back():
    assert model_label("dense") == ("dense", None)
    assert model_label("ssgr__sparsegpt-2of4") == ("ssgr", "sparsegpt-2of4")
    assert model_label("rac__sparsegpt-50+fp8") == ("rac", "sparsegpt-50+fp8")
    assert model_label("my/model") == ("my/model", "")
    assert model_label("__x") == ("__x", "")


def test_calibration_colours_are_distinct_stable_and_never_the_dense_grey():
    colors = calibration_colors(QUICKSTART_CALS + ["mine", "yours"])
    assert len(set(colors.values())) == 8
    assert DENSE_COLOR not in colors.values()
    assert calibration_colors(["ssgr"])["ssgr"] == colors["ssgr"]  # the same colour in every figure
    assert calibration_colors(["mine"])["mine"] != colors["ssgr"]


def test_accuracy_quickstart_grid_grouped_by_pruning_coloured_by_calibration(tmp_path):
    reports = _grid(QUICKSTART_CALS, QUICKSTART_PRUNING)
    fig = accuracy_figure(reports)
    (ax,) = fig.axes  # one task: one panel
    bars = _bars(ax)
    assert len(bars) == 18
    assert [t.get_text() for t in ax.get_xticklabels()] == QUICKSTART_PRUNING
    # one container per calibration, its 3 bars in the 3 groups, one colour per calibration, all distinct
    containers = [c for c in ax.containers if hasattr(c, "patches")]
    assert [c.get_label() for c in containers] == QUICKSTART_CALS
    colours = [{to_hex(p.get_facecolor()) for p in c.patches} for c in containers]
    assert all(len(c) == 1 for c in colours) and len({next(iter(c)) for c in colours}) == 6
    for group, x in enumerate(sorted(p.get_x() for p in containers[0].patches)):
        assert group - 0.5 < x < group  # each calibration's bar sits in its pruning group
    # heights and error bars: pass@1 and its SE in percent
    for cal, c in zip(QUICKSTART_CALS, containers):
        for group, patch in zip(QUICKSTART_PRUNING, c.patches):
            assert patch.get_height() == pytest.approx(100 * reports[f"{cal}__{group}"]["ssgr_tiny_arith"].pass_at_1)
        err = c.errorbar.lines[2][0].get_segments()
        want = [100 * reports[f"{cal}__{g}"]["ssgr_tiny_arith"].pass_at_1_se for g in QUICKSTART_PRUNING]
        assert [s[1][1] - s[0][1] for s in err] == pytest.approx([2 * w for w in want])
    # the dense model: a horizontal line at its pass@1 with a ±SE band, not a bar
    dense = reports["dense"]["ssgr_tiny_arith"]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("dense")]
    assert line.get_ydata()[0] == pytest.approx(100 * dense.pass_at_1)
    band = [p for p in ax.patches if p not in bars]
    assert len(band) == 1
    low, high = band[0].get_y(), band[0].get_y() + band[0].get_height()  # axhspan: a rectangle in data y
    assert (low, high) == pytest.approx((100 * (dense.pass_at_1 - dense.pass_at_1_se),
                                         100 * (dense.pass_at_1 + dense.pass_at_1_se)))  # fmt: skip
    # the legend outside the axes: on the figure, one entry per calibration and one for dense
    assert ax.get_legend() is None and len(fig.legends) == 1
    assert len(fig.legends[0].get_texts()) == 7
    fig.canvas.draw()
    assert fig.legends[0].get_window_extent().x0 >= ax.get_window_extent().x1
    path = plot_accuracy(reports, str(tmp_path / "acc.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_accuracy_four_by_four_with_tasks_has_a_panel_per_task_and_the_average():
    tasks = ("ssgr_math500", "ssgr_aime24", "ssgr_gpqa_diamond")
    reports = _grid(["text", "human", "sgr", "ssgr"], ["sparsegpt-50", "wanda-50", "sparsegpt-2of4", "alps-70"], tasks)
    fig = accuracy_figure(reports)
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes][-1] == "average"
    assert all(len(_bars(ax)) == 16 for ax in fig.axes)
    avg = fig.axes[-1]
    first = [c for c in avg.containers if hasattr(c, "patches")][0].patches[0]
    assert first.get_height() == pytest.approx(100 * reports["text__sparsegpt-50"].average_pass_at_1)
    assert len(accuracy_figure(reports, average=False).axes) == 3


def test_accuracy_single_model_and_explicit_labels():
    reports = _grid(["ssgr"], ["sparsegpt-50"])
    fig = accuracy_figure({"dense": reports["dense"]})
    (ax,) = fig.axes
    (bar,) = _bars(ax)
    assert bar.get_height() == pytest.approx(100 * reports["dense"]["ssgr_tiny_arith"].pass_at_1)
    assert to_hex(bar.get_facecolor()) == to_hex(DENSE_COLOR)
    # arbitrary names with their labels given: grouped as told
    mine = {"base": reports["dense"], "a": reports["ssgr__sparsegpt-50"], "b": reports["ssgr__sparsegpt-50"]}
    labels = {"base": ("dense", None), "a": ("ssgr", "50%"), "b": ("ssgr", "60%")}
    (ax,) = accuracy_figure(mine, labels=labels).axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50%", "60%"]
    assert len(_bars(ax)) == 2
    # arbitrary names without labels: a bar each, one group
    (ax,) = accuracy_figure({"x": reports["dense"], "y": reports["ssgr__sparsegpt-50"]}).axes
    assert len(_bars(ax)) == 2 and len(ax.get_xticks()) == 1
    with pytest.raises(ValueError, match="Two dense models"):
        accuracy_figure(mine, labels={**labels, "a": ("dense", None)})


def test_lengths_one_panel_per_pruning_configuration_with_mean_and_se(tmp_path):
    reports = _grid(QUICKSTART_CALS, QUICKSTART_PRUNING)
    fig = lengths_figure(reports)
    assert [ax.get_title() for ax in fig.axes] == QUICKSTART_PRUNING
    for ax, group in zip(fig.axes, QUICKSTART_PRUNING):
        names = ["dense"] + [f"{c}__{group}" for c in QUICKSTART_CALS]
        assert len([p for p in ax.patches]) == 7  # a box per calibration and the dense model
        means = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
        assert len(means) == 1
        want = [sum(reports[n]["ssgr_tiny_arith"].lengths) / len(reports[n]["ssgr_tiny_arith"].lengths) for n in names]
        assert list(means[0].get_ydata()) == pytest.approx(want)
        se = standard_error(reports[names[1]]["ssgr_tiny_arith"].lengths)
        assert ax.get_xticklabels()[1].get_text() == f"text {want[1]:.0f}±{se:.0f}"
    assert len(lengths_figure({"dense": reports["dense"]}).axes) == 1
    path = plot_length_distributions(reports, str(tmp_path / "len.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no task"):
        lengths_figure(reports, task="nope")


def test_per_level_heatmap_models_by_levels(tmp_path):
    reports = _grid(["text", "ssgr"], ["sparsegpt-50", "wanda-50"], tasks=("ssgr_tiny_arith", "ssgr_math500"))
    fig = per_level_figure(reports)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2  # a panel per task with levels (and a colorbar)
    grid = panels[0].get_images()[0].get_array()
    assert grid.shape == (5, 5)  # dense + 4 pruned models x levels 1-5
    per = reports["ssgr__wanda-50"]["ssgr_tiny_arith"].per_level()
    assert list(grid[4]) == pytest.approx([100 * per[str(lv)] for lv in range(1, 6)])
    assert [t.get_text() for t in panels[0].get_yticklabels()][:2] == ["dense", "text__sparsegpt-50"]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["L1", "L2", "L3", "L4", "L5"]
    path = plot_per_level(reports, str(tmp_path / "lvl.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    for r in reports.values():
        for t in r.tasks.values():
            t.problem_levels = []
    with pytest.raises(ValueError, match="difficulty levels"):
        per_level_figure(reports)


def test_plots_stay_importable_where_they_were():
    from hf_ssgr.evaluation import evaluate, plots, report

    assert evaluate.plot_accuracy is plots.plot_accuracy is report.plot_accuracy
    assert evaluate.plot_length_distributions is plots.plot_length_distributions


def test_error_ratio_heatmap_is_centred_at_one_on_a_log_scale_and_marks_the_prompt(tmp_path):
    import numpy as np
    from matplotlib.colors import LogNorm

    from hf_ssgr.evaluation.analysis import ReconstructionErrors, error_ratio_figure, plot_error_ratio_heatmap

    rng = np.random.default_rng(0)
    prompts, lengths = [12, 20, 16], [60, 80, 70]
    errors_b = [rng.uniform(0.5, 1.5, n) for n in lengths]
    # A: 4x better than B on the prompt, 4x worse while decoding
    errors_a = [np.where(np.arange(n) < p, 0.25, 4.0) * eb for n, p, eb in zip(lengths, prompts, errors_b)]
    res = ReconstructionErrors(["p0", "p1", "p2"], [list(range(n)) for n in lengths], prompts, errors_a, errors_b,
                               labels=("prompt_only", "rac"))  # fmt: skip
    fig = error_ratio_figure(res)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    norm = image.norm
    assert isinstance(norm, LogNorm) and norm.vmin * norm.vmax == pytest.approx(1.0)  # symmetric about ratio 1
    assert norm(1.0) == pytest.approx(0.5) and image.cmap.name.startswith("RdBu")
    assert norm(4.0) == pytest.approx(1 - norm(0.25))
    data = image.get_array()
    assert data.shape == (3, 80) and data.mask[0, 60:].all()  # rows shorter than the longest are masked
    assert data[1, 0] == pytest.approx(0.25) and data[1, 20] == pytest.approx(4.0)
    marks = [ln for ln in ax.get_lines() if ln.get_color() == "black"]
    assert [ln.get_xdata()[0] + 0.5 for ln in marks] == prompts  # the prompt/decode boundary of each row
    assert "1" in [t.get_text() for t in fig.axes[1].get_yticklabels()]
    path = plot_error_ratio_heatmap(res, str(tmp_path / "heat.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
