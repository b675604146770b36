"""`OneShotPruner`: the sequential, layer-by-layer pruning loop.

1. Capture every argument each decoder layer receives (hidden states for the first layer; attention masks, position
   ids, `position_embeddings` and whatever else a model class passes, for every layer) by running the model once
   with the decoder layers replaced by recorders. Nothing past the last needed layer runs, `lm_head` included.
2. For each decoder layer: accumulate the statistics its solver needs for its target linears on the dense layer (one
   per distinct input: q/k/v share one, gate/up share one; see `statistics.py`), solve every target, then re-run the
   pruned layer to produce the next layer's inputs, so errors propagate as in the SparseGPT and Wanda references.
   Without calibration data (magnitude pruning) a layer simply has no statistics and nothing runs forward.

The loop knows no method: the [`Solver`] named by `PruningConfig.method` says what it needs and solves each weight
(`solvers.py`). Only the current layer is moved to the compute device; the cached activations stay on the compute
device or, with `offload_activations`, on the CPU. Statistics are float32 with TF32 off.

Under `torchrun` or `accelerate launch`, the processes split the calibration rows into contiguous shards of nearly
equal token counts, all-reduce the statistics (`XᵀX`, squared norms, token counts), solve the modules of each layer
spread across processes (groups of modules that share an input stay together, balanced by estimated cost) and
broadcast the pruned weights, so every process ends with the same model: the single-process result up to float32
summation order. One process is the same path with a world of one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch
from torch import nn

from ..distributed import Distributed, assign_by_cost, balanced_contiguous_split
from .batches import (
    Batch,
    Row,
    as_rows,
    assign_error_sample,
    calibration_fingerprint,
    make_batches,
    stat_span,
)
from .callbacks import (
    CallbackHandler,
    CheckpointCallback,
    DefaultFlowCallback,
    MetricsLoggerCallback,
    ProgressCallback,
    PrunerCallback,
    PrunerControl,
    PrunerState,
)
from .capture import capture_layer_inputs, finite_flag, run_layer
from .checkpoint import (
    CHECKPOINT_PREFIX,
    WeightBackup,
    find_checkpoint,
    list_checkpoints,
    load_checkpoints,
    save_checkpoint,
)
from .config import PruningConfig, resolve_layer_scope
from .kernels import relative_reconstruction_error, sampled_reconstruction_error
from .modeling import (
    TIED_LM_HEAD_MESSAGE,
    find_decoder_layers,
    find_final_norm,
    lm_head_is_tied,
    module_device,
)
from .owl import check_layer_sparsities, owl_layer_sparsities, wanda_outlier_ratio
from .solvers import Solver, get_solver
from .statistics import LayerStats, StopLayer, fp32_statistics
from .targets import UNCOVERED_LIMIT, Target, compute_coverage, resolve_targets, zero_fractions

logger = logging.getLogger("hf_ssgr")

__all__ = ["OneShotPruner", "NonFiniteActivationError", "CHECKPOINT_PREFIX", "refuse_offloaded"]

DEFAULT_CALLBACKS = [DefaultFlowCallback, CheckpointCallback, MetricsLoggerCallback]


def _host_available_bytes() -> float:
    """MemAvailable of /proc/meminfo (Linux); 8 GiB where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8.0 * 2**30


def refuse_offloaded(model: nn.Module) -> None:
    """Refuse a model whose weights are not all in memory (accelerate's `device_map` offload to CPU hooks or disk,
    or meta tensors): the pruner writes weights in place, so the offloaded ones would be lost or never loaded."""
    device_map = getattr(model, "hf_device_map", None) or {}
    offloaded = sorted({str(d) for d in device_map.values()} & {"disk", "meta"})
    on_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if offloaded or on_meta:
        where = (
            f"device_map places weights on {offloaded}"
            if offloaded
            else f"{len(on_meta)} weights (e.g. {on_meta[0]}) are on the meta device"
        )
        raise ValueError(
            f"This model is offloaded ({where}): prune() needs every weight in memory. For a model larger than memory, "
            "prune it from its checkpoint with OneShotPruner.prune_pretrained(model_name_or_path, calibration, "
            "save_dir), which loads and writes one decoder layer at a time (`hf-ssgr prune` does so for a folder)."
        )


class NonFiniteActivationError(ValueError):
    """Raised when a decoder layer produces NaN or infinite activations. `damaged_weights` is true when the layer's
    own weights hold NaN or inf (the checkpoint is damaged, so no rerun can get past it)."""

    damaged_weights: bool = False


def _non_finite_weight(module: nn.Module | None) -> str | None:
    """The name of the first loaded weight of `module` that holds NaN or inf, or `None`."""
    for name, p in module.named_parameters() if module is not None else ():
        if p.device.type != "meta" and not bool(torch.isfinite(p).all()):
            return name
    return None


def _non_finite_cause(module: nn.Module | None) -> str:
    """Why a module's output is not finite, and what to do: NaN/inf weights (a damaged checkpoint), or an overflow
    (advice that fits the weights' dtype)."""
    if module is None:
        return "check the model's weights and the calibration rows."
    damaged = _non_finite_weight(module)
    if damaged is not None:
        return (f"its weight {damaged} holds NaN or inf values, so the checkpoint is damaged: load an intact copy of "
                "the model.")  # fmt: skip
    dtypes = {p.dtype for p in module.parameters()}
    if torch.float16 in dtypes:
        return "the model overflows in float16 on the calibration data: load it in bfloat16 or float32."
    largest = max((float(p.abs().max()) for p in module.parameters() if p.numel() and p.device.type != "meta"),
                  default=0.0)  # fmt: skip
    return (f"its weights are finite (largest magnitude {largest:.3g}) but it overflows in "
            f"{', '.join(sorted(str(d).removeprefix('torch.') for d in dtypes))}: check the weights' scale and the "
            "calibration rows.")


