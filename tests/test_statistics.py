"""Standard errors of pass@1 and paired bootstrap comparisons of `EvalReport`s, against hand-computed cases."""

import dataclasses
import json
import math

import pytest

from hf_ssgr.evaluation.registry import BENCHMARKS
from hf_ssgr.evaluation.report import Comparison, EvalReport, TaskResult
from hf_ssgr.evaluation.stats import format_accuracy, paired_bootstrap, standard_error


def task(name, per_problem, ids=None):
    acc = sum(per_problem) / len(per_problem) if per_problem else 0.0
    ids = [str(i) for i in range(len(per_problem))] if ids is None else ids
    return TaskResult(name, BENCHMARKS[name].title, len(per_problem), 4, acc, 1.0, 100.0, 90.0, 0.0, 1.0, [],
                      list(per_problem), [], ids)  # fmt: skip


def report(name, **per_task):
    return EvalReport(name, {t: task(t, p) for t, p in per_task.items()}, {"num_samples": 4})


def test_standard_error_by_hand():
    # p = 1/4, 2/4, 3/4, 2/4: mean 1/2, squared deviations 1/16 + 0 + 1/16 + 0, sample variance (1/8)/3
    assert standard_error([0.25, 0.5, 0.75, 0.5]) == pytest.approx(math.sqrt(1 / 24) / 2)  # 0.10206
    assert standard_error([0.0, 1.0]) == pytest.approx(0.5)  # s = sqrt(1/2), / sqrt(2)
    assert standard_error([0.3, 0.3, 0.3]) == 0.0
    assert standard_error([0.5]) is None and standard_error([]) is None
    assert format_accuracy(0.5, 0.10206) == "50.0 (10.2)"
    assert format_accuracy(0.5, None) == "50.0" and format_accuracy(float("nan"), 0.1) == "n/a"


def test_report_standard_errors_table_and_average():
    rep = report("m", ssgr_gsm8k=[0.25, 0.5, 0.75, 0.5], ssgr_math500=[0.0, 1.0])
    gsm, se_gsm = rep["ssgr_gsm8k"], math.sqrt(1 / 24) / 2
    assert gsm.pass_at_1_se == pytest.approx(se_gsm) and gsm.pass_at_1_with_se == "50.0 (10.2)"
    assert rep.pass_at_1_se == pytest.approx({"ssgr_gsm8k": se_gsm, "ssgr_math500": 0.5})
    assert rep.average_pass_at_1_se == pytest.approx(math.sqrt(se_gsm**2 + 0.25) / 2)  # 0.2549
    table = rep.table(baseline=rep)
    assert "pass@1 (SE)" in table
    assert "| GSM8K | 4 | 50.0 (10.2) |" in table and "| MATH-500 | 2 | 50.0 (50.0) |" in table
    assert "| average |  | 50.0 (25.5) |" in table


def test_json_round_trip_keeps_per_problem_results_and_writes_the_se(tmp_path):
    rep = report("m", ssgr_gsm8k=[0.25, 0.5, 0.75, 0.5])
    path = rep.save(str(tmp_path / "r.json"))
    data = json.loads(open(path).read())
    assert data["tasks"]["ssgr_gsm8k"]["pass_at_1_se"] == pytest.approx(0.10206207)
    assert data["tasks"]["ssgr_gsm8k"]["problem_ids"] == ["0", "1", "2", "3"]
    assert data["average_pass_at_1_se"] == pytest.approx(0.10206207)
    loaded = EvalReport.load(path)
    assert loaded == rep and loaded["ssgr_gsm8k"].pass_at_1_se == pytest.approx(0.10206207)
    assert loaded.compare(rep)["average"].verdict == "no detectable difference"


