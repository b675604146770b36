"""What to do with an expert that received fewer routed tokens than its input size: measured on the embedded tiny
mixture-of-experts reasoner.

Calibration sets of a few rows (the model's training problems with their reasoning, as `human` calibration builds
them) leave many experts starved. Each `starved_experts` rule (`all_tokens`, `magnitude`, `routed`) and the
`moe_statistics="all_tokens"` mode prune the model with SparseGPT at 2:4; the held-out reasoning texts of the test
problems then give the mean negative log-likelihood per reply token and the relative error of the last hidden state
against the dense model.

    python benchmarks/bench_moe_starved.py --rows 4 8 32

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[4, 8, 32])
    ap.add_argument("--sparsity-type", default="2:4")
    ap.add_argument("--method", default="sparsegpt")
    ap.add_argument("--heldout", type=int, default=20, help="held-out problems per level")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ssgr import OneShotPruner, PruningConfig
    from hf_ssgr.calibration.prompts import render_prompt
    from hf_ssgr.tiny_reasoner import MOE_MODEL_PATH, reasoning_text, test_problems, train_problems

    tok = AutoTokenizer.from_pretrained(MOE_MODEL_PATH)

    def encode(p):
        ids_p = tok(render_prompt(tok, p.problem), add_special_tokens=False)["input_ids"]
        ids_r = tok(reasoning_text(p) + tok.eos_token, add_special_tokens=False)["input_ids"]
        return ids_p, ids_r

    heldout = [encode(p) for p in test_problems(per_level=args.heldout)]

    @torch.no_grad()
    def measure(model, dense_hidden=None):
        nll = n = 0.0
        hidden = []
        for ids_p, ids_r in heldout:
            ids = torch.tensor([ids_p + ids_r])
            out = model(ids, output_hidden_states=True)
            logp = out.logits[0, len(ids_p) - 1 : -1].log_softmax(-1)
            nll -= float(logp.gather(1, torch.tensor(ids_r)[:, None]).sum())
            n += len(ids_r)
            hidden.append(out.hidden_states[-1][0])
        err = None
        if dense_hidden is not None:
            num = sum(float((h - d).norm() ** 2) for h, d in zip(hidden, dense_hidden))
            den = sum(float(d.norm() ** 2) for d in dense_hidden)
            err = (num / den) ** 0.5
        return nll / n, hidden, err

    def load():
        return AutoModelForCausalLM.from_pretrained(MOE_MODEL_PATH, dtype=torch.float32).eval()

    dense_nll, dense_hidden, _ = measure(load())
    variants = [
        ("routed statistics, starved: all tokens (default)", dict(starved_experts="all_tokens")),
        ("routed statistics, starved: magnitude", dict(starved_experts="magnitude")),
        ("routed statistics, starved: as routed", dict(starved_experts="routed")),
        ("all-token statistics", dict(moe_statistics="all_tokens")),
    ]
    results = []
    for rows in args.rows:
        calib = [sum(encode(p), []) for p in train_problems(rows, seed=5)]
        for label, extra in variants:
            model = load()
            cfg = PruningConfig(method=args.method, sparsity=0.5, sparsity_type=args.sparsity_type, **extra)
            pruner = OneShotPruner(cfg, progress_bar=False)
            pruner.prune(model, calib)
            nll, _, err = measure(model, dense_hidden)
            metrics = [m for n_, m in pruner.state.module_metrics.items() if "experts.down_proj" in n_]
            results.append({
                "rows": rows,
                "tokens": sum(len(r) for r in calib),
                "variant": label,
                "starved_experts": sum(1 for m in metrics if m.get("starved")),
                "experts": len(metrics),
                "heldout_nll": nll,
                "last_hidden_rel_error": err,
            })  # fmt: skip
    print(f"dense held-out NLL per reply token: {dense_nll:.4f}\n")
    print("| rows (tokens) | experts' statistics | starved experts | held-out NLL | last hidden state error |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']} ({r['tokens']}) | {r['variant']} | {r['starved_experts']}/{r['experts']} | "
              f"{r['heldout_nll']:.4f} | {r['last_hidden_rel_error']:.4f} |")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"dense_nll": dense_nll, "method": args.method, "sparsity_type": args.sparsity_type,
                       "results": results}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
