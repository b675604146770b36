"""The peak-memory and time model of `OneShotPruner`: what a run needs on the compute device, on the host and on disk,
and about how long it takes, before renting it.

With `d` the hidden size, `f` the MLP width, `a` the attention width (heads × head_dim), `h` the rotary width, `N`
rows of `T` tokens in batches of `B`, `b` bytes per weight/activation element (2 for bf16) and `P` parameters:

    device ≈ W + A + S + K + F
      W = P·b                       the model, when it lives on the device (one decoder layer when it is streamed)
      A = N·T·(d + 2h)·b            the cached inputs of the next layer (hidden states + rotary cos/sin), unless
                                    `offload_activations` keeps them on the host
      S = 4·(2d² + a² + f²)         float32 XᵀX of one layer: one per distinct input (q/k/v share one, gate/up one);
                                    Wanda and magnitude form none: their squared norms 4·(2d + a + f) and the
                                    error-estimate sample E·(2d + a + f)·b of E = `error_sample_tokens` tokens
                                    (the XᵀX again with `error_sample_tokens=0`)
      K = 4·(1.5·c² + 3·r·c)        the SparseGPT solve of the widest module (c input features, r rows: down_proj,
                                    c = f): the damped copy of the Hessian, factorised, inverted and reversed in place
                                    (the inverse's recursion needs two c/2 × c/2 temporaries), and float32 copies of
                                    the weight; ALPS 4·(6·c² + 3·r·c) (eigendecomposition, ADMM iterates); Wanda and
                                    magnitude 4·3·r·c
      F = B·T·(3f + 4d + 2a)·b      one batch through one layer (the MLP's gate, up and product dominate), plus the
          + 4·chunk·c               float32 chunk of the XᵀX accumulation, plus, when a batch holds fewer than
          + chunk·(2d + a + f)·b    `chunk` tokens, the buffers that gather tokens into chunk-sized products

    host ≈ (P·b if the model is on the host) + (A if offloaded) + runtime

Mixtures of experts (`E` experts of width `e`, top `k`, `G` experts per statistics group, all of them unless
`moe_stats_memory_gb` bounds it): the layer's weights hold `E·3·d·e` of experts (plus shared experts and the
router), S holds the attention's `4·(d² + a²)`, the shared experts' `4·(d² + f²)` and the experts' `G·4·(d² + e²)`
(`4·d² + G·4·e²` with `moe_statistics="all_tokens"`, where every expert's input projection shares one XᵀX), and F
adds the routed activations, `B·T·k·(3e + d)·b`. Layers differ where the config says so (DeepSeek-V3's
`first_k_dense_replace` dense layers, Qwen-MoE's `mlp_only_layers` / `decoder_sparse_step`): every term is that of
the layer with the largest peak. Multi-head latent attention (DeepSeek-V3: `q_lora_rank`, `kv_lora_rank`,
`qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim`) has its own projections and distinct inputs (hidden,
q-latent, kv-latent, heads·v).

The copies that `restore_on_error` keeps to undo a failed run go to a temporary folder on disk (`R` below, in
bytes of disk, not memory).

Streamed (`streamed=True`, `OneShotPruner.prune_pretrained`): the skeleton is on the meta device; the device holds
one layer (W = the largest layer) and the terms above; the host holds the runtime, the resident weights (input
embeddings, the final norm, and `lm_head` only when it is pruned; tied weights once), the current layer while it is
loaded (its per-expert checkpoint tensors and their fused copy: two layers for a mixture of experts, one for a dense
layer, plus, when the checkpoint is stored in FP8, the float32 copy of the one tensor being dequantized) or written (its host copy and the serialised shard: two layers), and the activations when they
are offloaded. Disk written: the output checkpoint only (every weight in the compute dtype: an FP8 checkpoint is
written dequantized); nothing is backed up. With `world_size` processes (`torchrun`, one per GPU, `gpus_per_node`
per node): every process streams every layer and holds the resident weights itself, the calibration rows are split
(A per process ≈ 1/world_size), the statistics are all-reduced (S is whole on every process) and the solves dealt.
`host_bytes` is per process; `host_node_bytes` per node.

On a CPU the device and the host are the same memory. Attention masks are not counted: with right padding only
in the last rows of a batch and sdpa/flash attention, no 4-D mask is materialised for unpadded batches; padded
batches add B·T²·1 byte per layer call.

Time (`MemoryEstimate.time_terms`, every figure an **estimate**): each phase of a layer is a measured per-layer time
scaled by the work it does, from the runs in `benchmarks/measured/` (see `RATE_BASES` and `PlanAssumptions`):

    forward   ∝ tokens × (2 × active linear parameters + T × heads × (qk + v head dims))   (one pass, causal)
    XᵀX       ∝ Σ over distinct inputs of 2 × tokens seen × c²                                 (SparseGPT, ALPS)
    solve     ∝ Σ over target matrices of rows × cols²  (SparseGPT; ALPS and N:M by measured factors;
                Wanda and magnitude ∝ rows × cols)
    stats     = one forward per statistics group + XᵀX;  propagation = one more forward

plus reading the checkpoint and writing the output at an assumed disk bandwidth, layer and activation transfers
between host and GPU, FP8 dequantisation, and, with several processes, the all-reduce of the statistics and the
exchange of the solved weights at an assumed interconnect bandwidth. Forward, statistics and solves divide by the
number of processes; reading does not (each process reads every layer). Phases do not overlap.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .config import PruningConfig

__all__ = ["MemoryEstimate", "PlanAssumptions", "RATE_BASES", "estimate_prune_memory", "model_shape_summary"]

GIB = 1024**3


@dataclass
class MemoryEstimate:
    """Bytes per term (`terms`), the device and host totals, disk traffic and an estimated time (seconds per phase
    in `time_terms`; every time is an estimate scaled from measured rates, see `time_basis`)."""

    terms: dict[str, float] = field(default_factory=dict)
    device_bytes: float = 0.0
    host_bytes: float = 0.0
    device_terms: list[str] = field(default_factory=list)
    host_terms: list[str] = field(default_factory=list)
    disk_read_bytes: float = 0.0
    disk_written_bytes: float = 0.0
    time_terms: dict[str, float] = field(default_factory=dict)
    time_basis: str = ""
    streamed: bool = False
    world_size: int = 1
    processes_per_node: int = 1
    params: int = 0
    active_params: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def device_gib(self) -> float:
        return self.device_bytes / GIB

    @property
    def host_gib(self) -> float:
        return self.host_bytes / GIB

    @property
    def host_node_bytes(self) -> float:
        """Host memory of one node: every process on it holds its own `host_bytes`."""
        return self.host_bytes * self.processes_per_node

    @property
    def seconds(self) -> float:
        """The estimated wall time (an estimate: see `time_basis`)."""
        return sum(self.time_terms.values())

    def table(self) -> str:
        lines = ["| term | GiB | where |", "|---|---|---|"]
        for name, value in self.terms.items():
            where = ", ".join(
                w for w, terms in (("device", self.device_terms), ("host", self.host_terms)) if name in terms
            )
            lines.append(f"| {name} | {value / GIB:.2f} | {where} |")
        lines.append(f"| **device total** | **{self.device_gib:.2f}** | |")
        lines.append(f"| **host total** | **{self.host_gib:.2f}** | |")
        lines.append(f"| disk read (per process) | {self.disk_read_bytes / GIB:.2f} | disk |")
        lines.append(f"| disk written | {self.disk_written_bytes / GIB:.2f} | disk |")
        lines.append(f"| estimated time (s) | {self.seconds:.0f} | {self.time_basis} |")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Shapes


def _get(config: Any, name: str, default=None):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


@dataclass
class _Linear:
    """A pruned matrix of a decoder layer: `rows` outputs, `cols` inputs; modules with the same `input` share one
    XᵀX; `count` experts of that shape, each seeing the tokens routed to it when `routed`."""

    rows: int
    cols: int
    input: str
    count: int = 1
    routed: bool = False


@dataclass
class _Layer:
    """One kind of decoder layer (`count` of them in the model)."""

    count: int
    linears: list[_Linear]
    other: int  # parameters that are no target: norms, biases, routers, sinks
    mlp: int  # the dense MLP's (or the shared experts') width, 0 if none
    experts: int = 0
    expert_mlp: int = 0
    top_k: int = 0

    @property
    def linear_params(self) -> int:
        return sum(lin.rows * lin.cols * lin.count for lin in self.linears)

    @property
    def params(self) -> int:
        return self.linear_params + self.other

    @property
    def expert_params(self) -> int:
        return sum(lin.rows * lin.cols * lin.count for lin in self.linears if lin.routed)

    _hidden: int = 0


@dataclass
class _ModelShape:
    """The sizes the memory and time model needs, read from a transformers config."""

    hidden: int
    heads: int
    qk_dim: int  # per head, queries and keys
    v_dim: int  # per head, values
    rope_dim: int  # the rotary cos/sin width
    attention: int  # the widest attention projection (F term)
    kinds: list[_Layer]
    embed: int  # input embeddings
    head: int  # lm_head when it is not tied (0 if tied)
    final_norm: int
    stored_fp8: bool = False
    model_type: str | None = None

    @property
    def layers(self) -> int:
        return sum(k.count for k in self.kinds)

    @property
    def params(self) -> int:
        return sum(k.count * k.params for k in self.kinds) + self.embed + self.head + self.final_norm

    @property
    def active_params(self) -> float:
        """Parameters a token goes through (routed experts counted `top_k` of `experts`; input embeddings, a
        lookup, not counted)."""
        inactive = sum(k.count * k.expert_params * (1 - k.top_k / k.experts) for k in self.kinds if k.experts)
        return self.params - inactive - self.embed

    @classmethod
    def of(cls, config: Any) -> _ModelShape:
        _check_sizes(config)
        d = _get(config, "hidden_size")
        layers, heads = _get(config, "num_hidden_layers"), _get(config, "num_attention_heads")
        if not (d and layers and heads):
            raise ValueError("The model config needs hidden_size, num_hidden_layers and num_attention_heads.")
        model_type = _get(config, "model_type")
        kv = _get(config, "num_key_value_heads", heads) or heads
        hd = _get(config, "head_dim", None) or d // heads
        bias = bool(_get(config, "attention_bias", False))
        attn: list[_Linear] = []
        other = 2 * d  # the two norms of a decoder layer
        kv_rank = _get(config, "kv_lora_rank", None)
        if kv_rank:  # multi-head latent attention (DeepSeek-V2/V3)
            nope, rope = _get(config, "qk_nope_head_dim"), _get(config, "qk_rope_head_dim")
            v = _get(config, "v_head_dim")
            qk, q_rank = nope + rope, _get(config, "q_lora_rank", None)
            if q_rank:
                attn += [_Linear(q_rank, d, "attn_in"), _Linear(heads * qk, q_rank, "q_latent")]
                other += q_rank + (q_rank if bias else 0)
            else:
                attn += [_Linear(heads * qk, d, "attn_in")]
                other += heads * qk if bias else 0
            attn += [_Linear(kv_rank + rope, d, "attn_in"), _Linear(heads * (nope + v), kv_rank, "kv_latent"),
                     _Linear(d, heads * v, "attn_out")]  # fmt: skip
            other += kv_rank + ((kv_rank + rope) + d if bias else 0)
            qk_dim, v_dim, rope_dim, width = qk, v, rope, max(heads * qk, heads * v)
        else:
            a, akv = heads * hd, kv * hd
            attn += [_Linear(a, d, "attn_in"), _Linear(akv, d, "attn_in"), _Linear(akv, d, "attn_in"),
                     _Linear(d, a, "attn_out")]  # fmt: skip
            if model_type == "qwen2" or (model_type == "qwen2_moe" and _get(config, "qkv_bias", True)):
                other += a + 2 * akv
            elif bias:
                other += a + 2 * akv + d
            if model_type in ("qwen3", "qwen3_moe") or _get(config, "use_qk_norm", False):
                other += 2 * hd
            elif model_type == "olmoe":
                other += a + akv
            if model_type == "gpt_oss":
                other += heads  # attention sinks
            rope_dim = int(hd * (_get(config, "partial_rotary_factor", 1.0) or 1.0))
            qk_dim = v_dim = hd
            width = a
        experts = next((_get(config, k) for k in ("num_experts", "num_local_experts", "n_routed_experts")
                        if _get(config, k)), 0)  # fmt: skip
        f = _get(config, "intermediate_size")
        kinds: list[_Layer] = []
        dense_layer = _Layer(0, [*attn, _Linear(f, d, "mlp_in"), _Linear(f, d, "mlp_in"), _Linear(d, f, "mlp_down")],
                             other, f, _hidden=d)  # fmt: skip
        if experts:
            e = _get(config, "moe_intermediate_size", None) or f
            k = _get(config, "num_experts_per_tok", 1) or 1
            shared = _get(config, "shared_expert_intermediate_size", 0) or e * (
                _get(config, "n_shared_experts", 0) or 0
            )
            moe = [*attn, _Linear(2 * e, d, "expert_in", experts, True), _Linear(d, e, "expert_mid", experts, True)]
            moe_other = other + experts * d  # the router
            if shared:
                moe += [_Linear(shared, d, "mlp_in"), _Linear(shared, d, "mlp_in"), _Linear(d, shared, "mlp_down")]
                if _get(config, "shared_expert_intermediate_size", 0):
                    moe_other += d  # shared_expert_gate
            if model_type == "gpt_oss":
                moe_other += experts * (2 * e + d) + experts  # the experts' and the router's biases
            moe_layer = _Layer(0, moe, moe_other, shared, experts, e, k, _hidden=d)
            is_moe = [_is_moe_layer(config, i) for i in range(layers)]
            n_moe = sum(is_moe)
            if n_moe:
                moe_layer.count = n_moe
                kinds.append(moe_layer)
            if layers - n_moe:
                dense_layer.count = layers - n_moe
                kinds.append(dense_layer)
        else:
            dense_layer.count = layers
            kinds.append(dense_layer)
        vocab = _get(config, "vocab_size")
        tied = bool(_get(config, "tie_word_embeddings", False))
        quant = _get(config, "quantization_config", None) or {}
        quant = quant if isinstance(quant, dict) else quant.to_dict()
        fp8 = quant.get("quant_method") == "fp8" or (
            quant.get("quant_method") == "compressed-tensors" and quant.get("format") == "float-quantized"
        )
        return cls(d, heads, qk_dim, v_dim, rope_dim, width, kinds, vocab * d, 0 if tied else vocab * d, d, fp8,
                   model_type)  # fmt: skip


def _is_moe_layer(config: Any, i: int) -> bool:
    if _get(config, "first_k_dense_replace", None) is not None:  # DeepSeek-V3, GLM-4-MoE
        freq = _get(config, "moe_layer_freq", 1) or 1
        return i >= _get(config, "first_k_dense_replace") and i % freq == 0
    if i in (_get(config, "mlp_only_layers", None) or []):  # Qwen-MoE
        return False
    step = _get(config, "decoder_sparse_step", 1) or 1
    return (i + 1) % step == 0


def model_shape_summary(config: Any) -> dict[str, Any]:
    """Parameter counts of a config as the memory model reads it: `params` (every parameter), `active_params`
    (those a token goes through, routed experts counted top-k of all, input embeddings not), `layers` (per kind:
    count, parameters, experts)."""
    shape = _ModelShape.of(config)
    return {
        "params": shape.params,
        "active_params": shape.active_params,
        "stored_fp8": shape.stored_fp8,
        "layers": [{"count": k.count, "params": k.params, "experts": k.experts} for k in shape.kinds],
    }


# ------------------------------------------------------------------------------------------------------------------
# Memory terms of one layer kind


def _distinct_inputs(kind: _Layer, moe_statistics: str) -> tuple[dict[str, int], dict[str, int]]:
    """The widths of the layer's distinct inputs: those every token reaches, and those of one expert."""
    shared: dict[str, int] = {}
    per_expert: dict[str, int] = {}
    for lin in kind.linears:
        if lin.routed and not (moe_statistics == "all_tokens" and lin.input == "expert_in"):
            per_expert[lin.input] = lin.cols
        else:
            shared[lin.input] = lin.cols
    return shared, per_expert


