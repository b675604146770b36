"""The peak-memory model of `OneShotPruner`: what a run needs on the compute device and on the host, before renting it.

With `d` the hidden size, `f` the MLP width, `a` the attention width (heads × head_dim), `h` the head dim, `N` rows
of `T` tokens in batches of `B`, `b` bytes per weight/activation element (2 for bf16) and `P` parameters:

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
adds the routed activations, `B·T·k·(3e + d)·b`.

The copies that `restore_on_error` keeps to undo a failed run go to a temporary folder on disk (`R` below, in
bytes of disk, not memory).

On a CPU the device and the host are the same memory. Attention masks are not counted: with right padding only
in the last rows of a batch and sdpa/flash attention, no 4-D mask is materialised for unpadded batches; padded
batches add B·T²·1 byte per layer call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import PruningConfig

__all__ = ["MemoryEstimate", "estimate_prune_memory"]

GIB = 1024**3


@dataclass
class MemoryEstimate:
    """Bytes per term (`terms`), and the device and host totals."""

    terms: dict[str, float] = field(default_factory=dict)
    device_bytes: float = 0.0
    host_bytes: float = 0.0
    device_terms: list[str] = field(default_factory=list)
    host_terms: list[str] = field(default_factory=list)

    @property
    def device_gib(self) -> float:
        return self.device_bytes / GIB

    @property
    def host_gib(self) -> float:
        return self.host_bytes / GIB

    def table(self) -> str:
        lines = ["| term | GiB | where |", "|---|---|---|"]
        for name, value in self.terms.items():
            where = ", ".join(
                w for w, terms in (("device", self.device_terms), ("host", self.host_terms)) if name in terms
            )
            lines.append(f"| {name} | {value / GIB:.2f} | {where} |")
        lines.append(f"| **device total** | **{self.device_gib:.2f}** | |")
        lines.append(f"| **host total** | **{self.host_gib:.2f}** | |")
        return "\n".join(lines)


def _get(config: Any, name: str, default=None):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


@dataclass
class _ModelShape:
    """The sizes the memory model needs, read from a Llama/Qwen2/Qwen3-style config."""

    hidden: int
    mlp: int
    attention: int
    head_dim: int
    layers: int
    layer_linear: int  # weights of a decoder layer's linears (and experts)
    layer_params: int  # every parameter of a decoder layer
    params: int  # the whole model
    experts: int = 0  # routed experts of a mixture-of-experts layer (0: dense)
    expert_mlp: int = 0
    top_k: int = 0
    shared_mlp: int = 0

    @classmethod
    def of(cls, config: Any) -> _ModelShape:
        d, f = _get(config, "hidden_size"), _get(config, "intermediate_size")
        layers, heads = _get(config, "num_hidden_layers"), _get(config, "num_attention_heads")
        kv = _get(config, "num_key_value_heads", heads) or heads
        hd = _get(config, "head_dim", None) or d // heads
        a, akv = heads * hd, kv * hd
        experts = next((_get(config, k) for k in ("num_experts", "num_local_experts", "n_routed_experts")
                        if _get(config, k)), 0)  # fmt: skip
        if experts:
            e = _get(config, "moe_intermediate_size", None) or f
            shared = _get(config, "shared_expert_intermediate_size", 0) or e * (
                _get(config, "n_shared_experts", 0) or 0
            )
            layer_linear = d * a + 2 * d * akv + a * d + experts * 3 * d * e + 3 * d * shared + experts * d
            shape = cls(d, shared, a, hd, layers, layer_linear, 0, 0, experts, e,
                        _get(config, "num_experts_per_tok", 1), shared)  # fmt: skip
        else:
            layer_linear = d * a + 2 * d * akv + a * d + 3 * d * f
        model_type = _get(config, "model_type")
        qkv_bias = a + 2 * akv if model_type == "qwen2" or _get(config, "attention_bias", False) else 0
        layer_params = layer_linear + qkv_bias + 2 * d + (2 * hd if model_type in ("qwen3", "qwen3_moe") else 0)
        embeddings = _get(config, "vocab_size") * d * (1 if _get(config, "tie_word_embeddings", False) else 2)
        if experts:
            shape.layer_params = layer_params
            shape.params = layers * layer_params + embeddings + d
            return shape
        return cls(d, f, a, hd, layers, layer_linear, layer_params, layers * layer_params + embeddings + d)


def _statistics_bytes(shape: _ModelShape, exact_gram: bool, sq_norms: bool, sample: int, b: int,
                      moe_statistics: str, moe_stats_memory_gb: float | None) -> float:  # fmt: skip
    """The S term: float32 XᵀX per distinct input (or squared norms and the error-estimate sample), for a dense
    layer or for a mixture of experts collected `G` experts at a time."""
    d, f, a = shape.hidden, shape.mlp, shape.attention
    if not shape.experts:
        inputs = 2 * d + a + f  # the widths of one layer's distinct inputs
        if exact_gram:
            return 4.0 * (2 * d * d + a * a + f * f)
        return 4.0 * inputs * sq_norms + sample * inputs * b
    e, n = shape.expert_mlp, shape.experts
    per_expert = 4.0 * (d * d + e * e) if exact_gram else 4.0 * (d + e)
    group = n if moe_stats_memory_gb is None else max(1, min(n, int(moe_stats_memory_gb * GIB // per_expert)))
    if exact_gram:
        dense = 4.0 * (d * d + a * a + (d * d + f * f if f else 0))
        experts = 4.0 * (d * d + group * e * e) if moe_statistics == "all_tokens" else group * per_expert
        return dense + experts
    inputs = 2 * d + a + f + n * (d + e)
    return (4.0 * (2 * d + a + f) + group * per_expert) * sq_norms + sample * inputs * b


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
) -> MemoryEstimate:
    """Peak memory of a pruning run, term by term (see the module docstring for the formula).

    Args:
        config: a transformers config (or a dict) of a Llama/Qwen2/Qwen3-style model.
        num_rows, tokens_per_row: the calibration set (use the longest row for `tokens_per_row`).
        dtype_bytes: bytes per element of the model's weights and activations (2 for bf16/fp16, 4 for fp32).
        model_on_device: the whole model lives on the compute device (otherwise one layer at a time is moved there).
        same_memory: the compute device is the CPU (device and host terms add up in one RSS).
        runtime_bytes: the interpreter, torch and transformers themselves (host only).
        error_sample_tokens: `PruningConfig.error_sample_tokens` (Wanda and magnitude: `0` means an exact XᵀX).
        moe_statistics, moe_stats_memory_gb, expert_solve_batch: the `PruningConfig` fields of a mixture of experts.
    """
    from .solvers import get_solver

    shape = _ModelShape.of(config)
    d, f, a, hd, layers = shape.hidden, shape.mlp, shape.attention, shape.head_dim, shape.layers
    layer_linear, layer_params, params = shape.layer_linear, shape.layer_params, shape.params
    b = dtype_bytes
    rows_tokens = num_rows * tokens_per_row
    c, r = f, d  # the widest module: down_proj (f inputs, d rows)
    if shape.experts:  # the widest input among attention, shared experts and experts
        c, r = max((d, 2 * shape.expert_mlp), (shape.expert_mlp, d), (a, d), (f, d))

    terms: dict[str, float] = {}
    terms["W: model weights"] = params * b if model_on_device else layer_params * b
    terms["A: cached layer inputs"] = rows_tokens * (d + 2 * hd) * b
    solver = get_solver(method)
    uses_gram = "gram" in solver.needs
    exact_gram = uses_gram or not error_sample_tokens
    sample = min(error_sample_tokens, rows_tokens)
    terms["S: statistics"] = _statistics_bytes(shape, exact_gram, "sq_norms" in solver.needs, sample, b,
                                               moe_statistics, moe_stats_memory_gb)  # fmt: skip
    terms["K: solve workspace (fp32)"] = solver.workspace_bytes(r, c)
    if shape.experts and solver.batched and expert_solve_batch > 1:  # one batched call over several experts
        e, batch = shape.expert_mlp, min(expert_solve_batch, shape.experts)
        widest = max(solver.batch_workspace_bytes(2 * e, d, batch), solver.batch_workspace_bytes(d, e, batch))
        terms["K: solve workspace (fp32)"] = max(terms["K: solve workspace (fp32)"], widest)
    terms["F: one batch through one layer"] = (
        batch_size * tokens_per_row * (3 * f + 4 * d + 2 * a) * b
        + 4.0 * min(chunk_size, batch_size * tokens_per_row) * c
    )
    if shape.experts:  # the routed tokens' activations through the experts
        k, e = shape.top_k, shape.expert_mlp
        terms["F: one batch through one layer"] += batch_size * tokens_per_row * k * (3 * e + d) * b
    if uses_gram and batch_size * tokens_per_row < chunk_size:
        terms["F: one batch through one layer"] += chunk_size * (2 * d + a + f) * b
    terms["R: restore_on_error copies (disk)"] = layers * layer_linear * b if restore_on_error else 0.0
    terms["runtime"] = runtime_bytes
    if not model_on_device:
        terms["model weights on the host"] = params * b

    device = [
        "W: model weights",
        "S: statistics",
        "K: solve workspace (fp32)",
        "F: one batch through one layer",
    ]
    host = ["runtime"]
    (host if offload_activations else device).append("A: cached layer inputs")
    if not model_on_device:
        host.append("model weights on the host")
    est = MemoryEstimate(terms=terms, device_terms=device, host_terms=host)
    if same_memory:
        est.device_terms = device + host
        est.host_terms = device + host
    est.device_bytes = sum(terms[t] for t in est.device_terms)
    est.host_bytes = sum(terms[t] for t in est.host_terms)
    return est
