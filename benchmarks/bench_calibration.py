"""Calibration benchmarks: rollout throughput per engine, and streaming versus exhaustive SSGR selection cost.

1. `--throughput`: generated tokens/s of the transformers and vLLM engines on the same small random Qwen2 and the
   same prompts, on this machine, side by side in one run (vLLM start-up reported separately).
2. `--selection`: generation cost of SSGR selection on a simulated problem pool whose difficulty mix resembles
   MathR's (GSM8K-like easy problems plus MATH levels 1-5), run through the real `SSGRCalibrator` loop with a
   simulated engine: exhaustive (16 samples for every problem, then the first `num_samples` survivors in a seeded
   random order, which is a random draw) against streaming (same order, stop once enough rows are selected, stop
   sampling a problem once it is out). Both must select the same rows.

    python benchmarks/bench_calibration.py --throughput --selection

Prints Markdown tables and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import datasets  # noqa: E402
import torch  # noqa: E402
from testing_utils import make_char_tokenizer, make_tiny_model  # noqa: E402

import hf_ssgr.calibration.calibrator as calibration_module  # noqa: E402
from hf_ssgr import CalibrationConfig, SSGRCalibrator  # noqa: E402
from hf_ssgr.calibration.engines import Sample, make_engine  # noqa: E402
from hf_ssgr.calibration.prompts import encode_prompt  # noqa: E402

# Pass rates of a 7B reasoning model by difficulty bucket (share of the pool, mean probability of a correct sample):
# about half of MathR is GSM8K (mostly easy), the rest MATH levels 1-5.
POOL_MIX = [("gsm8k", 0.50, 0.93), ("L1", 0.05, 0.95), ("L2", 0.09, 0.90), ("L3", 0.11, 0.82), ("L4", 0.12, 0.70),
            ("L5", 0.13, 0.45)]  # fmt: skip


def throughput(args, results):
    tok = make_char_tokenizer()
    model = make_tiny_model("qwen2", vocab_size=128, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)  # fmt: skip
    prompts = [
        encode_prompt(tok, f"What is {a} + {b}?")
        for a, b in zip(range(3, 3 + args.prompts), range(7, 7 + args.prompts))
    ]
    rows = []
    for engine_name in args.engines:
        kwargs = dict(temperature=0.6, top_p=0.95, max_new_tokens=args.new_tokens, seed=0, ignore_eos=True)
        t0 = time.perf_counter()
        if engine_name == "vllm":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            path = tempfile.mkdtemp(prefix="bench_vllm_")
            model.save_pretrained(path)
            tok.save_pretrained(path)
            engine = make_engine(
                "vllm",
                None,
                tok,
                path,
                vllm_kwargs={"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 2048},
                **kwargs,
            )
        else:
            engine = make_engine(
                "transformers", model.to(torch.bfloat16), tok, None, batch_size=args.prompts * args.samples, **kwargs
            )
        startup = time.perf_counter() - t0
        engine.generate(prompts[:1], 1, seed=1)  # warm-up
        t0 = time.perf_counter()
        outs = engine.generate(prompts, args.samples, seed=2)
        seconds = time.perf_counter() - t0
        tokens = sum(len(s.response_ids) for o in outs for s in o)
        rows.append(
            dict(
                engine=engine_name,
                prompts=len(prompts),
                samples=args.samples,
                tokens=tokens,
                seconds=seconds,
                tokens_per_s=tokens / seconds,
                startup_s=startup,
            )
        )
        if hasattr(engine, "close"):
            engine.close()
    print(
        f"\n### Rollout throughput, random Qwen2 (hidden 256, 4 layers), {args.prompts} prompts x {args.samples} "
        f"samples x {args.new_tokens} new tokens (EOS ignored), bf16, {os.cpu_count()} CPU cores\n"
    )
    print("| engine | generated tokens | seconds | tokens/s | start-up s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['tokens']} | {r['seconds']:.2f} | {r['tokens_per_s']:.0f} | {r['startup_s']:.1f} |"
        )
    results["throughput"] = rows


class SimulatedEngine:
    """Replies whose correctness follows each problem's latent pass rate and whose length follows its difficulty."""

    def __init__(self, tok, pool):
        self.tok, self.pool = tok, pool
        self.by_prompt = {}
        self.cursor = {}

    def generate(self, prompts, num_samples, seed, sample_seeds=None):
        out = []
        for prompt in prompts:
            key = tuple(prompt)
            problem = self.by_prompt[key]
            samples = []
            for _ in range(num_samples):
                j = self.cursor.get(key, 0)
                self.cursor[key] = j + 1
                rng = random.Random(hash((problem["problem_id"], j)) & 0xFFFFFFFF)
                correct = rng.random() < problem["p"]
                length = max(8, int(rng.gauss(problem["mean_len"], problem["mean_len"] / 4)))
                answer = problem["answer"] if correct else "-1"
                words = " ".join(f"step{w % 50}" for w in range(j, j + length // 6))
                text = words + f"</think>\\boxed{{{answer}}}"
                ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                samples.append(Sample(ids, "eos"))
            out.append(samples)
        return out


def selection(args, results):
    tok = make_char_tokenizer()
    rng = random.Random(0)
    rows = []
    for bucket, share, mean_p in POOL_MIX:
        for i in range(int(args.pool * share)):
            p = min(1.0, max(0.0, rng.betavariate(mean_p * 6, (1 - mean_p) * 6)))
            mean_len = 60 + int(240 * (1 - mean_p))
            rows.append(
                dict(
                    problem_id=f"{bucket}/{i}",
                    problem=f"Problem {bucket}-{i}: find n.",
                    answer=str(i % 97),
                    solution="",
                    source=bucket,
                    level=bucket,
                    p=p,
                    mean_len=mean_len,
                )
            )
    pool = datasets.Dataset.from_list(rows)
    model = make_tiny_model("qwen2", vocab_size=128)
    out = []
    for mode in ("exhaustive", "streaming"):
        engine = SimulatedEngine(tok, {r["problem_id"]: r for r in rows})
        for r in rows:
            engine.by_prompt[tuple(encode_prompt(tok, r["problem"]))] = r
        calibration_module.make_engine = lambda *a, _e=engine, **k: _e
        cfg = CalibrationConfig(policy="ssgr", num_samples=args.num_samples, max_length=4096, tau=0.75,
                                num_generations=16, streaming=mode == "streaming", early_stop=mode == "streaming",
                                samples_per_round=4, generation_batch_size=64,
                                rollouts_dir=tempfile.mkdtemp(prefix=f"bench_{mode}_"))  # fmt: skip
        t0 = time.perf_counter()
        cal = SSGRCalibrator(cfg)
        ds = cal.build(model, pool.remove_columns(["p", "mean_len"]), tokenizer=tok)
        c = cal.report.counts
        out.append(dict(mode=mode, rows=len(ds), problems_sampled=len(engine.cursor),
                        responses=c["responses_generated"], tokens=c["tokens_generated"], seconds=time.perf_counter() - t0,
                        selected=sorted(ds["problem_id"])))  # fmt: skip
    exhaustive, streaming = out
    same = exhaustive["selected"] == streaming["selected"]
    print(
        f"\n### SSGR selection cost, simulated MathR-like pool of {len(rows)} problems, n = 16, tau = 0.75, "
        f"{args.num_samples} rows\n"
    )
    print("| mode | rows | problems sampled | responses | tokens | tokens vs exhaustive |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(
            f"| {r['mode']} | {r['rows']} | {r['problems_sampled']} | {r['responses']} | {r['tokens']} "
            f"| {r['tokens'] / exhaustive['tokens']:.3f} |"
        )
    print(f"\nSame rows selected by both: {same}")
    for r in out:
        r.pop("selected")
    results["selection"] = {"pool": len(rows), "mix": POOL_MIX, "runs": out, "same_rows": same}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--selection", action="store_true")
    parser.add_argument("--engines", nargs="+", default=["transformers", "vllm"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--num-samples", type=int, default=128)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "calibration.json"))
    args = parser.parse_args()
    results = {"torch": torch.__version__, "cpu_count": os.cpu_count()}
    if args.throughput:
        throughput(args, results)
    if args.selection:
        selection(args, results)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
