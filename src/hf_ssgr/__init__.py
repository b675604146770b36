"""hf-ssgr: prune large reasoning models one-shot while keeping their reasoning."""

__version__ = "0.1.0.dev0"

from .calibration import CalibrationConfig, SSGRCalibrator
from .callbacks import (
    CallbackHandler,
    CheckpointCallback,
    DefaultFlowCallback,
    MetricsLoggerCallback,
    PrintMetricsCallback,
    ProgressCallback,
    PrunerCallback,
    PrunerControl,
    PrunerState,
)
from .config import PruningConfig
from .evaluation import EvalReport, TaskResult, evaluate
from .pruner import NonFiniteActivationError, OneShotPruner
from .sources import list_sources, load_source, register_source

__all__ = [
    "__version__",
    "OneShotPruner",
    "SSGRCalibrator",
    "CalibrationConfig",
    "register_source",
    "load_source",
    "list_sources",
    "PruningConfig",
    "evaluate",
    "EvalReport",
    "TaskResult",
    "NonFiniteActivationError",
    "PrunerCallback",
    "PrunerState",
    "PrunerControl",
    "CallbackHandler",
    "DefaultFlowCallback",
    "CheckpointCallback",
    "ProgressCallback",
    "MetricsLoggerCallback",
    "PrintMetricsCallback",
    "KeepSparsityCallback",
]


def __getattr__(name):  # imported on first use: transformers' Trainer stack takes seconds to import
    if name == "KeepSparsityCallback":
        from .training import KeepSparsityCallback

        return KeepSparsityCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
