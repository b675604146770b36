"""The compute floor of a layer-by-layer prune on this machine: what one decoder layer's passes cost, alone.

A prune that follows the reference algorithms runs, per decoder layer, a dense forward that collects statistics (it
may stop once the last pruned module has its input: `down_proj`'s output is never needed) and, after the solves, a
forward through the pruned layer to make the next layer's inputs. SparseGPT also accumulates XᵀX in float32. This
script times those pieces on one seeded random-weight layer of a shape, with no hooks and no statistics, so that
`layers × (partial forward + full forward [+ XᵀX])` is a lower bound on any tool's prune time here:

    python benchmarks/bench_layer_floor.py --shape qwen2.5-0.5b --llmc-sparsegpt 607.7 --llmc-wanda 210.1

The optional llm-compressor times turn the floors into the ratios they allow. Prints a Markdown table and writes JSON
(`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)


class _Stop(Exception):
    pass


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from bench_vs_llmcompressor import SHAPES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="each piece is timed this many times; the best counts")
    parser.add_argument("--llmc-sparsegpt", type=float, help="llm-compressor's SparseGPT prune time, seconds")
    parser.add_argument("--llmc-wanda", type=float, help="llm-compressor's Wanda prune time, seconds")
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args()

    import torch
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding

    from hf_ssgr.pruning.kernels import accumulate_gram, complete_gram
    from hf_ssgr.pruning.statistics import GRAM_BLOCKS_MIN_DIM, GRAM_UPPER_BLOCKS

    shape = SHAPES[args.shape]
    torch.manual_seed(0)
    config = Qwen2Config(**shape, attn_implementation="sdpa")
    layer = Qwen2DecoderLayer(config, 0).to(torch.bfloat16).eval()
    d, f = config.hidden_size, config.intermediate_size
    x = torch.randn(args.rows, args.seq_len, d).to(torch.bfloat16)
    position_ids = torch.arange(args.seq_len)[None]
    cos_sin = Qwen2RotaryEmbedding(config)(x[:1], position_ids)
    tokens = args.rows * args.seq_len

    def forward_all():
        with torch.no_grad():
            for row in x:
                layer(row[None], position_embeddings=cos_sin, attention_mask=None, position_ids=position_ids)

    def stop(module, inputs):
        raise _Stop

    def forward_to_down_proj():
        handle = layer.mlp.down_proj.register_forward_pre_hook(stop)
        try:
            with torch.no_grad():
                for row in x:
                    try:
                        layer(row[None], position_embeddings=cos_sin, attention_mask=None, position_ids=position_ids)
                    except _Stop:
                        pass
        finally:
            handle.remove()

    # The distinct inputs of a layer's linears: the input norm (q/k/v), the attention output (o), the post-attention
    # norm (gate/up) and the MLP product (down); random activations of the same sizes give the same product costs.
    gram_inputs = [torch.randn(tokens, width).to(torch.bfloat16) for width in (d, d, d, f)]

    def gram(dtype):
        def run():
            for acts in gram_inputs:
                width = acts.shape[-1]
                g = torch.zeros(width, width)
                blocks = GRAM_UPPER_BLOCKS if width >= GRAM_BLOCKS_MIN_DIM else 1  # as the pruner does on a CPU
                accumulate_gram(g, acts, 4096, blocks, dtype)
                complete_gram(g, blocks)

        return run

    weight = torch.randn(f, d).to(torch.bfloat16)
    flat = x.reshape(-1, d)

    def gemm():
        with torch.no_grad():
            torch.nn.functional.linear(flat, weight)

    forward_all()  # warm-up
    pieces = {
        "full forward": _best_of(forward_all, args.repeats),
        "forward up to down_proj": _best_of(forward_to_down_proj, args.repeats),
        "XᵀX float32": _best_of(gram("float32"), args.repeats),
        "XᵀX bfloat16": _best_of(gram("bfloat16"), args.repeats),
    }
    gemm_s = _best_of(gemm, args.repeats)
    layer_flops = (
        2 * tokens * (d * (2 * d + 2 * config.num_key_value_heads * (d // config.num_attention_heads)) + 3 * d * f)
    )
    n = config.num_hidden_layers
    passes = pieces["forward up to down_proj"] + pieces["full forward"]
    floors = {
        "wanda": n * passes,
        "sparsegpt": n * (passes + pieces["XᵀX float32"]),
        "sparsegpt, bf16 XᵀX": n * (passes + pieces["XᵀX bfloat16"]),
    }
    llmc = {"wanda": args.llmc_wanda, "sparsegpt": args.llmc_sparsegpt, "sparsegpt, bf16 XᵀX": args.llmc_sparsegpt}

    print(
        f"### One decoder layer alone: {args.shape} (hidden {d}, intermediate {f}), {args.rows} x {args.seq_len} tokens, "
        f"bf16, {os.cpu_count()} cores\n"
    )
    print("| piece | s per layer |\n|---|---|")
    for name, seconds in pieces.items():
        print(f"| {name} | {seconds:.2f} |")
    print(
        f"\nLinear layers of a full forward: {layer_flops / pieces['full forward'] / 1e9:.0f} GFLOP/s; one "
        f"{tokens} x {d} x {f} bf16 product alone: {2 * tokens * d * f / gemm_s / 1e9:.0f} GFLOP/s.\n"
    )
    print(
        f"| method | floor s ({n} layers, no solves) | llm-compressor s | floor / llm-compressor |\n|---|---|---|---|"
    )
    for name, seconds in floors.items():
        ref = llmc[name]
        print(f"| {name} | {seconds:.1f} | {ref if ref else '–'} | {f'{seconds / ref:.2f}x' if ref else '–'} |")

    if args.out:
        with open(args.out, "w") as fh:
            record = {
                "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
                "settings": vars(args),
                "pieces_seconds": pieces,
                "gemm_gflops": 2 * tokens * d * f / gemm_s / 1e9,
                "forward_gflops": layer_flops / pieces["full forward"] / 1e9,
                "floors_seconds": floors,
            }
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
