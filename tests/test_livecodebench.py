"""LiveCodeBench: data and prompts, code extraction, the official verdicts, and the task through evaluate()/lm-eval."""

import base64
import json
import os
import pickle
import zlib

import pytest
from testing_utils import ScriptedEngine, make_char_tokenizer, make_tiny_model, require_module

from hf_ssgr.evaluation.livecodebench import (
    LCB_DEFAULT_WINDOW,
    LCB_SYSTEM_MESSAGE,
    decode_private_tests,
    extract_code,
    grade_programs,
    load_livecodebench,
    score_code_replies,
    stdout_matches,
)
from hf_ssgr.evaluation.registry import Reply, process_results
from hf_ssgr.evaluation.sandbox import Sandbox, SandboxLimits, isolation_available

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "livecodebench_sample.jsonl")

# LeetCode 2956 (functional): a known-correct solution, and a known-wrong one that counts distinct values.
GOOD_FN = (
    "from typing import List\n\nclass Solution:\n"
    "    def findIntersectionValues(self, nums1: List[int], nums2: List[int]) -> List[int]:\n"
    "        s1, s2 = set(nums1), set(nums2)\n"
    "        return [sum(1 for x in nums1 if x in s2), sum(1 for x in nums2 if x in s1)]\n"
)
WRONG_FN = GOOD_FN.replace("for x in nums1", "for x in s1").replace("for x in nums2", "for x in s2")
# The stdin problem: average then maximum.
GOOD_STDIN = "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) / n)\nprint(max(a))\n"


@pytest.fixture(scope="module")
def docs():
    return load_livecodebench(FIXTURE, start_date=None, end_date=None)


@pytest.fixture(scope="module")
def sandbox():
    if isolation_available() is None:
        return Sandbox(SandboxLimits(wall_seconds=60), workers=2)
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):  # trusted programs only in this file
        return Sandbox(SandboxLimits(wall_seconds=60), workers=2, allow_unsandboxed=True)


def grade(code, doc, sandbox, timeout=6):
    return grade_programs([code], [doc["answer"]], sandbox, timeout)[0]


# ----------------------------------------------------------------------------------------------------------------
# Data and prompts


def test_private_tests_decode_from_json_and_from_compressed_pickle():
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()
    assert decode_private_tests(packed) == tests
    assert decode_private_tests(json.dumps(tests)) == tests
    assert decode_private_tests("") == []


def test_private_tests_refuse_a_pickle_that_references_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/hf_ssgr_lcb_pwned",))

    packed = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(ValueError, match="plain data"):
        decode_private_tests(packed)
    assert not os.path.exists("/tmp/hf_ssgr_lcb_pwned")
    with pytest.raises(ValueError, match="neither JSON"):
        decode_private_tests("not base64 !!")


def test_local_file_loads_every_test_and_the_official_prompts(docs):
    assert len(docs) == 3
    fn, std = json.loads(docs[0]["answer"]), json.loads(docs[1]["answer"])
    assert fn["fn_name"] == "findIntersectionValues" and len(fn["tests"]) == 11  # 2 public + 9 private
    assert std["fn_name"] is None and len(std["tests"]) == 5
    assert json.loads(docs[2]["answer"]) == std  # the same tests, private ones as plain JSON
    for d in docs:
        assert d["prompt"].startswith(LCB_SYSTEM_MESSAGE + "\n\n### Question:\n" + d["problem"])
        assert d["prompt"].endswith("### Answer: (use the provided format with backticks)\n\n")
        assert d["kind"] == "code" and d["benchmark"] == "ssgr_livecodebench"
    assert "starter code" in docs[0]["prompt"] and "def findIntersectionValues" in docs[0]["prompt"]
    assert "Read the inputs from stdin" in docs[1]["prompt"] and "# YOUR CODE HERE" in docs[1]["prompt"]
    assert [d["level"] for d in docs] == ["easy"] * 3 and docs[0]["subject"] == "leetcode"


def test_deepseek_r1_prompt_style():
    r1 = load_livecodebench(FIXTURE, prompt_style="deepseek_r1")
    assert r1[0]["prompt"].startswith("You will be given a question (problem specification) and will generate a "
                                      "correct Python program that matches the specification and passes all tests."
                                      "\n\nQuestion: " + r1[0]["problem"])  # fmt: skip
    assert r1[0]["prompt"].endswith("        \n```\n\n") and "<｜Assistant｜>" not in r1[0]["prompt"]
    assert "Ensure that when the python program runs" in r1[1]["prompt"]
    with pytest.raises(ValueError, match="prompt style"):
        load_livecodebench(FIXTURE, prompt_style="llama")


