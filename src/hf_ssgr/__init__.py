"""hf-ssgr: prune large reasoning models one-shot while keeping their reasoning.

The public names below are imported on first use, so `import hf_ssgr` (and light submodules such as
`hf_ssgr.tiny_reasoner`) stay fast and need no optional dependency.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "OneShotPruner": "pruner",
    "NonFiniteActivationError": "pruner",
    "PruningConfig": "config",
    "SSGRCalibrator": "calibration",
    "CalibrationConfig": "calibration",
    "register_source": "sources",
    "load_source": "sources",
    "list_sources": "sources",
    "evaluate": "evaluation",
    "EvalReport": "evaluation",
    "TaskResult": "evaluation",
    "save_pruned": "hub",
    "push_to_hub": "hub",
    "push_calibration_to_hub": "hub",
    "PrunerCallback": "callbacks",
    "PrunerState": "callbacks",
    "PrunerControl": "callbacks",
    "CallbackHandler": "callbacks",
    "DefaultFlowCallback": "callbacks",
    "CheckpointCallback": "callbacks",
    "ProgressCallback": "callbacks",
    "MetricsLoggerCallback": "callbacks",
    "PrintMetricsCallback": "callbacks",
    "KeepSparsityCallback": "training",
    "estimate_prune_memory": "memory",
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
