"""Saving and sharing: sparse checkpoints with their pruning metadata, model and dataset cards, `push_to_hub`.

* `save_pruned` writes a folder that loads with plain `AutoModelForCausalLM.from_pretrained`: safetensors weights
  with exact zeros, the tokenizer, `pruning_config.json` (see `pruning_metadata`) and a model card (`README.md`).
  It writes into a temporary sibling folder and renames it into place, so a crash leaves no half-written checkpoint.
* Cards are rendered from the Jinja templates in `hf_ssgr/templates` through huggingface_hub's `ModelCard` /
  `ModelCardData` / `EvalResult` and `DatasetCard` / `DatasetCardData`.
* `push_to_hub` / `push_calibration_to_hub` make one commit each: create the repo (`exist_ok`), save everything to a
  temporary folder, `upload_folder`. They run on the main process only, and check the token before any work.

No token is ever written: cards, configs and logs are built from the model, the config and the reports only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import statistics
import tempfile
from collections import defaultdict
from typing import Any

import yaml

from ..utils import PRUNING_CONFIG_NAME, is_embedded_model, library_versions, write_folder_atomically

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "pruning_metadata",
    "calibration_summary",
    "layer_sparsity",
    "model_card",
    "calibration_card",
    "save_pruned",
    "push_to_hub",
    "push_calibration_to_hub",
]

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


def _public_name(name: str | None) -> str | None:
    """Model names as a card may show them: the embedded model by name, other local paths by their folder name."""
    if name is None:
        return None
    from ..tiny_reasoner import MODEL_PATH

    if os.path.abspath(str(name)) == os.path.abspath(MODEL_PATH):
        return "tiny (hf-ssgr's embedded tiny reasoner)"
    return os.path.basename(str(name).rstrip("/")) if os.path.isabs(str(name)) else str(name)


def _base_model(model, base_model: str | None) -> str:
    return base_model or getattr(getattr(model, "config", None), "_name_or_path", None) or "unknown"


# ----------------------------------------------------------------------------------------------------------------
# Metadata


def calibration_summary(calibration) -> dict[str, Any] | None:
    """What a pruning config records about its calibration Dataset: policy, source, rows, lengths, generation
    settings and the generating model (read from the columns and from the report `SSGRCalibrator` stores in
    `info.description`)."""
    if calibration is None:
        return None
    report: dict[str, Any] = {}
    info = getattr(calibration, "info", None)
    if info is not None and info.description:
        try:
            report = json.loads(info.description)
        except (TypeError, ValueError):
            report = {}
    columns = getattr(calibration, "column_names", None) or []
    if "input_ids" in columns:
        lengths = [len(r) for r in calibration["input_ids"]]
    else:
        rows = list(calibration)
        lengths = [len(r) for r in rows]
    cfg = report.get("config", {})

    def unique(col):
        return sorted(set(calibration[col])) if col in columns else []

    policies = unique("policy")
    sources = unique("source")
    summary = {
        "policy": report.get("policy") or (policies[0] if len(policies) == 1 else ", ".join(policies)) or "unknown",
        "source": report.get("source") or ", ".join(sources) or "unknown",
        "rows": len(lengths),
        "max_tokens": max(lengths) if lengths else 0,
        "mean_tokens": round(statistics.fmean(lengths), 1) if lengths else 0.0,
        "total_tokens": sum(lengths),
    }
    models = unique("model")
    generated = _public_name(report.get("rollout_model") or (models[0] if len(models) == 1 else None))
    if cfg and _generated(cfg.get("policy")):
        summary["generation"] = {
            "model": generated,
            "engine": cfg.get("engine"),
            "temperature": cfg.get("temperature"),
            "top_p": cfg.get("top_p"),
            "num_generations": cfg.get("num_generations"),
            "max_new_tokens": cfg.get("max_new_tokens"),
            "tau": cfg.get("tau"),
        }
    if report.get("counts"):
        summary["counts"] = {k: v for k, v in report["counts"].items() if k != "rollouts_dir"}
    return summary


def _generated(policy: str | None) -> bool:
    """Whether calibrating with `policy` generated rollouts; a policy not registered in this process is taken to have
    generated (its config records generation settings)."""
    from ..calibration.policies import find_policy

    if policy is None:
        return False
    found = find_policy(policy)
    return found is None or found.generates


def layer_sparsity(model, module_metrics: dict[str, dict] | None = None, targets=None) -> list[dict[str, Any]]:
    """Per decoder layer: the achieved sparsity of its pruned linear weights, measured on the weights, and the mean
    relative reconstruction error of its modules (from the pruner's metrics, when given)."""
    import torch

    from ..pruning.modeling import find_decoder_layers

    layers, prefix = find_decoder_layers(model)
    errors: dict[int, list[float]] = defaultdict(list)
    pruned_names = set(module_metrics or {})
    for name, m in (module_metrics or {}).items():
        match = _LAYER_RE.search(f".{name}")
        if match and m.get("error") is not None:
            errors[int(match.group(1))].append(float(m["error"]))
    out = []
    for i, layer in enumerate(layers):
        zeros = total = 0
        for sub, mod in layer.named_modules():
            if not isinstance(mod, torch.nn.Linear):
                continue
            if pruned_names and f"{prefix}.{i}.{sub}" not in pruned_names:
                continue  # a module the pruner left dense
            w = mod.weight.detach()
            zeros += int((w == 0).sum())
            total += w.numel()
        out.append(
            {
                "layer": i,
                "sparsity": zeros / total if total else 0.0,
                "reconstruction_error": statistics.fmean(errors[i]) if errors.get(i) else None,
            }
        )
    return out


_MODULE_METRIC_KEYS = ("sparsity", "error", "error_tokens", "damping", "damping_raised", "fallback", "seconds")


def pruning_metadata(
    model, config=None, module_metrics: dict[str, dict] | None = None, calibration=None, base_model: str | None = None
) -> dict[str, Any]:
    """The content of `pruning_config.json`: method, sparsity, sparsity type, scope, the full config, the calibration,
    per-layer achieved sparsity and reconstruction error, per-module metrics, and library versions."""
    cfg = config.to_dict() if config is not None and hasattr(config, "to_dict") else dict(config or {})
    layers = layer_sparsity(model, module_metrics)
    return {
        "format": "hf-ssgr/pruning-config",
        "version": 1,
        "base_model": _base_model(model, base_model),
        "method": cfg.get("method"),
        "sparsity": cfg.get("sparsity"),
        "sparsity_type": cfg.get("sparsity_type"),
        "scope": {"layers": cfg.get("layers"), "targets": cfg.get("targets"), "exclude": cfg.get("exclude")},
        "config": cfg,
        "calibration": calibration_summary(calibration),
        "layers": layers,
        "modules": {
            n: {k: m.get(k) for k in _MODULE_METRIC_KEYS if k in m} for n, m in (module_metrics or {}).items()
        },
        # Solves that did less than asked: a damping raised to make XᵀX positive definite, an ALPS fallback.
        "solver_warnings": {
            key: sorted(n for n, m in (module_metrics or {}).items() if m.get(key))
            for key in ("damping_raised", "fallback")
        },
        "versions": library_versions(),
    }


# ----------------------------------------------------------------------------------------------------------------
# Cards


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.1f}" if pct else f"{x:.0f}"


