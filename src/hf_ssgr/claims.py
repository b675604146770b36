"""The claims report: the claims of the SSGR and RAC papers tested on a recipe's results, with paired 95% intervals.

A recipe with a `claims:` list (see `recipes/claims.yaml`) states each claim as comparisons between its models
(a model is a calibration and a pruning configuration, `<calibration>__<variant>`, or `dense`). Each comparison
"A better than B" is measured as the difference in pass@1 of the recipe's first accuracy task (or in mean reply
length, or in reconstruction error), paired over the held-out problems, with the recipe's calibration seeds averaged.

The 95% interval comes from a two-level bootstrap: each resample draws the problems with replacement and, for
every calibration, its seeds with replacement (one draw per calibration, shared by all the models built on it, so
that two pruning methods on the same calibration stay paired), so the interval covers both which problems the
benchmark holds and which calibration set a seed happened to draw. A comparison is "better" when its interval lies
above 0, "worse" below, else "no detectable difference". A claim's verdict:

* **reproduced**: every comparison better (for `not_worse`: none worse);
* **partly reproduced**: some better, the rest undetectable;
* **contradicted**: at least one comparison worse (for `not_worse`: an alternative detectably better);
* **no detectable difference**: none detectable.

Claim kinds (keys of a claim's mapping, besides `id`, `claim`, `source`):

* `order: [a, b, c]` (a > b > c) or `better: [[a, b], ...]`; with `pruning: [variants]` the items are calibrations
  (each comparison made at every variant), with `calibrations: [...]` they are variants (made with every
  calibration), else full model names. `metric: length` compares mean reply length ("a longer than b").
* `not_worse: {best: a, others: [b, c]}`: no alternative detectably better than `a` (with `pruning`).
* `grows: [a, b]` with `pruning: [low, high]`: the advantage of `a` over `b` is larger at `high` than at `low`
  (a difference in differences).
* `reconstruction: [a, b]` with `pruning: [variant]`: `a` has the lower last-layer reconstruction error on the
  decoded tokens and `b` on the prompt tokens (RAC Fig. 2); the effect is the mean over problems of the mean log
  error ratio per region, from the errors `run_recipe` records for these models (`eval/<name>.errors.json`).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .evaluation.stats import verdict

__all__ = ["Claim", "Link", "LinkResult", "ClaimResult", "parse_claims", "evaluate_claims", "claims_markdown",
           "plot_claims", "seed_label", "base_label", "ERROR_EPS"]

SEED_TAG = ".seed"  # `<calibration>.seed<k>`: the label of a calibration built with seed k


def seed_label(label: str, seed: int) -> str:
    """The label of calibration `label` built with `seed` (`ssgr` → `ssgr.seed1`)."""
    return f"{label}{SEED_TAG}{seed}"


def base_label(label: str) -> str:
    """A calibration's label without its seed (`ssgr.seed1` → `ssgr`; `ssgr` as it is)."""
    return label.split(SEED_TAG)[0]


KINDS = ("order", "better", "not_worse", "grows", "reconstruction")
ERROR_EPS = 1e-12  # a reconstruction error of exactly 0 is taken as this before its logarithm


@dataclass(frozen=True)
class Term:
    """`sign` × the per-problem values of one model (all its seeds)."""

    model: str  # `<calibration>__<variant>` or `dense`
    sign: float
    region: str | None = None  # reconstruction: "prompt" or "decode"


@dataclass(frozen=True)
class Link:
    """One comparison of a claim: the effect is the sum of its terms, expected positive."""

    label: str
    terms: tuple[Term, ...]
    metric: str = "pass@1"  # "pass@1", "length", "log_error"


@dataclass
class Claim:
    id: str
    claim: str
    source: str
    kind: str
    links: list[Link]
    note: str = ""