def _expert_group(kind: _Layer, exact_gram: bool, bound: float | None) -> int:
    if not kind.experts:
        return 0
    e, d = kind.expert_mlp, kind._hidden
    per_expert = 4.0 * (d * d + e * e) if exact_gram else 4.0 * (d + e)
    return kind.experts if bound is None else max(1, min(kind.experts, int(bound // per_expert)))


def _statistics_bytes(kind: _Layer, exact_gram: bool, sq_norms: bool, sample: int, b: int, moe_statistics: str,
                      group: int, gram_bytes: int = 4) -> float:  # fmt: skip
    """The S term: XᵀX per distinct input (float32, or float64 with `gram_dtype="float64"`: `gram_bytes`), or squared
    norms and the error-estimate sample, for a dense layer or for a mixture of experts collected `group` experts at a
    time."""
    shared, per_expert = _distinct_inputs(kind, moe_statistics)
    if exact_gram:
        g = float(gram_bytes)
        return g * sum(c * c for c in shared.values()) + group * g * sum(c * c for c in per_expert.values())
    if not kind.experts:
        inputs = sum(shared.values())
        return 4.0 * inputs * sq_norms + sample * inputs * b
    d, e, n = kind._hidden, kind.expert_mlp, kind.experts
    dense = 2 * d + max(c for k, c in shared.items() if k == "attn_out") + kind.mlp
    inputs = dense + n * (d + e)
    return (4.0 * dense + group * 4.0 * (d + e)) * sq_norms + sample * inputs * b


def _workspace_bytes(kind: _Layer, solver, expert_solve_batch: int) -> float:
    ws = max(solver.workspace_bytes(lin.rows, lin.cols) for lin in kind.linears)
    if kind.experts and solver.batched and expert_solve_batch > 1:  # one batched call over several experts
        batch = min(expert_solve_batch, kind.experts)
        ws = max(
            [ws] + [solver.batch_workspace_bytes(lin.rows, lin.cols, batch) for lin in kind.linears if lin.routed]
        )
    return ws


def _batch_bytes(kind: _Layer, shape: _ModelShape, batch_tokens: int, chunk_size: int, uses_gram: bool, b: int,
                 moe_statistics: str) -> float:  # fmt: skip
    d, f, a = shape.hidden, kind.mlp, shape.attention
    widest = max(lin.cols for lin in kind.linears)
    out = batch_tokens * (3 * f + 4 * d + 2 * a) * b + 4.0 * min(chunk_size, batch_tokens) * widest
    if kind.experts:  # the routed tokens' activations through the experts
        out += batch_tokens * kind.top_k * (3 * kind.expert_mlp + d) * b
    if uses_gram and batch_tokens < chunk_size:
        if kind.experts:
            out += chunk_size * (2 * d + a + f) * b
        else:
            out += chunk_size * sum(_distinct_inputs(kind, moe_statistics)[0].values()) * b
    return out


# ------------------------------------------------------------------------------------------------------------------
# Time


@dataclass(frozen=True)
class _RateBasis:
    """Per-layer seconds measured at a reference shape and calibration: the unit rates are these seconds divided
    by the work the model counts at that reference, so the model reproduces the measurement there."""

    source: str
    config: dict
    rows: int
    tokens: int
    forward_s: float  # one forward of one layer over every row
    xtx_s: float  # the XᵀX accumulation beyond the forward (SparseGPT statistics pass − forward)
    solve_s: float  # SparseGPT solves of one layer
    nm_factor: float  # N:M solves / unstructured
    alps_factor: float  # ALPS solves / SparseGPT
    wanda_solve_s: float  # Wanda solves of one layer (at `wanda_config`, `wanda_rows` × `wanda_tokens`)
    wanda_stats_s: float  # Wanda's statistics beyond the forward (norms, error sample)
    offload_s: float = 0.0  # per layer: the activations' host<->device traffic when offloaded
    capture_device_s: float = 0.0  # capture of the first layer's inputs, embeddings on the device
    capture_host_s: float = 0.0  # ... embeddings on the host
    moe_efficiency: float = 1.0  # expert FLOPs run at this fraction of the dense rate (forward, routed XᵀX)
    wanda_config: dict | None = None
    wanda_rows: int = 0
    wanda_tokens: int = 0


_QWEN2_05B = dict(
    model_type="qwen2",
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
)
SHAPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes")  # the shipped model shapes


def _shape(file: str) -> dict:
    with open(os.path.join(SHAPES_DIR, file), encoding="utf-8") as f:
        return json.load(f)


_QWEN2_7B = _shape("r1-distill-qwen-7b.json")
_QWEN3_30B_A3B = _shape("qwen3-30b-a3b.json")

RATE_BASES: dict[str, _RateBasis] = {
    # benchmarks/measured/h100_sparsegpt_7b_128x16k.json: mean of 28 layers, model and activations on the GPU
    # (stats 5.018 s, solve 6.109 s, propagate 2.883 s); h100_check_and_methods.txt (2 layers): Wanda solve 0.05 s
    # and stats 5.55 s per layer, ALPS solve 13.15 s, SparseGPT 2:4 solve 7.40 s; h100_sparsegpt_7b_stream_4layers
    # .txt (activations offloaded, layers 1-3): stats 5.298 s and propagate 3.590 s (0.987 s more per layer),
    # capture 18.2 s (0.45 s on the GPU).
    "gpu": _RateBasis(
        source="H100 80GB, R1-Distill-Qwen-7B shape, 128 x 16384 tokens (benchmarks/measured/h100_*)",
        config=_QWEN2_7B,
        rows=128,
        tokens=16384,
        forward_s=2.883,
        xtx_s=5.018 - 2.883,
        solve_s=6.109,
        nm_factor=7.40 / 6.109,
        alps_factor=13.15 / 6.109,
        wanda_solve_s=0.05,
        wanda_stats_s=5.55 - 2.90,
        offload_s=0.987,
        capture_device_s=0.45,
        capture_host_s=18.2,
        moe_efficiency=0.5,
        wanda_config=_QWEN2_7B,
        wanda_rows=128,
        wanda_tokens=16384,
    ),  # fmt: skip
    # benchmarks/measured/cpu_prune_moe_qwen3_30b_a3b.json (2 threads, layer 1, batched solves): forward 20.198 s,
    # statistics pass 49.945 s, solves 43.924 s; cpu_prune.md: ALPS 282.4 s / SparseGPT 22.9 s of solves (4 layers),
    # Wanda 21.7 s of solves over 24 layers of the Qwen2.5-0.5B shape at 32 x 512 (error metric off).
    "cpu": _RateBasis(
        source="2 CPU threads, Qwen3-30B-A3B shape, 32 x 2048 tokens (benchmarks/measured/cpu_prune_moe_*, cpu_prune.md)",
        config=_QWEN3_30B_A3B,
        rows=32,
        tokens=2048,
        forward_s=20.198,
        xtx_s=49.945 - 20.198,
        solve_s=43.924,
        nm_factor=7.40 / 6.109,
        alps_factor=282.4 / 22.9,
        wanda_solve_s=21.7 / 24,
        wanda_stats_s=0.0,
        moe_efficiency=1.0,
        wanda_config=_QWEN2_05B,
        wanda_rows=32,
        wanda_tokens=512,
    ),  # fmt: skip
}


@dataclass
class PlanAssumptions:
    """What the time estimate assumes beyond the measured rates (`RATE_BASES`); none of it is measured.

    Args:
        throughput: the device's speed relative to the rate basis (an H100 for GPUs, 2 threads for CPUs); 1.0 for
            H100 and H200 (same compute; the H200's faster memory is not counted).
        cpu_threads: threads of a CPU run (rates scale linearly from the 2 measured).
        disk_read_gbps, disk_write_gbps: GB/s of reading the checkpoint and writing the output (a local NVMe;
            a network filesystem can be 10x slower). Every process reads at this rate on its own.
        host_link_gbps: GB/s of moving a layer between host and GPU (PCIe 5).
        dequant_gbps: GB/s of float32 output of FP8 dequantisation on the host.
        intra_node_gbps, inter_node_gbps: all-reduce bus bandwidth within a node (NVLink) and across nodes.
        gpus_per_node: processes per node under `torchrun`.
        host_runtime_gib_gpu: host memory of the runtime on a GPU machine (CUDA libraries, pinned staging): the
            streamed 4-layer H100 run measured 24.3 GiB of RSS where model + activations + 0.6 GiB give 19.4.
    """

    throughput: float = 1.0
    cpu_threads: int = 2
    disk_read_gbps: float = 2.0
    disk_write_gbps: float = 2.0
    host_link_gbps: float = 25.0
    dequant_gbps: float = 4.0
    intra_node_gbps: float = 100.0
    inter_node_gbps: float = 20.0
    gpus_per_node: int = 8
    host_runtime_gib_gpu: float = 0.6 + 4.9


def _forward_flops(kind: _Layer, shape: _ModelShape, tokens: float, seq: int) -> tuple[float, float]:
    """(dense FLOPs, expert FLOPs) of one forward of one layer over `tokens` tokens in rows of `seq`."""
    dense_linear = sum(lin.rows * lin.cols * lin.count for lin in kind.linears if not lin.routed)
    dense = 2.0 * tokens * (dense_linear + kind.experts * shape.hidden)
    dense += tokens * seq * shape.heads * (shape.qk_dim + shape.v_dim)  # causal QKᵀ and AV
    experts = 2.0 * tokens * kind.expert_params * kind.top_k / kind.experts if kind.experts else 0.0
    return dense, experts


def _xtx_flops(kind: _Layer, tokens: float, moe_statistics: str) -> tuple[float, float]:
    shared, per_expert = _distinct_inputs(kind, moe_statistics)
    dense = 2.0 * tokens * sum(c * c for c in shared.values())
    if not kind.experts:
        return dense, 0.0
    if moe_statistics == "all_tokens":  # every expert's intermediate for every token (and its forward)
        reach = tokens * kind.experts
        extra_forward = 2.0 * tokens * kind.expert_params * (1 - kind.top_k / kind.experts)
    else:
        reach, extra_forward = tokens * kind.top_k, 0.0
    return dense, 2.0 * reach * sum(c * c for c in per_expert.values()) + extra_forward


def _solve_units(kind: _Layer, elementwise: bool) -> float:
    if elementwise:
        return float(sum(lin.rows * lin.cols * lin.count for lin in kind.linears))
    return float(sum(lin.rows * lin.cols**2 * lin.count for lin in kind.linears))


def _input_widths(kind: _Layer, tokens: float, moe_statistics: str) -> float:
    shared, per_expert = _distinct_inputs(kind, moe_statistics)
    reach = tokens * (kind.top_k if kind.experts else 0)
    return tokens * sum(shared.values()) + reach * sum(per_expert.values())


class _Rates:
    """Unit rates (seconds per unit of work) from one `_RateBasis`."""

    def __init__(self, basis: _RateBasis, speed: float):
        ref = _ModelShape.of(basis.config)
        kind = ref.kinds[0]
        tokens = basis.rows * basis.tokens
        dense, experts = _forward_flops(kind, ref, tokens, basis.tokens)
        self.basis, self.speed = basis, speed
        self.forward = basis.forward_s / (dense + experts / basis.moe_efficiency)
        xd, xe = _xtx_flops(kind, tokens, "routed")
        self.xtx = basis.xtx_s / (xd + xe / basis.moe_efficiency)
        self.solve = basis.solve_s / _solve_units(kind, False)
        w = _ModelShape.of(basis.wanda_config).kinds[0]
        self.elementwise = basis.wanda_solve_s / _solve_units(w, True)
        self.norms = basis.wanda_stats_s / _input_widths(w, basis.wanda_rows * basis.wanda_tokens, "routed")
        self.activation_bytes = tokens * (ref.hidden + 2 * ref.rope_dim) * 2


def _layer_seconds(
    kind: _Layer,
    shape: _ModelShape,
    rates: _Rates,
    tokens: float,
    seq: int,
    method: str,
    nm: bool,
    moe_statistics: str,
    passes: int,
    offloaded: bool,
    a_bytes: float,
) -> dict[str, float]:
    """Estimated seconds of one layer's compute phases on one process holding `tokens` calibration tokens."""
    basis, speed = rates.basis, rates.speed
    eff = basis.moe_efficiency
    dense, experts = _forward_flops(kind, shape, tokens, seq)
    forward = rates.forward * (dense + experts / eff) / speed
    offload = rates.basis.offload_s * a_bytes / rates.activation_bytes / speed if offloaded else 0.0
    if method in ("sparsegpt", "alps"):
        xd, xe = _xtx_flops(kind, tokens, moe_statistics)
        extra = rates.xtx * (xd + xe / eff) / speed
        solve = rates.solve * _solve_units(kind, False) / speed
        solve *= basis.alps_factor if method == "alps" else 1.0
        solve *= basis.nm_factor if nm else 1.0
    else:  # wanda, magnitude and registered solvers: elementwise selection
        extra = rates.norms * _input_widths(kind, tokens, moe_statistics) / speed
        solve = rates.elementwise * _solve_units(kind, True) / speed
    # one statistics pass per group of experts (half the offload traffic each), the XᵀX once, then propagation
    return {
        "statistics": passes * (forward + offload / 2) + extra,
        "solves": solve,
        "propagation": forward + offload / 2,
    }


# ------------------------------------------------------------------------------------------------------------------


# The sizes of a config that must be positive where given, and those that may also be 0 (none of them).
_POSITIVE_SIZES = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
    "moe_intermediate_size", "num_experts", "num_local_experts", "n_routed_experts", "num_experts_per_tok",
    "vocab_size", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
)  # fmt: skip
_NON_NEGATIVE_SIZES = (
    "q_lora_rank", "n_shared_experts", "shared_expert_intermediate_size", "first_k_dense_replace",
    "decoder_sparse_step", "moe_layer_freq",
)  # fmt: skip


def _check_sizes(config: Any) -> None:
    """Refuse a config whose sizes are not whole numbers of the right sign (a negative hidden size would give a
    negative peak that `plan` reports as fitting)."""
    for keys, least in ((_POSITIVE_SIZES, 1), (_NON_NEGATIVE_SIZES, 0)):
        for key in keys:
            value = _get(config, key, None)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"The model config's {key} must be a whole number {'>= 1' if least else '>= 0'}, got {value!r}."
                )


def estimate_prune_memory(
    config: Any,
    num_rows: int,
    tokens_per_row: int,
    dtype_bytes: int = 2,
    method: str = "sparsegpt",
    batch_size: int = 1,
    model_on_device: bool = True,
    offload_activations: bool = False,
    restore_on_error: bool = True,
    same_memory: bool = False,
    chunk_size: int = 4096,
    runtime_bytes: float = 0.6 * GIB,
    error_sample_tokens: int = 1024,
    moe_statistics: str = "routed",
    moe_stats_memory_gb: float | None = None,
    expert_solve_batch: int = PruningConfig.expert_solve_batch,
    *,
    streamed: bool = False,
    world_size: int = 1,
    sparsity_type: str = "unstructured",
    prune_lm_head: bool = False,
    device_memory_gb: float | None = None,
    assumptions: PlanAssumptions | None = None,
    gram_dtype: str = "float32",
) -> MemoryEstimate:
    """Peak memory, disk traffic and estimated time of a pruning run, term by term (see the module docstring).

    Args:
        config: a transformers config (or a dict) of a Llama/Qwen2/Qwen3/Mistral model or of a mixture of experts
            (Qwen2/Qwen3-MoE, Mixtral, DeepSeek-V3 with its dense first layers and latent attention, gpt-oss).
        num_rows, tokens_per_row: the calibration set (use the longest row for `tokens_per_row`).
        dtype_bytes: bytes per element of the model's weights and activations (2 for bf16/fp16, 4 for fp32).
        model_on_device: the whole model lives on the compute device (otherwise one layer at a time is moved there).
        same_memory: the compute device is the CPU (device and host terms add up in one RSS).
        runtime_bytes: the interpreter, torch and transformers themselves (host only).
        error_sample_tokens: `PruningConfig.error_sample_tokens` (Wanda and magnitude: `0` means an exact XᵀX).
        moe_statistics, moe_stats_memory_gb, expert_solve_batch: the `PruningConfig` fields of a mixture of experts.
        streamed: `OneShotPruner.prune_pretrained` (one layer at a time from the safetensors shards); overrides
            `model_on_device` and `restore_on_error`.
        world_size: processes under `torchrun` (one per GPU); the calibration rows are split among them.
        sparsity_type: `"unstructured"` or `"N:M"` (N:M solves take longer).
        prune_lm_head: `lm_head` is a target (then a streamed run keeps it on the host).
        device_memory_gb: memory of the compute device, for the default bound of the experts' statistics
            (`moe_stats_memory_gb=None`: half of what is free) and their number of passes.
        assumptions: what the time estimate assumes beyond its measured rates ([`PlanAssumptions`]).
        gram_dtype: `PruningConfig.gram_dtype` (`"float64"` doubles XᵀX while it is collected).
    """
    from .solvers import get_solver

    for name, value in (("num_rows", num_rows), ("tokens_per_row", tokens_per_row), ("world_size", world_size),
                        ("dtype_bytes", dtype_bytes), ("batch_size", batch_size), ("chunk_size", chunk_size),
                        ("expert_solve_batch", expert_solve_batch)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    for name, value in (("error_sample_tokens", error_sample_tokens), ("runtime_bytes", runtime_bytes),
                        ("moe_stats_memory_gb", moe_stats_memory_gb), ("device_memory_gb", device_memory_gb)):  # fmt: skip
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must not be negative, got {value!r}.")
    assumptions = assumptions or PlanAssumptions()
    gram_bytes = 8 if gram_dtype == "float64" else 4  # XᵀX while it is collected
    shape = _ModelShape.of(config)
    b = dtype_bytes
    d, layers = shape.hidden, shape.layers
    rows = math.ceil(num_rows / world_size)  # the calibration rows of one process
    rows_tokens = rows * tokens_per_row
    solver = get_solver(method)
    uses_gram = "gram" in solver.needs
    exact_gram = uses_gram or not error_sample_tokens
    sample = min(error_sample_tokens, rows_tokens)
    activations = rows_tokens * (d + 2 * shape.rope_dim) * b
    on_device_acts = not (offload_activations or same_memory)
    if streamed:
        model_on_device, restore_on_error = False, False

    def device_terms(kind: _Layer, group: int) -> dict[str, float]:
        out = {"W: model weights": shape.params * b if model_on_device else kind.params * b}
        out["A: cached layer inputs"] = activations
        out["S: statistics"] = _statistics_bytes(kind, exact_gram, "sq_norms" in solver.needs, sample, b,
                                                 moe_statistics, group, gram_bytes)  # fmt: skip
        out["K: solve workspace (fp32)"] = _workspace_bytes(kind, solver, expert_solve_batch)
        out["F: one batch through one layer"] = _batch_bytes(kind, shape, batch_size * tokens_per_row, chunk_size,
                                                             uses_gram, b, moe_statistics)  # fmt: skip
        return out

    def bound(kind: _Layer) -> float | None:
        """The experts' statistics bound: given, or half of the device memory left by the weights and activations
        (as the pruner reads it), or none (all experts at once)."""
        if moe_stats_memory_gb is not None:
            return moe_stats_memory_gb * GIB
        if device_memory_gb is None:
            return None
        base = device_terms(kind, 0)
        used = base["W: model weights"] + (activations if on_device_acts or same_memory else 0.0)
        return max(0.5 * (device_memory_gb * GIB - used), 0.0)

    # The layer kind with the largest device peak sets every device term.
    per_kind = []
    for kind in shape.kinds:
        group = _expert_group(kind, exact_gram, bound(kind))
        terms_k = device_terms(kind, group)
        per_kind.append((sum(terms_k.values()) - (0 if on_device_acts else activations), kind, group, terms_k))
    _, peak_kind, _, terms = max(per_kind, key=lambda t: t[0])
    terms = dict(terms)

    target_linear = sum(k.count * k.linear_params for k in shape.kinds)
    terms["R: restore_on_error copies (disk)"] = target_linear * b if restore_on_error else 0.0
    gpu = not same_memory
    runtime = runtime_bytes if not (gpu and streamed) else max(runtime_bytes, assumptions.host_runtime_gib_gpu * GIB)
    terms["runtime"] = runtime
    device = ["W: model weights", "S: statistics", "K: solve workspace (fp32)", "F: one batch through one layer"]
    host = ["runtime"]
    (host if offload_activations else device).append("A: cached layer inputs")
    if streamed:
        largest = max(shape.kinds, key=lambda k: k.params)
        resident = shape.embed + shape.final_norm + (shape.head if prune_lm_head else 0)
        terms["resident weights (embeddings)"] = resident * b
        load = largest.params * b * (2 if largest.experts else 1)
        fp8_term = "FP8 dequantisation (float32 copy of one tensor)"
        if shape.stored_fp8:  # each tensor is dequantized in float32, then cast at once to the compute dtype
            terms[fp8_term] = 4.0 * max(lin.rows * lin.cols for kind in shape.kinds for lin in kind.linears)
            load += terms[fp8_term]
        write = 2.0 * largest.params * b
        terms["current layer (host: loading or writing)"] = max(load, write) - terms.get(fp8_term, 0.0)
        host += ["resident weights (embeddings)", "current layer (host: loading or writing)"]
        if shape.stored_fp8:
            host.append(fp8_term)
    elif not model_on_device:
        terms["model weights on the host"] = shape.params * b
        host.append("model weights on the host")
    est = MemoryEstimate(terms=terms, device_terms=device, host_terms=host, streamed=streamed, world_size=world_size,
                         params=shape.params, active_params=int(shape.active_params))  # fmt: skip
    if same_memory:
        est.device_terms = device + host
        est.host_terms = device + host
    est.device_bytes = sum(terms[t] for t in est.device_terms)
    est.host_bytes = sum(terms[t] for t in est.host_terms)
    if same_memory and streamed:  # the layer on the "device" is the host's current layer, counted once
        overlap = min(terms["W: model weights"], terms["current layer (host: loading or writing)"])
        est.device_bytes -= overlap
        est.host_bytes -= overlap
    if streamed:  # the end: the resident weights, lm_head and their serialised copy, with no layer loaded
        end = runtime + 2.0 * (shape.embed + shape.head + shape.final_norm) * b
        est.host_bytes = max(est.host_bytes, end)
    est.processes_per_node = min(world_size, assumptions.gpus_per_node)

    # Disk.
    stored = b
    layer_stored = sum(k.count * (k.linear_params * (1 + 4 / 16384) + k.other * 2) if shape.stored_fp8 else
                       k.count * k.params * stored for k in shape.kinds)  # fmt: skip
    outside = (shape.embed + shape.head + shape.final_norm) * (2 if shape.stored_fp8 else stored)
    est.disk_read_bytes = layer_stored + outside
    output = shape.params * b
    est.disk_written_bytes = output + terms["R: restore_on_error copies (disk)"] * world_size

    # Time.
    kind_name = "cpu" if same_memory else "gpu"
    speed = assumptions.throughput * (assumptions.cpu_threads / 2 if same_memory else 1.0)
    rates = _Rates(RATE_BASES[kind_name], speed)
    nm = sparsity_type not in ("unstructured", None)
    seconds = {"read checkpoint": est.disk_read_bytes / (assumptions.disk_read_gbps * 1e9)}
    a_host = offload_activations and gpu
    host_embeddings = streamed or not model_on_device
    capture = rates.basis.capture_host_s if (host_embeddings or a_host) else rates.basis.capture_device_s
    seconds["capture"] = capture * activations / rates.activation_bytes / speed if gpu else 0.0
    link = assumptions.host_link_gbps * 1e9
    bus = assumptions.intra_node_gbps if world_size <= assumptions.gpus_per_node else assumptions.inter_node_gbps
    compute = {"statistics": 0.0, "solves": 0.0, "propagation": 0.0}
    transfers = reduce = dequant = 0.0
    for kind in shape.kinds:
        group = _expert_group(kind, exact_gram, bound(kind))
        passes = math.ceil(kind.experts / group) if kind.experts and group else 1
        phases = _layer_seconds(kind, shape, rates, rows_tokens, tokens_per_row, method, nm, moe_statistics,
                                passes, a_host, activations)  # fmt: skip
        for name, value in phases.items():
            compute[name] += kind.count * value
        compute["solves"] -= kind.count * phases["solves"] * (1 - 1 / world_size)  # dealt across processes
        if gpu and not model_on_device:  # the layer to the device and, streamed, back for writing
            transfers += kind.count * kind.params * b * (2 if streamed else 1) / link
        if streamed and shape.stored_fp8:
            dequant += kind.count * 4.0 * kind.linear_params / (assumptions.dequant_gbps * 1e9)
        if world_size > 1:  # all-reduce of the statistics (every group's), exchange of the solved weights
            group_all = _statistics_bytes(kind, exact_gram, "sq_norms" in solver.needs, sample, b, moe_statistics,
                                          kind.experts, gram_bytes)  # fmt: skip
            reduce += kind.count * (2.0 * group_all + kind.linear_params * b) / (bus * 1e9)
    seconds.update(compute)
    if transfers:
        seconds["host-device layer transfers"] = transfers
    if dequant:
        seconds["FP8 dequantisation"] = dequant
    if reduce:
        seconds["all-reduce and weight exchange"] = reduce
    seconds["write output"] = est.disk_written_bytes / (assumptions.disk_write_gbps * 1e9)
    est.time_terms = seconds
    est.time_basis = f"estimate from {rates.basis.source}"
    if shape.kinds[0].experts or any(k.experts for k in shape.kinds):
        est.notes.append("MoE: starved experts' extra all-token pass not counted (26% of a layer at Qwen3-30B-A3B)")
        if gpu:
            est.notes.append("MoE on a GPU: not measured; expert FLOPs assumed at half the dense rate")
    if world_size > 1:
        est.notes.append(f"{world_size} processes: compute assumed to divide by {world_size} (not measured)")
    del peak_kind, layers
    return est
