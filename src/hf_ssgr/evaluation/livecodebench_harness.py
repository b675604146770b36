"""Runs one LiveCodeBench program on its test inputs, inside `hf_ssgr.evaluation.sandbox` (standard library only).

It reproduces what the official runner (`lcb_runner/evaluation/testing_util.py`, and the int-string limit of
`compute_code_generation_metrics.py`) does to a program before and while it runs:

- `sys.set_int_max_str_digits(50000)`, the modules its own process has loaded (numpy among them, when the program
  names it; `tempfile` with its folder chosen), its command line as `sys.argv`, and its `reliability_guard` (`quit`, `help`, `os.kill`, `os.system`, `os.getcwd`, `os.fork`,
  `subprocess.Popen`, `shutil.rmtree`, ... set to `None`; `resource`, `psutil`, `joblib`, `tkinter`, `ipdb` made
  unimportable) before the program is compiled;
- the same import prelude; stdin programs wrapped in a function (imports hoisted, a trailing
  `if __name__ == '__main__':` unwrapped), called per test with the input on `sys.stdin`, patched as the official
  runner patches it: `read`, `readlines` and `readline` of the *current* `sys.stdin` first (what the prelude's
  `from sys import *` bound), then `sys.stdin` replaced by a stand-in (`stdin="buffer"`, lcb_runner since 2025-05-23:
  `readline` keeps the newline and gives `''` at the end, `read`/`readlines` give the whole input / its lines, and
  `.buffer` reads bytes; `stdin="stringio"`, lcb_runner before: an `io.StringIO`), then `open` mocked;
- call-based programs as `Solution().fn_name(*json-decoded lines)`;
- a `signal.alarm` per test whose handler prints `timeout occured: alarm went off` (into the captured output of a
  stdin program) before it raises, so a program that swallows the alarm still fails, as officially.

It only runs and records: the outputs are compared by the caller, outside the sandbox.
"""

import ast
import contextlib
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
INT_MAX_STR_DIGITS = 50000  # the official grader's `sys.set_int_max_str_digits`
TIMEOUT_MESSAGE = "timeout occured: alarm went off"  # printed by the official alarm handler (sic)
MAX_OUTPUT_CHARS = 64 << 20  # a test's stdout beyond this is not sent back (no expected output is near it)
BIG_INT_BITS = 13000  # ints longer than this (about 3,900 digits) travel as hex, which no digit limit applies to


class OutputLimit(Exception):
    """The program printed more than MAX_OUTPUT_CHARS for one test."""


class TestTimeout(Exception):
    """The per-test alarm went off."""


def _alarm(signum, frame):
    print(TIMEOUT_MESSAGE)
    raise TestTimeout()


# Modules the official grader's process has imported before it guards and runs a program (testing_util.py and
# compute_code_generation_metrics.py import them), so a program's own `import` of them finds them loaded: numpy, for
# one, could not be imported after the guard (its import sets environment variables, and `os.putenv` is gone).
PRELOADED = ("datetime", "decimal", "enum", "faulthandler", "platform", "time", "types", "unittest.mock")
PRELOADED_IF_NAMED = ("numpy", "multiprocessing", "concurrent.futures")  # costly: only when the program names them


# The command line the official grader runs under (`python -m lcb_runner.runner.main ... --evaluate`), which a
# program can read: `fileinput.input()` opens these as files, officially, and so fails.
ARGV = ["lcb_runner/runner/main.py", "--scenario", "codegeneration", "--evaluate"]


def preload(code):
    import importlib
    import tempfile

    for name in PRELOADED + tuple(n for n in PRELOADED_IF_NAMED if n.split(".")[0] in code):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    tempfile.gettempdir()  # the official process has made a temporary folder (multiprocessing's manager) already
    sys.argv = list(ARGV)


