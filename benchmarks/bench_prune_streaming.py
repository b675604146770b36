"""The same checkpoint pruned in memory (`from_pretrained` -> `prune()` -> `save_pruned`) and streamed from its shards
(`prune_pretrained`): wall time, peak RSS, disk written, and whether the two outputs hold the same bytes.

A Qwen2-shaped model with random weights is built and saved first (in its own process), then each path runs in a fresh
process so that its peak RSS (`ru_maxrss`: resident memory, mapped file pages included) is its own.

    python benchmarks/bench_prune_streaming.py                              # 24 layers of 1024 x 4096, 1.6 GB fp32
    python benchmarks/bench_prune_streaming.py --layers 8 --method sparsegpt --out streaming.json

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _shape(args) -> dict:
    return dict(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
                vocab_size=args.vocab, max_position_embeddings=4096, tie_word_embeddings=False)  # fmt: skip


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> dict:
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    dtype = getattr(torch, args.dtype)
    if args.role == "build":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        model = Qwen2ForCausalLM(Qwen2Config(**_shape(args))).eval()
        torch.set_default_dtype(previous)
        model.save_pretrained(args.src, max_shard_size="200MB")
        return {"params": sum(p.numel() for p in model.parameters())}
    import transformers  # noqa: F401  (imported before the baseline is read)

    from hf_ssgr import OneShotPruner, PruningConfig

    baseline = _current_mib()
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, args.vocab, (args.rows, args.seq_len), generator=g)
    config = PruningConfig(method=args.method, sparsity=0.5, batch_size=args.rows)
    pruner = OneShotPruner(config, progress_bar=False)
    t0 = time.perf_counter()
    if args.role == "memory":
        from transformers import AutoModelForCausalLM

        from hf_ssgr.hub.upload import save_pruned

        model = AutoModelForCausalLM.from_pretrained(args.src, dtype=dtype)
        pruner.prune(model, calib)
        save_pruned(model, args.dst, pruner=pruner)
    else:
        pruner.prune_pretrained(args.src, calib, args.dst, dtype=dtype, tokenizer=None)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": _peak_mib(), "baseline_rss_mib": baseline}


def _folder_bytes(folder: str, suffix: str = ".safetensors") -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(suffix))


def same_tensors(a: str, b: str) -> bool:
    """Every tensor of folder `a` has the same name, dtype, shape and bytes in `b` (read one tensor at a time)."""
    import torch
    from safetensors import safe_open

    def index(folder):
        out = {}
        for f in os.listdir(folder):
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(folder, f), framework="pt") as h:
                    out.update(dict.fromkeys(h.keys(), os.path.join(folder, f)))
        return out

    ia, ib = index(a), index(b)
    if set(ia) != set(ib):
        return False
    for key in ia:
        with safe_open(ia[key], framework="pt") as ha, safe_open(ib[key], framework="pt") as hb:
            x, y = ha.get_tensor(key), hb.get_tensor(key)
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.view(torch.uint8), y.view(torch.uint8)):
            return False
    return True


def run(args) -> dict:
    work = args.workdir or tempfile.mkdtemp(prefix="bench_streaming_")
    src, mem, stream = (os.path.join(work, n) for n in ("src", "memory", "stream"))
    base = [sys.executable, os.path.abspath(__file__), "--child", "--src", src]
    for k in ("hidden", "intermediate", "layers", "vocab", "rows", "seq_len", "threads"):
        base += [f"--{k}", str(getattr(args, k))]
    base += ["--dtype", args.dtype, "--method", args.method]

    def call(role, dst=""):
        out = subprocess.run([*base, "--role", role, "--dst", dst], capture_output=True, text=True, check=False)
        if out.returncode:
            raise RuntimeError(f"{role} failed:\n{out.stderr[-4000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    try:
        built = call("build")
        results = {"memory": call("memory", mem), "streamed": call("stream", stream)}
        for name, folder in (("memory", mem), ("streamed", stream)):
            results[name]["disk_written_bytes"] = _folder_bytes(folder)
        report = {
            "shape": _shape(args),
            "dtype": args.dtype,
            "method": args.method,
            "params": built["params"],
            "checkpoint_bytes": _folder_bytes(src),
            "calibration": [args.rows, args.seq_len],
            "results": results,
            "rss_ratio": results["streamed"]["peak_rss_mib"] / results["memory"]["peak_rss_mib"],
            "identical": same_tensors(mem, stream),
            "cpus": os.cpu_count(),
        }
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def table(r: dict) -> str:
    lines = [
        f"Qwen2 shape {r['shape']['num_hidden_layers']} × ({r['shape']['hidden_size']}, "
        f"{r['shape']['intermediate_size']}), {r['params'] / 1e6:.0f}M parameters, {r['dtype']}, checkpoint "
        f"{r['checkpoint_bytes'] / 2**30:.2f} GiB; {r['method']} 50%, {r['calibration'][0]} × {r['calibration'][1]} "
        f"tokens, {r['cpus']} CPUs",
        "",
        "| path | wall time (s) | peak RSS (MiB) | above the imports (MiB) | disk written (GiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, x in r["results"].items():
        lines.append(
            f"| {name} | {x['seconds']:.1f} | {x['peak_rss_mib']:.0f} | {x['peak_rss_mib'] - x['baseline_rss_mib']:.0f} "
            f"| {x['disk_written_bytes'] / 2**30:.2f} |"
        )
    lines += [
        "",
        f"Streamed peak RSS / in-memory: {r['rss_ratio']:.2f}. Same tensors, byte for byte: {r['identical']}.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=4096)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--method", default="wanda")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workdir", default=None, help="Keep the three folders here (default: a temporary folder).")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=None, help="Write the JSON report here.")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--role", default="", help=argparse.SUPPRESS)
    p.add_argument("--src", default="", help=argparse.SUPPRESS)
    p.add_argument("--dst", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    report = run(args)
    print(table(report))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
