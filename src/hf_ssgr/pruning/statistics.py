"""Statistics of one decoder layer: forward pre-hooks that accumulate, per distinct input, `XᵀX`, squared channel
norms and the error-estimate sample, in float32 with TF32 off."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import torch
from torch import nn

from .experts import expert_input_projection, expert_intermediate, routed_output, routing_inputs
from .kernels import accumulate_gram, accumulate_sq_norms, all_finite, complete_gram
from .solvers import ModuleStats
from .targets import Target

__all__ = ["LayerStats", "StopLayer", "fp32_statistics", "GRAM_UPPER_BLOCKS", "GRAM_BLOCKS_MIN_DIM", "EXPERT_TOKENS"]

EXPERT_TOKENS = ("routed", "all_tokens")

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

    An `nn.Linear` target is observed through a pre-hook on it. The projections of a fused experts module are observed
    through one pre-hook on the module, which reads the routing it is called with: expert e's input projection sees
    the tokens routed to e (every token with `expert_tokens="all_tokens"`, for the statistics only: the forward
    still follows the router), and its `down_proj` the input the module computes from them. On the first batch the
    module's output is checked against the pruner's reading of it (`experts.py`).

    The first batch runs the whole layer. When it called every target exactly once, later batches stop the forward
    as soon as every target has been observed (`stop_early`): nothing after the last target's input feeds a
    statistic. Layers that skip or repeat targets (experts as separate `nn.Linear`s) always run whole. Tokens for
    an `nn.Linear`'s `XᵀX` are gathered into a buffer of `chunk_size` rows before each product: one large product
    instead of one per short row, which matters on a CPU, where every product reads and writes the whole float32
    accumulator.
    """

    def __init__(self, modules: dict[str, Target | nn.Module], need_gram: bool, need_sq: bool, chunk_size: int,
                 stop_early: bool = False, gram_dtype: str = "float32", need_sample: bool = False,
                 expert_tokens: str = "routed", verified: set | None = None):  # fmt: skip
        self.modules = {n: t if isinstance(t, Target) else Target(n, t, f"{n}.weight") for n, t in modules.items()}
        self.need_gram, self.need_sq, self.chunk_size = need_gram, need_sq, chunk_size
        self.need_sample = need_sample  # keep the inputs at the batches' `sample_index` (the error estimate)
        self._sample_index: torch.Tensor | None = None
        self.stop_early = stop_early
        self.gram_dtype = gram_dtype
        self._gram_type = torch.float64 if gram_dtype == "float64" else torch.float32  # the accumulator's
        self.expert_tokens = expert_tokens
        self._verified = verified if verified is not None else set()  # experts modules whose reading was checked
        self.leader: dict[str, str] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._seen: list[tuple[weakref.ref, str]] = []
        self._mask: torch.Tensor | None = None
        self._handles = []
        self._called: list[str] = []  # targets called in this batch, in order
        self._can_stop: bool | None = None  # learnt on the first, complete, batch
        self._pending_check: dict[int, tuple] = {}

    def __enter__(self):
        experts: dict[int, list[Target]] = {}
        for name, t in self.modules.items():
            if t.expert is None:
                self._handles.append(t.module.register_forward_pre_hook(self._hook(name)))
            else:
                experts.setdefault(id(t.module), []).append(t)
        for group in experts.values():
            module = group[0].module
            self._handles.append(module.register_forward_pre_hook(self._experts_hook(group), with_kwargs=True))
            if id(module) not in self._verified:
                self._handles.append(module.register_forward_hook(self._experts_check(group), with_kwargs=True))
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

    def round_to_float32(self) -> None:
        """Round float64 XᵀX sums (`gram_dtype="float64"`, after the all-reduce) to the float32 the solvers take."""
        for st in self.stats.values():
            if st["gram"] is not None and st["gram"].dtype == torch.float64:
                st["gram"] = st["gram"].to(torch.float32)

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
            self._maybe_stop()

        return hook

    def _maybe_stop(self) -> None:
        if self.stop_early and self._can_stop and len(set(self._called)) == len(self.modules):
            raise StopLayer

    def _experts_hook(self, group: list[Target]):
        by_expert: dict[int, list[Target]] = {}
        for t in group:
            by_expert.setdefault(t.expert, []).append(t)
        in_attr = expert_input_projection(group[0].module)

        def hook(module, args, kwargs):
            x, index, weights = routing_inputs(module, args, kwargs)
            flat = x.detach().reshape(-1, x.shape[-1])
            index = index.reshape(flat.shape[0], -1)
            for e, ts in by_expert.items():
                if self.expert_tokens == "all_tokens":  # one tensor for all: their input projections share XᵀX
                    tok, xe = None, flat
                else:
                    tok = (index == e).any(-1).nonzero().squeeze(1)
                    xe = flat[tok]
                for t in ts:
                    rows = xe if t.projection == in_attr else expert_intermediate(module, xe, e)
                    self.observe(t.name, rows, token_index=tok, buffered=False)
                    self._called.append(t.name)
            if id(module) not in self._verified:
                self._pending_check[id(module)] = (flat, index, weights.reshape(flat.shape[0], -1))
            else:
                self._maybe_stop()

        return hook

    def _experts_check(self, group: list[Target]):
        name = group[0].param_name.rsplit(".", 1)[0]

        def hook(module, args, kwargs, output):
            if id(module) not in self._pending_check:  # checked on an earlier batch already
                return
            flat, index, weights = self._pending_check.pop(id(module))
            actual = output[0] if isinstance(output, (tuple, list)) else output
            actual = actual.detach().reshape(flat.shape[0], -1).float()
            mine = routed_output(module, flat, index, weights).float()
            diff = float((mine - actual).norm() / actual.norm().clamp_min(1e-30))
            tol = 1e-3 if flat.dtype == torch.float32 else 3e-2
            if diff > tol:
                raise RuntimeError(
                    f"{name} ({type(module).__name__}): the pruner's reading of its experts does not reproduce its "
                    f"output (relative difference {diff:.2e}), so the statistics of its experts would be wrong. Its "
                    "forward departs from transformers' experts interface; leave its experts dense with exclude=[...]."
                )
            self._verified.add(id(module))

        return hook

    def observe(self, name: str, x: torch.Tensor, token_index: torch.Tensor | None = None,
                buffered: bool = True) -> None:  # fmt: skip
        """Add the input `x` of module `name` unless a module already added this very tensor in this batch.

        `token_index`: the batch's tokens (positions in its flattened tokens) that the rows of `x` are, when they are
        not all of them (an expert's routed tokens). `buffered=False` multiplies the rows at once instead of
        gathering them into a `chunk_size` buffer (an expert's rows: one buffer for each of 2E inputs would not fit).
        """
        for ref, leader in self._seen:
            if ref() is x:
                self._assign(name, leader)
                return
        self._assign(name, name)
        self._seen.append((weakref.ref(x), name))
        flat = x.detach().reshape(-1, x.shape[-1])
        sample = None
        if self.need_sample and self._sample_index is not None and self._sample_index.numel():
            where = self._sample_index.to(flat.device)
            sample = flat[where] if token_index is None else flat[torch.isin(token_index, where)]
        if self._mask is not None:
            mask = self._mask.to(flat.device)
            flat = flat[mask if token_index is None else mask[token_index]]
        st = self.stats.get(name)
        if st is None:
            d = flat.shape[-1]
            st = self.stats[name] = {
                "gram": torch.zeros(d, d, dtype=self._gram_type, device=flat.device) if self.need_gram else None,
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
        if self.need_gram and not buffered:
            if flat.shape[0]:
                accumulate_gram(st["gram"], flat, self.chunk_size, st["blocks"], self.gram_dtype)
        elif self.need_gram:
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
