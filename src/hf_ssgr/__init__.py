"""hf-ssgr: prune large reasoning models one-shot while keeping their reasoning.

The public names below are imported on first use, so `import hf_ssgr` (and light submodules such as
`hf_ssgr.tiny_reasoner`) stay fast and need no optional dependency.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "OneShotPruner": "pruning.pruner",
    "NonFiniteActivationError": "pruning.pruner",
    "PruningConfig": "pruning.config",
    "SSGRCalibrator": "calibration.calibrator",
    "CalibrationConfig": "calibration.config",
    "register_source": "calibration.sources",
    "load_source": "calibration.sources",
    "list_sources": "calibration.sources",
    "evaluate": "evaluation.evaluate",
    "EvalConfig": "evaluation.config",
    "EvalReport": "evaluation.report",
    "TaskResult": "evaluation.report",
    "PerplexityResult": "evaluation.perplexity",
    "perplexity": "evaluation.perplexity",
    "save_pruned": "hub.upload",
    "push_to_hub": "hub.upload",
    "push_calibration_to_hub": "hub.upload",
    "quantize_pretrained": "hub.quantize",
    "PrunerCallback": "pruning.callbacks",
    "PrunerState": "pruning.callbacks",
    "PrunerControl": "pruning.callbacks",
    "CallbackHandler": "pruning.callbacks",
    "DefaultFlowCallback": "pruning.callbacks",
    "CheckpointCallback": "pruning.callbacks",
    "ProgressCallback": "pruning.callbacks",
    "MetricsLoggerCallback": "pruning.callbacks",
    "PrintMetricsCallback": "pruning.callbacks",
    "KeepSparsityCallback": "pruning.training",
    "estimate_prune_memory": "pruning.memory",
    "Solver": "pruning.solvers",
    "register_solver": "pruning.solvers",
    "Policy": "calibration.policies",
    "register_policy": "calibration.policies",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
