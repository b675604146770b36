"""What an evaluation measured: [`TaskResult`] per task and [`EvalReport`] per model, with recovery against a dense
baseline, Markdown tables and JSON round trips; the plots live in `plots` (re-exported here)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..utils import write_json_atomically
from .perplexity import PerplexityResult
from .plots import plot_accuracy, plot_length_distributions, plot_per_level
from .registry import BENCHMARKS
from .stats import Comparison, format_accuracy, paired_bootstrap, standard_error

__all__ = ["TaskResult", "EvalReport", "Comparison", "PerplexityResult", "plot_accuracy", "plot_length_distributions",
           "plot_per_level"]  # fmt: skip

FILTER = "k_samples"  # the lm-eval filter whose results the report reads


@dataclass
class TaskResult:
    """Metrics of one task. Accuracies are fractions in [0, 1]; lengths are in tokens.

    `gen_seconds` is the task's generation wall time summed over the processes (what RAC reports as evaluation
    time), `gen_seconds_per_process` each process's share (empty in reports saved before it was recorded).

    `pass_at_1_per_problem[i]` is the pass@1 of the problem `problem_ids[i]` (its k samples' correctness averaged);
    they give `pass_at_1_se` and the paired comparisons of `EvalReport.compare`. Reports saved before problem ids were
    recorded have none: they still load, but cannot be compared.
    """

    task: str
    title: str
    num_problems: int
    num_samples: int
    pass_at_1: float
    pass_at_k: float
    mean_length: float
    median_length: float
    truncated: float
    gen_seconds: float
    lengths: list[int] = field(default_factory=list)  # every reply's length, for distributions
    pass_at_1_per_problem: list[float] = field(default_factory=list)
    problem_levels: list[str] = field(default_factory=list)  # the difficulty level of each problem, when known
    problem_ids: list[str] = field(default_factory=list)  # lm-eval's doc_id of each problem, in the same order
    gen_seconds_per_process: list[float] = field(default_factory=list)  # generation wall time of each process

    @property
    def gen_wall_seconds(self) -> float:
        """The elapsed generation time of the task: the slowest process's generation wall time when the processes
        ran side by side (`gen_seconds_per_process`), else `gen_seconds` (one process, or an older report)."""
        return max(self.gen_seconds_per_process) if self.gen_seconds_per_process else self.gen_seconds

    @property
    def pass_at_1_se(self) -> float | None:
        """Standard error of pass@1 across problems: with p_i the pass@1 of problem i (its k samples averaged) over n
        problems, SE = stdev(p_i) / sqrt(n), the sample standard deviation (n - 1). `None` without per-problem
        results (an older report) or with fewer than two problems."""
        return standard_error(self.pass_at_1_per_problem)

    @property
    def pass_at_1_with_se(self) -> str:
        """pass@1 as `acc (SE)` in percent, e.g. `62.5 (4.1)`."""
        return format_accuracy(self.pass_at_1, self.pass_at_1_se)

    def per_level(self) -> dict[str, float]:
        """pass@1 per difficulty level (from `pass_at_1_per_problem` and `problem_levels`)."""
        groups: dict[str, list[float]] = {}
        for level, acc in zip(self.problem_levels, self.pass_at_1_per_problem):
            if level:
                groups.setdefault(level, []).append(acc)
        return {lv: statistics.fmean(v) for lv, v in sorted(groups.items())}


@dataclass
class EvalReport:
    """What `evaluate` measured: per-task metrics, the settings, and helpers to compare, print and save.

    `EvalReport.load(path)` reads back what `save(path)` wrote. `tasks` holds the accuracy benchmarks (higher is
    better), `perplexity` the perplexity tasks (lower is better), apart: averages, recovery, comparisons and accuracy
    plots read `tasks` only.
    """

    model: str
    tasks: dict[str, TaskResult]
    settings: dict[str, Any] = field(default_factory=dict)
    perplexity: dict[str, PerplexityResult] = field(default_factory=dict)

    # -- access -------------------------------------------------------------------------------------------------------
    def __getitem__(self, task: str) -> TaskResult:
        return self.tasks[task]

    def metric(self, name: str) -> dict[str, float]:
        return {t: getattr(r, name) for t, r in self.tasks.items()}

    @property
    def average_pass_at_1(self) -> float:
        return statistics.fmean(r.pass_at_1 for r in self.tasks.values()) if self.tasks else float("nan")

    @property
    def pass_at_1_se(self) -> dict[str, float | None]:
        """The standard error of each task's pass@1 (see `TaskResult.pass_at_1_se`)."""
        return {t: r.pass_at_1_se for t, r in self.tasks.items()}

    @property
    def average_pass_at_1_se(self) -> float | None:
        """The standard error of `average_pass_at_1`, the mean over T tasks of independent problems:
        sqrt(sum_t SE_t^2) / T. `None` when a task has no SE."""
        ses = list(self.pass_at_1_se.values())
        if not ses or any(se is None for se in ses):
            return None
        return math.sqrt(math.fsum(se * se for se in ses)) / len(ses)

    def compare(
        self, other: EvalReport, resamples: int = 10000, seed: int = 0, confidence: float = 0.95
    ) -> dict[str, Comparison]:
        """This model's pass@1 minus `other`'s, paired on the problems both were evaluated on (matched by problem
        id), per shared task and on average ("average": the mean of the per-task differences).

        The interval (95% by default) is the percentile interval of a paired bootstrap over problems: `resamples`
        resamples (10000 by default) of each task's problems with replacement, drawn with `seed` (0 by default), so
        the same call gives the same interval. The verdict is "better" / "worse" when the interval excludes 0 (above
        / below it), "no detectable difference" when it contains 0.

        Raises `ValueError` when the reports share no task, a shared task shares no problem, or a report holds no
        per-problem results (saved by an older version: evaluate again to compare).
        """
        shared = [t for t in self.tasks if t in other.tasks]
        if not shared:
            raise ValueError(
                f"No task in common with {other.model} (this: {list(self.tasks)}, other: {list(other.tasks)})."
            )
        diffs = {}
        for t in shared:
            a, b = self.tasks[t], other.tasks[t]
            for rep in (self, other):
                r = rep.tasks[t]
                if not r.problem_ids or len(r.problem_ids) != len(r.pass_at_1_per_problem):
                    raise ValueError(
                        f"{rep.model} holds no per-problem results for {t!r} (a report saved without problem ids, "
                        "by an older version of hf-ssgr): evaluate it again to compare it."
                    )
            theirs = dict(zip(b.problem_ids, b.pass_at_1_per_problem))
            d = [p - theirs[i] for i, p in zip(a.problem_ids, a.pass_at_1_per_problem) if i in theirs]
            if not d:
                raise ValueError(f"{self.model} and {other.model} share no problem of {t!r}.")
            diffs[t] = d
        return paired_bootstrap(diffs, resamples=resamples, seed=seed, confidence=confidence)

    @property
    def has_per_problem_results(self) -> bool:
        """Whether every task holds per-problem results with problem ids (what `compare` needs)."""
        return bool(self.tasks) and all(
            r.problem_ids and len(r.problem_ids) == len(r.pass_at_1_per_problem) for r in self.tasks.values()
        )

    def recovery(self, baseline: EvalReport) -> dict[str, float]:
        """pass@1 as a percentage of the baseline's (the dense model), per task shared by both, and on average."""
        shared = [t for t in self.tasks if t in baseline.tasks]
        if not shared:
            raise ValueError(
                f"No task in common with the baseline (this: {list(self.tasks)}, baseline: {list(baseline.tasks)})."
            )
        out = {t: _pct(self.tasks[t].pass_at_1, baseline.tasks[t].pass_at_1) for t in shared}
        out["average"] = _pct(
            statistics.fmean(self.tasks[t].pass_at_1 for t in shared),
            statistics.fmean(baseline.tasks[t].pass_at_1 for t in shared),
        )
        return out

    # -- printing -----------------------------------------------------------------------------------------------------
    def table(self, baseline: EvalReport | None = None) -> str:
        """A Markdown table: pass@1 (%) with its standard error as `acc (SE)`, pass@k (%), mean/median response
        length, truncation, generation wall time (summed over the processes, and each process's when there are
        several); with a baseline, also its pass@1 and the recovery. Perplexity tasks follow in a table of their own
        (`perplexity_table`)."""
        if not self.tasks and self.perplexity:
            return self.perplexity_table(baseline)
        k = self.settings.get("num_samples", "k")
        head = [
            "task",
            "problems",
            f"pass@1 (SE) (avg of {k})",
            f"pass@{k}",
            "mean len",
            "median len",
            "truncated",
            "gen s (per process)" if any(len(r.gen_seconds_per_process) > 1 for r in self.tasks.values()) else "gen s",
        ]
        if baseline is not None:
            head += ["baseline pass@1", "recovery"]
            rec = self.recovery(baseline)
        rows = []
        for t, r in self.tasks.items():
            row = [
                r.title,
                str(r.num_problems),
                r.pass_at_1_with_se,
                f"{100 * r.pass_at_k:.1f}",
                f"{r.mean_length:.0f}",
                f"{r.median_length:.0f}",
                f"{100 * r.truncated:.1f}%",
                format_gen_seconds(r),
            ]
            if baseline is not None:
                b = baseline.tasks.get(t)
                row += [b.pass_at_1_with_se if b else "", _fmt_pct(rec.get(t))]
            rows.append(row)
        if len(self.tasks) > 1:
            row = ["average", "", format_accuracy(self.average_pass_at_1, self.average_pass_at_1_se)]
            row += ["", "", "", "", ""]
            if baseline is not None:
                avg = format_accuracy(baseline.average_pass_at_1, baseline.average_pass_at_1_se)
                row += [avg, _fmt_pct(rec["average"])]
            rows.append(row)
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        if self.perplexity:
            lines += ["", self.perplexity_table(baseline)]
        return "\n".join(lines)

    def perplexity_table(self, baseline: EvalReport | None = None) -> str:
        """A Markdown table of the perplexity tasks (lower is better): perplexity, scored tokens, windows (or
        replies), window length; with a baseline, its perplexity and the ratio to it (no recovery: perplexity is not
        an accuracy)."""
        head = ["perplexity task", "perplexity ↓", "tokens scored", "windows / replies", "window"]
        if baseline is not None:
            head += ["baseline perplexity", "ratio to baseline"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for t, r in self.perplexity.items():
            row = [r.title, f"{r.perplexity:.3f}", str(r.num_tokens), str(r.num_sequences),
                   "per reply" if r.seqlen is None else str(r.seqlen)]  # fmt: skip
            if baseline is not None:
                b = baseline.perplexity.get(t)
                row += [f"{b.perplexity:.3f}", f"{r.perplexity / b.perplexity:.3f}x"] if b else ["", ""]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"{self.model}\n{self.table()}"

    # -- persistence --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The report as plain data; each task also carries `pass_at_1_se` and `gen_wall_seconds` (recomputed on
        loading, not read back), and the report `average_pass_at_1` / `average_pass_at_1_se`."""
        tasks = {t: {**asdict(r), "pass_at_1_se": r.pass_at_1_se, "gen_wall_seconds": r.gen_wall_seconds}
                 for t, r in self.tasks.items()}  # fmt: skip
        return {
            "model": self.model,
            "settings": self.settings,
            "average_pass_at_1": self.average_pass_at_1,
            "average_pass_at_1_se": self.average_pass_at_1_se,
            "tasks": tasks,
            "perplexity": {t: asdict(r) for t, r in self.perplexity.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalReport:
        """Reads what `to_dict` wrote, and the reports of older versions (without problem ids, standard errors or
        perplexity)."""
        names = {f.name for f in fields(TaskResult)}
        ppl_names = {f.name for f in fields(PerplexityResult)}
        return cls(
            model=data["model"],
            settings=dict(data.get("settings", {})),
            tasks={t: TaskResult(**{k: v for k, v in r.items() if k in names}) for t, r in data["tasks"].items()},
            perplexity={t: PerplexityResult(**{k: v for k, v in r.items() if k in ppl_names})
                        for t, r in (data.get("perplexity") or {}).items()},  # fmt: skip
        )

    def save(self, path: str) -> str:
        """Write the report as JSON (atomically)."""
        return write_json_atomically(path, self.to_dict(), allow_nan=True)

    @classmethod
    def load(cls, path: str) -> EvalReport:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # -- building -----------------------------------------------------------------------------------------------------
    @classmethod
    def from_lm_eval(cls, results: Mapping[str, Any], model: str, settings: Mapping[str, Any] | None = None):
        """From the dict `lm_eval.simple_evaluate(..., log_samples=True)` returns, for the package's tasks."""
        tasks = {}
        for task, metrics in results["results"].items():
            if task not in BENCHMARKS:
                continue  # a group's aggregate
            # in problem order (several processes each log their share of the problems, gathered rank after rank)
            samples = sorted(results.get("samples", {}).get(task, []), key=lambda s: s.get("doc_id", 0))
            lengths = [n for s in samples for n in s.get("median_length", [])]
            k = max((len(s["filtered_resps"][0]) for s in samples if s.get("filtered_resps")), default=0)

            def get(name, metrics=metrics):
                value = metrics.get(f"{name},{FILTER}", float("nan"))
                return float("nan") if value in (None, "N/A") else float(value)

            tasks[task] = TaskResult(
                task=task,
                title=BENCHMARKS[task].title,
                num_problems=len(samples) or int(results.get("n-samples", {}).get(task, {}).get("effective", 0)),
                num_samples=k,
                pass_at_1=get("pass@1"),
                pass_at_k=get("pass@k"),
                mean_length=get("mean_length"),
                median_length=get("median_length"),
                truncated=get("truncated"),
                gen_seconds=get("gen_seconds"),
                lengths=[int(n) for n in lengths],
                pass_at_1_per_problem=[float(s["pass@1"]) for s in samples if "pass@1" in s],
                problem_levels=[str(s.get("doc", {}).get("level", "")) for s in samples if "pass@1" in s],
                problem_ids=[str(s.get("doc_id", i)) for i, s in enumerate(samples) if "pass@1" in s],
            )
        return cls(model=model, tasks=tasks, settings=dict(settings or {}))


def format_gen_seconds(r: TaskResult) -> str:
    """Generation seconds summed over the processes, and each process's in parentheses when there are several."""
    if math.isnan(r.gen_seconds):
        return "n/a"
    per = r.gen_seconds_per_process
    return f"{r.gen_seconds:.1f}" + (f" ({' + '.join(f'{x:.1f}' for x in per)})" if len(per) > 1 else "")


def _fmt_pct(value: float | None) -> str:
    return "" if value is None else ("n/a" if math.isnan(value) else f"{value:.1f}%")


def _pct(value: float, base: float) -> float:
    return float("nan") if base == 0 else 100.0 * value / base