def test_old_json_without_per_problem_results_loads_and_compare_refuses(tmp_path):
    rep = report("old", ssgr_gsm8k=[0.25, 0.5, 0.75, 0.5])
    data = rep.to_dict()
    for key in ("average_pass_at_1", "average_pass_at_1_se"):
        del data[key]
    for t in data["tasks"].values():  # what earlier versions wrote
        for key in ("pass_at_1_se", "problem_ids", "pass_at_1_per_problem", "problem_levels"):
            del t[key]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = EvalReport.load(str(tmp_path / "old.json"))
    assert old["ssgr_gsm8k"].pass_at_1 == 0.5 and old["ssgr_gsm8k"].pass_at_1_se is None
    assert old.average_pass_at_1_se is None and not old.has_per_problem_results
    assert "| GSM8K | 4 | 50.0 |" in old.table()  # no SE to show
    with pytest.raises(ValueError, match="holds no per-problem results.*evaluate it again"):
        old.compare(rep)
    with pytest.raises(ValueError, match="holds no per-problem results"):
        rep.compare(old)
    # per-problem pass@1 but no problem ids (an intermediate version): an SE, but no pairing
    mid = dataclasses.replace(rep["ssgr_gsm8k"], problem_ids=[])
    mid_rep = EvalReport("mid", {"ssgr_gsm8k": mid})
    assert mid.pass_at_1_se == pytest.approx(0.10206207)
    with pytest.raises(ValueError, match="mid holds no per-problem results"):
        mid_rep.compare(rep)


def test_compare_better_worse_and_identical():
    base = [0.0, 0.25, 0.5, 0.25, 0.0, 0.75]
    good = [p + 0.25 for p in base]  # better on every problem
    a, b = report("a", ssgr_gsm8k=good), report("b", ssgr_gsm8k=base)
    res = a.compare(b, resamples=2000, seed=3)
    c = res["ssgr_gsm8k"]
    assert isinstance(c, Comparison) and set(res) == {"ssgr_gsm8k", "average"}
    assert c.difference == pytest.approx(0.25) and c.low == pytest.approx(0.25) and c.high == pytest.approx(0.25)
    assert (c.n_problems, c.resamples, c.seed, c.verdict) == (6, 2000, 3, "better")
    assert b.compare(a)["average"].verdict == "worse"
    same = a.compare(a)["average"]
    assert same.difference == 0 and same.low == 0 and same.high == 0 and same.verdict == "no detectable difference"
    assert same.resamples == 10000 and same.seed == 0  # the defaults

    # better on five problems of six, worse on one: an interval around the mean, within the differences' range
    mixed = [p + d for p, d in zip(base, [0.25, 0.5, 0.25, 0.25, 0.25, -0.25])]
    m = report("m", ssgr_gsm8k=mixed).compare(b)["ssgr_gsm8k"]
    assert m.difference == pytest.approx(1.25 / 6)
    assert -0.25 < m.low < m.difference < m.high <= 0.5


def test_compare_contains_zero_when_differences_cancel():
    base = [0.5] * 8
    noisy = [0.75, 0.25] * 4  # +0.25 and -0.25: mean difference 0, the interval straddles it
    c = report("n", ssgr_gsm8k=noisy).compare(report("b", ssgr_gsm8k=base))["average"]
    assert c.difference == pytest.approx(0.0) and c.low < 0 < c.high and c.verdict == "no detectable difference"


def test_compare_pairs_by_problem_id_on_shared_problems_only():
    a = EvalReport("a", {"ssgr_gsm8k": task("ssgr_gsm8k", [1.0, 0.5, 0.0], ids=["7", "3", "9"])})
    b = EvalReport("b", {"ssgr_gsm8k": task("ssgr_gsm8k", [0.5, 1.0, 0.25, 0.0], ids=["3", "7", "1", "2"])})
    c = a.compare(b)["ssgr_gsm8k"]
    assert c.n_problems == 2 and c.difference == pytest.approx(0.0)  # problem 7: 1.0 - 1.0; problem 3: 0.5 - 0.5
    disjoint = EvalReport("d", {"ssgr_gsm8k": task("ssgr_gsm8k", [1.0], ids=["100"])})
    with pytest.raises(ValueError, match="share no problem"):
        a.compare(disjoint)
    with pytest.raises(ValueError, match="No task in common"):
        a.compare(report("x", ssgr_math500=[0.5, 0.5]))


