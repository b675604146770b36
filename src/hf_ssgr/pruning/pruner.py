"""`OneShotPruner`: the sequential, layer-by-layer pruning loop.

1. Capture every argument each decoder layer receives (hidden states for the first layer; attention masks, position
   ids, `position_embeddings` and whatever else a model class passes, for every layer) by running the model once
   with the decoder layers replaced by recorders. Nothing past the last needed layer runs, `lm_head` included.
2. For each decoder layer: accumulate statistics of its target linears on the dense layer (one `XᵀX` per distinct
   input: q/k/v share one, gate/up share one), solve every target, then re-run the pruned layer to produce the next
   layer's inputs, so errors propagate as in the SparseGPT and Wanda references. The statistics pass stops each batch
   once the last target has seen its input (down_proj's product is never computed there), and gathers short batches
   into `chunk_size`-token products.

Only the current layer is moved to the compute device; the cached activations stay on the compute device or, with
`offload_activations`, on the CPU. Statistics are float32 with TF32 off.

Under `torchrun` or `accelerate launch`, the processes split the calibration rows into contiguous shards of nearly
equal token counts, all-reduce the statistics (`XᵀX`, squared norms, token counts), solve the modules of each layer
spread across processes (groups of modules that share an input stay together, balanced by estimated cost) and
broadcast the pruned weights, so every process ends with the same model: the single-process result up to float32
summation order.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..distributed import Distributed, assign_by_cost, balanced_contiguous_split
from .callbacks import (
    PRUNER_STATE_NAME,
    CallbackHandler,
    CheckpointCallback,
    DefaultFlowCallback,
    MetricsLoggerCallback,
    ProgressCallback,
    PrunerCallback,
    PrunerControl,
    PrunerState,
)
from .config import PruningConfig, resolve_layer_scope
from .kernels import (
    accumulate_gram,
    accumulate_sq_norms,
    all_finite,
    alps_factors,
    alps_prune,
    complete_gram,
    magnitude_prune,
    relative_reconstruction_error,
    sampled_reconstruction_error,
    sparsegpt_prune,
    wanda_prune,
)
from .modeling import (
    TIED_LM_HEAD_MESSAGE,
    find_decoder_layers,
    find_final_norm,
    lm_head_is_tied,
    module_device,
    resolve_targets,
)

logger = logging.getLogger("hf_ssgr")

__all__ = ["OneShotPruner", "NonFiniteActivationError", "CHECKPOINT_PREFIX", "PRUNING_CONFIG_NAME"]

CHECKPOINT_PREFIX = "checkpoint-layer-"
PRUNING_CONFIG_NAME = "pruning_config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_CALLBACKS = [DefaultFlowCallback, CheckpointCallback, MetricsLoggerCallback]
GRAM_UPPER_BLOCKS = 8
GRAM_BLOCKS_MIN_DIM = 1024  # below this the block loop costs more than it saves


class NonFiniteActivationError(ValueError):
    """Raised when a decoder layer produces NaN or infinite activations."""


class _StopCapture(Exception):
    pass


# --------------------------------------------------------------------------------------------------------------------
# Calibration rows


@dataclass
class _Row:
    input_ids: torch.Tensor  # (T,) int64
    prompt_length: int
    sample_positions: torch.Tensor | None = None  # positions of this row in the error-estimate sample


def _stat_span(row: _Row, token_mask: str) -> tuple[int, int]:
    """The positions `[start, end)` of a row that feed the statistics."""
    n = row.input_ids.numel()
    if token_mask == "prompt":
        return 0, row.prompt_length
    if token_mask == "response":
        return row.prompt_length, n
    return 0, n


def _assign_error_sample(rows: list[_Row], token_mask: str, num_tokens: int, seed: int) -> int:
    """Choose a uniform sample of `num_tokens` statistic tokens over all rows, the same in every layer, and store each
    row's positions in `row.sample_positions`; every statistic token when there are no more. Each token gets a key from
    a generator seeded by its row's index, and the sample is the `num_tokens` smallest keys: the choice does not depend
    on how the rows are split across processes. Returns the sample size."""
    keys = []
    for i, row in enumerate(rows):
        start, end = _stat_span(row, token_mask)
        k = torch.full((row.input_ids.numel(),), 2.0, dtype=torch.float64)
        k[start:end] = torch.rand(end - start, generator=torch.Generator().manual_seed(seed * 1_000_003 + i),
                                  dtype=torch.float64)  # fmt: skip
        keys.append(k)
    flat = torch.cat(keys)
    chosen = flat < 2.0
    available = int(chosen.sum())
    if available > num_tokens:
        chosen = torch.zeros_like(chosen)
        chosen[torch.topk(flat, num_tokens, largest=False).indices] = True
    offset = 0
    for row in rows:
        n = row.input_ids.numel()
        row.sample_positions = chosen[offset : offset + n].nonzero().flatten()
        offset += n
    return min(available, num_tokens)


@dataclass
class _Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor | None  # (B, T) when the batch is padded
    stat_mask: torch.Tensor | None  # (B*T,) tokens that feed the statistics; None means all
    num_stat_tokens: int
    sample_index: torch.Tensor | None = None  # (S,) flat positions (of B*T) of the error-estimate sample
    hidden: torch.Tensor | None = None  # input of the next layer to run, (B, T, d)
    layer_inputs: dict[int, tuple[tuple, dict]] | None = None  # per layer: extra positional args and kwargs


def _as_rows(calibration: Any, need_prompt_length: bool) -> list[_Row]:
    """Accept a `datasets.Dataset` (`input_ids`, optional `prompt_length`), a list of id lists / 1-D tensors / dicts,
    or a 2-D tensor."""
    prompt_lengths = None
    if hasattr(calibration, "column_names") and hasattr(calibration, "features"):  # datasets.Dataset
        if "input_ids" not in calibration.column_names:
            raise ValueError(
                f"The calibration Dataset has no 'input_ids' column (columns: {calibration.column_names}): tokenize it "
                "first, e.g. dataset.map(lambda r: tokenizer(r['text'])), or build it with SSGRCalibrator."
            )
        ids = calibration["input_ids"]
        if "prompt_length" in calibration.column_names:
            prompt_lengths = calibration["prompt_length"]
    elif isinstance(calibration, torch.Tensor):
        if calibration.dim() == 1:
            calibration = calibration.unsqueeze(0)
        if calibration.dim() != 2:
            raise ValueError(f"A calibration tensor must be (rows, tokens); got shape {tuple(calibration.shape)}.")
        ids = list(calibration)
    elif isinstance(calibration, (list, tuple)):
        ids = []
        prompt_lengths = []
        for row in calibration:
            if isinstance(row, dict):
                if "input_ids" not in row:
                    raise ValueError("A calibration row given as a dict needs an 'input_ids' key.")
                ids.append(row["input_ids"])
                prompt_lengths.append(row.get("prompt_length"))
            else:
                ids.append(row)
                prompt_lengths.append(None)
        if all(p is None for p in prompt_lengths):
            prompt_lengths = None
    else:
        raise TypeError(
            f"Unsupported calibration type {type(calibration).__name__}: pass a datasets.Dataset with an 'input_ids' "
            "column, a list of token-id lists or 1-D tensors, or a 2-D tensor."
        )
    if len(ids) == 0:
        raise ValueError(
            "The calibration set is empty: pass at least one row of token ids (SSGR and RAC use 128 rows)."
        )
    if need_prompt_length and (prompt_lengths is None or any(p is None for p in prompt_lengths)):
        raise ValueError(
            "token_mask='prompt'/'response' needs a 'prompt_length' for every calibration row: add the column (as "
            "SSGRCalibrator does) or use token_mask='all'."
        )
    rows = []
    for i, r in enumerate(ids):
        t = (
            r.detach().to("cpu", torch.long).reshape(-1)
            if isinstance(r, torch.Tensor)
            else torch.as_tensor(r, dtype=torch.long).reshape(-1)
        )
        if t.numel() == 0:
            raise ValueError(f"Calibration row {i} is empty: drop empty rows before pruning.")
        p = int(prompt_lengths[i]) if prompt_lengths is not None and prompt_lengths[i] is not None else 0
        if not 0 <= p <= t.numel():
            raise ValueError(f"Calibration row {i}: prompt_length={p} is outside [0, {t.numel()}] (the row length).")
        rows.append(_Row(t, p))
    return rows


def _fingerprint(rows: list[_Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(r.input_ids.numpy().tobytes())
        h.update(str(r.prompt_length).encode())
        h.update(b"|")
    return h.hexdigest()[:32]


def _make_batches(rows: list[_Row], batch_size: int, token_mask: str, pad_id: int) -> list[_Batch]:
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(r.input_ids.numel() for r in chunk)
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        valid = torch.zeros((len(chunk), length), dtype=torch.bool)
        stat = torch.zeros((len(chunk), length), dtype=torch.bool)
        for j, r in enumerate(chunk):
            n = r.input_ids.numel()
            ids[j, :n] = r.input_ids
            valid[j, :n] = True
            if token_mask == "all":
                stat[j, :n] = True
            elif token_mask == "prompt":
                stat[j, : r.prompt_length] = True
            else:
                stat[j, r.prompt_length : n] = True
        padded = not bool(valid.all())
        all_stat = bool(stat.all())
        sample_index = None
        if any(r.sample_positions is not None for r in chunk):
            sample_index = torch.cat([r.sample_positions + j * length for j, r in enumerate(chunk)])
        batches.append(
            _Batch(
                input_ids=ids,
                attention_mask=valid.long() if padded else None,
                stat_mask=None if all_stat else stat.reshape(-1),
                num_stat_tokens=int(stat.sum()),
                sample_index=sample_index,
            )
        )
    return batches


# --------------------------------------------------------------------------------------------------------------------
# Backups for restore_on_error


class _WeightBackup:
    """The original weights of the modules modified so far, written to a temporary folder rather than kept in memory
    (the pruned weights of a 7B model are 13 GB), to put back if the run fails. Removed when the run ends."""

    def __init__(self):
        self._dir: str | None = None
        self._files: dict[str, str] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def __len__(self) -> int:
        return len(self._files)

    def __setitem__(self, name: str, weight: torch.Tensor) -> None:
        from safetensors.torch import save_file

        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="hf_ssgr_backup_")
        path = os.path.join(self._dir, f"{len(self._files):06d}.safetensors")
        save_file({"weight": weight.detach().to("cpu").contiguous()}, path)
        self._files[name] = path

    def items(self):
        from safetensors.torch import load_file

        for name, path in self._files.items():
            yield name, load_file(path)["weight"]

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir, self._files = None, {}


# --------------------------------------------------------------------------------------------------------------------
# Moving nested arguments while keeping shared tensors shared


def _to_device(obj: Any, device: torch.device, memo: dict | None = None, pin: bool = False) -> Any:
    if memo is None:
        memo = {}
    if isinstance(obj, torch.Tensor):
        key = id(obj)
        if key not in memo:
            moved = obj.to(device, non_blocking=obj.device.type == "cpu" and obj.is_pinned())
            if pin and moved.device.type == "cpu" and not moved.is_pinned():
                moved = moved.pin_memory()
            memo[key] = (obj, moved)  # keep obj alive so its id is not reused
        return memo[key][1]
    if isinstance(obj, tuple):
        return tuple(_to_device(o, device, memo, pin) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, device, memo, pin) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, device, memo, pin) for k, v in obj.items()}
    return obj


@contextlib.contextmanager
def _fp32_statistics():
    """TF32 off for the duration (statistics and solves in true float32)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


