"""ALPS solve time and error, this package against the reference implementation (`mazumder-lab/ALPS`, `alps.py`).

For each shape, one seeded random weight and 2048 random input tokens with uneven channel scales; both solve the same
XᵀX with the reference's defaults (ρ 0.1, 300 iterations, 10 conjugate-gradient steps), and the relative
reconstruction error ‖(W − Ŵ)X‖²/‖WX‖² of each result is computed the same way. The reference is read from a checkout
given with `--reference` (its `alps.py` hard-codes `cuda:0`; on a machine without a GPU the script substitutes the
chosen device when it loads the file). Nothing of it is kept here.

    python benchmarks/bench_alps.py --reference /path/to/ALPS [--shapes 896x896 512x512 4864x896 1024x4096]

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from hf_ssgr.pruning.kernels import alps_prune, relative_reconstruction_error  # noqa: E402


def load_reference(path: str, device: str):
    with open(os.path.join(path, "alps.py"), encoding="utf-8") as f:
        source = f.read().replace("'cuda:0'", repr(device))
    if device == "cpu":
        source = source.replace("torch.cuda.synchronize()", "")
    module = types.ModuleType("alps_reference")
    exec(compile(source, os.path.join(path, "alps.py"), "exec"), module.__dict__)
    return module


def case(ref, d_out: int, d_in: int, nm, tokens: int, seed: int, device: str) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d_in, generator=g) * (torch.rand(d_in, generator=g) * 2)
    w = torch.randn(d_out, d_in, generator=g) * 0.02
    layer = torch.nn.Linear(d_in, d_out, bias=False).to(device)
    layer.weight.data = w.clone().to(device)
    solver = ref.ALPS_prune(layer, 1, tokens)
    solver.add_batch(x[None].to(device), layer(x.to(device))[None])
    gram = solver.XtX.clone().cpu()
    start = time.perf_counter()
    solver.ALPS_admm(0.5, *(nm or (0, 0)))
    ref_seconds = time.perf_counter() - start
    ref_w = layer.weight.data.detach().cpu()
    start = time.perf_counter()
    ours, _ = alps_prune(w.to(device), gram.to(device), 0.5, nm)
    if device == "cuda":
        torch.cuda.synchronize()
    ours_seconds = time.perf_counter() - start
    return {
        "shape": f"{d_out}x{d_in}",
        "pattern": f"{nm[0]}:{nm[1]}" if nm else "50%",
        "reference_s": ref_seconds,
        "ours_s": ours_seconds,
        "speedup": ref_seconds / ours_seconds,
        "reference_error": relative_reconstruction_error(w, ref_w, gram),
        "ours_error": relative_reconstruction_error(w, ours.cpu(), gram),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True, help="a checkout of mazumder-lab/ALPS (the folder with alps.py)")
    ap.add_argument("--shapes", nargs="+", default=["896x896", "512x512", "4864x896", "1024x4096"])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.path.join(HERE, "measured", "cpu_alps_vs_reference.json"))
    args = ap.parse_args()
    ref = load_reference(args.reference, "cuda:0" if args.device == "cuda" else args.device)
    rows = []
    for i, shape in enumerate(args.shapes):
        d_out, d_in = map(int, shape.split("x"))
        for nm in ((2, 4), None):
            rows.append(case(ref, d_out, d_in, nm, args.tokens, seed=i, device=args.device))
    print(f"ALPS, {args.tokens} tokens, {args.device}, {platform.machine()}, {torch.get_num_threads()} threads")
    print("| shape (out x in) | pattern | reference s | hf-ssgr s | speed-up | reference error | hf-ssgr error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['pattern']} | {r['reference_s']:.2f} | {r['ours_s']:.2f} | {r['speedup']:.2f}x | "
              f"{r['reference_error']:.5f} | {r['ours_error']:.5f} |")  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"tokens": args.tokens, "device": args.device, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
