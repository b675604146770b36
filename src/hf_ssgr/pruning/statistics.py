"""Statistics of one decoder layer: forward pre-hooks that accumulate, per distinct input, `XᵀX`, squared channel
norms and the error-estimate sample, in float32 with TF32 off."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import torch
from torch import nn

from .kernels import accumulate_gram, accumulate_sq_norms, all_finite, complete_gram
from .solvers import ModuleStats

__all__ = ["LayerStats", "StopLayer", "fp32_statistics", "GRAM_UPPER_BLOCKS", "GRAM_BLOCKS_MIN_DIM"]

GRAM_UPPER_BLOCKS = 8
GRAM_BLOCKS_MIN_DIM = 1024  # below this the block loop costs more than it saves


@contextlib.contextmanager
def fp32_statistics():
    """TF32 off for the duration (statistics and solves in true float32)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class StopLayer(Exception):
    """Raised from a statistics hook once every input the statistics need has been seen: the rest of the layer's
    forward (down_proj's product, the residual) would be thrown away."""


class LayerStats:
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

    def module_stats(self, name: str) -> ModuleStats:
        """The statistics of the input that module `name` reads (after `finalize`, and the all-reduce if several
        processes share the run)."""
        st = self.stats[self.leader[name]]
        return ModuleStats(count=st["count"], gram=st["gram"], sq_norms=st["sq"], sample=st["sample"])

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
                raise StopLayer

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