@dataclass
class LinkResult:
    label: str
    effect: float
    low: float
    high: float
    n_problems: int
    seeds: int
    per_seed: list[float]  # the effect with each seed (calibration seed i of every model), pooled over problems
    verdict: str
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ClaimResult:
    claim: Claim
    links: list[LinkResult] = field(default_factory=list)
    verdict: str = ""
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        c = self.claim
        return {"id": c.id, "claim": c.claim, "source": c.source, "kind": c.kind, "verdict": self.verdict,
                "missing": self.missing, "links": [r.to_dict() for r in self.links]}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Parsing


def _name(cal: str, variant: str) -> str:
    return "dense" if cal == "dense" else f"{cal}__{variant}"


def _expand(items: list[str], spec: dict) -> list[tuple[list[str], str]]:
    """Full model names of `items` for each context: `pruning` crosses calibrations with variants, `calibrations`
    variants with calibrations; returns [(names, context label)]."""
    if "pruning" in spec and "calibrations" in spec:
        raise ValueError(f"Claim {spec.get('id')}: give `pruning` (items are calibrations) or `calibrations` (items "
                         "are pruning variants), not both.")  # fmt: skip
    if "pruning" in spec:
        return [([_name(i, v) for i in items], v) for v in _as_list(spec["pruning"])]
    if "calibrations" in spec:
        return [([_name(c, i) for i in items], c) for c in _as_list(spec["calibrations"])]
    return [(list(items), "")]


def _as_list(x) -> list[str]:
    return [str(v) for v in (x if isinstance(x, (list, tuple)) else [x])]


def parse_claims(specs: list[dict]) -> list[Claim]:
    """The claims of a recipe's `claims:` list (see the module docstring); a malformed claim raises, naming it."""
    claims, seen = [], set()
    for spec in specs or []:
        if not isinstance(spec, dict):
            raise ValueError(f"claims: each claim is a mapping, got {spec!r}.")
        cid = str(spec.get("id", ""))
        if not cid or cid in seen:
            raise ValueError(f"claims: every claim needs a unique `id` (got {cid!r}).")
        seen.add(cid)
        kinds = [k for k in KINDS if k in spec]
        if len(kinds) != 1:
            raise ValueError(f"Claim {cid}: give exactly one of {', '.join(KINDS)} (got {kinds or 'none'}).")
        kind = kinds[0]
        known = set(KINDS) | {"id", "claim", "source", "pruning", "calibrations", "metric", "note"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"Claim {cid}: unknown keys {sorted(unknown)}; valid keys are {sorted(known)}.")
        metric = spec.get("metric", "pass@1")
        if metric not in ("pass@1", "length"):
            raise ValueError(f"Claim {cid}: metric must be pass@1 or length, got {metric!r}.")
        links: list[Link] = []
        if kind in ("order", "better"):
            pairs = (
                list(zip(_as_list(spec["order"])[:-1], _as_list(spec["order"])[1:]))
                if kind == "order"
                else [tuple(_as_list(p)) for p in spec["better"]]
            )
            if not pairs or any(len(p) != 2 for p in pairs):
                raise ValueError(f"Claim {cid}: `{kind}` needs at least two items (pairs for `better`).")
            for a, b in pairs:
                for (na, nb), ctx in _expand([a, b], spec):
                    label = f"{a} vs {b}" + (f" ({ctx})" if ctx else "")
                    links.append(Link(label, (Term(na, 1.0), Term(nb, -1.0)), metric))
        elif kind == "not_worse":
            nw = spec["not_worse"]
            best, others = str(nw["best"]), _as_list(nw["others"])
            for o in others:
                for (nb, no), ctx in _expand([best, o], spec):
                    label = f"{best} vs {o}" + (f" ({ctx})" if ctx else "")
                    links.append(Link(label, (Term(nb, 1.0), Term(no, -1.0)), metric))
        elif kind == "grows":
            a, b = _as_list(spec["grows"])
            low, high = _as_list(spec.get("pruning", []))
            label = f"({a} − {b}) at {high} minus at {low}"
            terms = (Term(_name(a, high), 1.0), Term(_name(b, high), -1.0), Term(_name(a, low), -1.0),
                     Term(_name(b, low), 1.0))  # fmt: skip
            links.append(Link(label, terms, metric))
        else:  # reconstruction
            a, b = _as_list(spec["reconstruction"])
            (variant,) = _as_list(spec.get("pruning", []))
            na, nb = _name(a, variant), _name(b, variant)
            links.append(Link(f"decode tokens: log(e_{b} / e_{a}) ({variant})",
                              (Term(nb, 1.0, "decode"), Term(na, -1.0, "decode")), "log_error"))  # fmt: skip
            links.append(Link(f"prompt tokens: log(e_{a} / e_{b}) ({variant})",
                              (Term(na, 1.0, "prompt"), Term(nb, -1.0, "prompt")), "log_error"))  # fmt: skip
        claims.append(Claim(cid, str(spec.get("claim", "")), str(spec.get("source", "")), kind, links,
                            str(spec.get("note", ""))))  # fmt: skip
    return claims