# --------------------------------------------------------------------------------------------------------------------
# Statistics of one layer


class _StopLayer(Exception):
    """Raised from a statistics hook once every input the statistics need has been seen: the rest of the layer's
    forward (down_proj's product, the residual) would be thrown away."""


class _LayerStats:
    """Forward pre-hooks that accumulate, per distinct input tensor, `XᵀX` and/or squared channel norms.

    The first batch runs the whole layer. When it called every target exactly once (a dense layer), later batches
    stop the forward as soon as every target has been called (`stop_early`): nothing after the last target's input
    feeds a statistic. Layers that skip or repeat targets (mixtures of experts) always run whole. Tokens for `XᵀX` are
    gathered into a buffer of `chunk_size` rows before each product: one large product instead of one per short
    row, which matters on a CPU, where every product reads and writes the whole float32 accumulator.
    """

    def __init__(self, modules: dict[str, nn.Linear], need_gram: bool, need_sq: bool, chunk_size: int,
                 stop_early: bool = False, gram_dtype: str = "float32", need_sample: bool = False):  # fmt: skip
        self.modules = modules
        self.need_gram, self.need_sq, self.chunk_size = need_gram, need_sq, chunk_size
        self.need_sample = need_sample  # keep the inputs at the batches' `sample_index` (the error estimate)
        self._sample_index: torch.Tensor | None = None
        self.stop_early = stop_early
        self.gram_dtype = gram_dtype
        self.leader: dict[str, str] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._seen: list[tuple[weakref.ref, str]] = []
        self._mask: torch.Tensor | None = None
        self._handles = []
        self._called: list[str] = []  # targets called in this batch, in order
        self._can_stop: bool | None = None  # learnt on the first, complete, batch

    def __enter__(self):
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._seen = []

    def finalize(self) -> None:
        """Flush the token buffers and complete the block-triangular XᵀX accumulations once every batch is in."""
        for st in self.stats.values():
            if st["gram"] is not None:
                self._flush(st)
                st["buffer"] = None
                complete_gram(st["gram"], st["blocks"])
                st["blocks"] = 1
            if isinstance(st["sample"], list):
                st["sample"] = torch.cat(st["sample"]) if st["sample"] else None

    def finite_flags(self) -> list[torch.Tensor]:
        """Device-side flags: whether each accumulated statistic is finite (a NaN or inf input makes it non-finite)."""
        return [all_finite(st[k]) for st in self.stats.values() for k in ("gram", "sq") if st[k] is not None]

    def begin_batch(self, stat_mask: torch.Tensor | None, sample_index: torch.Tensor | None = None) -> None:
        if self._can_stop is None and self._called:
            self._can_stop = sorted(self._called) == sorted(self.modules)
        self._seen = []
        self._mask = stat_mask
        self._sample_index = sample_index
        self._called = []

    def _assign(self, name: str, leader: str) -> None:
        if self.leader.setdefault(name, leader) != leader:
            raise RuntimeError(
                f"Module {name} shares its input with {leader} in one batch and with {self.leader[name]} in another; "
                "the layer's data flow changes between batches, which the pruner does not support."
            )

    def _hook(self, name: str):
        def hook(module, inputs):
            self.observe(name, inputs[0])
            self._called.append(name)
            if self.stop_early and self._can_stop and len(set(self._called)) == len(self.modules):
                raise _StopLayer

        return hook

    def observe(self, name: str, x: torch.Tensor) -> None:
        """Add the input `x` of module `name` unless a module already added this very tensor in this batch."""
        for ref, leader in self._seen:
            if ref() is x:
                self._assign(name, leader)
                return
        self._assign(name, name)
        self._seen.append((weakref.ref(x), name))
        flat = x.detach().reshape(-1, x.shape[-1])
        sample = None
        if self.need_sample and self._sample_index is not None and self._sample_index.numel():
            sample = flat[self._sample_index.to(flat.device)]
        if self._mask is not None:
            flat = flat[self._mask.to(flat.device)]
        st = self.stats.get(name)
        if st is None:
            d = flat.shape[-1]
            st = self.stats[name] = {
                "gram": torch.zeros(d, d, dtype=torch.float32, device=flat.device) if self.need_gram else None,
                "sq": torch.zeros(d, dtype=torch.float32, device=flat.device) if self.need_sq else None,
                "count": 0,
                # On a CPU, accumulate only the upper block triangle of large XᵀX (about 40% less work).
                "blocks": GRAM_UPPER_BLOCKS if flat.device.type == "cpu" and d >= GRAM_BLOCKS_MIN_DIM else 1,
                "buffer": None,
                "buffered": 0,
                "sample": [] if self.need_sample else None,
            }
        if sample is not None:
            st["sample"].append(sample)
        if self.need_gram:
            self._add_to_gram(st, flat)
        if self.need_sq:
            accumulate_sq_norms(st["sq"], flat, self.chunk_size)
        st["count"] += flat.shape[0]

    def _add_to_gram(self, st: dict, flat: torch.Tensor) -> None:
        if st["buffered"] == 0 and flat.shape[0] >= self.chunk_size:  # already a large product: no copy
            accumulate_gram(st["gram"], flat, self.chunk_size, st["blocks"], self.gram_dtype)
            return
        if st["buffer"] is None:
            st["buffer"] = flat.new_empty(self.chunk_size, flat.shape[-1])
        start = 0
        while start < flat.shape[0]:
            n = min(self.chunk_size - st["buffered"], flat.shape[0] - start)
            st["buffer"][st["buffered"] : st["buffered"] + n].copy_(flat[start : start + n])
            st["buffered"] += n
            start += n
            if st["buffered"] == self.chunk_size:
                self._flush(st)

    def _flush(self, st: dict) -> None:
        if st["buffered"]:
            accumulate_gram(st["gram"], st["buffer"][: st["buffered"]], self.chunk_size, st["blocks"], self.gram_dtype)
            st["buffered"] = 0