def _sparsity_desc(meta: dict) -> str:
    st = meta.get("sparsity_type") or "unstructured"
    if st != "unstructured":
        return f"{st} semi-structured sparsity ({100 * (meta.get('sparsity') or 0):.0f}%)"
    return f"{100 * (meta.get('sparsity') or 0):.0f}% unstructured sparsity"


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


def _method_title(method: str) -> str:
    from ..pruning.solvers import get_solver

    try:
        return get_solver(method).title or method
    except ValueError:  # a method whose solver is not registered in this process
        return method


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
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from ..evaluation.registry import BENCHMARKS

    base = meta.get("base_model") or "unknown"
    embedded = is_embedded_model(base)
    on_hub = not (embedded or base == "unknown" or os.path.isabs(base) or os.path.exists(base))
    method = meta.get("method") or "unknown"
    name = model_name or f"{base.split('/')[-1]}-{method}-{_sparsity_desc(meta).split(' ')[0]}".replace(":", "of")
    calib = meta.get("calibration") or None
    if calib and calib.get("generation"):
        calib = {
            **calib,
            "generation": {**calib["generation"], "model": _public_name(calib["generation"].get("model"))},
        }
    datasets_used: list[str] = []
    eval_results, eval_rows = [], []
    if report is not None:
        for task, r in report.tasks.items():
            bench = BENCHMARKS.get(task)
            part = bench.parts[0] if bench and bench.parts else (task, None, "test")  # generated data: the task name
            dataset_id = part[0]
            datasets_used.extend(bench.dataset_ids if bench else [])
            eval_results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=dataset_id,
                    dataset_name=bench.title if bench else task,
                    dataset_config=part[1],
                    dataset_split=part[2],
                    metric_type="pass@1",
                    metric_name=f"pass@1 (mean of {r.num_samples} samples)",
                    metric_value=round(100 * r.pass_at_1, 2),
                )
            )
            b = baseline.tasks.get(task) if baseline is not None else None
            eval_rows.append(
                {
                    "title": r.title,
                    "problems": r.num_problems,
                    "pruned": _fmt(r.pass_at_1),
                    "dense": _fmt(b.pass_at_1) if b else "n/a",
                    "recovery": (f"{100 * r.pass_at_1 / b.pass_at_1:.1f}%" if b and b.pass_at_1 else "n/a"),
                    "pruned_length": _fmt(r.mean_length, pct=False),
                    "dense_length": _fmt(b.mean_length, pct=False) if b else "n/a",
                    "truncated": f"{100 * r.truncated:.1f}%",
                }
            )
    from ..calibration.sources import find_source, get_source

    if calib:
        for part in str(calib.get("source", "")).split(", "):
            spec = find_source(part)
            if spec is None:
                continue
            for comp in [get_source(c) for c in spec.components] or [spec]:
                if comp.dataset_id:
                    datasets_used.insert(0, comp.dataset_id)
    tags = ["pruning", "sparsity", "reasoning", method, "hf-ssgr"]
    if meta.get("sparsity_type") not in (None, "unstructured"):
        tags.append("semi-structured-sparsity")
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
    settings = dict(report.settings) if report is not None else {}
    mean_error = [
        m["reconstruction_error"] for m in meta.get("layers", []) if m.get("reconstruction_error") is not None
    ]
    achieved = [m["sparsity"] for m in meta.get("layers", [])]
    if recipe is None and meta.get("config"):
        recipe = yaml.safe_dump(meta["config"], sort_keys=False)
    return ModelCard.from_template(
        data,
        template_path=os.path.join(TEMPLATES, "model_card.md"),
        model_name=name,
        base_model=base,
        base_on_hub=on_hub,
        base_display="hf-ssgr's embedded tiny reasoner (`hf_ssgr.tiny_reasoner.MODEL_PATH`)"
        if embedded
        else f"`{base}`",
        method_title=_method_title(method),
        sparsity_desc=_sparsity_desc(meta),
        scope=(meta.get("scope") or {}).get("layers") or "all",
        targets=", ".join((meta.get("scope") or {}).get("targets") or ["all linear layers of the decoder"]),
        achieved_sparsity=statistics.fmean(achieved) if achieved else 0.0,
        mean_error=f"{statistics.fmean(mean_error):.4f}" if mean_error else "not recorded",
        calibration=calib,
        versions=meta.get("versions", {}),
        eval_rows=eval_rows,
        has_baseline=baseline is not None,
        eval_settings=settings,
        command=command or _command(meta),
        recipe=recipe,
        solver_warnings={k: len(v) for k, v in (meta.get("solver_warnings") or {}).items() if v},
        dampening=(meta.get("config") or {}).get("dampening"),
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


# ----------------------------------------------------------------------------------------------------------------
# Saving


def _write_checkpoint(folder, model, tokenizer, meta, card) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, PRUNING_CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, default=str)
        f.write("\n")
    card.save(os.path.join(folder, "README.md"))