def models_needing_errors(claims: list[Claim]) -> set[str]:
    """The models (`<calibration>__<variant>`) whose reconstruction errors a claim reads."""
    return {t.model for c in claims for link in c.links for t in link.terms if t.region is not None}


# ----------------------------------------------------------------------------------------------------------------
# Values


def per_problem_values(report, task: str, metric: str) -> dict[str, float]:
    """problem id → the model's pass@1 or mean reply length on that problem."""
    r = report.tasks[task]
    if metric == "pass@1":
        return dict(zip(r.problem_ids, r.pass_at_1_per_problem))
    k = r.num_samples
    if not k or len(r.lengths) != k * len(r.problem_ids):
        raise ValueError(f"{report.model}: the report holds no per-reply lengths for {task} (evaluate it again).")
    return {pid: float(np.mean(r.lengths[i * k : (i + 1) * k])) for i, pid in enumerate(r.problem_ids)}


def per_problem_log_errors(errors: dict, region: str) -> dict[str, float]:
    """problem id → mean over the region's tokens of log(error), from an `eval/<name>.errors.json` record."""
    out = {}
    for pid, e, p in zip(errors["problem_ids"], errors["errors"], errors["prompt_lengths"]):
        e = np.asarray(e, dtype=float)
        part = e[:p] if region == "prompt" else e[p:]
        if part.size:
            out[str(pid)] = float(np.mean(np.log(np.maximum(part, ERROR_EPS))))
    return out


def _calibration_of(model: str) -> str:
    return model.split("__", 1)[0]


def _bootstrap(arrays, sign, cal, resamples: int, seed: int, confidence: float):
    """Effect, interval and per-seed effects of Σ_j sign_j · mean_seeds(arrays_j) averaged over problems.

    arrays[j]: [S_j, n] values of term j; every term of one calibration shares one seed draw per resample. Each
    term's seeds are spread about their mean by sqrt(S/(S-1)) before they are resampled, so that the resampled seed
    mean has the variance of the real one (with 3 seeds the plain bootstrap gives 2/3 of it)."""
    n = arrays[0].shape[1]
    effect = float(sum(s * a.mean(axis=0) for s, a in zip(sign, arrays)).mean())
    rng = np.random.default_rng([seed, zlib.crc32(json.dumps(cal).encode())])
    idx = rng.integers(0, n, size=(resamples, n))
    seed_draws = {}
    for c, a in zip(cal, arrays):
        if c not in seed_draws:
            seed_draws[c] = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    boot = np.zeros(resamples)
    for s, a, c in zip(sign, arrays, cal):
        if a.shape[0] > 1:  # resampling S seeds shrinks their spread by (S-1)/S: widen it back (S=3: by 22%)
            centre = a.mean(axis=0, keepdims=True)
            a = centre + (a - centre) * np.sqrt(a.shape[0] / (a.shape[0] - 1))
        draw = seed_draws[c]
        for start in range(0, resamples, 1000):
            stop = min(resamples, start + 1000)
            seed_mean = a[draw[start:stop]].mean(axis=1)  # [r, n]
            boot[start:stop] += s * np.take_along_axis(seed_mean, idx[start:stop], axis=1).mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = (round(float(x), 12) for x in np.quantile(boot, [alpha, 1 - alpha]))
    n_seeds = max(a.shape[0] for a in arrays)
    per_seed = [float(sum(s * a[min(i, a.shape[0] - 1)] for s, a in zip(sign, arrays)).mean())
                for i in range(n_seeds)]  # fmt: skip
    return effect, low, high, per_seed


