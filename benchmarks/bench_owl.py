"""OWL (outlier-weighted layer-wise sparsity) against uniform sparsity on the embedded tiny reasoner.

For each calibration of claim 1 of the claims report (`text`: the tiny world's plain-text corpus, the C4 analogue;
`human`: problems with their terse human solutions, the MathR analogue; `sgr`: the dense model's first correct
self-generated reply per problem), each method (Wanda, SparseGPT) and each sparsity (60%, 70% unstructured), the model
is pruned with a uniform sparsity and with OWL (M = 5, λ = 0.08, the paper's defaults), then measured on held-out
problems (disjoint from the calibration's): greedy pass@1, and the mean negative log-likelihood per token of the
reference reasoning texts.

    python benchmarks/bench_owl.py --out benchmarks/measured/cpu_owl.json > benchmarks/measured/cpu_owl.md

Prints a Markdown table (and the OWL allocations) and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.6, 0.7])
    ap.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    ap.add_argument("--policies", nargs="+", default=["text", "human", "sgr"])
    ap.add_argument("--num-samples", type=int, default=64, help="calibration rows")
    ap.add_argument("--heldout", type=int, default=40, help="held-out problems per level (5 levels)")
    ap.add_argument("--owl-m", type=float, default=5.0)
    ap.add_argument("--owl-lambda", type=float, default=0.08)
    ap.add_argument("--no-generate", action="store_true", help="held-out NLL only (no greedy pass@1)")
    ap.add_argument("--num-generations", type=int, default=4, help="samples per problem for the sgr calibration")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ssgr import CalibrationConfig, OneShotPruner, PruningConfig, SSGRCalibrator
    from hf_ssgr.calibration.prompts import render_prompt
    from hf_ssgr.tiny_reasoner import MODEL_PATH, reasoning_text, test_problems
    from hf_ssgr.verification import extract_answer

    torch.manual_seed(0)
    t_start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(MODEL_PATH)
    tok.padding_side = "left"
    problems = test_problems(per_level=args.heldout)
    prompts = [tok(render_prompt(tok, p.problem), add_special_tokens=False)["input_ids"] for p in problems]
    replies = [tok(reasoning_text(p) + tok.eos_token, add_special_tokens=False)["input_ids"] for p in problems]

    def load():
        return AutoModelForCausalLM.from_pretrained(MODEL_PATH, dtype=torch.float32).eval()

    @torch.no_grad()
    def measure(model) -> dict:
        nll = n = 0.0
        for ids_p, ids_r in zip(prompts, replies):
            logits = model(torch.tensor([ids_p + ids_r])).logits[0, len(ids_p) - 1 : -1]
            nll -= float(logits.log_softmax(-1).gather(1, torch.tensor(ids_r)[:, None]).sum())
            n += len(ids_r)
        correct = []
        for k in ([] if args.no_generate else range(0, len(problems), 64)):
            batch = [tok.decode(ids) for ids in prompts[k : k + 64]]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=160, do_sample=False, pad_token_id=tok.pad_token_id)
            for p, seq in zip(problems[k : k + 64], out[:, enc["input_ids"].shape[1] :]):
                answer = extract_answer(tok.decode(seq, skip_special_tokens=True))
                correct.append(answer is not None and answer.strip() == str(p.answer))
        pass1 = sum(correct) / len(correct) if correct else None
        return {"pass@1": pass1, "heldout_nll": nll / n, "correct": correct}

    dense_model = load()
    dense = measure(dense_model)
    calibrations = {}
    for policy in args.policies:
        source = "tiny-text" if policy == "text" else "tiny-arith"
        ccfg = CalibrationConfig(policy=policy, num_samples=args.num_samples, max_length=256, num_generations=args.num_generations,
                                 max_new_tokens=128, min_thinking_words=1, generation_batch_size=64)  # fmt: skip
        ds = SSGRCalibrator(ccfg).build(dense_model, source, tokenizer=tok)
        calibrations[policy] = ds
    results, allocations = [], {}
    for sparsity in args.sparsities:
        for method in args.methods:
            for policy, ds in calibrations.items():
                for profile in ("uniform", "owl"):
                    model = load()
                    cfg = PruningConfig(method=method, sparsity=sparsity, sparsity_profile=profile, owl_m=args.owl_m,
                                        owl_lambda=args.owl_lambda)  # fmt: skip
                    pruner = OneShotPruner(cfg, progress_bar=False)
                    pruner.prune(model, ds)
                    m = measure(model)
                    row = {
                        "sparsity": sparsity,
                        "method": method,
                        "calibration": policy,
                        "calibration_tokens": sum(len(r) for r in ds["input_ids"]),
                        "profile": profile,
                        "pass@1": m["pass@1"],
                        "heldout_nll": m["heldout_nll"],
                        "correct": m["correct"],
                        "achieved_over_params": pruner.state.achieved_sparsity["targets"],
                        "layer_sparsities": pruner.state.layer_sparsities,
                        "outlier_ratios": pruner.state.outlier_ratios,
                    }
                    results.append(row)
                    if profile == "owl":
                        allocations[(sparsity, method, policy)] = row
                    print(f"{sparsity} {method} {policy} {profile}: pass@1 {m['pass@1']} NLL "
                          f"{m['heldout_nll']:.4f}", file=sys.stderr, flush=True)  # fmt: skip
    elapsed = time.perf_counter() - t_start
    print_report(args, dense, results, allocations, len(problems), elapsed)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"dense": dense, "results": results, "owl_m": args.owl_m, "owl_lambda": args.owl_lambda,
                       "heldout_problems": len(problems), "seconds": elapsed}, f, indent=2)  # fmt: skip


def paired_ci(a: list[bool], b: list[bool], reps: int = 2000) -> tuple[float, float, float]:
    """Difference in pass@1 (b − a) over the same problems, with a 95% paired bootstrap interval."""
    import random

    rng = random.Random(0)
    diffs = [int(y) - int(x) for x, y in zip(a, b)]
    n = len(diffs)
    boot = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return sum(diffs) / n, boot[int(0.025 * reps)], boot[int(0.975 * reps) - 1]


def _f3(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f}"


def print_report(args, dense, results, allocations, num_problems, elapsed):
    print("# OWL against uniform sparsity on the embedded tiny reasoner\n")
    measured = "the mean NLL per token of the reference reasoning texts" + (
        "" if args.no_generate else " and greedy pass@1"
    )
    print(f"Held-out problems: {num_problems} (levels 1-5): {measured}. Calibration: {args.num_samples} rows per "
          f"policy (tokens in the table). OWL: M = {args.owl_m:g}, λ = {args.owl_lambda:g}. Dense model: pass@1 "
          f"{_f3(dense['pass@1'])}, NLL {dense['heldout_nll']:.4f}. 2 CPU cores shared with other jobs, "
          f"{elapsed / 60:.1f} min in all.\n")  # fmt: skip
    print("| sparsity | method | calibration (tokens) | uniform pass@1 | OWL pass@1 | OWL − uniform [95% CI] | "
          "uniform NLL | OWL NLL |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    by_key = {(r["sparsity"], r["method"], r["calibration"], r["profile"]): r for r in results}
    for sparsity in args.sparsities:
        for method in args.methods:
            for policy in args.policies:
                u = by_key[(sparsity, method, policy, "uniform")]
                o = by_key[(sparsity, method, policy, "owl")]
                diff = "not measured"
                if u["correct"]:
                    d, lo, hi = paired_ci(u["correct"], o["correct"])
                    diff = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                print(f"| {100 * sparsity:.0f}% | {method} | {policy} ({u['calibration_tokens']}) | "
                      f"{_f3(u['pass@1'])} | {_f3(o['pass@1'])} | {diff} | "
                      f"{u['heldout_nll']:.4f} | {o['heldout_nll']:.4f} |")  # fmt: skip
    print("\nOWL allocations (sparsity per decoder layer; mean over layers = requested; the last column is the "
          "achieved sparsity over the pruned parameters):\n")
    print("| sparsity | method | calibration | outlier ratios D_l | layer sparsities | over parameters |")
    print("|---|---|---|---|---|---|")
    for (sparsity, method, policy), r in allocations.items():
        ratios = ", ".join(f"{100 * v:.2f}%" for v in r["outlier_ratios"].values())
        layers = ", ".join(f"{v:.3f}" for v in r["layer_sparsities"].values())
        print(f"| {100 * sparsity:.0f}% | {method} | {policy} | {ratios} | {layers} | "
              f"{r['achieved_over_params']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
