"""Uncertainty of pass@1: its standard error across problems, and a paired bootstrap comparison of two models.

A problem's k samples are not independent evidence about the model (they share the problem), so both work on the
per-problem pass@1 `p_i` (the mean correctness of problem i's k samples): pass@1 = mean(p_i), and the uncertainty
comes from which problems the benchmark happens to hold.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "standard_error", "paired_bootstrap", "format_accuracy"]

VERDICTS = ("better", "worse", "no detectable difference")


def standard_error(per_problem: Sequence[float]) -> float | None:
    """The standard error of pass@1 across problems.

    With `p_i` the pass@1 of problem i (its k samples' correctness averaged first) over n problems:

        SE = s / sqrt(n),   s = sqrt( sum_i (p_i - mean(p))^2 / (n - 1) )

    (the sample standard deviation, with n - 1). `None` when fewer than two problems are given.
    """
    n = len(per_problem)
    if n < 2:
        return None
    mean = math.fsum(per_problem) / n
    var = math.fsum((p - mean) ** 2 for p in per_problem) / (n - 1)
    return math.sqrt(var) / math.sqrt(n)


def format_accuracy(value: float, se: float | None) -> str:
    """`acc (SE)` in percentage points, one decimal: `62.5 (4.1)`; only `acc` when the SE is unknown."""
    if value is None or value != value:
        return "n/a"
    return f"{100 * value:.1f}" if se is None or se != se else f"{100 * value:.1f} ({100 * se:.1f})"


@dataclass(frozen=True)
class Comparison:
    """The paired difference in pass@1 of a model against another on the problems both were evaluated on.

    `difference` is this model's pass@1 minus the other's (fractions in [-1, 1]); `low` / `high` bound its
    `confidence` interval (95% by default) from a paired bootstrap over problems with `resamples` resamples drawn
    with `seed`. `verdict` is "better" when the interval lies above 0, "worse" when below, and
    "no detectable difference" when it contains 0.
    """

    difference: float
    low: float
    high: float
    n_problems: int
    resamples: int
    seed: int
    verdict: str
    confidence: float = 0.95

    def __str__(self) -> str:
        return (
            f"{100 * self.difference:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}] ({self.verdict}; "
            f"{self.n_problems} problems, {self.resamples} resamples, seed {self.seed})"
        )


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no detectable difference"


def _resample_means(diffs: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of `diffs` over `resamples` resamples of its entries with replacement (in chunks, bounded memory)."""
    n = len(diffs)
    out = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = diffs[idx].mean(axis=1)
    return out


def paired_bootstrap(
    diffs: Mapping[str, Sequence[float]], resamples: int = 10000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Comparison]:
    """Paired bootstrap of per-problem differences, per task and on average.

    `diffs` maps each task to the per-problem differences `p_i(a) - p_i(b)` on the problems both models share. Each
    resample draws n problems with replacement within each task (a generator seeded with `seed` and the task's
    name, so a task's interval does not depend on which other tasks are compared); the interval is the
    percentile interval of the resampled mean differences. "average" is the mean over tasks of the per-task
    differences (as `EvalReport.average_pass_at_1` averages tasks), resampled with the same draws.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    alpha = (1 - confidence) / 2
    out: dict[str, Comparison] = {}
    boots = []
    for task, values in diffs.items():
        d = np.asarray(values, dtype=float)
        if d.size == 0:
            raise ValueError(f"No problem in common on {task!r}.")
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        boot = _resample_means(d, resamples, rng)
        boots.append(boot)
        out[task] = _comparison(float(d.mean()), boot, d.size, resamples, seed, alpha, confidence)
    if out:
        mean = float(np.mean([c.difference for c in out.values()]))
        boot = np.mean(boots, axis=0)
        n = sum(c.n_problems for c in out.values())
        out["average"] = _comparison(mean, boot, n, resamples, seed, alpha, confidence)
    return out


def _comparison(diff, boot, n, resamples, seed, alpha, confidence) -> Comparison:
    low, high = (float(x) for x in np.quantile(boot, [alpha, 1 - alpha]))
    # the percentile interval of a constant is that constant; keep float noise from flipping the verdict
    low, high = (round(low, 12), round(high, 12))
    return Comparison(diff, low, high, int(n), resamples, seed, verdict(low, high), confidence)
