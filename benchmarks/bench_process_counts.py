"""How far a prune with 2 processes is from the same prune with 1, on the embedded tiny reasoner.

The processes split the calibration rows and all-reduce their float32 statistics, so `XᵀX` differs from the
one-process sum by the float32 rounding of another summation order (about 1e-7 relative). Methods that rank scores
derived from it can flip near-ties, and SparseGPT's column-by-column updates carry a flip on to later columns. This
script measures the result: for each configuration, the largest weight difference, the mask entries that differ, the
mean relative reconstruction error of the modules, and the held-out negative log-likelihood per token of reference
reasoning texts (100 problems), for 1 and 2 processes (`torchrun --nproc_per_node 2`, gloo on CPU), each process
on one thread (a different thread count changes the float32 rounding of the forward passes as well).

    python benchmarks/bench_process_counts.py [--rows 32]

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

CONFIGS = {
    "SparseGPT 50%": {"method": "sparsegpt", "sparsity": 0.5},
    "SparseGPT 50%, float64 statistics": {"method": "sparsegpt", "sparsity": 0.5, "gram_dtype": "float64"},
    "SparseGPT 2:4": {"method": "sparsegpt", "sparsity": 0.5, "sparsity_type": "2:4"},
    "SparseGPT 2:4, float64 statistics": {"method": "sparsegpt", "sparsity": 0.5, "sparsity_type": "2:4",
                                          "gram_dtype": "float64"},
    "Wanda 50%": {"method": "wanda", "sparsity": 0.5},
    "ALPS 50%": {"method": "alps", "sparsity": 0.5},
    "ALPS 50%, float64 statistics": {"method": "alps", "sparsity": 0.5, "gram_dtype": "float64"},
}


def rows_and_heldout(n_rows: int):
    from transformers import AutoTokenizer

    from hf_ssgr.calibration.prompts import render_prompt
    from hf_ssgr.tiny_reasoner import MODEL_PATH, reasoning_text, test_problems, train_problems

    tok = AutoTokenizer.from_pretrained(MODEL_PATH)

    def encode(problems):
        out = []
        for p in problems:
            prompt = tok(render_prompt(tok, p.problem), add_special_tokens=False)["input_ids"]
            reply = tok(reasoning_text(p) + tok.eos_token, add_special_tokens=False)["input_ids"]
            out.append((prompt, reply))
        return out

    calibration = [p + r for p, r in encode(train_problems(n_rows, seed=1))]
    return calibration, encode(test_problems(per_level=20))


def prune(config: dict, rows, out: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from hf_ssgr import OneShotPruner, PruningConfig
    from hf_ssgr.distributed import Distributed
    from hf_ssgr.tiny_reasoner import MODEL_PATH

    model = AutoModelForCausalLM.from_pretrained(MODEL_PATH, dtype=torch.float32)
    pruner = OneShotPruner(PruningConfig(**config), progress_bar=False)
    start = time.perf_counter()
    pruner.prune(model, rows)
    seconds = time.perf_counter() - start
    if Distributed.current().is_main:
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, out + ".safetensors")
        errors = [m["error"] for m in pruner.state.module_metrics.values() if m.get("error") is not None]
        with open(out + ".json", "w") as f:
            json.dump({"mean_error": sum(errors) / len(errors), "seconds": seconds}, f)


def heldout_nll(weights: dict, heldout) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    from hf_ssgr.tiny_reasoner import MODEL_PATH

    model = AutoModelForCausalLM.from_pretrained(MODEL_PATH, dtype=torch.float32).eval()
    model.load_state_dict(weights, strict=False)
    nll = n = 0.0
    with torch.no_grad():
        for prompt, reply in heldout:
            logits = model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1 : -1]
            nll -= float(logits.log_softmax(-1).gather(1, torch.tensor(reply)[:, None]).sum())
            n += len(reply)
    return nll / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(HERE, "measured", "cpu_process_counts.json"))
    args = ap.parse_args()
    rows, heldout = rows_and_heldout(args.rows)
    if args.worker:
        return prune(json.loads(args.worker[0]), rows, args.worker[1])
    from safetensors.torch import load_file

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, config in CONFIGS.items():
            one, two = os.path.join(tmp, "one"), os.path.join(tmp, "two")
            # one thread per process in both runs: a thread count of its own changes float32 rounding too
            env = dict(os.environ, OMP_NUM_THREADS="1")
            worker = [os.path.abspath(__file__), "--rows", str(args.rows), "--worker", json.dumps(config)]
            subprocess.run([sys.executable, *worker, one], env=env, check=True, capture_output=True)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                   *worker, two]  # fmt: skip
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            w1, w2 = load_file(one + ".safetensors"), load_file(two + ".safetensors")
            pruned = [k for k in w1 if ".layers." in k and k.endswith(".weight") and (w1[k] == 0).any()]
            flips = sum(int(((w1[k] == 0) != (w2[k] == 0)).sum()) for k in pruned)
            entries = sum(w1[k].numel() for k in pruned)
            max_diff = max(float((w1[k] - w2[k]).abs().max()) for k in pruned)
            r1, r2 = json.load(open(one + ".json")), json.load(open(two + ".json"))
            e1, e2 = r1["mean_error"], r2["mean_error"]
            results.append({
                "config": label, "max_abs_weight_diff": max_diff, "mask_flips": flips, "mask_entries": entries,
                "mean_error_1": e1, "mean_error_2": e2, "prune_seconds_1": r1["seconds"],
                "heldout_nll_1": heldout_nll(w1, heldout), "heldout_nll_2": heldout_nll(w2, heldout),
            })  # fmt: skip
    print(f"Embedded tiny reasoner, {args.rows} calibration rows, float32, 1 process against 2 (gloo)")
    print("| configuration | max abs weight diff | mask entries that differ | mean rel. error, 1 / 2 processes "
          "| held-out NLL, 1 / 2 processes | prune s (1 process) |\n|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for r in results:
        print(f"| {r['config']} | {r['max_abs_weight_diff']:.3g} | {r['mask_flips']} of {r['mask_entries']} "
              f"({100 * r['mask_flips'] / r['mask_entries']:.3f}%) | {r['mean_error_1']:.6f} / {r['mean_error_2']:.6f} "
              f"| {r['heldout_nll_1']:.5f} / {r['heldout_nll_2']:.5f} | {r['prune_seconds_1']:.1f} |")  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": args.rows, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
