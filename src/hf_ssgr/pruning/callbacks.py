"""Callbacks for [`OneShotPruner`], modelled on `transformers.TrainerCallback`.

The pruning loop has no policy of its own: callbacks decide when to log, save or stop by setting flags on a
[`PrunerControl`], and receive every event with the [`PruningConfig`], the [`PrunerState`] and the control.

Events, in order:

```
on_init_end
on_prune_begin
for each decoder layer that is run:
    on_layer_begin
    on_stats_collected            (layers that are pruned)
    on_module_pruned × modules    (layers that are pruned)
    on_layer_end
    on_log                        (when control.should_log)
    on_save                       (when control.should_save)
on_prune_end
```

Besides these, [`KeepSparsityCallback`] is a `transformers.TrainerCallback` that keeps a pruned model sparse while it
is fine-tuned with `Trainer` or TRL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "PrunerState",
    "PrunerControl",
    "PrunerCallback",
    "CallbackHandler",
    "DefaultFlowCallback",
    "ProgressCallback",
    "MetricsLoggerCallback",
    "CheckpointCallback",
    "PrintMetricsCallback",
    "PRUNER_STATE_NAME",
]

PRUNER_STATE_NAME = "pruner_state.json"


@dataclass
class PrunerState:
    """Progress of a pruning run; saved as `pruner_state.json` in every checkpoint.

    Args:
        layer_index (`int`): index of the last decoder layer finished (-1 before the first).
        num_layers (`int`): number of decoder layers the run goes through (the last pruned one + 1).
        pruned_layers (`list[int]`): indices of the layers that are pruned.
        num_samples (`int`): calibration rows. num_tokens (`int`): calibration tokens feeding the statistics.
        module_metrics (`dict`): per pruned module (full name): `error`, `sparsity`, `seconds`, `damping`, ...
        log_history (`list[dict]`): every log emitted, in order.
        calibration_fingerprint (`str`): hash of the calibration rows, so a resume can refuse other data.
        is_world_process_zero (`bool`): whether this process logs and saves.
        world_size (`int`): processes sharing the run (rows split, statistics all-reduced, solves spread).
        coverage (`dict`): what the targets hold: `target_params`, `decoder_layer_params`, `model_params`,
            `coverage_of_decoder_layers`, and the weights left `uncovered` (see `hf_ssgr.pruning.targets.Coverage`).
        achieved_sparsity (`dict`): at the end, measured on the weights: the share of zeros over the `targets`, over
            every parameter of the `decoder_layers`, and over the whole `model`.
        layer_sparsities (`dict`): with a layer-wise sparsity (OWL or an explicit list), each pruned decoder layer's
            sparsity, keyed by its index as a string; kept in checkpoints so a resumed run uses the same allocation.
        outlier_ratios (`dict`): with OWL, each pruned decoder layer's outlier ratio D_l (a share, not a percentage).
    """

    layer_index: int = -1
    num_layers: int = 0
    pruned_layers: list[int] = field(default_factory=list)
    num_samples: int = 0
    num_tokens: int = 0
    module_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    calibration_fingerprint: str | None = None
    is_world_process_zero: bool = True
    world_size: int = 1
    finished: bool = False
    coverage: dict[str, Any] | None = None
    achieved_sparsity: dict[str, float] | None = None
    layer_sparsities: dict[str, float] | None = None
    outlier_ratios: dict[str, float] | None = None

    def save_to_json(self, json_path: str | os.PathLike) -> None:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def load_from_json(cls, json_path: str | os.PathLike) -> PrunerState:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def layer_metrics(self, layer_index: int, layer_prefix: str) -> dict[str, dict[str, Any]]:
        prefix = f"{layer_prefix}.{layer_index}."
        return {k: v for k, v in self.module_metrics.items() if k.startswith(prefix)}


@dataclass
class PrunerControl:
    """Flags that callbacks set to steer the loop.

    `should_stop` stays set once set. `should_log` and `should_save` are reset at `on_layer_begin`, and cleared by
    the event that acts on them (`on_log`, `on_save`).
    """

    should_stop: bool = False
    should_log: bool = False
    should_save: bool = False

    def _new_layer(self) -> None:
        self.should_log = False
        self.should_save = False


class PrunerCallback:
    """Base class: every event is a no-op. Events receive `(config, state, control, **kwargs)`.

    Keyword arguments: `model` and `pruner` always; `layer_index` from `on_layer_begin` to `on_layer_end`;
    `name`, `metrics` in `on_module_pruned`; `logs` in `on_log`; `checkpoint_dir` in `on_save`.
    Return a `PrunerControl` to replace the control object, or `None` to keep it.
    """

    def on_init_end(self, config, state, control, **kwargs):
        pass

    def on_prune_begin(self, config, state, control, **kwargs):
        pass

    def on_layer_begin(self, config, state, control, **kwargs):
        pass

    def on_stats_collected(self, config, state, control, **kwargs):
        pass

    def on_module_pruned(self, config, state, control, **kwargs):
        pass

    def on_layer_end(self, config, state, control, **kwargs):
        pass

    def on_log(self, config, state, control, **kwargs):
        pass

    def on_save(self, config, state, control, **kwargs):
        pass

    def on_prune_end(self, config, state, control, **kwargs):
        pass


class CallbackHandler(PrunerCallback):
    """Calls the registered callbacks in order."""

    def __init__(self, callbacks=None):
        self.callbacks: list[PrunerCallback] = []
        for cb in callbacks or []:
            self.add_callback(cb)

    def add_callback(self, callback):
        cb = callback() if isinstance(callback, type) else callback
        cb_class = callback if isinstance(callback, type) else callback.__class__
        if any(isinstance(c, cb_class) for c in self.callbacks) and cb_class is not PrunerCallback:
            logger.warning(f"A callback of type {cb_class.__name__} is already registered; adding another one.")
        self.callbacks.append(cb)

    def pop_callback(self, callback):
        if isinstance(callback, type):
            for cb in self.callbacks:
                if isinstance(cb, callback):
                    self.callbacks.remove(cb)
                    return cb
        else:
            for cb in self.callbacks:
                if cb == callback:
                    self.callbacks.remove(cb)
                    return cb
        return None

    def remove_callback(self, callback):
        self.pop_callback(callback)

    @property
    def callback_list(self) -> str:
        return "\n".join(cb.__class__.__name__ for cb in self.callbacks)

    def call_event(self, event, config, state, control, **kwargs):
        for callback in self.callbacks:
            result = getattr(callback, event)(config, state, control, **kwargs)
            if result is not None:
                control = result
        return control

    def on_init_end(self, config, state, control, **kwargs):
        return self.call_event("on_init_end", config, state, control, **kwargs)

    def on_prune_begin(self, config, state, control, **kwargs):
        control.should_stop = False
        return self.call_event("on_prune_begin", config, state, control, **kwargs)

    def on_layer_begin(self, config, state, control, **kwargs):
        control._new_layer()
        return self.call_event("on_layer_begin", config, state, control, **kwargs)

    def on_stats_collected(self, config, state, control, **kwargs):
        return self.call_event("on_stats_collected", config, state, control, **kwargs)

    def on_module_pruned(self, config, state, control, **kwargs):
        return self.call_event("on_module_pruned", config, state, control, **kwargs)

    def on_layer_end(self, config, state, control, **kwargs):
        return self.call_event("on_layer_end", config, state, control, **kwargs)

    def on_log(self, config, state, control, **kwargs):
        control.should_log = False
        return self.call_event("on_log", config, state, control, **kwargs)

    def on_save(self, config, state, control, **kwargs):
        control.should_save = False
        return self.call_event("on_save", config, state, control, **kwargs)

    def on_prune_end(self, config, state, control, **kwargs):
        return self.call_event("on_prune_end", config, state, control, **kwargs)


class DefaultFlowCallback(PrunerCallback):
    """Asks for a log line after every layer."""

    def on_layer_end(self, config, state, control, **kwargs):
        control.should_log = True
        return control


class CheckpointCallback(PrunerCallback):
    """Asks for a checkpoint every `config.save_every_n_layers` pruned layers (and after the last one).

    Only active when `config.output_dir` is set. The pruner writes `checkpoint-layer-XXX/` and then fires `on_save`.
    """

    def __init__(self):
        self._since_save = 0

    def on_layer_end(self, config, state, control, **kwargs):
        if not config.output_dir:
            return control
        self._since_save += 1
        last = kwargs.get("layer_index") == state.num_layers - 1
        if self._since_save >= config.save_every_n_layers or last or control.should_stop:
            control.should_save = True
        return control

    def on_save(self, config, state, control, **kwargs):
        self._since_save = 0


class ProgressCallback(PrunerCallback):
    """A tqdm bar over decoder layers, showing the last layer's mean reconstruction error and sparsity."""

    def __init__(self):
        self.bar = None

    def on_prune_begin(self, config, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        desc = f"{config.method} pruning"
        if state.coverage:
            desc += f" ({100 * state.coverage['coverage_of_decoder_layers']:.1f}% of the layers' weights)"
        self.bar = tqdm(total=state.num_layers, initial=state.layer_index + 1, desc=desc, unit="layer")

    def on_layer_end(self, config, state, control, **kwargs):
        if self.bar is None:
            return
        metrics = kwargs.get("layer_metrics") or {}
        errors = [m["error"] for m in metrics.values() if m.get("error") is not None]
        postfix = {}
        if errors:
            postfix["err"] = f"{sum(errors) / len(errors):.3g}"
        if metrics:  # over the layer's pruned weights, weighted by their size
            sizes = [m["shape"][0] * m["shape"][1] if m.get("shape") else 1 for m in metrics.values()]
            zeros = sum(m["sparsity"] * n for m, n in zip(metrics.values(), sizes))
            postfix["sparsity"] = f"{zeros / sum(sizes):.3f}"
        raised = sum(1 for m in metrics.values() if m.get("damping_raised"))
        if raised:
            postfix["damping_raised"] = raised
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def on_prune_end(self, config, state, control, **kwargs):
        if self.bar is not None:
            if state.achieved_sparsity:
                a = state.achieved_sparsity
                self.bar.set_postfix_str(
                    f"sparsity {a['targets']:.3f} of the pruned weights, {a['decoder_layers']:.3f} of the decoder "
                    f"layers, {a['model']:.3f} of the model"
                )
            self.bar.close()
            self.bar = None


class MetricsLoggerCallback(PrunerCallback):
    """Appends every log to `output_dir/metrics.jsonl`, one JSON object a line, on the main process. The first layer
    a run logs drops the lines of that layer and later ones left by an earlier run (a run resumed from a checkpoint
    prunes them again), so no layer is listed twice."""

    file_name = "metrics.jsonl"

    def __init__(self):
        self._trimmed = False

    def on_prune_begin(self, config, state, control, **kwargs):
        self._trimmed = False

    def on_log(self, config, state, control, **kwargs):
        if not config.output_dir or not state.is_world_process_zero:
            return
        os.makedirs(config.output_dir, exist_ok=True)
        path = os.path.join(config.output_dir, self.file_name)
        logs = kwargs.get("logs", {})
        if not self._trimmed and "layer" in logs:
            self._trimmed = True
            self._drop_layers_from(path, logs["layer"])
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(logs, sort_keys=True) + "\n")

    @staticmethod
    def _drop_layers_from(path: str, first: int) -> None:
        """Rewrite `path` (atomically) without the lines of layers `first` and after."""
        from ..utils import write_text_atomically

        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
        kept = []
        for line in lines:
            try:
                layer = json.loads(line).get("layer")
            except (ValueError, AttributeError):  # a torn or foreign line: kept as it is
                layer = None
            if not isinstance(layer, int) or layer < first:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) != len(lines):
            write_text_atomically(path, "".join(kept))


class PrintMetricsCallback(PrunerCallback):
    """Sends each log to the `hf_ssgr` logger at INFO level."""

    def on_log(self, config, state, control, **kwargs):
        if state.is_world_process_zero:
            logger.info(json.dumps(kwargs.get("logs", {}), sort_keys=True))


def __getattr__(name):  # KeepSparsityCallback lives in .training: importing transformers' Trainer stack is slow
    if name == "KeepSparsityCallback":
        from .training import KeepSparsityCallback

        return KeepSparsityCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