# --------------------------------------------------------------------------------------------------------------------
# The pruner


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
                a list of token-id lists or tensors, or a 2-D tensor. Optional for `method="magnitude"`.
            resume_from_checkpoint: a `checkpoint-layer-XXX` directory, or `True` for the latest one in
                `config.output_dir`. The run continues after the last finished layer; the result equals that of an
                uninterrupted run.

        Rows longer than the model's `max_position_embeddings` are refused (truncate them first).
        """
        cfg = self.config
        self._model = model
        torch.manual_seed(cfg.seed)
        layers, layers_name = find_decoder_layers(model)
        self._layers_name = layers_name
        num_layers = len(layers)
        pruned = resolve_layer_scope(cfg.layers, num_layers)
        if not pruned:
            raise ValueError(
                f"layers={cfg.layers!r} selects no decoder layer of a {num_layers}-layer model: choose another scope."
            )
        targets = resolve_targets(layers, pruned, cfg.targets, cfg.exclude)
        prune_head = bool(cfg.targets) and "lm_head" in cfg.targets and "lm_head" not in cfg.exclude
        if prune_head and lm_head_is_tied(model):
            raise ValueError(TIED_LM_HEAD_MESSAGE)
        if not any(targets.values()) and not prune_head:
            raise ValueError("targets/exclude leave no module to prune: loosen them.")
        self._check_divisibility(targets, model if prune_head else None)

        # Magnitude pruning reads calibration data only to measure the reconstruction error.
        needs_data = cfg.method != "magnitude" or (calibration is not None and cfg.reconstruction_error)
        rows = None
        if needs_data:
            if calibration is None:
                raise ValueError(f"method={cfg.method!r} needs calibration data: pass a Dataset with 'input_ids'.")
            rows = _as_rows(calibration, need_prompt_length=cfg.token_mask != "all")
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
            calibration_fingerprint=_fingerprint(rows) if rows else None,
            is_world_process_zero=self._dist.is_main,
            world_size=self._dist.world_size,
        )
        self.control = PrunerControl()
        start_layer = 0
        self._unsaved_layers: list[int] = []
        backup = _WeightBackup()
        was_training = model.training
        model.eval()
        try:
            if resume_from_checkpoint:
                start_layer = self._resume(model, layers, targets, resume_from_checkpoint, backup) + 1
            with _fp32_statistics():
                if rows is None:
                    self._prune_without_data(model, layers, targets, pruned, start_layer, num_run, prune_head, backup)
                else:
                    self._prune_sequential(
                        model, layers, targets, pruned, rows, start_layer, num_run, prune_head, backup
                    )
        except BaseException:
            if cfg.restore_on_error and backup:
                self._restore(model, backup)
                logger.error("Pruning failed; the %d modified weights were restored.", len(backup))
            raise
        finally:
            backup.close()
            model.train(was_training)
        return model

    # ----------------------------------------------------------------------------------------------------------------
    # Validation

    def _check_divisibility(self, targets: dict[int, dict[str, nn.Linear]], head_model) -> None:
        nm = self.config.nm
        if nm is None:
            return
        mods = [(f"{self._layers_name}.{i}.{n}", m) for i, ms in targets.items() for n, m in ms.items()]
        if head_model is not None:
            mods.append(("lm_head", head_model.get_output_embeddings()))
        for name, m in mods:
            if m.in_features % nm[1]:
                raise ValueError(
                    f"{name} has {m.in_features} input features, not divisible by M={nm[1]} for "
                    f"sparsity_type={self.config.sparsity_type!r}: exclude it or choose another pattern."
                )

    def _check_rows(self, model: nn.Module, rows: list[_Row]) -> None:
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
                raise ValueError(
                    f"Calibration row {i} holds token id {int(r.input_ids.max())} outside the model's vocabulary of "
                    f"{vocab}: tokenize the calibration data with this model's tokenizer."
                )
        if self.config.token_mask != "all" and sum(self._stat_tokens(r) for r in rows) == 0:
            raise ValueError(
                f"token_mask={self.config.token_mask!r} selects no token of the calibration rows (check prompt_length)."
            )

    def _stat_tokens(self, r: _Row) -> int:
        if self.config.token_mask == "all":
            return r.input_ids.numel()
        return r.prompt_length if self.config.token_mask == "prompt" else r.input_ids.numel() - r.prompt_length

    # ----------------------------------------------------------------------------------------------------------------
    # The loop

    def _compute_device(self, layers: nn.ModuleList) -> torch.device:
        return torch.device(self.config.device) if self.config.device else module_device(layers[0])

    def _prune_without_data(self, model, layers, targets, pruned, start_layer, num_run, prune_head, backup):
        """Magnitude pruning with no calibration data: no forward pass at all."""
        device = self._compute_device(layers)
        self._event("on_prune_begin")
        for i in range(start_layer, num_run):
            self._event("on_layer_begin", layer_index=i)
            modules = {f"{self._layers_name}.{i}.{n}": m for n, m in targets.get(i, {}).items()}
            if prune_head and i == num_run - 1:
                head = model.get_output_embeddings()
                modules[next(n for n, m in model.named_modules() if m is head)] = head
            layer_metrics = {}
            for full, module in modules.items():
                layer_metrics[full] = self._solve_module(full, module, None, device, backup, {})
                self._event("on_module_pruned", layer_index=i, name=full, metrics=layer_metrics[full])
            self._end_layer(model, i, layer_metrics, targets)
            if self.control.should_stop:
                break
        self._finish()

    def _prune_sequential(self, model, layers, targets, pruned, rows, start_layer, num_run, prune_head, backup):
        cfg = self.config
        device = self._compute_device(layers)
        storage = torch.device("cpu") if cfg.offload_activations else device
        pin = cfg.offload_activations and device.type == "cuda"
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
        dist = self._dist
        if self._need_sample():
            _assign_error_sample(rows, cfg.token_mask, cfg.error_sample_tokens, cfg.seed)
        if dist.enabled:  # this process's contiguous shard of the rows
            shard = balanced_contiguous_split([r.input_ids.numel() for r in rows], dist.world_size)[dist.rank]
            rows = [rows[j] for j in shard]
        batches = _make_batches(rows, cfg.batch_size, cfg.token_mask, pad_id)
        num_tokens = torch.tensor([sum(b.num_stat_tokens for b in batches)], dtype=torch.int64)
        self.state.num_tokens = int(dist.all_reduce_sum_(num_tokens).item())

        self._capture(model, layers, batches, num_run, storage, pin)
        # Replay the layers finished before a resume: same code path, so activations are bit-identical.
        for i in range(start_layer):
            original_device = module_device(layers[i])
            self._propagate(layers[i].to(device), i, batches, device, storage)
            layers[i].to(original_device)

        self._event("on_prune_begin")
        for i in range(start_layer, num_run):
            self._event("on_layer_begin", layer_index=i)
            layer = layers[i]
            original_device = module_device(layer)
            layer.to(device)
            layer_metrics = {}
            modules = targets.get(i, {}) if i in pruned else {}
            if modules:
                stats = self._collect(layer, i, modules, batches, device)
                self._event("on_stats_collected", layer_index=i, num_tokens=self.state.num_tokens)
                layer_metrics = self._solve_layer(i, modules, stats, device, backup)
                del stats
            self._propagate(layer, i, batches, device, storage)
            layer.to(original_device)
            if prune_head and i == num_run - 1:
                layer_metrics.update(self._prune_lm_head(model, batches, device, backup))
            self._end_layer(model, i, layer_metrics, targets)
            if self.control.should_stop:
                break
        for b in batches:
            b.hidden, b.layer_inputs = None, None
        self._finish()

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

    def _capture(self, model, layers, batches, num_run, storage, pin):
        """Record the inputs of layers 0..num_run-1 for every batch, running only what comes before layer 0."""
        captured: dict[int, tuple] = {}
        originals = {}

        def recorder(idx):
            def forward(*args, **kwargs):
                if args:
                    hidden, rest = args[0], args[1:]
                else:
                    hidden, rest = kwargs.pop("hidden_states"), ()
                captured[idx] = (hidden, rest, kwargs)
                if idx == num_run - 1:
                    raise _StopCapture
                return hidden

            return forward

        for i in range(num_run):
            originals[i] = layers[i].__dict__.get("forward")
            layers[i].forward = recorder(i)
        embed_device = module_device(model.get_input_embeddings()) if hasattr(model, "get_input_embeddings") else None
        finite = []
        try:
            for b in batches:
                captured.clear()
                ids = b.input_ids.to(embed_device)
                mask = b.attention_mask.to(embed_device) if b.attention_mask is not None else None
                try:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _StopCapture:
                    pass
                if len(captured) != num_run:
                    raise RuntimeError(
                        f"Only {len(captured)} of {num_run} decoder layers were called during the capture forward: "
                        "the model's forward does not run its decoder-layer stack in order."
                    )
                memo: dict = {}
                b.hidden = _to_device(captured[0][0].detach(), storage, memo, pin)
                b.layer_inputs = {
                    i: (_to_device(rest, storage, memo, pin), _to_device(kw, storage, memo, pin))
                    for i, (_, rest, kw) in captured.items()
                }
                finite.append(self._finite_flag(b.hidden, b))
        finally:
            captured.clear()
            for i, fwd in originals.items():
                if fwd is None:
                    layers[i].__dict__.pop("forward", None)
                else:
                    layers[i].forward = fwd
        self._raise_if_non_finite(finite, "the embeddings (input of decoder layer 0)")

    def _run_layer(self, layer, i, batch, device):
        rest, kwargs = batch.layer_inputs[i]
        memo: dict = {}
        out = layer(
            batch.hidden.to(device, non_blocking=True),
            *_to_device(rest, device, memo),
            **_to_device(kwargs, device, memo),
        )
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def _need_gram(self) -> bool:
        cfg = self.config
        return cfg.method in ("sparsegpt", "alps") or (cfg.reconstruction_error and not cfg.error_sample_tokens)

    def _need_sample(self) -> bool:
        """Whether the reconstruction error is estimated from a token sample (the method needs no XᵀX)."""
        cfg = self.config
        return cfg.reconstruction_error and bool(cfg.error_sample_tokens) and not self._need_gram()

    def _collect(self, layer, i, modules, batches, device):
        method = self.config.method
        finite = []
        cfg = self.config
        stats = _LayerStats(modules, self._need_gram(), method == "wanda", cfg.chunk_size, True, cfg.gram_dtype,
                            self._need_sample())  # fmt: skip
        with stats:
            for b in batches:
                stats.begin_batch(b.stat_mask, b.sample_index)
                try:
                    out = self._run_layer(layer, i, b, device)
                except _StopLayer:
                    continue
                finite.append(self._finite_flag(out, b))  # the first batch runs the whole layer
                del out
        stats.finalize()
        self._raise_if_non_finite(finite + stats.finite_flags(), f"decoder layer {i}")
        self._reduce_stats(stats, f"decoder layer {i}")
        return stats

    def _reduce_stats(self, stats: _LayerStats, where: str) -> None:
        """Sum the statistics of every process (all of them then hold the statistics of all the rows)."""
        dist = self._dist
        if not dist.enabled:
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

    def _propagate(self, layer, i, batches, device, storage):
        finite = []
        for b in batches:
            out = self._run_layer(layer, i, b, device)
            finite.append(self._finite_flag(out, b))
            if b.hidden.is_pinned() and b.hidden.shape == out.shape and b.hidden.dtype == out.dtype:
                # The input was already copied to the device earlier on this stream, so its pinned buffer can take the
                # output asynchronously: no pageable copy, no synchronisation per batch.
                b.hidden.copy_(out, non_blocking=True)
            else:
                b.hidden = out.to(storage)
        self._raise_if_non_finite(finite, f"decoder layer {i}")
        if device.type == "cuda" and storage.type == "cpu":
            torch.cuda.synchronize(device)  # the host buffers are complete before anyone reads them

    @staticmethod
    def _finite_flag(hidden: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """A device-side flag (no synchronisation): whether the non-padding activations are all finite."""
        h = hidden
        if batch.attention_mask is not None:
            h = hidden[batch.attention_mask.to(hidden.device).bool()]
        return torch.isfinite(h).all()

    def _raise_if_non_finite(self, flags: list[torch.Tensor], where: str) -> None:
        bad = bool(flags) and not bool(torch.stack([f.to(flags[0].device) for f in flags]).all())
        if self._dist.any(bad):  # every process raises together
            raise NonFiniteActivationError(
                f"Non-finite activations (NaN or inf) at the output of {where}: the model overflows on the calibration "
                "data. Load it in bfloat16 or float32 instead of float16, and check the calibration rows."
            )

    # ----------------------------------------------------------------------------------------------------------------
    # Solving

    def _solve_layer(self, i, modules, stats: _LayerStats, device, backup) -> dict[str, dict]:
        items = []
        for name, module in modules.items():
            leader = stats.leader.get(name)
            if leader is None:
                raise RuntimeError(
                    f"{self._layers_name}.{i}.{name} was never called during the forward pass of its layer, so it has "
                    "no statistics: exclude it from the targets."
                )
            items.append((f"{self._layers_name}.{i}.{name}", module, stats.stats[leader], leader))
        return self._solve_items(i, items, device, backup)

    def _solve_cost(self, module: nn.Module) -> float:
        """Rough relative cost of solving one module, to balance the solves across processes."""
        rows, cols = module.weight.shape
        if self.config.method == "sparsegpt":  # the column loop, then the Cholesky factors
            return cols * (rows + 256) * self.config.block_size + cols**3 / 3
        if self.config.method == "alps":  # ADMM iterations in the eigenbasis, then the eigendecomposition
            return rows * cols * cols * 4 + 4 * cols**3
        return rows * cols

    def _solve_items(self, layer_index, items, device, backup) -> dict[str, dict]:
        """Solve `(full_name, module, stats, leader)` items; across processes when there are several."""
        dist = self._dist
        metrics: dict[str, dict] = {}
        if not dist.enabled:
            shared: dict[str, Any] = {}
            for full, module, st, leader in items:
                metrics[full] = self._solve_module(full, module, st, device, backup, shared, leader)
                self._event("on_module_pruned", layer_index=layer_index, name=full, metrics=metrics[full])
            return metrics
        # Modules that share an input (q/k/v, gate/up) stay on one process: ALPS shares their factorisation.
        groups: dict[str, list[int]] = {}
        for k, item in enumerate(items):
            groups.setdefault(item[3], []).append(k)
        leaders = list(groups)
        costs = [sum(self._solve_cost(items[k][1]) for k in groups[lead]) for lead in leaders]
        owners = assign_by_cost(costs, dist.world_size)
        owner = {k: owners[g] for g, lead in enumerate(leaders) for k in groups[lead]}
        local: dict[str, dict] = {}
        failure = None
        shared = {}
        for k, (full, module, st, leader) in enumerate(items):
            if self.config.restore_on_error and full not in backup:
                backup[full] = module.weight
            if owner[k] != dist.rank or failure is not None:
                continue
            try:
                local[full] = self._solve_module(full, module, st, device, backup, shared, leader)
            except Exception as exc:  # noqa: BLE001 - re-raised below, on every process
                failure = exc
        reports = dist.all_gather_object(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        for rank, report in enumerate(reports):
            if report is not None:
                raise RuntimeError(f"Process {rank} failed while solving layer {layer_index}: {report}")
        for k, (_, module, _, _) in enumerate(items):
            dist.broadcast_(module.weight.data, src=owner[k])
        for part in dist.all_gather_object(local):
            metrics.update(part)
        for k, (full, *_) in enumerate(items):
            metrics[full]["process"] = owner[k]
            self.state.module_metrics[full] = metrics[full]
            self._event("on_module_pruned", layer_index=layer_index, name=full, metrics=metrics[full])
        return {full: metrics[full] for full, *_ in items}

    def _solve_module(self, full, module, st, device, backup, shared, leader=None) -> dict:
        cfg = self.config
        if cfg.restore_on_error and full not in backup:
            backup[full] = module.weight
        t0 = time.perf_counter()
        weight = module.weight.detach().to(device=device, dtype=torch.float32, copy=True)
        info = None
        if cfg.method == "magnitude":
            new = magnitude_prune(weight, cfg.sparsity, cfg.nm)
        elif cfg.method == "wanda":
            new = wanda_prune(weight, st["sq"], st["count"], cfg.sparsity, cfg.nm)
        elif cfg.method == "sparsegpt":
            new, info = sparsegpt_prune(
                weight, st["gram"], st["count"], cfg.sparsity, cfg.nm, cfg.block_size, cfg.dampening
            )
        else:
            factors = shared.get(("alps", leader))
            if factors is None:
                factors = shared[("alps", leader)] = alps_factors(st["gram"], cfg.dampening)
            new, info = alps_prune(
                weight,
                None,
                cfg.sparsity,
                cfg.nm,
                rho=cfg.alps_rho,
                max_iter=cfg.alps_max_iter,
                update_iter=cfg.alps_update_iter,
                switch_iter=cfg.alps_switch_iter,
                cg_iters=cfg.alps_cg_iters,
                factors=factors,
            )
        module.weight.data.copy_(new.to(module.weight.dtype))
        seconds = time.perf_counter() - t0
        final = module.weight.detach()
        result = {
            "sparsity": float((final == 0).sum()) / final.numel(),
            "seconds": seconds,
            "shape": list(final.shape),
            "error": None,
        }
        if st is not None and cfg.reconstruction_error:
            if st.get("gram") is not None:
                result["error"] = relative_reconstruction_error(weight, final.to(device), st["gram"])
                result["error_tokens"] = st["count"]
            elif st.get("sample") is not None:
                result["error"] = sampled_reconstruction_error(weight, final.to(device), st["sample"])
                result["error_tokens"] = st["sample"].shape[0]
        if info is not None:
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
        self.state.module_metrics[full] = result
        return result

    def _prune_lm_head(self, model, batches, device, backup) -> dict[str, dict]:
        head = model.get_output_embeddings()
        norm = find_final_norm(model, self._layers_name)
        head_device, norm_device = module_device(head), module_device(norm)
        head.to(device)
        norm.to(device)
        cfg = self.config
        stats = _LayerStats({"lm_head": head}, self._need_gram(), cfg.method == "wanda", cfg.chunk_size,
                            gram_dtype=cfg.gram_dtype, need_sample=self._need_sample())  # fmt: skip
        for b in batches:
            stats.begin_batch(b.stat_mask, b.sample_index)
            # Only the statistics of lm_head's input are needed, not the logits.
            stats.observe("lm_head", norm(b.hidden.to(device)))
        stats.finalize()
        self._reduce_stats(stats, "lm_head")
        name = next(n for n, m in model.named_modules() if m is head)
        result = self._solve_items(None, [(name, head, stats.stats["lm_head"], "lm_head")], device, backup)
        head.to(head_device)
        norm.to(norm_device)
        return result

    # ----------------------------------------------------------------------------------------------------------------
    # Checkpoints

    def _layer_weights(self, model, layer_indices, targets) -> dict[str, torch.Tensor]:
        out = {}
        for i in layer_indices:
            for name, module in targets.get(i, {}).items():
                out[f"{self._layers_name}.{i}.{name}.weight"] = module.weight.detach().to("cpu").contiguous()
        if self.state.layer_index == self.state.num_layers - 1:
            head = model.get_output_embeddings()
            for name, m in model.named_modules():
                if m is head and f"{name}" in self.state.module_metrics:
                    out[f"{name}.weight"] = head.weight.detach().to("cpu").contiguous()
        return out

    def _save_checkpoint(self, model, layer_index, targets) -> str | None:
        from safetensors.torch import save_file

        if not self.state.is_world_process_zero or not self.config.output_dir:
            return None
        os.makedirs(self.config.output_dir, exist_ok=True)
        final = os.path.join(self.config.output_dir, f"{CHECKPOINT_PREFIX}{layer_index:03d}")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        weights = self._layer_weights(model, self._unsaved_layers, targets)
        save_file(weights, os.path.join(tmp, WEIGHTS_NAME), metadata={"layers": json.dumps(self._unsaved_layers)})
        self.state.save_to_json(os.path.join(tmp, PRUNER_STATE_NAME))
        with open(os.path.join(tmp, PRUNING_CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(self.config.to_json_string())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a checkpoint directory exists only once it is complete
        self._unsaved_layers = []
        return final

    @staticmethod
    def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
        """Complete checkpoints in `output_dir`, as `(layer_index, path)` sorted by layer."""
        found = []
        for path in glob.glob(os.path.join(output_dir, f"{CHECKPOINT_PREFIX}*")):
            m = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", os.path.basename(path))
            if m and os.path.isfile(os.path.join(path, PRUNER_STATE_NAME)):
                found.append((int(m.group(1)), path))
        return sorted(found)

    def _resume(self, model, layers, targets, resume_from_checkpoint, backup) -> int:
        from safetensors.torch import load_file

        cfg = self.config
        if resume_from_checkpoint is True:
            if not cfg.output_dir:
                raise ValueError("resume_from_checkpoint=True needs config.output_dir to look for checkpoints.")
            checkpoints = self.list_checkpoints(cfg.output_dir)
            if not checkpoints:
                raise ValueError(f"No checkpoint-layer-XXX directory in {cfg.output_dir} to resume from.")
            path = checkpoints[-1][1]
        else:
            path = str(resume_from_checkpoint)
            if not os.path.isfile(os.path.join(path, PRUNER_STATE_NAME)):
                raise ValueError(f"{path} is not a pruning checkpoint (no {PRUNER_STATE_NAME}).")
        with open(os.path.join(path, PRUNING_CONFIG_NAME), encoding="utf-8") as f:
            saved_cfg = PruningConfig.from_dict(json.load(f))
        if saved_cfg.numerics_dict() != cfg.numerics_dict():
            diff = {
                k: (v, cfg.numerics_dict()[k])
                for k, v in saved_cfg.numerics_dict().items()
                if cfg.numerics_dict()[k] != v
            }
            raise ValueError(f"Cannot resume from {path}: its pruning config differs (saved, now): {diff}.")
        saved = PrunerState.load_from_json(os.path.join(path, PRUNER_STATE_NAME))
        if saved.calibration_fingerprint != self.state.calibration_fingerprint:
            raise ValueError(f"Cannot resume from {path}: it was made with different calibration data.")
        root = os.path.dirname(os.path.abspath(path))
        upto = saved.layer_index
        params = dict(model.named_parameters())
        for idx, ckpt in self.list_checkpoints(root):
            if idx > upto:
                continue
            for key, tensor in load_file(os.path.join(ckpt, WEIGHTS_NAME)).items():
                if key not in params:
                    raise ValueError(f"Checkpoint {ckpt} holds {key}, which this model does not have.")
                module_name = key[: -len(".weight")]
                if cfg.restore_on_error and module_name not in backup:
                    backup[module_name] = params[key]
                params[key].data.copy_(tensor.to(params[key].device))
        saved.is_world_process_zero = self.state.is_world_process_zero
        saved.finished = False
        self.state = saved
        self._unsaved_layers = []
        logger.info("Resumed from %s: layers 0..%d are done.", path, upto)
        return upto

    def _restore(self, model, backup):
        modules = dict(model.named_modules())
        for name, tensor in backup.items():
            modules[name].weight.data.copy_(tensor.to(modules[name].weight.device))
