"""hf-ssgr: prune large reasoning models one-shot while keeping their reasoning."""

__version__ = "0.1.0.dev0"

from .callbacks import (
    CallbackHandler,
    CheckpointCallback,
    DefaultFlowCallback,
    KeepSparsityCallback,
    MetricsLoggerCallback,
    PrintMetricsCallback,
    PrunerCallback,
    PrunerControl,
    PrunerState,
    ProgressCallback,
)
from .config import PruningConfig
from .pruner import NonFiniteActivationError, OneShotPruner

__all__ = [
    "__version__",
    "OneShotPruner",
    "PruningConfig",
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