class OneShotPruner:
    """Prunes a causal LM in one shot, decoder layer by decoder layer.

    Args:
        config ([`PruningConfig`], *optional*): what and how to prune; defaults to SparseGPT at 50% unstructured.
        callbacks (`list[PrunerCallback]`, *optional*): added after the default ones (flow, checkpointing, metrics
            log and, unless `progress_bar=False`, a tqdm bar).
        progress_bar (`bool`, *optional*, defaults to `True`): show a progress bar over layers.

    Example:

    ```python
    >>> from hf_ssgr import OneShotPruner, PruningConfig
    >>> pruner = OneShotPruner(PruningConfig(method="sparsegpt", sparsity=0.5))
    >>> model = pruner.prune(model, calibration)  # a Dataset with `input_ids`; prunes in place
    >>> pruner.state.module_metrics["model.layers.0.mlp.down_proj"]["error"]
    ```
    """

    def __init__(
        self,
        config: PruningConfig | None = None,
        callbacks: list[PrunerCallback] | None = None,
        progress_bar: bool = True,
    ):
        self.config = config if config is not None else PruningConfig()
        if not isinstance(self.config, PruningConfig):
            raise TypeError(f"config must be a PruningConfig, got {type(self.config).__name__}.")
        default = list(DEFAULT_CALLBACKS) + ([ProgressCallback] if progress_bar else [])
        self.callback_handler = CallbackHandler(default + list(callbacks or []))
        self.state = PrunerState()
        self.control = PrunerControl()
        self._stream = None  # a `StreamingRun` while `prune_pretrained` runs (layers loaded and written one by one)
        self.control = self.callback_handler.on_init_end(self.config, self.state, self.control)

    # callbacks management, as in transformers.Trainer
    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)

    def _event(self, event: str, /, **kwargs) -> None:
        self.control = getattr(self.callback_handler, event)(
            self.config, self.state, self.control, model=self._model, pruner=self, **kwargs
        )

    # ----------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def prune(self, model: nn.Module, calibration: Any = None, resume_from_checkpoint: str | bool | None = None):
        """Prune `model` in place and return it.

        Args:
            model: a causal LM (`AutoModelForCausalLM`), on any device.
            calibration: a `datasets.Dataset` with `input_ids` (and `prompt_length` for prompt/response token masks),
                a list of token-id lists or tensors, or a 2-D tensor. Optional for solvers that need no statistics
                (`method="magnitude"`): with data they still report the reconstruction error.
            The pruned model carries its record (`model.hf_ssgr_pruning`: the config and the per-module metrics), which
            `save_pruned` and `push_to_hub` read when they are not given `pruner=` or `config=`.

            resume_from_checkpoint: a `checkpoint-layer-XXX` directory, or `True` for the latest one in
                `config.output_dir` if there is one (none yet: the run starts at the first layer, so the same call
                is right the first time and after a crash). The run continues after the last finished layer; the
                result equals that of an uninterrupted run.

        Rows longer than the model's `max_position_embeddings` are refused (truncate them first).
        """
        refuse_offloaded(model)
        cfg = self.config
        self._stream = None
        layers, pruned, targets, prune_head, rows, num_run = self._setup(model, calibration)
        self.control = PrunerControl()
        start_layer = 0
        self._unsaved_layers: list[int] = []
        backup = WeightBackup()
        was_training = model.training
        model.eval()
        try:
            if resume_from_checkpoint is True and cfg.output_dir and not list_checkpoints(cfg.output_dir):
                logger.info("Nothing to resume in %s yet: starting at the first layer.", cfg.output_dir)
            elif resume_from_checkpoint:
                start_layer = self._resume(model, resume_from_checkpoint, backup) + 1
            with fp32_statistics():
                self._prune_layers(model, layers, targets, pruned, rows, start_layer, num_run, prune_head, backup)
            # The model carries what was done to it, so save_pruned / push_to_hub need no pruner= afterwards.
            model.hf_ssgr_pruning = {"config": self.config, "module_metrics": dict(self.state.module_metrics)}

        except BaseException:
            if cfg.restore_on_error and backup:
                backup.restore(model)
                logger.error("Pruning failed; the %d modified weights were restored.", len(backup))
            raise
        finally:
            backup.close()
            model.train(was_training)
        return model

    def prune_pretrained(self, model_name_or_path: str, calibration: Any = None, save_dir: str | None = None, *,
                         dtype: Any = "auto", tokenizer: Any = True, restart: bool = False,
                         base_model: str | None = None, command: str | None = None,
                         recipe: str | None = None) -> str:  # fmt: skip
        """Prune a checkpoint without loading it whole: each decoder layer is read from the safetensors shards,
        pruned as `prune()` prunes it, written to `save_dir` and freed (see `hf_ssgr.pruning.streaming`). Peak host
        memory is about the embeddings, two decoder layers and the calibration activations.

        Args:
            model_name_or_path: a folder with `config.json` and safetensors shards, a Hub id (downloaded to the
                cache), or `tiny` for the embedded reasoner. Block FP8 (DeepSeek) and compressed-tensors FP8
                checkpoints are dequantized layer by layer.
            calibration: as for `prune()`.
            save_dir: the output folder, in the layout `save_pruned` writes (sharded safetensors, index, config,
                generation config, tokenizer, `pruning_config.json`, card). It appears only once complete; until
                then the run writes `.NAME.partial/` beside it, and a run started again with the same model, config
                and calibration resumes at the first layer not yet written.
            dtype: the compute and output dtype (`"auto"`: the config's).
            tokenizer: `True` copies the checkpoint's tokenizer; a tokenizer is saved as given; `None` writes none.
            restart: discard an unfinished run in `save_dir`'s partial folder instead of resuming it.

        Returns the output folder (the partial folder if a callback stopped the run early). The result equals
        `prune()` on the model loaded with `from_pretrained(..., dtype=dtype)` followed by `save_pruned`, tensor
        for tensor.
        """
        from .streaming import prune_streaming

        return prune_streaming(self, model_name_or_path, calibration, save_dir, dtype=dtype, tokenizer=tokenizer,
                               restart=restart, base_model=base_model, command=command, recipe=recipe)  # fmt: skip

    def _setup(self, model: nn.Module, calibration: Any):
        """Resolve and check what to prune and the calibration rows, and start a fresh state."""
        cfg = self.config
        self._model = model
        self.solver: Solver = get_solver(cfg.method)(cfg)
        self._base_solver = self.solver  # the run's sparsity; a layer-wise run swaps in each layer's (`_layer_solver`)
        self._verified_experts: set[int] = set()  # experts modules whose output the pruner's reading reproduced
        self._starved: dict[str, int] = {}  # expert projections with fewer routed tokens than inputs: their count
        self._no_signal: set[str] = set()  # modules whose statistics carried no signal: pruned by magnitude
        torch.manual_seed(cfg.seed)
        layers, layers_name = find_decoder_layers(model)
        self._layers_name = layers_name
        num_layers = len(layers)
        pruned, targets, prune_head, coverage = self._resolve(model, layers)

        # A solver that needs no statistics reads calibration data only to measure the reconstruction error.
        rows = None
        owl = cfg.sparsity_profile == "owl"  # its outlier ratios need calibration data, whatever the method
        if self.solver.needs_data() or owl or (calibration is not None and cfg.reconstruction_error):
            if calibration is None:
                needs = "sparsity_profile='owl'" if owl else f"method={cfg.method!r}"
                raise ValueError(f"{needs} needs calibration data: pass a Dataset with 'input_ids'.")
            rows = as_rows(calibration, need_prompt_length=cfg.token_mask != "all")
            self._check_rows(model, rows)

        self._dist = Distributed.current()
        if rows is not None and len(rows) < self._dist.world_size:
            raise ValueError(
                f"{len(rows)} calibration rows cannot be split over {self._dist.world_size} processes: every process "
                "needs at least one row. Use fewer processes or more rows."
            )
        num_run = num_layers if prune_head else max(pruned) + 1
        self.state = PrunerState(
            num_layers=num_run,
            pruned_layers=pruned,
            num_samples=len(rows) if rows else 0,
            calibration_fingerprint=calibration_fingerprint(rows) if rows else None,
            is_world_process_zero=self._dist.is_main,
            world_size=self._dist.world_size,
            coverage=coverage.to_dict(),
        )
        if cfg.layer_sparsities is not None:
            self.state.layer_sparsities = check_layer_sparsities(cfg.layer_sparsities, pruned, layers_name)
        return layers, pruned, targets, prune_head, rows, num_run

    # ----------------------------------------------------------------------------------------------------------------
    # Validation

    def _resolve(self, model, layers) -> tuple[list[int], dict[int, dict[str, Target]], bool, Any]:
        """The pruned layers, their targets, whether lm_head is pruned, and the coverage, checked."""
        cfg = self.config
        pruned = resolve_layer_scope(cfg.layers, len(layers))
        if not pruned:
            raise ValueError(
                f"layers={cfg.layers!r} selects no decoder layer of a {len(layers)}-layer model: choose another scope."
            )
        targets = resolve_targets(layers, pruned, cfg.targets, cfg.exclude)
        prune_head = bool(cfg.targets) and "lm_head" in cfg.targets and "lm_head" not in cfg.exclude
        if prune_head and lm_head_is_tied(model):
            raise ValueError(TIED_LM_HEAD_MESSAGE)
        if not any(targets.values()) and not prune_head:
            raise ValueError("targets/exclude leave no module to prune: loosen them.")
        self._check_divisibility(targets, model if prune_head else None)
        head_params = model.get_output_embeddings().weight.numel() if prune_head else 0
        coverage = compute_coverage(model, layers, targets, head_params)
        self._check_coverage(coverage)
        return pruned, targets, prune_head, coverage

    def _check_divisibility(self, targets: dict[int, dict[str, Target]], head_model) -> None:
        nm = self.config.nm
        if nm is None:
            return
        mods = [(f"{self._layers_name}.{i}.{n}", t.shape[1]) for i, ts in targets.items() for n, t in ts.items()]
        if head_model is not None:
            mods.append(("lm_head", head_model.get_output_embeddings().in_features))
        for name, in_features in mods:
            if in_features % nm[1]:
                raise ValueError(
                    f"{name} has {in_features} input features, not divisible by M={nm[1]} for "
                    f"sparsity_type={self.config.sparsity_type!r}: exclude it or choose another pattern."
                )

    def _check_coverage(self, coverage) -> None:
        """Refuse default targets that leave more than `UNCOVERED_LIMIT` of the pruned layers' weights untouched
        (a layout the pruner does not see would otherwise stay dense under a card that claims the sparsity)."""
        cfg = self.config
        narrowed = cfg.targets is not None or bool(cfg.exclude)
        if narrowed or coverage.uncovered_share <= UNCOVERED_LIMIT:
            return
        biggest = sorted(coverage.uncovered.items(), key=lambda kv: -kv[1])[:8]
        listed = ", ".join(f"{n} ({100 * v / coverage.scope_params:.1f}%)" for n, v in biggest)
        raise ValueError(
            f"The default targets leave {100 * coverage.uncovered_share:.1f}% of the pruned layers' parameters in "
            f"weights that are not pruned: {listed}. Name what to prune with targets=[...] (e.g. 're:...'), or "
            "exclude those weights explicitly with exclude=[...] to accept that they stay dense."
        )

    def _check_rows(self, model: nn.Module, rows: list[Row]) -> None:
        config = getattr(model, "config", None)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        max_pos = getattr(text_config, "max_position_embeddings", None)
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        vocab = getattr(emb, "num_embeddings", None)
        for i, r in enumerate(rows):
            if max_pos is not None and r.input_ids.numel() > max_pos:
                raise ValueError(
                    f"Calibration row {i} has {r.input_ids.numel()} tokens, more than the model's "
                    f"max_position_embeddings={max_pos}: truncate the rows to at most {max_pos} tokens "
                    f"(e.g. CalibrationConfig(max_length={max_pos}), or dataset.map(lambda r: "
                    f"{{'input_ids': r['input_ids'][:{max_pos}]}}))."
                )
            if vocab is not None and (int(r.input_ids.max()) >= vocab or int(r.input_ids.min()) < 0):
                bad = int(r.input_ids.min()) if int(r.input_ids.min()) < 0 else int(r.input_ids.max())
                raise ValueError(
                    f"Calibration row {i} holds token id {bad} outside the model's vocabulary [0, {vocab}): tokenize "
                    "the calibration data with this model's tokenizer."
                )
        spans = [stat_span(r, self.config.token_mask) for r in rows]
        if self.config.token_mask != "all" and sum(end - start for start, end in spans) == 0:
            raise ValueError(
                f"token_mask={self.config.token_mask!r} selects no token of the calibration rows (check prompt_length)."
            )

    # ----------------------------------------------------------------------------------------------------------------
    # The loop

    def _compute_device(self, layers: nn.ModuleList) -> torch.device:
        if self._stream is not None:
            return self._stream.device
        return torch.device(self.config.device) if self.config.device else module_device(layers[0])

    def _prepare_batches(self, model, layers, rows, num_run, start_layer, device) -> list[Batch]:
        """Cut this process's rows into batches, capture the layers' inputs, and replay the layers finished before a
        resume (the same code path, so the activations are bit-identical)."""
        cfg = self.config
        dist = self._dist
        if self._need_sample():
            assign_error_sample(rows, cfg.token_mask, cfg.error_sample_tokens, cfg.seed)
        if dist.enabled:  # this process's contiguous shard of the rows
            shard = balanced_contiguous_split([r.input_ids.numel() for r in rows], dist.world_size)[dist.rank]
            rows = [rows[j] for j in shard]
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
        batches = make_batches(rows, cfg.batch_size, cfg.token_mask, pad_id)
        num_tokens = torch.tensor([sum(b.num_stat_tokens for b in batches)], dtype=torch.int64)
        self.state.num_tokens = int(dist.all_reduce_sum_(num_tokens).item())
        storage = torch.device("cpu") if cfg.offload_activations else device
        pin = cfg.offload_activations and device.type == "cuda"
        finite = capture_layer_inputs(model, layers, batches, num_run, storage, pin)
        self._raise_if_non_finite(finite, "the embeddings (input of decoder layer 0)")
        for i in range(start_layer):
            layer = self._open_layer(layers, i, finished=True)
            original_device = module_device(layer)
            self._propagate(layer.to(device), i, batches, device, storage)
            layer.to(original_device)
            self._close_layer(layers, i, None)
        return batches

    def _prune_layers(self, model, layers, targets, pruned, rows, start_layer, num_run, prune_head, backup):
        """The one layer loop. Without calibration rows there are no batches: nothing runs forward, and every module
        is solved without statistics."""
        device = self._compute_device(layers)
        storage = torch.device("cpu") if self.config.offload_activations else device
        batches = self._prepare_batches(model, layers, rows, num_run, start_layer, device) if rows is not None else []
        if self.config.sparsity_profile == "owl" and self.state.layer_sparsities is None:
            if start_layer > 0:
                raise ValueError(
                    "The checkpoint to resume from holds no OWL allocation (layer_sparsities in pruner_state.json), "
                    "so the finished layers' sparsities are unknown: start the run again without resuming."
                )
            self._owl_allocation(model, layers, targets, pruned, batches, device, storage)
        self._event("on_prune_begin")
        for i in range(start_layer, num_run):
            self._event("on_layer_begin", layer_index=i)
            layer = self._open_layer(layers, i)
            original_device = module_device(layer)
            if batches:
                layer.to(device)
            modules = targets.get(i, {}) if i in pruned else {}
            layer_metrics = {}
            self.solver = self._layer_solver(i)
            if modules:
                layer_metrics = self._prune_layer(layer, i, modules, batches, device, backup)
            if batches:
                self._propagate(layer, i, batches, device, storage)
                layer.to(original_device)
            self.solver = self._base_solver  # lm_head, and anything after the layers, at the run's sparsity
            if prune_head and i == num_run - 1:
                layer_metrics.update(self._prune_lm_head(model, batches, device, backup))
            self._end_layer(model, i, layer_metrics, targets)
            self._close_layer(layers, i, targets.get(i, {}) if i in pruned else {})
            if self.control.should_stop:
                break
        for b in batches:
            b.hidden, b.layer_inputs = None, None
        if self._stream is None:  # a streamed run measures it layer by layer, and ends after the last shard
            head = model.get_output_embeddings() if prune_head else None
            self.state.achieved_sparsity = zero_fractions(model, layers, targets, head)
            self._finish()

    def _layer_solver(self, i: int) -> Solver:
        """The solver for decoder layer `i`: the run's, or, with a layer-wise sparsity, one at the layer's sparsity
        (the same method and settings otherwise)."""
        alloc = self.state.layer_sparsities
        if not alloc or str(i) not in alloc:
            return self._base_solver
        cfg = self.config
        layer_cfg = dataclasses.replace(cfg, sparsity=alloc[str(i)], sparsity_profile="uniform", layer_sparsities=None)
        return get_solver(cfg.method)(layer_cfg)

    def _owl_allocation(self, model, layers, targets, pruned, batches, device, storage) -> None:
        """OWL: one pass of the dense layers over the calibration batches measures each pruned layer's outlier ratio
        (`owl.wanda_outlier_ratio`, from squared input norms all-reduced across processes), then sets
        `state.layer_sparsities` and re-captures the first layer's inputs for the pruning pass."""
        cfg = self.config
        if self._stream is not None:  # prune_streaming refuses OWL first; this guards the layer loading below
            raise ValueError("sparsity_profile='owl' is not supported by prune_pretrained.")
        owl_layers = [i for i in pruned if targets.get(i)]
        ratios: dict[str, float] = {}
        for i in range(max(owl_layers) + 1):
            layer = layers[i]
            original_device = module_device(layer)
            layer.to(device)
            if i in owl_layers:
                ratios[str(i)] = self._owl_layer_ratio(layer, i, targets[i], batches, device, storage)
            else:
                self._propagate(layer, i, batches, device, storage)
            layer.to(original_device)
        sparsities = owl_layer_sparsities([ratios[str(i)] for i in owl_layers], cfg.sparsity, cfg.owl_lambda)
        self.state.outlier_ratios = ratios
        self.state.layer_sparsities = {str(i): s for i, s in zip(owl_layers, sparsities)}
        logger.info("OWL (M=%g, lambda=%g) layer sparsities: %s", cfg.owl_m, cfg.owl_lambda,
                    ", ".join(f"{i}: {s:.4f}" for i, s in self.state.layer_sparsities.items()))  # fmt: skip
        pin = cfg.offload_activations and device.type == "cuda"
        finite = capture_layer_inputs(model, layers, batches, self.state.num_layers, storage, pin)
        self._raise_if_non_finite(finite, "the embeddings (input of decoder layer 0)")

    def _owl_layer_ratio(self, layer, i, modules: dict[str, Target], batches, device, storage) -> float:
        """Run dense layer `i` on every batch (its outputs become the next layer's inputs) while accumulating its
        targets' squared input norms; return its outlier ratio. An expert that received no routed token has an
        all-zero metric."""
        cfg = self.config
        stats = LayerStats(modules, False, True, cfg.chunk_size, False, cfg.gram_dtype, False, cfg.moe_statistics,
                           self._verified_experts)  # fmt: skip
        finite = []
        with stats:
            for b in batches:
                stats.begin_batch(b.stat_mask, b.sample_index)
                out = run_layer(layer, i, b, device)
                finite.append(finite_flag(out, b))
                b.hidden = out.to(storage)
        stats.finalize()
        self._raise_if_non_finite(finite + stats.finite_flags(), f"decoder layer {i}", layer)
        self._reduce_stats(stats, f"decoder layer {i}")
        weights, sq_norms = [], []
        for name, t in modules.items():
            if name in stats.leader:
                sq = stats.module_stats(name).sq_norms
            elif t.expert is not None:
                sq = torch.zeros(t.shape[1])
            else:
                raise RuntimeError(
                    f"{self._layers_name}.{i}.{name} was never called during the forward pass of its layer, so it has "
                    "no statistics: exclude it from the targets."
                )
            weights.append(t.weight)
            sq_norms.append(sq)
        return wanda_outlier_ratio(weights, sq_norms, cfg.owl_m)

    def _open_layer(self, layers: nn.ModuleList, i: int, finished: bool = False) -> nn.Module:
        """Decoder layer `i`, with its weights: in memory already, or loaded by a streamed run (from the input
        checkpoint, or from the output shards for a layer `finished` before a resume)."""
        if self._stream is not None:
            self._stream.load_layer(i, finished)
        return layers[i]

    def _close_layer(self, layers: nn.ModuleList, i: int, targets: dict[str, Target] | None) -> None:
        """A streamed run writes the finished layer `i` to its output shard (unless `targets` is None: a layer replayed
        after a resume) and frees its weights; in memory, nothing."""
        if self._stream is not None:
            self._stream.release_layer(i, targets)

    def _prune_layer(self, layer, i, modules: dict[str, Target], batches, device, backup) -> dict[str, dict]:
        """Collect the statistics of one layer's targets on the dense layer and solve them. The experts of a mixture
        of experts are collected and solved in groups that fit `moe_stats_memory_gb`, one pass over the batches
        each; their inputs depend only on what precedes the experts, so the other targets are solved after the
        last group and the grouping changes nothing in the result."""
        prefix = f"{self._layers_name}.{i}."
        local = {prefix + n: n for n in modules}
        if not batches:
            return self._solve_modules(i, {prefix + n: t for n, t in modules.items()}, None, local, device, backup)
        others = {n: t for n, t in modules.items() if t.expert is None}
        groups = self._expert_groups([t for t in modules.values() if t.expert is not None], device) or [[]]
        metrics: dict[str, dict] = {}
        other_stats = None
        for g, group in enumerate(groups):
            wanted = {**(others if g == 0 else {}), **{t.name: t for t in group}}
            stats = self._collect(layer, i, wanted, batches, device)
            if g == 0:
                self._event("on_stats_collected", layer_index=i, num_tokens=self.state.num_tokens)
            fallback = self._handle_starved(layer, i, group, stats, batches, device)
            if group:
                solve = {prefix + t.name: t for t in group}
                metrics.update(self._solve_modules(i, solve, stats, local, device, backup, fallback))
            if g == 0:  # keep the other targets' statistics, free the group's before the next pass
                other_stats = stats
                for t in group:
                    stats.stats.pop(stats.leader[t.name], None)
            del stats
        if others:
            metrics.update(self._solve_modules(i, {prefix + n: t for n, t in others.items()}, other_stats, local,
                                               device, backup))  # fmt: skip
        return {prefix + n: metrics[prefix + n] for n in modules}

    def _expert_groups(self, experts: list[Target], device) -> list[list[Target]]:
        """The layer's expert targets in groups whose statistics fit the memory bound (both projections of an
        expert stay in one group)."""
        if not experts:
            return []
        by_expert: dict[tuple[int, int], list[Target]] = {}
        for t in experts:
            by_expert.setdefault((id(t.module), t.expert), []).append(t)
        per_expert = max(self._stats_bytes(t.shape[1]) for t in experts) * max(len(v) for v in by_expert.values())
        bound = self._stats_memory_bound(device)
        size = max(1, int(bound // max(per_expert, 1)))
        units = list(by_expert.values())
        groups = [[t for unit in units[k : k + size] for t in unit] for k in range(0, len(units), size)]
        if len(groups) > 1:
            logger.info("The statistics of %d experts take %.1f GiB: collected in %d groups of %d (bound %.1f GiB).",
                        len(units), len(units) * per_expert / 2**30, len(groups), size, bound / 2**30)  # fmt: skip
        return groups

    def _stats_bytes(self, d_in: int) -> float:
        per = 0.0
        if self._need_gram():
            per += 4.0 * d_in * d_in
        if "sq_norms" in self.solver.needs:
            per += 4.0 * d_in
        return per

    def _stats_memory_bound(self, device) -> float:
        cfg = self.config
        if cfg.moe_stats_memory_gb is not None:
            return cfg.moe_stats_memory_gb * 2**30
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
        else:
            free = _host_available_bytes()
        return 0.5 * free

    def _handle_starved(self, layer, i, group: list[Target], stats: LayerStats, batches, device) -> set[str]:
        """Experts that received fewer routed tokens than their input size: per `starved_experts`, recollect their
        statistics from every token, or mark them for magnitude pruning (returned), or keep them; warned and
        recorded either way."""
        cfg = self.config
        if not group or cfg.moe_statistics == "all_tokens":
            return set()
        counts = {t.name: stats.stats[stats.leader[t.name]]["count"] for t in group}
        starved = [t for t in group if counts[t.name] < t.shape[1]]
        if not starved:
            return set()
        experts = sorted({(t.param_name.rsplit(".", 1)[0], t.expert) for t in starved})
        self._starved.update({f"{self._layers_name}.{i}.{t.name}": counts[t.name] for t in starved})
        logger.warning(
            "Decoder layer %d: %d experts received fewer routed tokens than their input size (%s); pruned with "
            "starved_experts=%r (recorded as 'starved' in their metrics).", i, len(experts),
            ", ".join(f"{m}[{e}]" for m, e in experts[:8]) + (" ..." if len(experts) > 8 else ""),
            cfg.starved_experts,
        )  # fmt: skip
        if cfg.starved_experts == "magnitude":
            return {f"{self._layers_name}.{i}.{t.name}" for t in starved}
        if cfg.starved_experts == "all_tokens":
            again = self._collect(layer, i, {t.name: t for t in starved}, batches, device, expert_tokens="all_tokens")
            for t in starved:
                lead = again.leader[t.name]
                stats.leader[t.name] = lead
                stats.stats[lead] = again.stats[lead]
        return set()

    def _end_layer(self, model, i, layer_metrics, targets):
        self.state.layer_index = i
        self._unsaved_layers.append(i)
        self._event("on_layer_end", layer_index=i, layer_metrics=layer_metrics)
        if self.control.should_log:
            logs = {"layer": i}
            errors = [m["error"] for m in layer_metrics.values() if m.get("error") is not None]
            if layer_metrics:
                logs["modules"] = len(layer_metrics)
                logs["sparsity"] = sum(m["sparsity"] for m in layer_metrics.values()) / len(layer_metrics)
                logs["seconds"] = sum(m["seconds"] for m in layer_metrics.values())
            if errors:
                logs["mean_error"] = sum(errors) / len(errors)
                logs["max_error"] = max(errors)
            for key in ("damping_raised", "fallback"):  # solves that did less than asked, counted per layer
                count = sum(1 for m in layer_metrics.values() if m.get(key))
                if count:
                    logs[key] = count
            self.state.log_history.append(logs)
            self._event("on_log", logs=logs)
        if self.control.should_save:
            checkpoint_dir = self._save_checkpoint(model, i, targets)
            self._event("on_save", checkpoint_dir=checkpoint_dir)
        # A callback may stop one process only: every process stops after the same layer.
        self.control.should_stop = self._dist.any(self.control.should_stop)

    def _finish(self):
        self.state.finished = self.state.layer_index >= self.state.num_layers - 1
        self._dist.barrier()  # the main process's last checkpoint is complete before any process returns
        self._event("on_prune_end")

    # ----------------------------------------------------------------------------------------------------------------
    # Capture, statistics, propagation

    def _need_gram(self) -> bool:
        cfg = self.config
        return "gram" in self.solver.needs or (cfg.reconstruction_error and not cfg.error_sample_tokens)

    def _need_sample(self) -> bool:
        """Whether the reconstruction error is estimated from a token sample (the solver needs no XᵀX)."""
        cfg = self.config
        return cfg.reconstruction_error and bool(cfg.error_sample_tokens) and not self._need_gram()

    def _layer_stats(self, modules: dict[str, Target | nn.Module], stop_early: bool,
                     expert_tokens: str | None = None) -> LayerStats:  # fmt: skip
        cfg = self.config
        return LayerStats(modules, self._need_gram(), "sq_norms" in self.solver.needs, cfg.chunk_size, stop_early,
                          cfg.gram_dtype, self._need_sample(), expert_tokens or cfg.moe_statistics,
                          self._verified_experts)  # fmt: skip

    def _collect(self, layer, i, modules, batches, device, expert_tokens: str | None = None):
        finite = []
        stats = self._layer_stats(modules, stop_early=True, expert_tokens=expert_tokens)
        with stats:
            for b in batches:
                stats.begin_batch(b.stat_mask, b.sample_index)
                try:
                    out = run_layer(layer, i, b, device)
                except StopLayer:
                    continue
                finite.append(finite_flag(out, b))  # the first batch runs the whole layer
                del out
        stats.finalize()
        self._raise_if_non_finite(finite + stats.finite_flags(), f"decoder layer {i}", layer)
        self._reduce_stats(stats, f"decoder layer {i}")
        return stats

    def _reduce_stats(self, stats: LayerStats, where: str) -> None:
        """Sum the statistics of every process (all of them then hold the statistics of all the rows), then round
        float64 sums to float32."""
        dist = self._dist
        if not dist.enabled:
            stats.round_to_float32()
            return
        names = sorted(stats.stats)
        if len({tuple(n) for n in dist.all_gather_object(names)}) != 1:
            raise RuntimeError(f"The processes recorded statistics for different modules of {where}.")
        counts = torch.tensor([stats.stats[n]["count"] for n in names], dtype=torch.int64)
        dist.all_reduce_sum_(counts)
        for n, c in zip(names, counts.tolist()):
            st = stats.stats[n]
            st["count"] = int(c)
            for key in ("gram", "sq"):
                if st[key] is not None:
                    dist.all_reduce_sum_(st[key])
            if stats.need_sample:  # the shards are contiguous, so rank order is the rows' order
                parts = dist.all_gather_object(None if st["sample"] is None else st["sample"].cpu())
                parts = [p for p in parts if p is not None]
                st["sample"] = torch.cat(parts) if parts else None  # moved to the solving device when used
        stats.round_to_float32()

    def _propagate(self, layer, i, batches, device, storage):
        finite = []
        for b in batches:
            out = run_layer(layer, i, b, device)
            finite.append(finite_flag(out, b))
            if b.hidden.is_pinned() and b.hidden.shape == out.shape and b.hidden.dtype == out.dtype:
                # The input was already copied to the device earlier on this stream, so its pinned buffer can take the
                # output asynchronously: no pageable copy, no synchronisation per batch.
                b.hidden.copy_(out, non_blocking=True)
            else:
                b.hidden = out.to(storage)
        self._raise_if_non_finite(finite, f"decoder layer {i}", layer)
        if device.type == "cuda" and storage.type == "cpu":
            torch.cuda.synchronize(device)  # the host buffers are complete before anyone reads them

    def _raise_if_non_finite(self, flags: list[torch.Tensor], where: str, module: nn.Module | None = None) -> None:
        bad = bool(flags) and not bool(torch.stack([f.to(flags[0].device) for f in flags]).all())
        if self._dist.any(bad):  # every process raises together
            err = NonFiniteActivationError(f"Non-finite activations (NaN or inf) at the output of {where}: "
                                           + _non_finite_cause(module))  # fmt: skip
            err.damaged_weights = _non_finite_weight(module) is not None
            raise err

    # ----------------------------------------------------------------------------------------------------------------
    # Solving

    def _solve_modules(self, layer_index, modules: dict[str, Target], stats: LayerStats | None,
                       local_names: dict[str, str], device, backup, magnitude: set[str] = frozenset(),
                       param_prefix: str | None = None) -> dict[str, dict]:  # fmt: skip
        """Solve `modules` (full name -> target), spread across processes when there are several: targets that share
        an input (q/k/v, gate/up) stay on one process, where they share the solver's scratch space, and the groups are
        balanced by the solver's cost estimate. One process solves everything. Every process ends with every weight
        and every module's metrics. The targets named in `magnitude` are pruned by magnitude (starved experts)."""
        dist = self._dist
        prefix = f"{self._layers_name}.{layer_index}." if param_prefix is None else param_prefix
        groups: dict[str, list[str]] = {}
        for full in modules:
            local = local_names.get(full, full)
            if stats is not None and local not in stats.leader:
                raise RuntimeError(
                    f"{full} was never called during the forward pass of its layer, so it has no statistics: exclude "
                    "it from the targets."
                )
            groups.setdefault(stats.leader[local] if stats is not None else full, []).append(full)
        costs = [sum(self.solver.cost(*modules[f].shape) for f in members) for members in groups.values()]
        owners = assign_by_cost(costs, dist.world_size)
        owner = {full: owners[g] for g, members in enumerate(groups.values()) for full in members}
        local_metrics: dict[str, dict] = {}
        failure = None
        batches: dict[int, list[tuple[str, Target, Any, dict]]] = {}  # per fused parameter: experts solved at once

        def solve(items):
            nonlocal failure
            if not items or failure is not None:
                return
            try:
                if len(items) == 1:
                    full, target, module_stats, shared = items[0]
                    local_metrics[full] = self._solve_module(full, target, module_stats, device, shared,
                                                             full in magnitude)  # fmt: skip
                else:
                    local_metrics.update(self._solve_batch(items, device))
            except Exception as exc:  # noqa: BLE001 - re-raised below, on every process
                if not dist.enabled:
                    raise
                failure = exc

        limit = self._expert_batch_size(modules, device)
        magnitude = set(magnitude)
        for members in groups.values():
            shared: dict[str, Any] = {}  # the solver's scratch space for one input
            for full in members:
                target = modules[full]
                param = prefix + target.param_name
                if self.config.restore_on_error and param not in backup:
                    backup[param] = target.param
                if owner[full] != dist.rank or failure is not None:
                    continue
                module_stats = stats.module_stats(local_names.get(full, full)) if stats is not None else None
                if full not in magnitude and self._without_signal(module_stats):
                    self._no_signal.add(full)
                    magnitude.add(full)
                item = (full, target, module_stats, shared)
                if limit > 1 and target.expert is not None and full not in magnitude:
                    batch = batches.setdefault(id(target.param), [])
                    batch.append(item)
                    if len(batch) == limit:
                        solve(batches.pop(id(target.param)))
                    continue
                solve([item])
        for batch in batches.values():
            solve(batch)
        quiet = sorted(f for f in modules if f in self._no_signal and f in local_metrics)
        if quiet:
            logger.warning(
                "%d modules received no signal to prune from (no calibration token, or all-zero %s): %s; pruned by "
                "magnitude instead of %s (recorded as fallback='magnitude', no_signal=True).", len(quiet),
                " and ".join(sorted(self.solver.needs)), ", ".join(quiet[:6]) + (" ..." if len(quiet) > 6 else ""),
                self.solver.title or self.config.method,
            )  # fmt: skip
        if dist.enabled:
            self._share_solves(layer_index, modules, owner, local_metrics, failure)
        metrics = {full: local_metrics[full] for full in modules}
        for full, m in metrics.items():
            if dist.enabled:
                m["process"] = owner[full]
            self.state.module_metrics.pop(full, None)  # in module order, whatever order the solves ran in
            self.state.module_metrics[full] = m
            self._event("on_module_pruned", layer_index=layer_index, name=full, metrics=m)
        return metrics

    def _share_solves(self, layer_index, modules: dict[str, Target], owner, local_metrics, failure) -> None:
        """Across processes: raise on every process if one failed, broadcast each weight from its owner and gather
        every module's metrics into `local_metrics`."""
        dist = self._dist
        reports = dist.all_gather_object(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        for rank, report in enumerate(reports):
            if report is not None:
                raise RuntimeError(f"Process {rank} failed while solving layer {layer_index}: {report}")
        for full, target in modules.items():
            w = target.weight
            if w.is_contiguous():
                dist.broadcast_(w, src=owner[full])
            else:  # a transposed expert view (gpt-oss)
                buf = w.contiguous()
                dist.broadcast_(buf, src=owner[full])
                target.write(buf)
        for part in dist.all_gather_object(dict(local_metrics)):
            local_metrics.update(part)

    def _without_signal(self, stats) -> bool:
        """Whether a module's statistics hold nothing a data-driven solver could use: no calibration token reached
        it (an expert nothing was routed to), or a statistic the solver needs is zero everywhere (inputs that are all
        zero). Solved as such, SparseGPT would zero every weight and Wanda choose by tie order alone."""
        if stats is None or not self.solver.needs_data():
            return False
        if stats.count == 0:
            return True
        return any(
            getattr(stats, key, None) is not None and not bool(getattr(stats, key).any()) for key in self.solver.needs
        )

    def _expert_batch_size(self, modules: dict[str, Target], device) -> int:
        """How many experts of one module one batched solver call takes: `expert_solve_batch`, bounded so that the
        batch's workspace fits in a quarter of the statistics' memory bound (1 where the solver has no batched path)."""
        size = self.config.expert_solve_batch
        experts = [t for t in modules.values() if t.expert is not None]
        if size <= 1 or not self.solver.batched or not experts:
            return 1
        rows, cols = max((t.shape for t in experts), key=lambda s: s[0] * s[1] + s[1] * s[1])
        fit = int(0.25 * self._stats_memory_bound(device) // self.solver.batch_workspace_bytes(rows, cols, 1))
        return max(1, min(size, fit))

    def _solve_module(self, full, target: Target, stats, device, shared, magnitude: bool = False) -> dict:
        t0 = time.perf_counter()
        weight = target.weight.detach().to(device=device, dtype=torch.float32, copy=True)
        solver = get_solver("magnitude")(self.solver.config) if magnitude else self.solver
        new, info = solver.solve(weight, stats, shared)
        target.write(new)
        return self._module_result(full, target, weight, stats, info, time.perf_counter() - t0, magnitude)

    def _solve_batch(self, items: list[tuple[str, Target, Any, dict]], device) -> dict[str, dict]:
        """Experts of one fused module, solved in one batched solver call; each one's metrics as `_solve_module`
        gives them, with the batch's time shared equally and its size recorded (`solve_batch`)."""
        t0 = time.perf_counter()
        weights = [t.weight.detach().to(device=device, dtype=torch.float32, copy=True) for _, t, _, _ in items]
        solved = self.solver.solve_batch(weights, [s for *_, s, _ in items], [sh for *_, sh in items])
        for (_, target, _, _), (new, _) in zip(items, solved):
            target.write(new)
        seconds = (time.perf_counter() - t0) / len(items)
        out = {}
        for (full, target, stats, _), weight, (_, info) in zip(items, weights, solved):
            out[full] = self._module_result(full, target, weight, stats, info, seconds)
            out[full]["solve_batch"] = len(items)
        return out

    def _module_result(self, full, target: Target, weight, stats, info, seconds, magnitude: bool = False) -> dict:
        """A solved module's metrics: achieved sparsity, time, routed tokens and reconstruction error."""
        cfg = self.config
        final = target.weight.detach()
        result = {
            "sparsity": float((final == 0).sum()) / final.numel(),
            "seconds": seconds,
            "shape": list(final.shape),
            "error": None,
        }
        if cfg.layerwise:
            result["target_sparsity"] = self.solver.config.sparsity
        if target.expert is not None and stats is not None:
            result["tokens"] = self._starved.get(full, stats.count)  # the tokens routed to it
        if full in self._starved:
            result["starved"] = "magnitude" if magnitude and full not in self._no_signal else cfg.starved_experts
        if full in self._no_signal:
            result["fallback"] = "magnitude"
            result["no_signal"] = True
        if stats is not None and cfg.reconstruction_error:
            if stats.gram is not None:
                result["error"] = relative_reconstruction_error(weight, final.to(device=weight.device), stats.gram)
                result["error_tokens"] = stats.count
            elif stats.sample is not None:
                result["error"] = sampled_reconstruction_error(weight, final.to(device=weight.device), stats.sample)
                result["error_tokens"] = stats.sample.shape[0]
        self._record_solve_info(full, result, info)
        self.state.module_metrics[full] = result
        return result

    def _record_solve_info(self, full: str, result: dict, info) -> None:
        """Copy what the solver reports into the module's metrics; a raised damping or a fallback is also warned."""
        cfg = self.config
        if info.damping is not None:
            result["damping"] = info.damping
        if info.iterations is not None:
            result["iterations"] = info.iterations
        if info.damping is not None and info.damping > cfg.dampening:
            result["damping_raised"] = True
            logger.warning(
                "%s: XᵀX was not positive definite with dampening=%g; solved with damping %g x mean(diag) "
                "(recorded in the module metrics).", full, cfg.dampening, info.damping,
            )  # fmt: skip
        if info.extra.get("fallback"):
            result["fallback"] = info.extra["fallback"]
            logger.warning(
                "%s: the %s iterations diverged (error %s); kept the refined projection of the weights instead "
                "(recorded as fallback=%r).", full, cfg.method, info.extra.get("diverged_error"), result["fallback"],
            )  # fmt: skip

    def _prune_lm_head(self, model, batches, device, backup) -> dict[str, dict]:
        head = model.get_output_embeddings()
        name = next(n for n, m in model.named_modules() if m is head)
        target = {name: Target(name, head, f"{name}.weight")}
        if not batches:
            return self._solve_modules(None, target, None, {}, device, backup, param_prefix="")
        norm = find_final_norm(model, self._layers_name)
        head_device, norm_device = module_device(head), module_device(norm)
        head.to(device)
        norm.to(device)
        stats = self._layer_stats({"lm_head": head}, stop_early=False)
        for b in batches:
            stats.begin_batch(b.stat_mask, b.sample_index)
            # Only the statistics of lm_head's input are needed, not the logits.
            stats.observe("lm_head", norm(b.hidden.to(device)))
        stats.finalize()
        self._reduce_stats(stats, "lm_head")
        result = self._solve_modules(None, target, stats, {name: "lm_head"}, device, backup, param_prefix="")
        head.to(head_device)
        norm.to(norm_device)
        return result

    # ----------------------------------------------------------------------------------------------------------------
    # Checkpoints

    def _layer_weights(self, model, layer_indices, targets) -> dict[str, torch.Tensor]:
        out = {}
        for i in layer_indices:
            for t in targets.get(i, {}).values():
                key = f"{self._layers_name}.{i}.{t.param_name}"
                if key not in out:  # a fused experts parameter is saved whole, once
                    out[key] = t.param.detach().to("cpu").contiguous()
        if self.state.layer_index == self.state.num_layers - 1:
            head = model.get_output_embeddings()
            for name, m in model.named_modules():
                if m is head and f"{name}" in self.state.module_metrics:
                    out[f"{name}.weight"] = head.weight.detach().to("cpu").contiguous()
        return out

    def _save_checkpoint(self, model, layer_index, targets) -> str | None:
        if not self.state.is_world_process_zero or not self.config.output_dir or self._stream is not None:
            return None  # a streamed run's output shards are its checkpoints
        weights = self._layer_weights(model, self._unsaved_layers, targets)
        path = save_checkpoint(self.config.output_dir, layer_index, weights, self._unsaved_layers, self.state,
                               self.config)  # fmt: skip
        self._unsaved_layers = []
        return path

    @staticmethod
    def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
        """Complete checkpoints in `output_dir`, as `(layer_index, path)` sorted by layer."""
        return list_checkpoints(output_dir)

    def _resume(self, model, resume_from_checkpoint, backup) -> int:
        path = find_checkpoint(resume_from_checkpoint, self.config.output_dir)
        saved = load_checkpoints(path, model, self.config, self.state.calibration_fingerprint,
                                 backup if self.config.restore_on_error else None)  # fmt: skip
        saved.is_world_process_zero = self.state.is_world_process_zero
        saved.finished = False
        self.state = saved
        self._unsaved_layers = []
        logger.info("Resumed from %s: layers 0..%d are done.", path, saved.layer_index)
        return saved.layer_index
