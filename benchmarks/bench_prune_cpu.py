"""Prune wall time and peak memory on CPU, per method, on a Qwen2.5-0.5B-shaped model with random weights.

Each method runs in a fresh process (so its peak RSS is its own): build the model (seeded, bfloat16 by default),
draw the calibration rows (random token ids, seeded), prune, and report wall time, summed solve time, peak RSS,
RSS above the model-build baseline, the mean/max per-module relative reconstruction error and the sparsity.

    python benchmarks/bench_prune_cpu.py                                   # 24 layers, 32 x 512 tokens, 4 methods
    python benchmarks/bench_prune_cpu.py --methods alps --layers 4         # a shorter model for the slow solver

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN25_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True)  # fmt: skip


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def single(args) -> dict:
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from hf_ssgr import OneShotPruner, PruningConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    shape = dict(QWEN25_05B, num_hidden_layers=args.layers)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    model = Qwen2ForCausalLM(Qwen2Config(**shape)).eval()
    torch.set_default_dtype(previous)
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, shape["vocab_size"], (args.rows, args.seq_len), generator=g)
    baseline = current_rss_mib()
    cfg = PruningConfig(
        method=args.single, sparsity=0.5, sparsity_type=args.sparsity_type, reconstruction_error=not args.no_error
    )
    pruner = OneShotPruner(cfg, progress_bar=False)
    t0 = time.perf_counter()
    pruner.prune(model, calib)
    wall = time.perf_counter() - t0
    metrics = pruner.state.module_metrics.values()
    errors = [m["error"] for m in metrics if m["error"] is not None] or [float("nan")]
    return {
        "method": args.single,
        "pattern": args.sparsity_type,
        "layers": args.layers,
        "rows": args.rows,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "wall_s": wall,
        "solve_s": sum(m["seconds"] for m in metrics),
        "peak_rss_mib": rss_mib(),
        "baseline_rss_mib": baseline,
        "mean_error": sum(errors) / len(errors),
        "max_error": max(errors),
        "sparsity": sum(m["sparsity"] for m in metrics) / len(metrics),
        "modules": len(metrics),
        "threads": torch.get_num_threads(),
        "reconstruction_error": not args.no_error,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["magnitude", "wanda", "sparsegpt", "alps"])
    parser.add_argument("--sparsity-type", default="unstructured")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--no-error",
        action="store_true",
        help="skip the per-module error metric (saves the X^T X of Wanda and magnitude)",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results", "prune_cpu.json"))
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(single(args)))
        return
    results = []
    for method in args.methods:
        cmd = [sys.executable, os.path.abspath(__file__), "--single", method, "--sparsity-type", args.sparsity_type,
               "--layers", str(args.layers), "--rows", str(args.rows), "--seq-len", str(args.seq_len),
               "--dtype", args.dtype, "--threads", str(args.threads)] + (["--no-error"] if args.no_error else [])  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{method}: {results[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    print(
        f"\n### Prune on CPU: Qwen2.5-0.5B shape ({args.layers} layers), {args.rows} x {args.seq_len} tokens, "
        f"{args.dtype}, {os.cpu_count()} cores\n"
    )
    print(
        "| method | pattern | error metric | wall s | solve s | peak RSS MiB | RSS over baseline MiB | mean err | max err "
        "| sparsity |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['method']} | {r['pattern']} | {'on' if r['reconstruction_error'] else 'off'} | {r['wall_s']:.1f} | "
            f"{r['solve_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['baseline_rss_mib']:.0f} | "
            f"{r['mean_error']:.4f} | {r['max_error']:.4f} | {r['sparsity']:.3f} |"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "results": results},
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
