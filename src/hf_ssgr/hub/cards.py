"""Model and dataset cards, rendered from the Jinja templates in `hub/templates` through huggingface_hub's `ModelCard` /
`ModelCardData` / `EvalResult` and `DatasetCard` / `DatasetCardData`. No token is ever written into a card."""

from __future__ import annotations

import json
import os
import statistics
from typing import Any

import yaml

from ..utils import hub_id, is_embedded_model, public_text, scrub_local_paths
from .metadata import calibration_summary, public_name, short_name, sparsity_description

__all__ = ["model_card", "calibration_card"]

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.1f}" if pct else f"{x:.0f}"


def _command(meta: dict) -> str:
    c = meta.get("config", {})
    parts = [
        "hf-ssgr prune",
        f"--model_name_or_path {meta.get('base_model')}",
        "--calibration calibration/",
        f"--method {c.get('method')}",
        f"--sparsity {c.get('sparsity')}",
        f"--sparsity_type {c.get('sparsity_type')}",
    ]
    if c.get("layers") not in (None, "all"):
        parts.append(f"--layers {c.get('layers')}")
    if c.get("token_mask") not in (None, "all"):
        parts.append(f"--token_mask {c.get('token_mask')}")
    parts.append("--save_dir pruned/")
    return " \\\n    ".join(parts)


def _embedded_display(base: str) -> str:
    from ..utils import EMBEDDED_MODELS, embedded_model

    _, attr, what = EMBEDDED_MODELS[embedded_model(base) or "tiny"]
    return f"hf-ssgr's {what} (`hf_ssgr.tiny_reasoner.{attr}`)"


def _pruning_figures(meta: dict) -> dict:
    """The card's measured figures: achieved sparsity of the pruned weights, what was pruned, the mean error."""
    layers = meta.get("layers", [])
    errors = [m["reconstruction_error"] for m in layers if m.get("reconstruction_error") is not None]
    achieved = [m["sparsity"] for m in layers]
    old = statistics.fmean(achieved) if achieved else 0.0  # files of older versions have no achieved_sparsity
    return {
        "achieved_sparsity": (meta.get("achieved_sparsity") or {}).get("targets", old),
        "accounting": _accounting(meta),
        "mean_error": f"{statistics.fmean(errors):.4f}" if errors else "not recorded",
    }


def _accounting(meta: dict) -> str | None:
    """One line of what was pruned, from the measured coverage and sparsity (absent in files of older versions)."""
    cov, achieved = meta.get("coverage"), meta.get("achieved_sparsity")
    if not cov or not achieved:
        return None
    share = 100 * cov["target_params"] / cov["model_params"] if cov.get("model_params") else 0.0
    return (
        f"{100 * cov['coverage_of_decoder_layers']:.1f}% of the decoder layers' parameters ({share:.1f}% of the "
        f"model's) are pruned weights; zeros: {100 * achieved['decoder_layers']:.2f}% of the decoder layers' "
        f"parameters, {100 * achieved['model']:.2f}% of the model's"
    )


def _method_title(method: str) -> str:
    from ..pruning.solvers import get_solver

    try:
        return get_solver(method).title or method
    except ValueError:  # a method whose solver is not registered in this process
        return method


def _evaluation(report, baseline) -> tuple[list, list[dict], list[str]]:
    """The model-index entries (one `EvalResult` per benchmark), the rows of the dense-vs-pruned table, and the
    benchmarks' datasets, from the pruned model's report and the dense model's."""
    from huggingface_hub import EvalResult

    from ..evaluation.registry import BENCHMARKS
    from ..evaluation.report import format_gen_seconds

    results, rows, datasets_used = [], [], []
    for task, r in report.tasks.items() if report is not None else []:
        bench = BENCHMARKS.get(task)
        part = bench.parts[0] if bench and bench.parts else (task, None, "test")  # generated data: the task name
        datasets_used.extend(bench.dataset_ids if bench else [])
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=part[0],
                dataset_name=bench.title if bench else task,
                dataset_config=part[1],
                dataset_split=part[2],
                metric_type="pass@1",
                metric_name=f"pass@1 (mean of {r.num_samples} samples)",
                metric_value=round(100 * r.pass_at_1, 2),
            )
        )
        b = baseline.tasks.get(task) if baseline is not None else None
        rows.append(
            {
                "title": r.title,
                "problems": r.num_problems,
                "pruned": r.pass_at_1_with_se,  # acc (SE)
                "dense": b.pass_at_1_with_se if b else "n/a",
                "recovery": (f"{100 * r.pass_at_1 / b.pass_at_1:.1f}%" if b and b.pass_at_1 else "n/a"),
                "pruned_length": _fmt(r.mean_length, pct=False),
                "dense_length": _fmt(b.mean_length, pct=False) if b else "n/a",
                "truncated": f"{100 * r.truncated:.1f}%",
                "pruned_seconds": format_gen_seconds(r),  # summed over the processes, each one's in parentheses
                "dense_seconds": format_gen_seconds(b) if b else "n/a",
            }
        )
    return results, rows, datasets_used


