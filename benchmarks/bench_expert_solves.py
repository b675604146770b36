"""SparseGPT solves of the experts of one fused projection: one by one against one batched call
(`sparsegpt_prune_batched`, `PruningConfig.expert_solve_batch`), at the Qwen3-30B-A3B expert shapes.

Each expert has its own XᵀX (random correlated inputs, 4096 tokens). The factorisations are timed apart: they are the
same in both paths (one per expert). The table gives seconds per expert for the column loop, and whether the
batched result equals the one-by-one result (masks identical, largest weight difference).

    python benchmarks/bench_expert_solves.py                 # CPU, 16 experts
    python benchmarks/bench_expert_solves.py --device cuda --experts 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {"gate_up_proj": (1536, 2048), "down_proj": (2048, 768)}  # [out, in] of one Qwen3-30B-A3B expert


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="2,4,8,16", help="batch sizes to time against one by one")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import torch

    from hf_ssgr.pruning.kernels import sparsegpt_factor, sparsegpt_prune_batched

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)
    rows = []
    for name, (r, c) in SHAPES.items():
        weights = (torch.randn(args.experts, r, c, generator=g) * 0.02).to(args.device)
        mix = torch.randn(c, c, generator=g) / c**0.5
        grams = []
        for _ in range(args.experts):
            x = (torch.randn(args.tokens, c, generator=g) @ mix).to(args.device)
            grams.append(x.T @ x)
        sync()
        t0 = time.perf_counter()
        factors = [sparsegpt_factor(gram, args.tokens) for gram in grams]
        sync()
        factor_s = (time.perf_counter() - t0) / args.experts
        t0 = time.perf_counter()
        alone = [sparsegpt_prune_batched(weights[e : e + 1], [factors[e]], 0.5)[0] for e in range(args.experts)]
        sync()
        row = dict(projection=name, shape=[r, c], experts=args.experts, factor_s=factor_s,
                   one_by_one_s=(time.perf_counter() - t0) / args.experts, batched={})  # fmt: skip
        for size in (int(b) for b in args.batches.split(",")):
            t0 = time.perf_counter()
            out = [sparsegpt_prune_batched(weights[s : s + size], factors[s : s + size], 0.5)
                   for s in range(0, args.experts, size)]  # fmt: skip
            sync()
            seconds = (time.perf_counter() - t0) / args.experts
            batched = torch.cat(out)
            same = all(torch.equal(batched[e] == 0, alone[e] == 0) for e in range(args.experts))
            diff = max(float((batched[e] - alone[e]).abs().max()) for e in range(args.experts))
            row["batched"][size] = dict(seconds=seconds, speedup=row["one_by_one_s"] / seconds, same_masks=same,
                                        max_diff=diff)  # fmt: skip
        rows.append(row)
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    sizes = list(rows[0]["batched"])
    print(f"device {device}, {torch.get_num_threads()} threads, {args.experts} experts, seconds per expert\n")
    print("| projection [out, in] | factorisation | column loop, one by one | "
          + " | ".join(f"batch of {b}" for b in sizes) + " |")  # fmt: skip
    print("|---" * (3 + len(sizes)) + "|")
    for x in rows:
        cells = [f"{v['seconds']:.3f} ({v['speedup']:.2f}x)" for v in x["batched"].values()]
        print(f"| {x['projection']} {x['shape']} | {x['factor_s']:.3f} | {x['one_by_one_s']:.3f} | "
              + " | ".join(cells) + " |")  # fmt: skip
    same = all(v["same_masks"] for x in rows for v in x["batched"].values())
    diff = max(v["max_diff"] for x in rows for v in x["batched"].values())
    print(f"\nbatched masks identical to one by one: {same}; largest weight difference {diff:.1e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": device, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
