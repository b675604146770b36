"""The metadata of a pruned model: `pruning_config.json` (see `pruning_metadata`), the per-layer sparsity and error, and
the calibration's provenance, read from its Dataset."""

from __future__ import annotations

import json
import os
import re
import statistics
from typing import Any

from ..pruning.config import PruningConfig
from ..utils import library_versions, public_name, scrub_local_paths

__all__ = [
    "pruning_metadata",
    "calibration_summary",
    "layer_sparsity",
    "public_name",
    "short_name",
    "sparsity_description",
]

_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")
_MODULE_METRIC_KEYS = ("sparsity", "target_sparsity", "error", "error_tokens", "tokens", "damping", "damping_raised",
                       "fallback", "no_signal", "starved", "seconds")  # fmt: skip


def _base_model(model, base_model: str | None) -> tuple[str, bool]:
    """The base model's public name, and whether it is a Hub id (a local folder is named by its folder only)."""
    from .. import tiny_reasoner
    from ..utils import EMBEDDED_MODELS, hub_id

    raw = base_model or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not raw:
        return "unknown", False
    raw = str(raw)
    for key, (names, attr, _) in EMBEDDED_MODELS.items():
        if raw in names or os.path.abspath(raw) == os.path.abspath(getattr(tiny_reasoner, attr)):
            return key, False
    return public_name(raw) or "unknown", hub_id(raw) is not None


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
    generated = public_name(report.get("rollout_model") or (models[0] if len(models) == 1 else None))
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
    """Per decoder layer: the achieved sparsity of its pruned weights (linear weights and experts' projections),
    measured on the weights, and the mean relative reconstruction error of its modules (from the pruner's metrics,
    when given)."""
    from ..pruning.modeling import find_decoder_layers

    layers, prefix = find_decoder_layers(model)
    return [layer_sparsity_entry(layer, i, prefix, module_metrics) for i, layer in enumerate(layers)]


def layer_sparsity_entry(layer, i: int, prefix: str, module_metrics: dict[str, dict] | None) -> dict[str, Any]:
    """One decoder layer's entry of `layer_sparsity` (`prefix`: the layer stack's name, e.g. `model.layers`)."""
    from ..pruning.targets import layer_candidates

    pruned_names = set(module_metrics or {})
    errors, allocated = [], None
    for name, m in (module_metrics or {}).items():
        match = _LAYER_RE.search(f".{name}")
        if match and int(match.group(1)) == i and m.get("error") is not None:
            errors.append(float(m["error"]))
        if match and int(match.group(1)) == i and m.get("target_sparsity") is not None:
            allocated = float(m["target_sparsity"])  # a layer-wise run: the sparsity this layer was pruned at
    zeros = total = 0
    for t in layer_candidates(layer):
        if pruned_names and f"{prefix}.{i}.{t.name}" not in pruned_names:
            continue  # a weight the pruner left dense
        w = t.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    entry = {
        "layer": i,
        "sparsity": zeros / total if total else 0.0,
        "reconstruction_error": statistics.fmean(errors) if errors else None,
    }
    if allocated is not None:
        entry["target_sparsity"] = allocated
    return entry


def pruning_metadata(
    model, config: PruningConfig, module_metrics: dict[str, dict] | None = None, calibration=None,
    base_model: str | None = None, measured: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The content of `pruning_config.json`: method, sparsity, sparsity type, scope, the full config, the calibration,
    per-layer achieved sparsity and reconstruction error, per-module metrics, and library versions.

    `config` is the [`PruningConfig`] the model was pruned with (`pruner.config`; for a saved folder,
    `PruningConfig.from_dict(pruning_config["config"])`). `measured` gives the `coverage`, `achieved_sparsity` and
    `layers` measured while the weights were loaded (a streamed prune, whose `model` holds no weights); otherwise
    they are measured on `model`."""
    if not isinstance(config, PruningConfig):
        raise TypeError(
            f"pruning_metadata needs the PruningConfig the model was pruned with, got {type(config).__name__}: pass "
            "pruner.config, or PruningConfig.from_dict(...) of a saved pruning_config.json's 'config'."
        )
    from ..pruning.targets import pruning_accounting

    cfg = scrub_local_paths(config.to_dict())  # output_dir and the like: no local path in a public record
    base = _base_model(model, base_model)
    if measured is not None:
        layers, accounting = measured["layers"], measured
    else:
        layers = layer_sparsity(model, module_metrics)
        accounting = pruning_accounting(model, config)
    return {
        "format": "hf-ssgr/pruning-config",
        "version": 1,
        "base_model": base[0],
        "base_model_on_hub": base[1],
        "method": cfg.get("method"),
        "sparsity": cfg.get("sparsity"),
        "sparsity_type": cfg.get("sparsity_type"),
        "scope": {"layers": cfg.get("layers"), "targets": cfg.get("targets"), "exclude": cfg.get("exclude")},
        "config": cfg,
        "calibration": scrub_local_paths(calibration_summary(calibration)),
        # measured on the weights: the share of the parameters the targets hold, and of zeros over them, over the
        # decoder layers and over the whole model
        "coverage": accounting["coverage"],
        "achieved_sparsity": accounting["achieved_sparsity"],
        # a layer-wise run (OWL or an explicit list): the sparsity each pruned layer was given; their mean over
        # layers is `sparsity`, while `achieved_sparsity` is over parameters
        "sparsity_profile": cfg.get("sparsity_profile", "uniform"),
        "layer_sparsities": {str(e["layer"]): e["target_sparsity"] for e in layers if "target_sparsity" in e} or None,
        "layers": layers,
        "modules": {
            n: {k: m.get(k) for k in _MODULE_METRIC_KEYS if k in m} for n, m in (module_metrics or {}).items()
        },
        # Solves that did less than asked: a damping raised to make XᵀX positive definite, an ALPS fallback.
        "solver_warnings": {
            key: sorted(n for n, m in (module_metrics or {}).items() if m.get(key))
            for key in ("damping_raised", "fallback", "no_signal", "starved")
        },
        "versions": library_versions(),
    }


def sparsity_description(meta: dict) -> str:
    st = meta.get("sparsity_type") or "unstructured"
    if st != "unstructured":
        return f"{st} semi-structured sparsity ({100 * (meta.get('sparsity') or 0):.0f}%)"
    text = f"{100 * (meta.get('sparsity') or 0):.0f}% unstructured sparsity"
    if meta.get("layer_sparsities"):
        how = "OWL" if meta.get("sparsity_profile") == "owl" else "explicit"
        text += f" (mean over layers; {how} per-layer allocation in pruning_config.json)"
    return text


def short_name(meta: dict) -> str:
    """`PruningConfig.short_name` of a `pruning_config.json` (`sparsegpt-50`, `wanda-2of4`), or its method alone
    when its config cannot be read here (a method whose solver is not registered in this process)."""
    try:
        return PruningConfig.from_dict(dict(meta.get("config") or {})).short_name
    except (TypeError, ValueError):
        return str(meta.get("method") or "pruned")