def _perplexity(report, baseline) -> tuple[list, list[dict]]:
    """The model-index entries (metric `perplexity`, lower is better) and the table rows of the perplexity tasks."""
    from huggingface_hub import EvalResult

    from ..evaluation.perplexity import PERPLEXITY_TASKS

    results, rows = [], []
    for task, r in (report.perplexity if report is not None else {}).items():
        spec = PERPLEXITY_TASKS.get(task)
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=spec.dataset_id if spec and spec.dataset_id else task,
                dataset_name=r.title,
                dataset_config=spec.config if spec else None,
                dataset_split=spec.split if spec and spec.dataset_id else None,
                metric_type="perplexity",
                metric_name="perplexity" + (f" (windows of {r.seqlen} tokens)" if r.seqlen else ""),
                metric_value=round(r.perplexity, 3),
            )
        )
        b = baseline.perplexity.get(task) if baseline is not None else None
        rows.append({"title": r.title, "pruned": f"{r.perplexity:.3f}", "dense": f"{b.perplexity:.3f}" if b else "n/a",
                     "ratio": f"{r.perplexity / b.perplexity:.3f}x" if b else "n/a", "tokens": r.num_tokens,
                     "protocol": r.protocol})  # fmt: skip
    return results, rows


def _calibration_datasets(calib: dict | None) -> list[str]:
    """The Hub datasets a calibration drew from (its registered sources' components), first to last."""
    from ..calibration.sources import find_source, get_source

    found: list[str] = []
    for part in str((calib or {}).get("source", "")).split(", ") if calib else []:
        spec = find_source(part)
        if spec is None:
            continue
        for comp in [get_source(c) for c in spec.components] or [spec]:
            if comp.dataset_id:
                found.insert(0, comp.dataset_id)
    return found


def model_card(
    meta: dict[str, Any],
    report=None,
    baseline=None,
    model_name: str | None = None,
    command: str | None = None,
    recipe: str | None = None,
    license: str | None = None,
):
    """A `huggingface_hub.ModelCard` rendered from the package's template.

    Args:
        meta: `pruning_metadata(...)`.
        report / baseline: `EvalReport`s of the pruned and the dense model; they fill the model-index (one
            `EvalResult` per benchmark) and the dense-vs-pruned table with recovery.
        command / recipe: how to reproduce it (defaults: the `hf-ssgr prune` command of the config, and the config
            as YAML).
    """
    from huggingface_hub import ModelCard, ModelCardData

    base = public_name(meta.get("base_model")) or "unknown"
    embedded = is_embedded_model(base)
    # a pruning_config.json written before `base_model_on_hub` recorded the base model as given
    on_hub = bool(meta.get("base_model_on_hub", not embedded and hub_id(meta.get("base_model")) is not None))
    method = meta.get("method") or "unknown"
    name = model_name or f"{base.split('/')[-1]}-{short_name(meta)}"
    calib = meta.get("calibration") or None
    if calib and calib.get("generation"):
        calib = {
            **calib,
            "generation": {**calib["generation"], "model": public_name(calib["generation"].get("model"))},
        }
    eval_results, eval_rows, datasets_used = _evaluation(report, baseline)
    ppl_results, ppl_rows = _perplexity(report, baseline)
    eval_results += ppl_results
    datasets_used = _calibration_datasets(calib) + datasets_used
    tags = ["pruning", "sparsity", "reasoning", method, "hf-ssgr"]
    if meta.get("sparsity_type") not in (None, "unstructured"):
        tags.append("semi-structured-sparsity")
    if meta.get("quantization"):
        tags += ["fp8", "compressed-tensors"]
    data = ModelCardData(
        model_name=name,
        base_model=base if on_hub else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        tags=tags,
        datasets=list(dict.fromkeys(datasets_used)) or None,
        eval_results=eval_results or None,
    )
    settings = scrub_local_paths(dict(report.settings)) if report is not None else {}
    if recipe is None and meta.get("config"):
        recipe = yaml.safe_dump(meta["config"], sort_keys=False)
    recipe = public_text(recipe) if recipe else recipe
    return ModelCard.from_template(
        data,
        template_path=os.path.join(TEMPLATES, "model_card.md"),
        model_name=name,
        base_model=base,
        base_on_hub=on_hub,
        base_display=_embedded_display(base) if embedded else f"`{base}`",
        method_title=_method_title(method),
        sparsity_desc=sparsity_description(meta),
        scope=(meta.get("scope") or {}).get("layers") or "all",
        targets=", ".join(
            (meta.get("scope") or {}).get("targets")
            or ["every linear layer and expert of the decoder, routers excepted"]
        ),
        **_pruning_figures(meta),
        calibration=calib,
        versions=meta.get("versions", {}),
        eval_rows=eval_rows,
        ppl_rows=ppl_rows,
        has_baseline=baseline is not None,
        eval_settings=settings,
        command=public_text(command or _command(meta)),
        recipe=recipe,
        solver_warnings={k: len(v) for k, v in (meta.get("solver_warnings") or {}).items() if v},
        dampening=(meta.get("config") or {}).get("dampening"),
        quantization=meta.get("quantization"),
    )


