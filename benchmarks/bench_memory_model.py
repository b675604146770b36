"""Check the peak-memory model (`hf_ssgr.estimate_prune_memory`) against measured peaks.

Each case prunes a seeded random-weight Qwen2-shaped model in a fresh process and compares the measured peak with
the estimate: peak RSS on a CPU (device and host are one memory), `torch.cuda.max_memory_allocated` plus host RSS on
a GPU (`--device cuda`, model and activations on the GPU, or with `--stream` on the host, one layer on the GPU).

    python benchmarks/bench_memory_model.py                     # CPU cases
    python benchmarks/bench_memory_model.py --device cuda       # a GPU: R1-Distill-Qwen-7B shape, 4 layers

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                         vocab_size=151936, tie_word_embeddings=True),
    "r1-distill-qwen-7b": dict(hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
                               intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
}  # fmt: skip
CPU_CASES = [
    ("qwen2.5-0.5b", 24, "sparsegpt", 32, 512),
    ("qwen2.5-0.5b", 6, "wanda", 8, 4096),
]
GPU_CASES = [
    ("r1-distill-qwen-7b", 4, "sparsegpt", 128, 16384),
]


def vm_hwm_gib() -> float:
    """This process's own peak RSS (`ru_maxrss` can carry a parent's RSS over the exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def single(args) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from hf_ssgr import OneShotPruner, PruningConfig, estimate_prune_memory

    shape = dict(SHAPES[args.shape], num_hidden_layers=args.layers, max_position_embeddings=32768, model_type="qwen2")
    config = Qwen2Config(**{k: v for k, v in shape.items() if k != "model_type"})
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen2ForCausalLM(config).eval()
    torch.set_default_dtype(previous)
    if args.device == "cuda" and not args.stream:
        model.to("cuda")
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, config.vocab_size, (args.rows, args.seq_len), generator=g)
    cfg = PruningConfig(method=args.single, sparsity=0.5, device=args.device, offload_activations=args.stream)
    t0 = time.perf_counter()
    OneShotPruner(cfg, progress_bar=False).prune(model, calib)
    seconds = time.perf_counter() - t0
    est = estimate_prune_memory(
        shape, args.rows, args.seq_len, method=args.single, model_on_device=not args.stream,
        offload_activations=args.stream, same_memory=args.device == "cpu",
    )  # fmt: skip
    result = {"shape": args.shape, "layers": args.layers, "method": args.single, "rows": args.rows,
              "seq_len": args.seq_len, "device": args.device, "stream": args.stream, "seconds": seconds,
              "host_peak_gib": vm_hwm_gib(),
              "estimate_device_gib": est.device_gib, "estimate_host_gib": est.host_gib,
              "terms_gib": {k: v / 1024**3 for k, v in est.terms.items()}}  # fmt: skip
    if args.device == "cuda":
        result["device_peak_gib"] = torch.cuda.max_memory_allocated() / 1024**3
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seq-len", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(single(args)))
        return
    cases = [(c, False) for c in CPU_CASES] if args.device == "cpu" else [(c, s) for c in GPU_CASES for s in (0, 1)]
    results = []
    for (shape, layers, method, rows, seq_len), stream in cases:
        cmd = [sys.executable, os.path.abspath(__file__), "--single", method, "--shape", shape, "--layers",
               str(layers), "--rows", str(rows), "--seq-len", str(seq_len), "--device", args.device]  # fmt: skip
        proc = subprocess.run(cmd + (["--stream"] if stream else []), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{shape} {method} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{shape} x{layers} {method} {rows}x{seq_len}: {results[-1]['seconds']:.0f} s", file=sys.stderr)
    print(f"\n### Peak memory, measured against the model ({args.device}, bf16, 50% unstructured)\n")
    print("| model | layers | method | rows × tokens | where | measured GiB | estimate GiB | estimate / measured |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        pairs = [("host RSS", r["host_peak_gib"], r["estimate_host_gib"])]
        if r["device"] == "cuda":
            where = "GPU (streamed)" if r["stream"] else "GPU"
            pairs = [(where, r["device_peak_gib"], r["estimate_device_gib"])] + pairs
        for where, measured, estimate in pairs:
            print(f"| {r['shape']} | {r['layers']} | {r['method']} | {r['rows']} × {r['seq_len']} | {where} | "
                  f"{measured:.2f} | {estimate:.2f} | {estimate / measured:.2f} |")  # fmt: skip
    out = args.out or os.path.join(HERE, "results", f"memory_model_{args.device}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "results": results}, f,
                  indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
