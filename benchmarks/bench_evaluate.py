"""Evaluation throughput: `hf_ssgr.evaluate` (transformers and vLLM backends) against stock `lm_eval --model hf`.

Same random-weight Qwen2, same task (MATH-500 rows from the test fixtures), same k samples and length limit, on this
machine, in one run. Replies of a random model run to the limit, so every configuration generates about the same
number of tokens. Reports wall time (model load included, vLLM start-up reported apart), generated tokens and
tokens/s. With `--processes N` (default 2) it also runs the transformers backend in N processes under `torchrun`
(lm-eval deals the problems across them; the time is the `evaluate` call's, start-up excluded, as for one process).

    python benchmarks/bench_evaluate.py [--hidden 256 --layers 4 --k 4 --max-new 128 --no-vllm --processes 2]

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
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from testing_utils import free_port, make_char_tokenizer, make_tiny_model  # noqa: E402

from hf_ssgr.evaluation.evaluate import evaluate  # noqa: E402
from hf_ssgr.evaluation.registry import tasks_path  # noqa: E402

DATA = os.path.join(HERE, "..", "tests", "fixtures", "math500_sample.jsonl")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--processes", type=int, default=2, help="also evaluate in this many processes (1: skip)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "evaluate.json"))
    ap.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    tmp = tempfile.mkdtemp(prefix="bench_eval_")
    tok = make_char_tokenizer()
    model = make_tiny_model(
        "qwen2",
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=2048,
    )
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    rows = []

    def record(name, wall, report=None, tokens=None, startup=None):
        r = report["ssgr_math500"] if report is not None else None
        tokens = tokens if tokens is not None else sum(r.lengths)
        rows.append(
            {
                "configuration": name,
                "problems": r.num_problems if r else None,
                "replies": len(r.lengths) if r else None,
                "tokens": tokens,
                "wall_s": round(wall, 1),
                "generation_s": round(r.gen_seconds, 1) if r else None,
                "startup_s": startup,
                "tok_per_s": round(tokens / wall, 1),
            }
        )

    common = dict(
        tasks=["ssgr_math500"],
        num_samples=args.k,
        max_new_tokens=args.max_new,
        data_files={"ssgr_math500": DATA},
        batch_size=args.batch_size,
    )
    t = time.perf_counter()
    rep = evaluate(tmp, **common)
    record("hf_ssgr.evaluate, backend=hf", time.perf_counter() - t, rep)

    if args.processes > 1:
        from hf_ssgr.evaluation.evaluate import EvalReport

        result = os.path.join(tmp, "processes.json")
        port = free_port()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes)]
        cmd += ["--master_port", str(port), os.path.abspath(__file__), "--worker", tmp, result]
        cmd += ["--k", str(args.k), "--max-new", str(args.max_new), "--batch-size", str(args.batch_size)]
        threads = str(max(1, (os.cpu_count() or 1) // args.processes))
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=threads))
        with open(result) as f:
            done = json.load(f)
        record(f"hf_ssgr.evaluate, backend=hf, {args.processes} processes", done["seconds"],
               EvalReport.from_dict(done["report"]))  # fmt: skip

    if not args.no_vllm:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        t = time.perf_counter()
        rep = evaluate(
            tmp,
            backend="vllm",
            vllm_kwargs={"dtype": "bfloat16", "max_model_len": 2048, "enforce_eager": True},
            **common,
        )
        wall = time.perf_counter() - t
        record("hf_ssgr.evaluate, backend=vllm", wall, rep, startup=round(wall - rep["ssgr_math500"].gen_seconds, 1))

    import lm_eval
    from lm_eval.tasks import TaskManager

    metadata = {"pretrained": tmp, "data_files": {"ssgr_math500": DATA}, "max_gen_toks": args.max_new}
    t = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": tmp, "device": "cpu", "dtype": "float32"},
        tasks=[
            {
                "group": "bench",
                "task": [
                    {
                        "task": "ssgr_math500",
                        "repeats": args.k,
                        "filter_list": [{"name": "k_samples", "filter": [{"function": "take_first_k", "k": args.k}]}],
                    }
                ],
            }
        ],
        task_manager=TaskManager(include_path=tasks_path(), include_defaults=False, metadata=metadata),
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": args.max_new},
        batch_size=args.batch_size,
        bootstrap_iters=0,
    )
    wall = time.perf_counter() - t
    tokens = sum(n for s in out["samples"]["ssgr_math500"] for n in s["median_length"])
    record("lm_eval --model hf (stock)", wall, tokens=tokens)

    cols = list(rows[0])
    print(
        f"\nRandom Qwen2 hidden {args.hidden} x {args.layers} layers, MATH-500 fixture, k={args.k}, "
        f"max_new_tokens={args.max_new}, batch {args.batch_size}\n"
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=2)


def worker(args):
    """One of the `--processes` runs (under torchrun): times `evaluate`; process 0 writes the time and the report."""
    import hf_ssgr.evaluation.lm_eval_model  # noqa: F401 - lm-eval's import is not part of the time, as for one process
    from hf_ssgr.distributed import Distributed

    dist = Distributed.current()
    dist.barrier()  # every process has started and imported
    t = time.perf_counter()
    report = evaluate(args.worker[0], tasks=["ssgr_math500"], num_samples=args.k, max_new_tokens=args.max_new,
                      data_files={"ssgr_math500": DATA}, batch_size=args.batch_size)  # fmt: skip
    seconds = time.perf_counter() - t
    if dist.is_main:
        with open(args.worker[1], "w") as f:
            json.dump({"seconds": seconds, "report": report.to_dict()}, f)


if __name__ == "__main__":
    main()
