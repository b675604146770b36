"""LiveCodeBench grading throughput across problems: problem by problem (as lm-eval's `process_results` calls it) or
every problem's programs at once (the task's `GradeCode` filter, `grade_replies`).

`--problems` stdin problems (sum of a row, 5 tests each) with `--samples` replies each, a seeded mix of right programs,
wrong ones, slow right ones (0.2 s a test) and ones that run past the per-test limit (`--timeout`, default 1 s), graded
in the sandbox with the usable cores as workers. Both ways must give the same verdicts.

    python benchmarks/bench_lcb_grading.py [--problems 100 --samples 16 --timeout 1]

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import hf_ssgr.evaluation.livecodebench as lcb  # noqa: E402
from hf_ssgr.evaluation.sandbox import Sandbox  # noqa: E402

RIGHT = "print(sum(map(int, input().split())))"
KINDS = {
    "right": RIGHT,
    "wrong": "print(sum(map(int, input().split())) + 1)",
    "slow": "import time\ntime.sleep(0.2)\n" + RIGHT,
    "past the limit": "while True:\n    pass",
}
MIX = {"right": 0.55, "wrong": 0.3, "slow": 0.12, "past the limit": 0.03}


def problem(rng: random.Random) -> str:
    rows = [[rng.randint(-99, 99) for _ in range(rng.randint(1, 6))] for _ in range(5)]
    tests = [{"input": " ".join(map(str, r)) + "\n", "output": f"{sum(r)}\n"} for r in rows]
    return json.dumps({"tests": tests, "fn_name": None})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--timeout", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "measured", "cpu_lcb_grading.json"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    kinds, weights = list(MIX), list(MIX.values())
    problems = []
    for _ in range(args.problems):
        picked = rng.choices(kinds, weights, k=args.samples)
        replies = [f"</think>\n```python\n{KINDS[k]}\n```" for k in picked]
        problems.append((replies, problem(rng), [None] * args.samples))
    box = Sandbox()
    lcb._SANDBOXES[(False, None)] = box  # the sandbox get_sandbox() hands out
    options = {"lcb_timeout": args.timeout}

    start = time.perf_counter()
    one_by_one = [lcb.score_code_replies(r, t, finish_reasons=f, **options)["correct"] for r, t, f in problems]
    before = time.perf_counter() - start
    start = time.perf_counter()
    together = [sum(v.passed for v in vs) for vs in lcb.grade_replies(problems, **options)]
    after = time.perf_counter() - start
    if one_by_one != together:
        raise SystemExit("the two ways gave different verdicts")
    n = args.problems * args.samples
    rows = [
        {"grading": "problem by problem (process_results)", "seconds": before, "programs_per_s": n / before},
        {"grading": "all problems at once (GradeCode filter)", "seconds": after, "programs_per_s": n / after},
    ]
    print(f"{args.problems} problems x {args.samples} replies ({n} programs, 5 tests each, {args.timeout} s per test), "
          f"{box.workers} workers, {platform.machine()}, {len(os.sched_getaffinity(0))} usable cores, "
          f"{'root' if os.geteuid() == 0 else 'not root'}")  # fmt: skip
    print("| grading | seconds | programs/s |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['grading']} | {r['seconds']:.1f} | {r['programs_per_s']:.1f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"problems": args.problems, "samples": args.samples, "timeout": args.timeout, "mix": MIX,
                   "workers": box.workers, "rows": rows}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
