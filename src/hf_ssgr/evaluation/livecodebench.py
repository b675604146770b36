"""LiveCodeBench code generation (RAC Table 5, `codegen_pass@1:16`): data, prompts, code extraction and grading.

Grading is our own re-implementation of the verdicts of LiveCodeBench's official grader
(`lcb_runner/evaluation/testing_util.py` at 28fef95), not the `nvidia-livecodebench` package, whose API-client
dependencies are heavy for a from-scratch install and whose grader runs programs in-process (not in a sandbox). The
semantics kept:

- the program is the last fenced code block of the whole reply, the lines between the last two lines that hold a
  ```` ``` ```` (`extraction="official"`); `extraction="after_think"` takes it from after `</think>` only and fails a
  reply that was cut at the length limit;
- what the program sees while it runs (the runner's int-string limit, `reliability_guard`, import prelude, stdin
  stand-in, alarm handler): see `livecodebench_harness`;
- stdin/stdout problems: the captured stdout and the expected output are stripped, split into lines, each line
  stripped; the line counts must match and each line must be equal as text or, token by token, as `Decimal`s (so `1.0`
  passes for `1`, but `0.3333` does not for `0.33333`);
- call-based (functional) problems: `Solution().<fn_name>(*args)` with each input line JSON-decoded as one argument;
  a tuple result counts as a list; `result == expected` (the JSON-decoded expected output) must be true, numpy
  results included;
- every public and private test must pass, in order, stopping at the first failure; each test has its own timeout
  (`signal.alarm`, 6 s by default as in the official runner) and the whole program `(timeout + 1) * tests + 5` seconds.

What differs, by design: the program runs in `hf_ssgr.evaluation.sandbox` (one process per program, 4 GiB of
address space, where the official runner sets no memory limit), and its results are compared outside it, so a result
whose `==` is rigged (an object equal to everything) is equal to nothing here.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pickle
import re
import zlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "LCB_DATASET",
    "LCB_DEFAULT_RELEASE",
    "LCB_DEFAULT_WINDOW",
    "LCB_SYSTEM_MESSAGE",
    "lcb_prompt",
    "decode_private_tests",
    "load_livecodebench",
    "extract_code",
    "stdout_matches",
    "grade_programs",
    "Verdict",
    "score_code_replies",
    "grade_replies",
    "get_sandbox",
    "decode_expected",
    "results_equal",
]

LCB_DATASET = "livecodebench/code_generation_lite"
# The release files of code_generation_lite: release_vN holds test.jsonl .. testN.jsonl.
_RELEASE_FILES = ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl"]
LCB_DEFAULT_RELEASE = "release_v5"
# DeepSeek-R1's reported LiveCodeBench window (2024-08-01 .. 2025-01-31); the RAC paper does not state its window.
LCB_DEFAULT_WINDOW = ("2024-08-01", "2025-01-31")
LCB_TIMEOUT = 6  # seconds per test, the official runner's default

# lcb_runner/prompts/code_generation.py: the generic chat prompt (system message, then the question template).
LCB_SYSTEM_MESSAGE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will generate a "
    "correct Python program that matches the specification and passes all tests. You will NOT return anything except "
    "for the program."
)
_WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose your code within "
    "delimiters."
)
_WITHOUT_STARTER = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the sample "
    "inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, it reads the "
    "inputs, runs the algorithm and writes output to STDOUT."
)


_R1_INTRO = (
    "You will be given a question (problem specification) and will generate a correct Python program that matches the "
    "specification and passes all tests.\n\n"
)
LCB_PROMPT_STYLES = ("generic", "deepseek_r1")


def lcb_prompt(question: str, starter_code: str = "", style: str = "generic") -> str:
    """The user turn. `generic`: LiveCodeBench's system message, then its question template for chat models.
    `deepseek_r1`: the question template LiveCodeBench uses for DeepSeek-R1 models (the text between `<｜User｜>` and
    `<｜Assistant｜>`; the chat template adds those, and LiveCodeBench's R1-Zero-style preamble is left out)."""
    if style == "deepseek_r1":
        text = f"{_R1_INTRO}Question: {question}\n\n"
        if starter_code:
            return text + f"{_WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
        return text + f"{_WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    if style != "generic":
        raise ValueError(f"Unknown LiveCodeBench prompt style {style!r}: use one of {', '.join(LCB_PROMPT_STYLES)}.")
    text = f"### Question:\n{question}\n\n"
    if starter_code:
        text += f"### Format: {_WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
    else:
        text += f"### Format: {_WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    text += "### Answer: (use the provided format with backticks)\n\n"
    return f"{LCB_SYSTEM_MESSAGE}\n\n{text}"


# ----------------------------------------------------------------------------------------------------------------
# Data


class _StringsOnly(pickle.Unpickler):
    """An unpickler that builds plain data only: any class or function reference is refused (unpickling arbitrary
    objects runs code)."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"private tests may only hold plain data; the pickle references {module}.{name}")


def decode_private_tests(value: str) -> list[dict]:
    """The private tests of a code_generation_lite row: a JSON list, or (newer rows) base64 of zlib of a pickle of
    that JSON string. The pickle is read with an unpickler that refuses every global, so only strings come out."""
    if isinstance(value, list):
        return value
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True))
        data = _StringsOnly(io.BytesIO(raw)).load()
    except (ValueError, zlib.error, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"private_test_cases is neither JSON nor base64+zlib+pickle of JSON: {err}") from err
    return json.loads(data) if isinstance(data, (str, bytes)) else data


def _row_tests(row: dict, origin: str) -> tuple[list[dict], str | None]:
    public = row.get("public_test_cases") or "[]"
    tests = json.loads(public) if isinstance(public, str) else list(public)
    tests += decode_private_tests(row.get("private_test_cases") or "[]")
    metadata = row.get("metadata") or "{}"
    metadata = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
    fn_name = metadata.get("func_name")
    if not tests:
        raise ValueError(f"LiveCodeBench {origin}: problem {row.get('question_id')} has no tests.")
    kinds = {t.get("testtype") for t in tests}
    if kinds - {"stdin", "functional"}:
        raise ValueError(f"LiveCodeBench {origin}: unknown testtype {sorted(kinds - {'stdin', 'functional'})}.")
    if "functional" in kinds and not fn_name:
        raise ValueError(f"LiveCodeBench {origin}: functional problem {row.get('question_id')} has no func_name.")
    return [{"input": t["input"], "output": t["output"]} for t in tests], (fn_name if "functional" in kinds else None)


def _in_window(date: str, start: str | None, end: str | None) -> bool:
    day = str(date)[:10]
    return (start is None or day >= start) and (end is None or day <= end)


def _hub_rows(release_version: str):
    import datasets

    if release_version == "release_latest":
        files = _RELEASE_FILES
    else:
        match = re.fullmatch(r"release_v(\d+)", release_version)
        if not match or not 1 <= int(match.group(1)) <= len(_RELEASE_FILES):
            raise ValueError(
                f"Unknown LiveCodeBench release_version {release_version!r}: use release_v1 .. "
                f"release_v{len(_RELEASE_FILES)} or release_latest."
            )
        files = _RELEASE_FILES[: int(match.group(1))]
    urls = [f"hf://datasets/{LCB_DATASET}/{f}" for f in files]
    try:
        return datasets.load_dataset("json", data_files=urls, split="train")
    except Exception as err:  # noqa: BLE001 - offline or missing: the same advice
        raise RuntimeError(
            f"Could not load LiveCodeBench ({LCB_DATASET}, {release_version}) from the Hub: {type(err).__name__}: "
            "{err}. Offline, pass a local copy: evaluate(..., data_files={'ssgr_livecodebench': 'file.jsonl'})."
        ) from err


def load_livecodebench(
    data_file: str | list[str] | None = None,
    release_version: str = LCB_DEFAULT_RELEASE,
    start_date: str | None = "default",
    end_date: str | None = "default",
    prompt_style: str = "generic",
):
    """The problems as a `Dataset` of docs (the fields of the other tasks, `answer` holding the tests as JSON:
    `{"tests": [{"input", "output"}, ...], "fn_name": name or null}`).

    Args:
        data_file: local jsonl/parquet file(s) in code_generation_lite's fields; `None` reads the Hub release.
        release_version: `release_v1` .. `release_v6` or `release_latest`.
        start_date, end_date: the contest-date window (inclusive, `YYYY-MM-DD`; `None` for open-ended). By default
            `LCB_DEFAULT_WINDOW` for the Hub release, and every row of a local file (the file is the selection).
        prompt_style: `generic` (LiveCodeBench's chat prompt) or `deepseek_r1` (its DeepSeek-R1 template).
    """
    import datasets

    from ..calibration.sources import read_local

    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value not in (None, "default") and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
            raise ValueError(f"LiveCodeBench {name} must be YYYY-MM-DD or None, got {value!r}.")
    lcb_prompt("", style=prompt_style)  # an unknown style fails before any data is read
    default = LCB_DEFAULT_WINDOW if data_file is None else (None, None)
    start_date = default[0] if start_date == "default" else start_date
    end_date = default[1] if end_date == "default" else end_date

    if data_file is None:
        sources = [(f"{LCB_DATASET}/{release_version}", _hub_rows(release_version))]
    else:
        paths = [data_file] if isinstance(data_file, (str, os.PathLike)) else list(data_file)
        for path in paths:
            if not os.path.exists(path):
                raise FileNotFoundError(f"LiveCodeBench: the local data file {path} does not exist.")
        sources = [(str(p), read_local(str(p))) for p in paths]
    docs = []
    for origin, rows in sources:
        for row in rows:
            missing = [c for c in ("question_content", "public_test_cases", "contest_date") if c not in row]
            if missing:
                raise ValueError(f"LiveCodeBench rows from {origin} lack {missing} (code_generation_lite's fields).")
            if not _in_window(row["contest_date"], start_date, end_date):
                continue
            tests, fn_name = _row_tests(row, origin)
            docs.append(
                {
                    "problem_id": f"ssgr_livecodebench/{row.get('question_id', len(docs))}",
                    "prompt": lcb_prompt(row["question_content"], row.get("starter_code") or "", prompt_style),
                    "problem": row["question_content"],
                    "answer": json.dumps({"tests": tests, "fn_name": fn_name}),
                    "kind": "code",
                    "benchmark": "ssgr_livecodebench",
                    "level": str(row.get("difficulty") or ""),
                    "subject": str(row.get("platform") or ""),
                    "choices": [],
                    "choice_order": [],
                }
            )
    if not docs:
        raise ValueError(
            f"LiveCodeBench: no problem of {[o for o, _ in sources]} has a contest date in {start_date} .. {end_date}."
        )
    return datasets.Dataset.from_list(docs)


# ----------------------------------------------------------------------------------------------------------------
# Extraction and comparison

EXTRACTIONS = ("official", "after_think")


def extract_code(
    reply: str, finish_reason: str | None = None, require_think_end: bool | None = None, extraction: str = "official"
) -> str | None:
    """The program of a reply: the lines between the last two lines that contain a ```` ``` ````, or `None` when
    fewer than two such lines exist.

    `extraction="official"` (LiveCodeBench's own rule, with which published tables were made) searches the whole reply,
    thinking included. `"after_think"` searches only after `</think>`, and gives `None` when the thinking never closed
    or the reply was cut at the length limit (`finish_reason == "length"`), as the other tasks score such replies.
    `require_think_end=True` is `"after_think"` (kept for callers of the earlier signature)."""
    from ..verification import THINK_END, split_thinking

    if require_think_end:
        extraction = "after_think"
    if extraction not in EXTRACTIONS:
        raise ValueError(f"Unknown LiveCodeBench code extraction {extraction!r}: use one of {', '.join(EXTRACTIONS)}.")
    if extraction == "after_think":
        if finish_reason == "length" or THINK_END not in reply:
            return None
        _, reply = split_thinking(reply)
    lines = reply.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return None
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except (InvalidOperation, ValueError):
        return None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def stdout_matches(output: str, expected: str) -> bool:
    """The official stdin/stdout comparison: same number of stripped lines, each equal as text or as Decimals."""
    got, want = _lines(output), _lines(expected)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g == w:
            continue
        dg, dw = _decimals(g), _decimals(w)
        if dg is None or dw is None or dg != dw:
            return False
    return True


def _decode_value(obj: Any) -> Any:
    """Undo the harness's tagging of values JSON cannot hold (tuples inside results, dicts with non-str keys, ...)."""
    if isinstance(obj, list):
        return [_decode_value(v) for v in obj]
    if isinstance(obj, dict):
        if "__tuple__" in obj:
            return tuple(_decode_value(v) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_hashable(_decode_value(k)): _decode_value(v) for k, v in obj["__dict__"]}
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__int__" in obj:
            return int(obj["__int__"], 16)
        if "__ndarray__" in obj:
            import numpy as np

            return np.array(_decode_value(obj["__ndarray__"]), dtype=obj["dtype"])
        if "__opaque__" in obj:
            return _Opaque(obj["__opaque__"])
    return obj


def _long_int(digits: str) -> int:
    """`parse_int` for expected outputs: any number of digits (`int()` of a string refuses more than 4,300 by
    default, and the official grader raises that limit to 50,000; a `Decimal` has none)."""
    return int(digits) if len(digits) <= 4000 else int(Decimal(digits))


def decode_expected(text: str) -> Any:
    """A call-based test's expected output, JSON-decoded with ints of any length."""
    return json.loads(text, parse_int=_long_int)


def results_equal(prediction: Any, expected: Any) -> bool:
    """The official verdict of a call-based result: `bool(prediction == expected)`, false where that raises (a numpy
    array of several elements) as the official runner records a runtime error there."""
    try:
        return bool(prediction == expected)
    except Exception:  # noqa: BLE001
        return False


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class _Opaque:
    """A result the harness could not encode (a set, an object): equal to nothing that JSON can express."""

    text: str


# ----------------------------------------------------------------------------------------------------------------
# Grading


@dataclass
class Verdict:
    """One program's verdict: `passed` (every test), the tests run, the first failure's reason, and the seconds."""

    passed: bool
    tests_run: int
    reason: str
    seconds: float = 0.0


def _harness_source() -> str:
    from importlib.resources import files

    return (files("hf_ssgr.evaluation") / "livecodebench_harness.py").read_text(encoding="utf-8")


def _compare(kind: str, outputs: list, tests: list[dict]) -> tuple[bool, int, str]:
    for i, (out, test) in enumerate(zip(outputs, tests)):
        if out.get("error"):
            return False, i + 1, out["error"]
        if kind == "stdin":
            ok = stdout_matches(out["stdout"], test["output"])
        else:
            ok = results_equal(_decode_value(out["value"]), decode_expected(test["output"]))
        if not ok:
            return False, i + 1, "wrong answer"
    if len(outputs) < len(tests):
        return False, len(outputs), "stopped early"
    return True, len(tests), "passed"


STDIN_MODES = ("buffer", "stringio")


def grade_programs(
    programs: list[str | None], tests_json: list[str], sandbox, timeout: int = LCB_TIMEOUT, stdin: str = "buffer"
) -> list[Verdict]:
    """Grade each program against its problem's tests (`answer` of a doc), all in the sandbox in parallel.

    A `None` program (no code extracted) fails without running. The harness runs the tests in order until one raises
    or times out; the outputs are compared here, outside the sandbox, and the first mismatch decides the verdict.
    `stdin` is the official runner's stdin stand-in to reproduce: `"buffer"` (lcb_runner since 2025-05-23, with
    `sys.stdin.buffer`) or `"stringio"` (before). A program whose outputs this grader cannot compare (it fails on a
    problem's tests, not on the program) fails with a warning naming the error; the others are graded all the same."""
    if stdin not in STDIN_MODES:
        raise ValueError(f"Unknown LiveCodeBench stdin stand-in {stdin!r}: use one of {', '.join(STDIN_MODES)}.")
    harness = _harness_source()
    jobs, walls, index = [], [], []
    verdicts: list[Verdict | None] = [None] * len(programs)
    for i, (code, spec) in enumerate(zip(programs, tests_json)):
        if code is None:
            verdicts[i] = Verdict(False, 0, "no code block")
            continue
        problem = json.loads(spec)
        kind = "functional" if problem["fn_name"] else "stdin"
        jobs.append(
            {
                "code": code,
                "kind": kind,
                "fn_name": problem["fn_name"],
                "inputs": [t["input"] for t in problem["tests"]],
                "timeout": int(timeout),
                "stdin": stdin,
            }
        )
        walls.append((timeout + 1) * len(problem["tests"]) + 5.0)
        index.append((i, kind, problem["tests"]))
    for (i, kind, tests), result in zip(index, sandbox.map(harness, jobs, walls) if jobs else []):
        if result.status != "ok" or not isinstance(result.output, dict):
            verdicts[i] = Verdict(False, 0, f"program {result.status} (exit code {result.returncode})", result.seconds)
            continue
        if result.output.get("compile_error"):
            verdicts[i] = Verdict(False, 0, result.output["compile_error"], result.seconds)
            continue
        try:
            passed, run, reason = _compare(kind, result.output["outputs"], tests)
        except Exception as err:  # noqa: BLE001 - one problem's bad tests never stop the evaluation
            logger.warning("LiveCodeBench: a program's outputs could not be compared (%s: %s); it is counted wrong.",
                           type(err).__name__, err)  # fmt: skip
            passed, run, reason = False, 0, f"grader error: {type(err).__name__}: {err}"
        verdicts[i] = Verdict(passed, run, reason, result.seconds)
    return verdicts  # type: ignore[return-value]


_SANDBOXES: dict[tuple, Any] = {}


def get_sandbox(allow_unsandboxed: bool = False, sandbox_workers: int | None = None):
    """One `Sandbox` per setting, made on first use (its isolation check runs once). `HF_SSGR_ALLOW_UNSANDBOXED=1`
    in the environment opts in to running without isolation, as `allow_unsandboxed=True` does."""
    from .sandbox import Sandbox, SandboxLimits

    allow_unsandboxed = bool(allow_unsandboxed) or os.environ.get("HF_SSGR_ALLOW_UNSANDBOXED") == "1"
    key = (allow_unsandboxed, sandbox_workers)
    if key not in _SANDBOXES:
        limits = SandboxLimits(cpu_seconds=600, wall_seconds=600.0)  # per program; each test has its own alarm
        # processes of one machine (torchrun) get disjoint user ids, so their process limits do not meet
        base_uid = 61000 + 256 * int(os.environ.get("LOCAL_RANK", "0") or 0)
        _SANDBOXES[key] = Sandbox(
            limits, workers=sandbox_workers, allow_unsandboxed=allow_unsandboxed, base_uid=base_uid
        )
    return _SANDBOXES[key]


def score_code_replies(
    replies: list[str],
    tests: str,
    *,
    lengths: list[int] | None = None,
    finish_reasons: list[str | None] | None = None,
    allow_unsandboxed: bool = False,
    sandbox_workers: int | None = None,
    lcb_timeout: int = LCB_TIMEOUT,
    lcb_extraction: str = "official",
    lcb_stdin: str = "buffer",
    verdicts: list[Verdict] | None = None,
) -> dict[str, float]:
    """Metrics of one problem from its k replies (the keys of `scoring.score_problem`): each reply's program
    (`extract_code`) graded against every test in the sandbox, the k programs at once; or `verdicts` given by an
    earlier grading of many problems together (`grade_replies`)."""
    from .scoring import problem_metrics

    if not replies:
        raise ValueError("score_code_replies needs at least one reply.")
    k = len(replies)
    reasons = list(finish_reasons) if finish_reasons is not None else [None] * k
    if verdicts is None:
        (verdicts,) = grade_replies([(replies, tests, reasons)], allow_unsandboxed=allow_unsandboxed,
                                    sandbox_workers=sandbox_workers, lcb_timeout=lcb_timeout,
                                    lcb_extraction=lcb_extraction, lcb_stdin=lcb_stdin)  # fmt: skip
    return problem_metrics([v.passed for v in verdicts], reasons, lengths)


def grade_replies(
    problems: list[tuple[list[str], str, list[str | None]]],
    *,
    allow_unsandboxed: bool = False,
    sandbox_workers: int | None = None,
    lcb_timeout: int = LCB_TIMEOUT,
    lcb_extraction: str = "official",
    lcb_stdin: str = "buffer",
) -> list[list[Verdict]]:
    """Verdicts of many problems' replies at once: `problems` holds (replies, tests, finish reasons) per problem.
    Every program of every problem goes to the sandbox in one pass, so the workers stay busy across problems instead of
    waiting, problem by problem, for each one's slowest reply."""
    programs, specs, sizes = [], [], []
    for replies, tests, reasons in problems:
        programs += [extract_code(r, f, extraction=lcb_extraction) for r, f in zip(replies, reasons)]
        specs += [tests] * len(replies)
        sizes.append(len(replies))
    sandbox = get_sandbox(allow_unsandboxed, sandbox_workers)
    flat = grade_programs(programs, specs, sandbox, int(lcb_timeout), lcb_stdin)
    out, start = [], 0
    for n in sizes:
        out.append(flat[start : start + n])
        start += n
    return out