def test_contest_date_window(docs):
    window = load_livecodebench(FIXTURE, start_date=LCB_DEFAULT_WINDOW[0], end_date=LCB_DEFAULT_WINDOW[1])
    assert list(window["problem_id"]) == ["ssgr_livecodebench/abc000_a"]  # 2024-09-14 only
    assert len(load_livecodebench(FIXTURE)) == 3  # a local file is the selection: no window unless asked
    assert len(load_livecodebench(FIXTURE, start_date="2023-06-01")) == 2
    with pytest.raises(ValueError, match="no problem"):
        load_livecodebench(FIXTURE, start_date="2030-01-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        load_livecodebench(FIXTURE, start_date="Aug 2024")


def test_unknown_release_version_is_named():
    from hf_ssgr.evaluation.livecodebench import _hub_rows

    with pytest.raises(ValueError, match="release_v1 .. release_v6"):
        _hub_rows("release_v9")


# ----------------------------------------------------------------------------------------------------------------
# Extraction and comparison


def test_code_is_the_last_fenced_block_of_the_reply_as_officially():
    reply = "plan ```python\nprint(0)\n```</think>Here:\n```python\nprint(1)\n```\nand\n```python\nprint(2)\n```"
    assert extract_code(reply) == "print(2)"
    # LiveCodeBench searches the whole reply: code only inside the thinking, or thinking that never closed, counts
    assert extract_code("```python\nprint(1)\n```") == "print(1)"
    assert extract_code("<think>try ```python\nprint(3)\n``` then</think>no code") == "print(3)"
    assert extract_code(reply, finish_reason="length") == "print(2)"  # the official grader knows no truncation
    assert extract_code("</think>no code here") is None
    assert extract_code("</think>```\nx = 1\n```") == "x = 1"  # a fence without a language
    assert extract_code("</think>```python\nunterminated") is None
    # LiveCodeBench's rule: the lines between the last two lines that contain ``` (wherever it is on the line)
    assert extract_code("</think>Code: ```python\na = 1\nb = 2\n``` done") == "a = 1\nb = 2"


def test_the_stricter_extraction_is_an_option():
    reply = "plan ```python\nprint(0)\n```</think>Here:\n```python\nprint(2)\n```"
    assert extract_code(reply, extraction="after_think") == "print(2)"
    assert extract_code("```python\nprint(1)\n```", extraction="after_think") is None  # never closed
    assert extract_code("<think>```python\nprint(3)\n```</think>none", extraction="after_think") is None
    assert extract_code(reply, finish_reason="length", extraction="after_think") is None
    with pytest.raises(ValueError, match="official, after_think"):
        extract_code(reply, extraction="strict")


@pytest.mark.parametrize(
    "output, expected, verdict",
    [
        ("1.0\n", "1\n", True),  # equal as Decimals
        ("2.500000", "2.5", True),
        ("1e2", "100", True),  # Decimal("1E+2") == Decimal("100")
        ("0.333333", "0.3333333333333333", False),  # no epsilon: the Decimals differ
        ("  3 4  \n5\n\n", "3 4\n5", True),  # lines stripped, trailing blank lines dropped
        ("3  4", "3 4", True),  # whitespace inside a line: equal token by token as Decimals
        ("a  b", "a b", False),  # ... but text tokens are compared as the whole stripped line
        ("Yes", "yes", False),
        ("1\n\n2", "1\n2", False),  # a blank line in the middle counts
        ("1 2", "1 2 3", False),
        ("nan", "nan", True),  # equal text
        ("NaN", "nan", False),  # Decimal NaN != NaN
    ],
)
def test_stdout_comparison_gives_the_official_verdicts(output, expected, verdict):
    assert stdout_matches(output, expected) is verdict


# ----------------------------------------------------------------------------------------------------------------
# Grading real problems


def test_functional_problem_verdicts(docs, sandbox):
    fn = docs[0]
    assert grade(GOOD_FN, fn, sandbox).passed
    wrong = grade(WRONG_FN, fn, sandbox)
    assert not wrong.passed and wrong.reason == "wrong answer" and wrong.tests_run == 1
    # a tuple result counts as the list; a nested tuple does not equal a nested list (official `==`)
    assert grade(GOOD_FN.replace("return [", "return (").replace("s1)]\n", "s1))\n"), fn, sandbox).passed
    # passes the two public tests, fails a private one: wrong
    only_public = GOOD_FN.replace("        s1, s2", "        if len(nums1) == 1: return [9, 9]\n        s1, s2")
    verdict = grade(only_public, fn, sandbox)
    assert not verdict.passed and verdict.tests_run == 3
    assert not grade("class Solution:\n    def other(self): pass\n", fn, sandbox).passed  # no such method
    assert not grade("class Solution(:\n", fn, sandbox).passed  # syntax error


def test_stdin_problem_verdicts(docs, sandbox):
    std = docs[1]
    assert grade(GOOD_STDIN, std, sandbox).passed  # prints 4.0 where 4 is expected: equal as Decimals
    main_guard = (
        "import sys\ndef main():\n    data = sys.stdin.read().split()\n    n = int(data[0])\n"
        "    a = list(map(int, data[1:1 + n]))\n    print(sum(a) / n)\n    print(max(a))\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    assert grade(main_guard, std, sandbox).passed
    six_digits = GOOD_STDIN.replace("print(sum(a) / n)", "print(f'{sum(a) / n:.6f}')")
    verdict = grade(six_digits, std, sandbox)  # 1.333333 != 1.3333333333333333 on the fourth test
    assert not verdict.passed and verdict.tests_run == 4
    assert not grade(GOOD_STDIN.replace("max(a)", "min(a)"), std, sandbox).passed
    assert grade("import sys\n" + GOOD_STDIN + "sys.exit(0)\n", std, sandbox).passed  # exit() is not an error
    crash = grade("raise ValueError('boom')\n", std, sandbox)
    assert not crash.passed and crash.reason == "runtime error: ValueError"


def test_per_test_timeout(docs, sandbox):
    slow = "import time\nn = int(input())\nif n == 2:\n    time.sleep(30)\n" + GOOD_STDIN.split("\n", 1)[1]
    verdict = grade(slow, docs[1], sandbox, timeout=1)
    assert not verdict.passed and verdict.reason == "time limit exceeded" and verdict.tests_run == 2
    assert verdict.seconds < 10


def test_k_replies_scored_like_the_other_tasks(docs, sandbox, monkeypatch):
    import hf_ssgr.evaluation.livecodebench as lcb

    monkeypatch.setattr(lcb, "get_sandbox", lambda *a, **k: sandbox)
    block = lambda code: f"I think.</think>```python\n{code}```"  # noqa: E731
    replies = [block(GOOD_FN), block(WRONG_FN), f"```python\n{GOOD_FN}```", block(GOOD_FN)]
    reasons = [None, None, None, "length"]
    scores = score_code_replies(replies, docs[0]["answer"], lengths=[10, 20, 30, 40], finish_reasons=reasons)
    assert scores["pass@1"] == 0.75 and scores["correct"] == 3.0 and scores["pass@4"] == 1.0  # as officially
    assert scores["truncated"] == 0.25 and scores["mean_length"] == 25.0
    strict = score_code_replies(replies, docs[0]["answer"], finish_reasons=reasons, lcb_extraction="after_think")
    assert strict["pass@1"] == 0.25
    # through the task's process_results, as lm-eval calls it
    metrics = process_results(dict(docs[0]), [[Reply(r, 7, None, 0.5) for r in replies]])
    assert metrics["pass@1"] == 0.75 and metrics["pass@k"] == 1.0 and metrics["gen_seconds"] == 2.0


# ----------------------------------------------------------------------------------------------------------------
# What a program sees, as under the official grader (lcb_runner 28fef95)


def _stdin_problem(*pairs):
    return json.dumps({"tests": [{"input": i, "output": o} for i, o in pairs], "fn_name": None})


def _fn_problem(fn, *pairs):
    return json.dumps({"tests": [{"input": i, "output": o} for i, o in pairs], "fn_name": fn})


def _verdicts(sandbox, cases, timeout=6, stdin="buffer"):
    return [v.passed for v in grade_programs([c for c, _ in cases], [t for _, t in cases], sandbox, timeout, stdin)]


@pytest.mark.parametrize(
    "code, stdin, expected",
    [
        ("import sys\ns = sys.stdin.readline()[:-1]\nprint(len(s))", "abc\n", "3"),  # the newline is kept
        ("import sys\ninput = sys.stdin.readline\nn = int(input())\nprint(repr(input()))", "2\nab\n", "'ab\\n'"),
        # read until end of input, through blank lines: readline gives '' only at the end
        ("import sys\nn = 0\nwhile True:\n    line = sys.stdin.readline()\n    if not line:\n        break\n"
         "    n += 1\nprint(n)", "a\n\nb\n\n", "4"),
        ("import sys\nprint(repr(sys.stdin.readline()))", "7", "'7'"),  # no final newline
        ("import sys\nsys.stdin.readline()\nprint(repr(sys.stdin.readline()))", "7\n", "''"),  # past the end
        ("import sys\nprint(sys.stdin.readlines())", "1\n2\n", "['1', '2', '']"),  # split, without newlines
        ("import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))", "1 2\n3\n", "6"),  # fast input
        ("import sys\nprint(sys.stdin.buffer.readline())", "5 6\n7\n", "b'5 6\\n'"),
        # the prelude's `from builtins import *` bound the real `open` before `open` was mocked: fd 0 is empty
        ("print(repr(open(0).read()))", "x\ny", "''"),
        # the prelude's `from sys import *` bound the real stdin, whose readline the official runner patched
        ("print(repr(stdin.readline()))", "ab\ncd\n", "'ab'"),
        ("print(int(input()) * 2)", "21", "42"),
    ],
)
def test_stdin_reads_as_officially(sandbox, code, stdin, expected):
    assert _verdicts(sandbox, [(code, _stdin_problem((stdin, expected)))]) == [True]


def test_stdin_iteration_and_the_earlier_stand_in(sandbox):
    loop = "import sys\nprint(sum(int(x) for x in sys.stdin))"
    fast = "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))"
    readlines = "import sys\nprint(sys.stdin.readlines())"
    problem = _stdin_problem(("1\n2\n", "3"))
    lines = _stdin_problem(("1\n2\n", "['1\\n', '2\\n']"))
    # lcb_runner since 2025-05-23: its stand-in cannot be iterated; before, sys.stdin was a StringIO (no .buffer)
    assert _verdicts(sandbox, [(loop, problem), (fast, problem), (readlines, lines)]) == [False, True, False]
    old = _verdicts(sandbox, [(loop, problem), (fast, problem), (readlines, lines)], stdin="stringio")
    assert old == [True, False, True]
    with pytest.raises(ValueError, match="buffer, stringio"):
        grade_programs([loop], [problem], sandbox, stdin="file")


def test_long_integers_as_officially(sandbox):
    big = "1" + "0" * 5000  # 10 ** 5000
    cases = [
        ("print(10 ** 5000)", _stdin_problem(("", big))),  # the grader raises the int-string limit to 50,000 digits
        ("print(10 ** 60000)", _stdin_problem(("", "1"))),  # ... and no further
        ("class Solution:\n    def f(self, n):\n        return 10 ** n", _fn_problem("f", ("5000", big))),
        ("class Solution:\n    def f(self, n):\n        return 10 ** n + 1", _fn_problem("f", ("5000", big))),
    ]
    assert _verdicts(sandbox, cases) == [True, False, True, False]  # the long expected output does not stop grading


def test_numpy_results_compare_as_officially(sandbox):
    pytest.importorskip("numpy")
    head = "import numpy as np\nclass Solution:\n    def f(self, a):\n        return "
    cases = [
        (head + "np.int64(sum(a))", _fn_problem("f", ("[1, 2]", "3"))),  # np.int64(3) == 3
        (head + "[np.int64(x) for x in a]", _fn_problem("f", ("[1, 2]", "[1, 2]"))),
        (head + "np.array(a)", _fn_problem("f", ("[1, 2]", "[1, 2]"))),  # truth of an array: an error, so wrong
        (head + "np.array(a[:1])", _fn_problem("f", ("[5]", "[5]"))),  # one element: true
        (head + "float(np.float64(0.1) + 0.2)", _fn_problem("f", ("[0]", "0.30000000000000004"))),
    ]
    assert _verdicts(sandbox, cases) == [True, True, False, True, True]


def test_the_official_reliability_guard(sandbox):
    problem = _stdin_problem(("", "ok"))
    blocked = [
        "import os\nos.getcwd()\nprint('ok')",
        "import subprocess\nsubprocess.run(['true'])\nprint('ok')",
        "import resource\nprint('ok')",
        "quit()\nprint('ok')",
        "import os\nos.system('true')\nprint('ok')",
        "import shutil\nshutil.rmtree('/nonexistent')\nprint('ok')",
        "help()\nprint('ok')",
    ]
    # the runner's command line has arguments (fileinput opens each, with the mocked `open`), not the bare `-c`
    blocked.append("import sys\nprint('ok' if sys.argv[1:] == [] else 'no')")
    allowed = ["print('ok')\nexit()\nprint('more')", "import sys\nprint('ok')\nsys.exit(3)"]  # SystemExit is kept
    allowed.append("import tempfile\ntempfile.TemporaryFile().close()\nprint('ok')")  # its folder was chosen before
    got = _verdicts(sandbox, [(c, problem) for c in blocked + allowed])
    assert got == [False] * len(blocked) + [True] * len(allowed)


def test_a_program_that_swallows_the_alarm_still_fails(sandbox):
    # the official alarm handler prints a line into the captured output before it raises
    swallow = (
        "import time\ntry:\n    t = time.time()\n    while time.time() - t < 3:\n        pass\nexcept Exception:\n"
        "    pass\nprint(int(input()) + 1)"
    )
    ignore = "import signal, time\nsignal.signal(signal.SIGALRM, lambda *a: None)\ntime.sleep(2)\nprint(int(input()) + 1)"
    problem = _stdin_problem(("1\n", "2"))
    assert _verdicts(sandbox, [(swallow, problem), (ignore, problem)], timeout=1) == [False, True]


def test_a_problem_whose_tests_cannot_be_compared_does_not_stop_grading(sandbox, caplog):
    bad = json.dumps({"tests": [{"input": "1", "output": "not json"}], "fn_name": "f"})
    good = _fn_problem("f", ("1", "2"))
    code = "class Solution:\n    def f(self, n):\n        return n + 1"
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        verdicts = grade_programs([code, code], [bad, good], sandbox)
    assert [v.passed for v in verdicts] == [False, True]
    assert verdicts[0].reason.startswith("grader error: JSONDecodeError") and "could not be compared" in caplog.text


def test_grading_many_problems_at_once_gives_the_same_verdicts(docs, sandbox, monkeypatch):
    import hf_ssgr.evaluation.livecodebench as lcb
    from hf_ssgr.evaluation.registry import GradeCode

    monkeypatch.setattr(lcb, "get_sandbox", lambda *a, **k: sandbox)
    block = lambda code: f"ok</think>```python\n{code}```"  # noqa: E731
    resps = [[block(GOOD_FN), block(WRONG_FN)], [block(GOOD_STDIN), "no code"], [block("print(0)")] * 2]
    picked = [dict(docs[0]), dict(docs[1]), dict(docs[1])]
    graded = GradeCode().apply([[Reply(r, 5, None, 1.0) for r in rs] for rs in resps], picked)
    assert [[r.verdict.passed for r in rs] for rs in graded] == [[True, False], [True, False], [False, False]]
    assert all(isinstance(r, Reply) and r.num_tokens == 5 for rs in graded for r in rs)
    for doc, rs, raw in zip(picked, graded, resps):  # process_results reads the verdicts instead of grading again
        assert process_results(doc, [rs])["pass@1"] == process_results(doc, [[Reply(r, 5) for r in raw]])["pass@1"]
    monkeypatch.setattr(lcb, "grade_programs", lambda *a, **k: pytest.fail("graded twice"))
    assert process_results(picked[0], [graded[0]])["pass@1"] == 0.5
    other = {"kind": "math", "benchmark": "ssgr_gsm8k"}
    assert GradeCode().apply([["x"]], [other]) == [["x"]]  # other tasks pass through


# ----------------------------------------------------------------------------------------------------------------
# The task end to end


@require_module("lm_eval")
def test_local_file_task_through_evaluate(monkeypatch, sandbox):
    import hf_ssgr.evaluation.livecodebench as lcb
    from hf_ssgr.evaluation.evaluate import evaluate

    monkeypatch.setattr(lcb, "get_sandbox", lambda *a, **k: sandbox)
    docs = load_livecodebench(FIXTURE)
    tok = make_char_tokenizer()
    answers = {docs[0]["problem"]: (GOOD_FN, WRONG_FN), docs[1]["problem"]: (GOOD_STDIN, "print(0)\n")}
    answers[docs[2]["problem"]] = answers[docs[1]["problem"]]

    def script(problem, j):  # per problem: good, wrong, good without </think>, good -> 3/4 (2/4 after </think>)
        good, bad = answers[problem]
        return [
            (f"ok</think>```python\n{good}```", "eos"),
            (f"ok</think>```python\n{bad}```", "eos"),
            (f"```python\n{good}```", "eos"),
            (f"ok</think>```python\n{good}```", "eos"),
        ][j % 4]

    engine = ScriptedEngine(tok, script, list(answers))
    model = make_tiny_model("qwen2", vocab_size=len(tok))
    report = evaluate(model, tok, tasks=["ssgr_livecodebench"], num_samples=4, max_new_tokens=4096,
                      data_files={"ssgr_livecodebench": FIXTURE}, engine=engine)  # fmt: skip
    res = report["ssgr_livecodebench"]
    assert res.num_problems == 3 and res.num_samples == 4
    assert res.pass_at_1 == pytest.approx(0.75) and res.pass_at_k == 1.0
    strict = evaluate(model, tok, tasks=["ssgr_livecodebench"], num_samples=4, max_new_tokens=4096,
                      data_files={"ssgr_livecodebench": FIXTURE}, engine=engine,
                      task_metadata={"lcb_extraction": "after_think"})  # fmt: skip
    assert strict["ssgr_livecodebench"].pass_at_1 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lcb_stdin must be one of buffer, stringio"):
        evaluate(model, tok, tasks=["ssgr_livecodebench"], num_samples=4, max_new_tokens=4096,
                 data_files={"ssgr_livecodebench": FIXTURE}, engine=engine, task_metadata={"lcb_stdin": "file"})
    # the task's settings through evaluate(): a contest-date window keeps the one problem of 2024-09
    windowed = evaluate(model, tok, tasks=["ssgr_livecodebench"], num_samples=4, max_new_tokens=4096,
                        data_files={"ssgr_livecodebench": FIXTURE}, engine=engine,
                        task_metadata={"lcb_start_date": "2024-08-01", "lcb_end_date": "2025-01-31"})  # fmt: skip
    assert windowed["ssgr_livecodebench"].num_problems == 1
    assert windowed.settings["task_metadata"]["lcb_start_date"] == "2024-08-01"


@require_module("lm_eval")
def test_task_runs_under_stock_lm_eval_include_path(monkeypatch, sandbox, tmp_path):
    """`lm_eval --model hf --include_path $(hf-ssgr tasks-path) --tasks ssgr_livecodebench` on a tiny model: the
    task loads the local file with its window, generates k replies per problem and grades them (all wrong)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import hf_ssgr.evaluation.livecodebench as lcb
    from hf_ssgr.evaluation.registry import tasks_path

    monkeypatch.setattr(lcb, "get_sandbox", lambda *a, **k: sandbox)
    tok = make_char_tokenizer()
    model = make_tiny_model("qwen2", vocab_size=len(tok), max_position_embeddings=4096)
    model.generation_config.eos_token_id = tok.eos_token_id
    path = str(tmp_path / "tiny")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    metadata = {"pretrained": path, "data_files": {"ssgr_livecodebench": FIXTURE}, "max_gen_toks": 4,
                "lcb_start_date": "2024-08-01", "lcb_end_date": "2025-01-31"}  # fmt: skip
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": path, "device": "cpu", "dtype": "float32", "batch_size": 16},
        tasks=["ssgr_livecodebench"],
        task_manager=TaskManager(include_path=tasks_path(), include_defaults=False, metadata=metadata),
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": 4},
        bootstrap_iters=0,
    )
    res = out["results"]["ssgr_livecodebench"]
    assert res["pass@1,k_samples"] == 0.0 and res["truncated,k_samples"] > 0  # 4 tokens hold no program
    samples = out["samples"]["ssgr_livecodebench"]
    assert len(samples) == 1 and len(samples[0]["filtered_resps"][0]) == 16  # the window's one problem, k = 16