def reliability_guard():
    """What the official runner disables before it compiles a program (its `reliability_guard()`, no memory cap)."""
    import builtins
    import faulthandler
    import os
    import shutil
    import subprocess

    faulthandler.disable()
    builtins.quit = None
    builtins.help = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in (
        "kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty", "killpg",
        "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown", "chroot",
        "lchflags", "lchmod", "lchown", "getcwd", "chdir",
    ):  # fmt: skip
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


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
    """A JSON form that keeps what `==` would see: tuples, dicts with non-string keys, non-finite floats, ints of any
    length, numpy scalars (as their Python values) and arrays."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= BIG_INT_BITS else {"__int__": hex(value)}
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
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.generic):
            return encode(value.item())
        if isinstance(value, numpy.ndarray) and value.dtype.kind in "biuf":
            return {"__ndarray__": encode(value.tolist()), "dtype": str(value.dtype)}
    return {"__opaque__": type(value).__name__}


class _BufferStandIn:
    """`sys.stdin.buffer` of the official stand-in: `read` gives the input's bytes, `readline` its first line."""

    def __init__(self, text):
        self.data = text.encode("utf-8")

    def read(self, *args):
        return self.data

    def readline(self, *args):
        return self.data.split(b"\n")[0] + b"\n"


class _StdinStandIn:
    """The official runner's `sys.stdin` (since 2025-05-23): `read` gives the whole input, `readlines` its lines split
    on newlines (without them), `readline` reads on from a `StringIO`; any other attribute is the `StringIO`'s."""

    def __init__(self, text):
        self.inputs = text
        self._stringio = io.StringIO(text)
        self.buffer = _BufferStandIn(text)

    def read(self, *args):
        return self.inputs

    def readline(self, *args):
        return self._stringio.readline(*args)

    def readlines(self, *args):
        return self.inputs.split("\n")

    def __getattr__(self, name):
        return getattr(self._stringio, name)


def run_stdin(method, text, stdin="buffer"):
    """Call the wrapped program with `text` as its input, patched as the official runner patches it; its stdout."""
    from unittest.mock import mock_open, patch

    lines = iter(text.split("\n"))
    captured = io.StringIO()
    captured.close = lambda x: 1  # as the official capture: closing is a no-op (called with no argument: an error)
    saved = sys.stdout
    sys.stdout = captured
    try:
        with contextlib.ExitStack() as stack:
            # the order in which the official runner's stacked @patch decorators are entered
            stack.enter_context(patch("sys.stdin.read", lambda *a: text))
            stack.enter_context(patch("sys.stdin.readlines", lambda *a: text.split("\n")))
            stack.enter_context(patch("sys.stdin.readline", lambda *a: next(lines)))
            stack.enter_context(patch("sys.stdin", _StdinStandIn(text) if stdin == "buffer" else io.StringIO(text)))
            stack.enter_context(patch("builtins.open", mock_open(read_data=text)))
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
    sys.set_int_max_str_digits(INT_MAX_STR_DIGITS)
    signal.signal(signal.SIGALRM, _alarm)
    timeout, kind = int(args["timeout"]), args["kind"]
    stdin = args.get("stdin", "buffer")
    if kind != "stdin":
        try:
            inputs = [[json.loads(line) for line in text.split("\n")] for text in args["inputs"]]
        except BaseException as err:  # noqa: BLE001 - officially, inputs that do not decode fail the program
            emit({"compile_error": "test inputs do not decode: " + type(err).__name__})
            return
    preload(args["code"])
    reliability_guard()
    try:
        method = compile_program(args["code"], timeout, kind, args["fn_name"])
    except BaseException as err:  # noqa: BLE001 - any failure of the program is its verdict
        emit({"compile_error": "compile error: " + type(err).__name__})
        return
    outputs = []
    for i, text in enumerate(args["inputs"]):
        signal.alarm(timeout)
        try:
            if kind == "stdin":
                outputs.append({"stdout": run_stdin(method, text, stdin)})
            else:
                value = method(*inputs[i])
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