def evaluate_claims(
    claims: list[Claim],
    reports: dict[str, Any],
    seeds: list[int] | None,
    task: str,
    errors: dict[str, dict] | None = None,
    resamples: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[ClaimResult]:
    """Measure every claim on `reports` (model name → `EvalReport`, `dense` included; with calibration seeds a
    model's reports are named `<calibration>.seed<k>__<variant>`). A model a claim needs but the run lacks is listed
    in the claim's `missing` (its verdict says so); nothing is guessed."""
    errors = errors or {}
    results = []
    for claim in claims:
        res = ClaimResult(claim)
        for link in claim.links:
            arrays, signs, cals, missing = [], [], [], []
            for term in link.terms:
                names = _seed_names(term.model, seeds)
                values = []
                for n in names:
                    if term.region is not None:
                        if n not in errors:
                            missing.append(n + " (reconstruction errors)")
                            continue
                        values.append(per_problem_log_errors(errors[n], term.region))
                    elif n not in reports or task not in reports[n].tasks:
                        missing.append(n)
                    else:
                        values.append(per_problem_values(reports[n], task, link.metric))
                arrays.append(values)
                signs.append(term.sign)
                cals.append(_calibration_of(term.model))
            if missing:
                res.missing += missing
                continue
            common = sorted(set.intersection(*[set(v) for vals in arrays for v in vals]), key=_problem_key)
            if not common:
                res.missing.append(f"{link.label}: no problem in common")
                continue
            mats = [np.array([[v[p] for p in common] for v in vals]) for vals in arrays]
            eff, low, high, per_seed = _bootstrap(mats, signs, cals, resamples, seed, confidence)
            res.links.append(LinkResult(link.label, eff, low, high, len(common), max(m.shape[0] for m in mats),
                                        per_seed, verdict(low, high), link.metric))  # fmt: skip
        res.verdict = _claim_verdict(claim, res)
        results.append(res)
    return results


def _problem_key(pid: str):
    return (0, int(pid), "") if str(pid).isdigit() else (1, 0, str(pid))


def _seed_names(model: str, seeds: list[int] | None) -> list[str]:
    if model == "dense" or not seeds:
        return [model]
    cal, _, variant = model.partition("__")
    return [f"{seed_label(cal, s)}__{variant}" for s in seeds]


def _claim_verdict(claim: Claim, res: ClaimResult) -> str:
    if res.missing:
        return "not measured (models missing)"
    v = [r.verdict for r in res.links]
    if claim.kind == "not_worse":
        return "contradicted" if "worse" in v else "reproduced"
    if "worse" in v:
        return "contradicted"
    if all(x == "better" for x in v):
        return "reproduced"
    return "partly reproduced" if "better" in v else "no detectable difference"


# ----------------------------------------------------------------------------------------------------------------
# Report


def _fmt(r: LinkResult) -> str:
    if r.metric == "pass@1":
        return f"{100 * r.effect:+.1f} [{100 * r.low:+.1f}, {100 * r.high:+.1f}]"
    return f"{r.effect:+.3f} [{r.low:+.3f}, {r.high:+.3f}]" if r.metric == "log_error" else (
        f"{r.effect:+.1f} [{r.low:+.1f}, {r.high:+.1f}]")  # fmt: skip


def _unit(metric: str) -> str:
    return {"pass@1": "points of pass@1", "length": "tokens", "log_error": "mean log error ratio"}[metric]


def claims_markdown(results: list[ClaimResult], task: str, seeds: list[int] | None, resamples: int) -> str:
    """The claims table (one row per claim) and the detail table (one row per comparison)."""
    n_seeds = len(seeds) if seeds else 1
    lines = [
        f"Each comparison: the effect (A − B, expected positive) on {task}, paired over the held-out problems, with "
        f"{n_seeds} calibration seed(s) averaged, and its 95% interval from a bootstrap over problems and seeds "
        f"({resamples} resamples).",
        "",
        "| # | claim | paper, table | measured effect [95% interval] | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        c = r.claim
        effects = "; ".join(f"{lr.label}: {_fmt(lr)}" for lr in r.links) or "–"
        if r.missing:
            effects += f" (missing: {', '.join(r.missing[:3])}{' …' if len(r.missing) > 3 else ''})"
        lines.append(f"| {c.id} | {c.claim} | {c.source} | {effects} | **{r.verdict}** |")
    lines += ["", "Every comparison (effects in points of pass@1 unless marked; per seed: the effect with each "
              "calibration seed alone):", "",
              "| # | comparison | unit | effect | 95% interval | problems | per seed | verdict |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        for lr in r.links:
            scale = 100 if lr.metric == "pass@1" else 1
            per_seed = ", ".join(f"{scale * x:+.1f}" if lr.metric != "log_error" else f"{x:+.3f}" for x in lr.per_seed)
            eff = _fmt(lr).split(" [")
            lines.append(f"| {r.claim.id} | {lr.label} | {_unit(lr.metric)} | {eff[0]} | [{eff[1]} | "
                         f"{lr.n_problems} | {per_seed} | {lr.verdict} |")  # fmt: skip
    notes = [f"- {r.claim.id}: {r.claim.note}" for r in results if r.claim.note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def load_errors(folder: str, names) -> dict[str, dict]:
    """The recorded reconstruction errors (`<folder>/<name>.errors.json`) of the models that have them."""
    out = {}
    for n in names:
        path = os.path.join(folder, f"{n}.errors.json")
        if os.path.exists(path):
            with open(path) as f:
                out[n] = json.load(f)
    return out


_VERDICT_COLORS = {"better": "#2166ac", "worse": "#b2182b", "no detectable difference": "#7f7f7f"}


def plot_claims(results: list[ClaimResult], path: str, title: str | None = None) -> str:
    """A forest plot of every comparison: its effect and 95% interval, one row each, a panel per unit (points of
    pass@1, tokens of reply length, mean log error ratio); blue when the interval lies above 0, red below, grey
    across it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'hf-ssgr[plot]'.") from err
    rows = [(r.claim.id, lr) for r in results for lr in r.links]
    metrics = [m for m in ("pass@1", "length", "log_error") if any(lr.metric == m for _, lr in rows)]
    if not metrics:
        raise ValueError("No measured comparison to plot.")
    heights = [sum(lr.metric == m for _, lr in rows) for m in metrics]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 1.2 + 0.24 * sum(heights) + 0.6 * len(metrics)),
                             gridspec_kw={"height_ratios": heights}, layout="constrained", squeeze=False)  # fmt: skip
    for ax, metric in zip(axes[:, 0], metrics):
        mine = [(cid, lr) for cid, lr in rows if lr.metric == metric]
        scale = 100 if metric == "pass@1" else 1
        for y, (_, lr) in enumerate(mine):
            color = _VERDICT_COLORS[lr.verdict]
            ax.plot([scale * lr.low, scale * lr.high], [y, y], color=color, linewidth=2)
            ax.plot([scale * lr.effect], [y], "o", color=color, markersize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels([f"{cid}: {lr.label}" for cid, lr in mine], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel({"pass@1": "A − B, points of pass@1 (95% interval)", "length": "A − B, tokens of mean reply "
                       "length (95% interval)", "log_error": "mean log error ratio (95% interval)"}[metric], fontsize=8)  # fmt: skip
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_title(title or "Each comparison A vs B: its effect and 95% interval (expected positive)\n"
                         "blue: above 0; red: below 0; grey: no detectable difference", fontsize=9)  # fmt: skip
    try:
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)
    return path
