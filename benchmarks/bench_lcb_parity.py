"""Agreement of this package's LiveCodeBench verdicts with the official grader's, on `lcb_parity_cases.py`.

Needs checkouts of LiveCodeBench (`lcb_runner`), one per version to compare, e.g. 28fef95 (the current one) and
15808c7 (before its 2025-05-23 stdin change), each a folder holding `lcb_runner/`; they run in this interpreter (numpy
and tqdm are all they import), outside any sandbox, on the case set's programs only. Each case is graded by
`lcb_runner.evaluation.compute_code_generation_metrics.check_correctness` on the code that
`lcb_runner.utils.extraction_utils.extract_code` takes from the reply (correct when every test result is > 0, as
`pass_k_utils` counts it), and by `hf_ssgr.evaluation.livecodebench.grade_programs` in the sandbox (`extract_code`
with `extraction="official"`, the `buffer` stdin for the current version and `stringio` for the earlier one).

    python benchmarks/bench_lcb_parity.py --lcb-runner head=/path/to/LiveCodeBench \\
        --lcb-runner before-2025-05-23=/path/to/LiveCodeBench-15808c7 [--timeout 2]

Prints a table per version and each disagreement; writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from lcb_parity_cases import cases  # noqa: E402

# run by a child interpreter per version: the official verdicts, one JSON list
_OFFICIAL = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
sys.set_int_max_str_digits(50000)
from lcb_runner.evaluation.compute_code_generation_metrics import check_correctness
from lcb_runner.utils.extraction_utils import extract_code
from lcb_runner.lm_styles import LMStyle
cases, timeout = json.load(open(sys.argv[2])), int(sys.argv[3])
os.chdir(tempfile.mkdtemp(prefix="lcb-official-"))
out = []
for case in cases:
    code = extract_code(case["reply"], LMStyle.OpenAIChat)
    sample = {"input_output": json.dumps({"inputs": [t[0] for t in case["tests"]],
                                          "outputs": [t[1] for t in case["tests"]], "fn_name": case["fn_name"]})}
    try:
        res, meta = check_correctness(sample, code, timeout, debug=False)
        ok = bool(all(r is True or (not isinstance(r, bool) and r > 0) for r in res)) and len(res) == len(case["tests"])
        why = meta.get("error_message", "")
    except Exception as err:
        ok, why = False, f"grader raised {type(err).__name__}"
    out.append({"passed": ok, "why": str(why)[:120]})
json.dump(out, open(sys.argv[4], "w"))
"""


def official(path: str, cs: list[dict], timeout: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "cases.json"), os.path.join(tmp, "out.json")
        with open(src, "w") as f:
            json.dump(cs, f)
        subprocess.run([sys.executable, "-c", _OFFICIAL, path, src, str(timeout), dst], check=True)
        with open(dst) as f:
            return json.load(f)


def ours(cs: list[dict], timeout: int, stdin: str) -> list[dict]:
    from hf_ssgr.evaluation.livecodebench import extract_code, grade_programs
    from hf_ssgr.evaluation.sandbox import Sandbox

    programs = [extract_code(c["reply"]) for c in cs]
    specs = [json.dumps({"tests": [{"input": i, "output": o} for i, o in c["tests"]], "fn_name": c["fn_name"]})
             for c in cs]  # fmt: skip
    verdicts = grade_programs(programs, specs, Sandbox(), timeout, stdin)
    return [{"passed": v.passed, "why": v.reason} for v in verdicts]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lcb-runner", action="append", required=True, help="label=path of a LiveCodeBench checkout")
    ap.add_argument("--timeout", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "measured", "cpu_lcb_parity.json"))
    args = ap.parse_args()
    cs = cases()
    report = {"cases": len(cs), "timeout": args.timeout, "versions": {}}
    ours_by_stdin = {}
    for spec in args.lcb_runner:
        label, path = spec.split("=", 1)
        stdin = "stringio" if "before" in label else "buffer"
        if stdin not in ours_by_stdin:
            ours_by_stdin[stdin] = ours(cs, args.timeout, stdin)
        theirs = official(path, cs, args.timeout)
        mine = ours_by_stdin[stdin]
        differ = [
            {"case": c["name"], "official": t["passed"], "official_why": t["why"], "ours": m["passed"], "ours_why": m["why"]}
            for c, t, m in zip(cs, theirs, mine)
            if t["passed"] != m["passed"]
        ]  # fmt: skip
        report["versions"][label] = {
            "stdin": stdin,
            "agree": len(cs) - len(differ),
            "official_passed": sum(t["passed"] for t in theirs),
            "ours_passed": sum(m["passed"] for m in mine),
            "disagreements": differ,
        }
    print(f"{len(cs)} cases, {args.timeout} s per test")
    print("| lcb_runner | stdin stand-in | agree | official passed | hf-ssgr passed |\n|---|---|---:|---:|---:|")
    for label, r in report["versions"].items():
        print(f"| {label} | {r['stdin']} | {r['agree']} / {len(cs)} | {r['official_passed']} | {r['ours_passed']} |")
    for label, r in report["versions"].items():
        for d in r["disagreements"]:
            print(f"- {label}: {d['case']}: official {d['official']} ({d['official_why']}), ours {d['ours']} "
                  f"({d['ours_why']})")  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork", force=True)
    main()