def save_pruned(
    model,
    save_dir: str,
    tokenizer=None,
    config=None,
    module_metrics: dict[str, dict] | None = None,
    calibration=None,
    report=None,
    baseline=None,
    base_model: str | None = None,
    command: str | None = None,
    recipe: str | None = None,
    pruner=None,
) -> str:
    """Save a pruned model with its tokenizer, `pruning_config.json` and a model card; returns the folder.

    Pass the `OneShotPruner` as `pruner=` (its config and per-module metrics are used), or `config=` and
    `module_metrics=`. `report` / `baseline` (`EvalReport`s) add the evaluation to the card.

    With several processes only the main one writes; every process returns once the folder is complete.
    """
    from ..distributed import wait_for_everyone

    if not _is_main_process():
        wait_for_everyone()
        return save_dir
    if pruner is not None:
        config = config or pruner.config
        module_metrics = module_metrics or pruner.state.module_metrics
    meta = pruning_metadata(model, config, module_metrics, calibration, base_model)
    card = model_card(meta, report, baseline, command=command, recipe=recipe)
    try:
        return write_folder_atomically(save_dir, lambda tmp: _write_checkpoint(tmp, model, tokenizer, meta, card))
    finally:
        wait_for_everyone()


# ----------------------------------------------------------------------------------------------------------------
# Hub