def test_bootstrap_is_deterministic_given_the_seed():
    x = report("x", ssgr_gsm8k=[0.0, 1.0, 0.5, 0.75, 0.25, 1.0, 0.0, 0.5, 0.25, 1.0])
    y = report("y", ssgr_gsm8k=[0.25, 0.5, 0.5, 0.25, 0.5, 0.75, 0.25, 0.0, 0.5, 0.5])
    first = x.compare(y, resamples=500, seed=1)
    assert x.compare(y, resamples=500, seed=1) == first  # same seed, same interval
    others = [x.compare(y, resamples=500, seed=s)["average"] for s in range(2, 6)]
    assert any((o.low, o.high) != (first["average"].low, first["average"].high) for o in others)
    assert all(o.difference == first["average"].difference for o in others)  # the point estimate is not resampled


def test_average_over_tasks_and_task_intervals_independent_of_other_tasks():
    g1, g2 = [0.0, 0.5, 1.0, 0.25], [0.25, 0.25, 0.5, 0.5]
    m1, m2 = [1.0, 1.0, 0.5], [0.0, 0.5, 0.5]
    two = report("a", ssgr_gsm8k=g1, ssgr_math500=m1).compare(report("b", ssgr_gsm8k=g2, ssgr_math500=m2))
    one = report("a", ssgr_gsm8k=g1).compare(report("b", ssgr_gsm8k=g2))
    assert two["ssgr_gsm8k"] == one["ssgr_gsm8k"]
    d_gsm, d_math = (1.75 - 1.5) / 4, (2.5 - 1.0) / 3
    assert two["average"].difference == pytest.approx((d_gsm + d_math) / 2)
    assert two["average"].n_problems == 7
    assert two["ssgr_math500"].low <= two["ssgr_math500"].difference <= two["ssgr_math500"].high


def test_paired_bootstrap_checks_its_arguments():
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap({"t": [0.1]}, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap({"t": [0.1]}, confidence=1.5)
    wide = paired_bootstrap({"t": [0.5, -0.5, 0.25, 0.0]}, confidence=0.99, seed=0)["t"]
    narrow = paired_bootstrap({"t": [0.5, -0.5, 0.25, 0.0]}, confidence=0.5, seed=0)["t"]
    assert wide.low <= narrow.low and narrow.high <= wide.high and wide.confidence == 0.99


def test_model_card_shows_pass_at_1_with_se(tmp_path):
    pytest.importorskip("huggingface_hub")
    from hf_ssgr.hub.cards import _evaluation

    pruned = report("pruned", ssgr_gsm8k=[0.25, 0.5, 0.75, 0.5])
    dense = report("dense", ssgr_gsm8k=[1.0, 0.5, 1.0, 0.5])
    _, rows, _ = _evaluation(pruned, dense)
    assert rows[0]["pruned"] == "50.0 (10.2)" and rows[0]["dense"] == "75.0 (14.4)"


def test_run_report_comparisons_need_per_problem_results():
    from hf_ssgr.recipes import _comparisons

    dense = report("dense", ssgr_gsm8k=[1.0, 1.0, 1.0, 0.5])
    reports = {"text__w": report("text__w", ssgr_gsm8k=[0.0, 0.25, 0.0, 0.0]),
               "ssgr__w": report("ssgr__w", ssgr_gsm8k=[1.0, 0.75, 1.0, 0.5])}  # fmt: skip
    lines = _comparisons(dense, reports, resamples=1000)
    rows = {tuple(line.split(" | ")[:2]): line for line in lines if line.startswith("| ") and "---" not in line}
    assert set(rows) == {
        ("| model", "against"),
        ("| text__w", "dense"),
        ("| ssgr__w", "text__w"),
        ("| ssgr__w", "dense"),
    }
    assert rows["| ssgr__w", "text__w"] == "| ssgr__w | text__w | +75.0 | [+50.0, +100.0] | 4 | better |"
    assert rows["| ssgr__w", "dense"].startswith("| ssgr__w | dense | -6.2 |")
    assert rows["| ssgr__w", "dense"].endswith("| no detectable difference |")
    assert rows["| text__w", "dense"].endswith("| 4 | worse |")
    old = dataclasses.replace(reports["text__w"], tasks={"ssgr_gsm8k": task("ssgr_gsm8k", [0.0] * 4, ids=[])})
    lines = _comparisons(dense, {**reports, "text__w": old})
    assert lines[0].startswith("No paired comparisons: a report holds no per-problem results")
