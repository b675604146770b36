"""Runs one LiveCodeBench program on its test inputs, inside `hf_ssgr.evaluation.sandbox` (standard library only).

It mirrors the official runner (`lcb_runner/evaluation/testing_util.py`): the same import prelude; stdin programs
wrapped in a function (imports hoisted, a trailing `if __name__ == '__main__':` unwrapped), called per test with the
input on `sys.stdin`; call-based programs as `Solution().fn_name(*json-decoded lines)`; a `signal.alarm` per test.
It only runs and records: the outputs are compared by the caller, outside the sandbox.
"""

import ast
import io
import json
import signal
import sys

PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\nfrom heapq import *\n"
    "from bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\nfrom statistics import *\n"
    "from itertools import *\nfrom functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\nimport statistics\n"
    "import itertools\nimport functools\nimport operator\nimport io\nimport sys\nimport json\n"
    "sys.setrecursionlimit(50000)\n"
)


MAX_OUTPUT_CHARS = 64 << 20  # a test's stdout beyond this is not sent back (no expected output is near it)


class OutputLimit(Exception):
    """The program printed more than MAX_OUTPUT_CHARS for one test."""


class TestTimeout(Exception):
    """The per-test alarm went off."""


def _alarm(signum, frame):
    raise TestTimeout()


def unwrap_main(code):
    """Unwrap a trailing `if __name__ == '__main__':` block (the official runner does, since the code is not run
    as a script)."""
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            return ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)
    except Exception:
        pass
    return code


def wrap_in_function(code):
    """Imports first, after the prelude; every other top-level statement in the body of `wrapped_function()`."""
    try:
        tree = ast.parse(code)
        imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
        others = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
        fn = ast.FunctionDef(
            name="wrapped_function",
            args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=others,
            decorator_list=[],
            lineno=-1,
        )
        return PRELUDE + "\n" + ast.unparse(imports) + "\n" + ast.unparse(fn)
    except Exception:
        return code


def encode(value):
    """A JSON form that keeps what `==` would see: tuples, dicts with non-string keys, non-finite floats."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else {"__float__": repr(value)}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    return {"__opaque__": type(value).__name__}


def run_stdin(method, text):
    """Call the wrapped program with `text` on stdin (and `open`, `input`, `sys.stdin.*` reading it); its stdout."""
    from unittest.mock import mock_open, patch

    lines = iter(text.split("\n"))
    captured = io.StringIO()
    saved = sys.stdout
    sys.stdout = captured
    try:
        with patch("builtins.open", mock_open(read_data=text)), patch("sys.stdin", io.StringIO(text)), patch(
            "sys.stdin.readline", lambda *a: next(lines)
        ), patch("sys.stdin.readlines", lambda *a: text.split("\n")), patch("sys.stdin.read", lambda *a: text):
            try:
                method()
            except SystemExit:
                pass
    finally:
        sys.stdout = saved
    if captured.tell() > MAX_OUTPUT_CHARS:
        raise OutputLimit()
    return captured.getvalue()


def compile_program(code, timeout, kind, fn_name):
    signal.alarm(timeout)
    try:
        module = {"__name__": "tmp_sol"}
        if kind == "stdin":
            exec(wrap_in_function(unwrap_main(code)), module)
            return module["wrapped_function"]
        exec(PRELUDE + "\n\n" + code, module)
        target = module["Solution"]() if "class Solution" in code else module
        return getattr(target, fn_name) if not isinstance(target, dict) else target[fn_name]
    finally:
        signal.alarm(0)


def main(args, emit):
    signal.signal(signal.SIGALRM, _alarm)
    timeout, kind = int(args["timeout"]), args["kind"]
    try:
        method = compile_program(args["code"], timeout, kind, args["fn_name"])
    except BaseException as err:  # noqa: BLE001 - any failure of the program is its verdict
        emit({"compile_error": "compile error: " + type(err).__name__})
        return
    outputs = []
    for text in args["inputs"]:
        signal.alarm(timeout)
        try:
            if kind == "stdin":
                outputs.append({"stdout": run_stdin(method, text)})
            else:
                value = method(*[json.loads(line) for line in text.split("\n")])
                outputs.append({"value": encode(list(value) if isinstance(value, tuple) else value)})
        except TestTimeout:
            outputs.append({"error": "time limit exceeded"})
        except OutputLimit:
            outputs.append({"error": "output limit exceeded"})
        except BaseException as err:  # noqa: BLE001
            outputs.append({"error": "runtime error: " + type(err).__name__})
        finally:
            signal.alarm(0)
        if "error" in outputs[-1]:
            break
    emit({"outputs": outputs})