def _is_main_process() -> bool:
    from ..distributed import is_main_process

    return is_main_process()


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PermissionError(
            "Pushing to the Hub needs a token with write access: run `hf auth login`, set HF_TOKEN, or pass token=... "
            "Nothing was uploaded."
        )
    return token


def _create_repo(api, repo_id: str, repo_type: str, private: bool) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        raise PermissionError(
            f"Cannot create or write the {repo_type} repo {repo_id!r} (HTTP {status}): check that the token has write "
            f"access and that the namespace {repo_id.split('/')[0]!r} is yours or your organisation's. Nothing was "
            "uploaded."
        ) from err


def push_to_hub(
    model,
    tokenizer,
    repo_id: str,
    calibration=None,
    report=None,
    private: bool = False,
    create_pr: bool = False,
    token: str | None = None,
    *,
    baseline=None,
    pruner=None,
    config=None,
    module_metrics: dict[str, dict] | None = None,
    base_model: str | None = None,
    command: str | None = None,
    recipe: str | None = None,
    commit_message: str | None = None,
):
    """Upload a pruned model, its tokenizer, `pruning_config.json` and its model card in one commit.

    Returns the `CommitInfo` (with `pr_url` when `create_pr=True`), or `None` on processes other than the main one.
    Without a token, or with a repo the token cannot write, it raises before uploading anything.
    """
    if not _is_main_process():
        return None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise ValueError(f"repo_id must look like 'namespace/name' (got {repo_id!r}).")
    from huggingface_hub import HfApi

    token = _resolve_token(token)
    if pruner is not None:
        config = config or pruner.config
        module_metrics = module_metrics or pruner.state.module_metrics
    meta = pruning_metadata(model, config, module_metrics, calibration, base_model)
    card = model_card(meta, report, baseline, model_name=repo_id.split("/")[-1], command=command, recipe=recipe)
    api = HfApi(token=token)
    _create_repo(api, repo_id, "model", private)
    with tempfile.TemporaryDirectory(prefix="hf_ssgr_push_") as tmp:
        _write_checkpoint(tmp, model, tokenizer, meta, card)
        if report is not None:
            report.save(os.path.join(tmp, "eval_results.json"))
        if baseline is not None:
            baseline.save(os.path.join(tmp, "eval_results_dense.json"))
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=tmp,
            commit_message=commit_message or f"Upload {meta.get('method')} pruned model ({_sparsity_desc(meta)})",
            create_pr=create_pr,
        )
    logger.info("Uploaded %s to %s", _sparsity_desc(meta), getattr(info, "commit_url", repo_id))
    return info


def push_calibration_to_hub(
    calibration,
    repo_id: str,
    rollouts_dir: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    token: str | None = None,
    *,
    pretty_name: str | None = None,
    commit_message: str | None = None,
):
    """Upload a calibration Dataset (Parquet, in the layout `load_dataset(repo_id)` reads), its dataset card, and
    optionally the rollout store it was selected from, in one commit to a dataset repo."""
    if not _is_main_process():
        return None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise ValueError(f"repo_id must look like 'namespace/name' (got {repo_id!r}).")
    if rollouts_dir is not None and not os.path.isfile(os.path.join(rollouts_dir, "meta.json")):
        raise FileNotFoundError(f"{rollouts_dir} is not a rollout store (no meta.json).")
    from huggingface_hub import HfApi

    token = _resolve_token(token)
    card = calibration_card(calibration, pretty_name=pretty_name, rollouts=rollouts_dir is not None)
    api = HfApi(token=token)
    _create_repo(api, repo_id, "dataset", private)
    with tempfile.TemporaryDirectory(prefix="hf_ssgr_push_") as tmp:
        os.makedirs(os.path.join(tmp, "data"))
        calibration.to_parquet(os.path.join(tmp, "data", "train-00000-of-00001.parquet"))
        card.save(os.path.join(tmp, "README.md"))
        if rollouts_dir is not None:
            shutil.copytree(
                rollouts_dir, os.path.join(tmp, "rollouts"), ignore=shutil.ignore_patterns("*.lock", "*.tmp")
            )
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=tmp,
            commit_message=commit_message or f"Upload calibration data ({len(calibration)} rows)",
            create_pr=create_pr,
        )
    return info