def calibration_card(calibration, pretty_name: str | None = None, rollouts: bool = False, license: str | None = None):
    """A `huggingface_hub.DatasetCard` for a calibration Dataset: generation settings, selection policy, counts at
    every filter, generation cost, and the licences of the sources."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from ..calibration.sources import find_source, get_source

    summary = calibration_summary(calibration) or {}
    report = {}
    if getattr(calibration, "info", None) is not None and calibration.info.description:
        try:
            report = json.loads(calibration.info.description)
        except ValueError:
            report = {}
    cfg = report.get("config", {})
    counts = dict(summary.get("counts", {}))
    licences, source_ids = [], []
    for part in str(summary.get("source", "")).split(", "):
        spec = find_source(part)
        specs = [get_source(c) for c in spec.components] if spec and spec.components else [spec]
        for s in specs:
            if s is None:
                licences.append((part, "see the source"))
            else:
                licences.append((f"{s.name} ({s.dataset_id})" if s.dataset_id else s.name, s.license or "unknown"))
                if s.dataset_id:
                    source_ids.append(s.dataset_id)
    rows = summary.get("rows", len(calibration))
    size = "n<1K" if rows < 1000 else ("1K<n<10K" if rows < 10000 else "10K<n<100K")
    tokens_generated = counts.get("tokens_generated")
    cost = (
        f"{counts.get('responses_generated', 0)} responses, {tokens_generated} generated tokens"
        f"{' (' + format(100 * counts['generated_to_exhaustive_ratio'], '.1f') + '% of sampling every problem fully)' if counts.get('generated_to_exhaustive_ratio') else ''}"
        f", {report.get('seconds', 0):.0f} s in all."
        if tokens_generated is not None
        else f"No generation ({summary.get('policy')} policy); built in {report.get('seconds', 0):.0f} s."
    )
    name = pretty_name or f"{summary.get('policy', 'calibration')} calibration from {summary.get('source', 'unknown')}"
    data = DatasetCardData(
        pretty_name=name,
        license=license,
        tags=["calibration", "pruning", "reasoning", "hf-ssgr"],
        task_categories=["text-generation"],
        size_categories=[size],
        source_datasets=source_ids or None,
    )
    keys = ("policy", "num_samples", "max_length", "tau", "num_generations", "temperature", "top_p",
            "max_new_tokens", "engine", "early_stop", "token_budget", "require_think_end", "seed")  # fmt: skip
    settings = [(k, cfg[k]) for k in keys if k in cfg]
    model = (summary.get("generation") or {}).get("model")
    return DatasetCard.from_template(
        data,
        template_path=os.path.join(TEMPLATES, "dataset_card.md"),
        pretty_name=name,
        rows=rows,
        tokens=summary.get("total_tokens", 0),
        max_tokens=summary.get("max_tokens"),
        policy=summary.get("policy"),
        source=summary.get("source"),
        model=model,
        settings=settings or [("policy", summary.get("policy"))],
        counts=sorted(counts.items()),
        cost=cost,
        rollouts=rollouts,
        licences=licences,
    )
