"""Pruning a mixture of experts of the Qwen3-30B-A3B shape (random weights): time per layer split into the forward,
the statistics and the solves, and peak memory against the memory model.

The shape: hidden 2048, 128 experts of width 768, top 8, 32 query / 4 key-value heads of 128, bf16. On a CPU the
model has 2 decoder layers (`--layers`) and the calibration 32 × 2048 tokens; the figures per layer are then
extrapolated to 48 layers (said so in the table). On a GPU, pass `--device cuda --layers 48 --rows 128 --seq-len 4096`.

Timing comes from the pruner's callbacks: from a layer's start to `on_stats_collected` is the capture forward plus
the statistics (the first layer also includes capturing every layer's inputs, so it is reported apart); the solves
are the modules' solve seconds; the rest of the layer is the forward that propagates the pruned layer's output. A
separate timed forward of the dense layer over the same batches gives the forward's share of the statistics pass.

    python benchmarks/bench_prune_moe.py                        # 2 layers, 32 x 2048 tokens, SparseGPT 50%
    python benchmarks/bench_prune_moe.py --method wanda --rows 8

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN3_30B_A3B = dict(
    model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768, num_experts=128,
    num_experts_per_tok=8, num_attention_heads=32, num_key_value_heads=4, head_dim=128, vocab_size=151936,
    max_position_embeddings=40960, tie_word_embeddings=False, decoder_sparse_step=1, mlp_only_layers=[],
    norm_topk_prob=True,
)  # fmt: skip


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--method", default="sparsegpt")
    ap.add_argument("--moe-statistics", default="routed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from hf_ssgr import OneShotPruner, PruningConfig
    from hf_ssgr.pruning.callbacks import PrunerCallback
    from hf_ssgr.pruning.memory import estimate_prune_memory

    dtype = getattr(torch, args.dtype)
    shape = dict(QWEN3_30B_A3B, num_hidden_layers=args.layers)
    shape.pop("model_type")
    config = Qwen3MoeConfig(**shape)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(args.device):
        model = Qwen3MoeForCausalLM(config).eval()
        with torch.no_grad():
            for layer in model.model.layers:  # random experts and router (from_config leaves them empty)
                for p in (layer.mlp.experts.gate_up_proj, layer.mlp.experts.down_proj, layer.mlp.gate.weight):
                    p.normal_(0, 0.02)
    torch.set_default_dtype(previous)
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, shape["vocab_size"], (args.rows, args.seq_len), generator=g)

    class Timer(PrunerCallback):
        def __init__(self):
            self.layers = {}

        def on_layer_begin(self, config, state, control, **kw):
            self.t0 = time.perf_counter()
            self.solve = 0.0

        def on_stats_collected(self, config, state, control, **kw):
            self.stats = time.perf_counter() - self.t0

        def on_module_pruned(self, config, state, control, **kw):
            self.solve += kw["metrics"]["seconds"]

        def on_layer_end(self, config, state, control, **kw):
            total = time.perf_counter() - self.t0
            self.layers[kw["layer_index"]] = {"total_s": total, "stats_pass_s": self.stats, "solves_s": self.solve}

    timer = Timer()
    cfg = PruningConfig(method=args.method, sparsity=0.5, moe_statistics=args.moe_statistics, device=args.device)
    pruner = OneShotPruner(cfg, callbacks=[timer], progress_bar=False)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    pruner.prune(model, calib)
    wall = time.perf_counter() - t0
    # the forward's share: one dense-shaped layer over the same batches (the pruned layer costs the same)
    layer = model.model.layers[-1]
    hidden = torch.randn(1, args.seq_len, shape["hidden_size"], dtype=dtype, device=args.device)
    pos = torch.arange(args.seq_len, device=args.device)[None]
    emb = model.model.rotary_emb(hidden, pos)
    with torch.no_grad():
        f0 = time.perf_counter()
        for _ in range(args.rows):
            layer(hidden, position_embeddings=emb, position_ids=pos)
        forward = time.perf_counter() - f0
    est = estimate_prune_memory(QWEN3_30B_A3B | {"num_hidden_layers": args.layers}, args.rows, args.seq_len,
                                dtype_bytes=torch.finfo(dtype).bits // 8, method=args.method,
                                same_memory=args.device == "cpu", moe_statistics=args.moe_statistics)  # fmt: skip
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else peak_rss_gib()
    starved = sum(1 for m in pruner.state.module_metrics.values() if m.get("starved"))
    tokens = [m["tokens"] for n, m in pruner.state.module_metrics.items() if "experts.down_proj" in n]
    steady = [v for i, v in timer.layers.items() if i > 0] or list(timer.layers.values())
    per_layer = {k: sum(v[k] for v in steady) / len(steady) for k in ("total_s", "stats_pass_s", "solves_s")}
    result = {
        "shape": "Qwen3-30B-A3B (random weights)",
        "layers": args.layers,
        "rows": args.rows,
        "seq_len": args.seq_len,
        "method": args.method,
        "moe_statistics": args.moe_statistics,
        "dtype": args.dtype,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "wall_s": wall,
        "per_layer": timer.layers,
        "steady_layer": per_layer,
        "forward_s_per_layer": forward,
        "extrapolated_48_layers_s": timer.layers[0]["total_s"] + 47 * per_layer["total_s"],
        "peak_gib": peak,
        "estimated_gib": est.device_gib,
        "starved_projections": starved,
        "tokens_per_expert": {"min": min(tokens), "mean": sum(tokens) / len(tokens), "max": max(tokens)},
        "achieved_sparsity": pruner.state.achieved_sparsity,
        "coverage": pruner.state.coverage["coverage_of_decoder_layers"],
        "machine": platform.machine(),
    }
    p = per_layer
    stats_only = max(0.0, p["stats_pass_s"] - forward)
    print("| per layer (steady) | seconds |\n|---|---|")
    print(f"| forward (one pass over the batches) | {forward:.1f} |")
    print(f"| statistics (stats pass − forward) | {stats_only:.1f} |")
    print(f"| solves ({len(pruner.state.module_metrics) // args.layers} matrices) | {p['solves_s']:.1f} |")
    print(f"| rest (propagation, starved recollection) | {p['total_s'] - p['stats_pass_s'] - p['solves_s']:.1f} |")
    print(f"| **layer total** | **{p['total_s']:.1f}** |")
    print(f"\nlayer 0 (with the capture of every layer's inputs): {timer.layers[0]['total_s']:.1f} s")
    print(f"48 layers, extrapolated from {args.layers}: {result['extrapolated_48_layers_s'] / 60:.1f} min")
    print(f"peak memory {peak:.2f} GiB, memory model {est.device_gib:.2f} GiB")
    print(f"tokens per expert (down_proj): {result['tokens_per_expert']}, starved projections: {starved}")
    print(f"achieved sparsity {pruner.state.achieved_sparsity}, coverage {result['coverage']:.4f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
