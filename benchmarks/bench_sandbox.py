"""Sandboxed grading throughput: LiveCodeBench programs per second, by number of workers.

Grades the fixture problems' known-correct solutions (a call-based LeetCode problem with 11 tests and a stdin problem
with 5 tests), `--programs` of them, with `hf_ssgr.evaluation.livecodebench.grade_programs`, each program in its own
sandboxed process, at 1 .. `--max-workers` workers (default: the usable cores). Also times the same programs without
isolation (`allow_unsandboxed`), to show what the sandbox costs. Every verdict must be "passed". Also the start-up
cost per program: the mean wall time of a harness that only answers, sandboxed and not, one at a time.

    python benchmarks/bench_sandbox.py [--programs 64 --max-workers N --startup-runs 40]

Prints a Markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hf_ssgr.evaluation.livecodebench import _row_tests, grade_programs  # noqa: E402
from hf_ssgr.evaluation.sandbox import Sandbox, SandboxLimits, isolation_available  # noqa: E402

FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "livecodebench_sample.jsonl")
SOLUTIONS = [
    "from typing import List\n\nclass Solution:\n"
    "    def findIntersectionValues(self, nums1: List[int], nums2: List[int]) -> List[int]:\n"
    "        s1, s2 = set(nums1), set(nums2)\n"
    "        return [sum(1 for x in nums1 if x in s2), sum(1 for x in nums2 if x in s1)]\n",
    "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) / n)\nprint(max(a))\n",
]


def run(sandbox: Sandbox, programs: list[str], tests: list[str]) -> float:
    start = time.perf_counter()
    verdicts = grade_programs(programs, tests, sandbox)
    seconds = time.perf_counter() - start
    failed = [v for v in verdicts if not v.passed]
    if failed:
        raise SystemExit(f"{len(failed)} known-correct programs failed: {failed[0]}")
    return seconds


def startup_seconds(sandbox: Sandbox, runs: int) -> float:
    harness = "def main(args, emit):\n    emit(1)\n"
    sandbox.run(harness, {})
    start = time.perf_counter()
    for _ in range(runs):
        assert sandbox.run(harness, {}).output == 1
    return (time.perf_counter() - start) / runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=64)
    ap.add_argument("--startup-runs", type=int, default=40)
    ap.add_argument("--max-workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", default=os.path.join(HERE, "measured", "cpu_sandbox.json"))
    args = ap.parse_args()
    with open(FIXTURE) as f:  # the problems' tests as the task stores them (read without `datasets`)
        rows = [json.loads(line) for line in f if line.strip()]
    docs = [{"answer": json.dumps(dict(zip(("tests", "fn_name"), _row_tests(r, FIXTURE))))} for r in rows]
    programs = [SOLUTIONS[i % 2] for i in range(args.programs)]
    tests = [docs[i % 2]["answer"] for i in range(args.programs)]
    tests_per_program = sum(len(json.loads(t)["tests"]) for t in tests) / len(tests)
    rows = []
    modes = [("sandbox", False)] if isolation_available() is None else []
    modes.append(("none (allow_unsandboxed)", True))
    startup = {}
    for mode, unsandboxed in modes:
        for workers in sorted({1, args.max_workers}):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                box = Sandbox(SandboxLimits(), workers=workers, allow_unsandboxed=unsandboxed)
            if workers == 1:
                startup[mode] = startup_seconds(box, args.startup_runs)
            seconds = run(box, programs, tests)
            rows.append({"isolation": mode, "workers": workers, "programs": args.programs, "seconds": seconds,
                         "programs_per_s": args.programs / seconds})  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    print(f"{args.programs} programs, {tests_per_program:.1f} tests each, {platform.machine()}, {cores} usable cores, "
          f"{'root' if os.geteuid() == 0 else 'not root'}")  # fmt: skip
    print("| isolation | workers | seconds | programs/s |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['isolation']} | {r['workers']} | {r['seconds']:.2f} | {r['programs_per_s']:.1f} |")
    print("\n| isolation | start-up per program (ms) |\n|---|---:|")
    for mode, seconds in startup.items():
        print(f"| {mode} | {seconds * 1000:.1f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"tests_per_program": tests_per_program, "rows": rows, "startup_seconds": startup}, f, indent=2)


if __name__ == "__main__":
    main()
