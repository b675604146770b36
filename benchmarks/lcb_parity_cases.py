"""A LiveCodeBench grading case set, written against the official grader's semantics (lcb_runner 28fef95 and the
version before its 2025-05-23 stdin change): reply extraction, stdin idioms, output comparison, exits, the
reliability guard, timeouts, call-based results, long integers and numpy.

Each case is a model reply (or a bare program, wrapped in a fenced block) and a problem's tests. The cases were written
for this project; `bench_lcb_parity.py` grades them with this package and with a checkout of lcb_runner.
"""

from __future__ import annotations


def _fence(code: str) -> str:
    return f"Here is my solution.\n</think>\n```python\n{code}\n```\n"


def _stdin(name, code, *tests, reply=None):
    return {"name": name, "reply": reply or _fence(code), "tests": list(tests), "fn_name": None}


def _call(name, code, fn, *tests, reply=None):
    return {"name": name, "reply": reply or _fence(code), "tests": list(tests), "fn_name": fn}


SUM = [("1 2\n", "3\n"), ("10 -4\n", "6\n"), ("0 0", "0")]  # the last input has no final newline
LINES = [("3\nab\n\ncd\n", "ab|<blank>|cd\n"), ("1\nx y\n", "x y\n")]  # n, then n lines (one may be blank)
FLOATS = [("3\n1 2 2\n", "1.6666666666666667\n2\n"), ("2\n1 2\n", "1.5\n2\n")]  # mean then max
BIG = "1" + "0" * 5000  # 10 ** 5000


def cases() -> list[dict]:
    out = []
    # ---------------------------------------------------------------- stdin idioms
    out += [
        _stdin("input split", "a, b = map(int, input().split())\nprint(a + b)", *SUM),
        _stdin("readline strip", "import sys\na, b = map(int, sys.stdin.readline().strip().split())\nprint(a + b)", *SUM),
        _stdin("readline no strip split", "import sys\na, b = map(int, sys.stdin.readline().split())\nprint(a + b)", *SUM),
        _stdin("readline[:-1]", "import sys\ns = sys.stdin.readline()[:-1]\nprint(len(s))", ("abc\n", "3"), ("ab\n", "2")),
        _stdin("readline[:-1] no final newline", "import sys\ns = sys.stdin.readline()[:-1]\nprint(len(s))", ("abc", "2")),
        _stdin("input = readline, rstrip", "import sys\ninput = sys.stdin.readline\nn = int(input())\nfor _ in range(n):\n"
               "    s = input().rstrip('\\n')\n    print(s or '<blank>', end='|' if _ < n - 1 else '\\n')", *LINES),
        _stdin("input = readline, kept newline", "import sys\ninput = sys.stdin.readline\nn = int(input())\nrows = [input() for _ in range(n)]\n"
               "print('|'.join(r[:-1] or '<blank>' for r in rows))", *LINES),
        _stdin("read().split()", "import sys\nd = sys.stdin.read().split()\nprint(int(d[0]) + int(d[1]))", *SUM),
        _stdin("read().splitlines()", "import sys\nl = sys.stdin.read().splitlines()\nn = int(l[0])\nprint('|'.join(x or '<blank>' for x in l[1:n + 1]))", *LINES),
        _stdin("readlines", "import sys\nl = sys.stdin.readlines()\nn = int(l[0])\nprint('|'.join(x.strip() or '<blank>' for x in l[1:n + 1]))", *LINES),
        _stdin("readlines kept newline", "import sys\nl = sys.stdin.readlines()\nprint(len(l[0]))", ("12\n3\n", "3"), ("12", "2")),
        _stdin("buffer.read split", "import sys\nd = sys.stdin.buffer.read().split()\nprint(int(d[0]) + int(d[1]))", *SUM),
        _stdin("buffer.readline", "import sys\na, b = map(int, sys.stdin.buffer.readline().split())\nprint(a + b)", *SUM),
        _stdin("buffer.readline twice", "import sys\nsys.stdin.buffer.readline()\nprint(sys.stdin.buffer.readline().strip().decode())", ("1\n2\n", "2")),
        _stdin("buffer.readlines", "import sys\nl = sys.stdin.buffer.readlines()\nprint(len(l))", ("1\n2\n", "2")),
        _stdin("for line in sys.stdin", "import sys\nt = 0\nfor line in sys.stdin:\n    t += sum(map(int, line.split()))\nprint(t)", *SUM),
        _stdin("iter(sys.stdin.readline, '')", "import sys\nt = 0\nfor line in iter(sys.stdin.readline, ''):\n    t += sum(map(int, line.split()))\nprint(t)", *SUM),
        _stdin("readline until EOF through blanks", "import sys\nn = 0\nwhile True:\n    line = sys.stdin.readline()\n    if not line:\n        break\n    n += 1\nprint(n)",
               ("a\n\nb\n\n", "4"), ("x", "1")),
        _stdin("input until EOFError", "n = 0\ntry:\n    while True:\n        input()\n        n += 1\nexcept EOFError:\n    pass\nprint(n)", ("a\n\nb\n", "3"), ("x", "1")),
        _stdin("prelude stdin.readline", "a, b = map(int, stdin.readline().split())\nprint(a + b)", *SUM),
        _stdin("from sys import stdin", "from sys import stdin\na, b = map(int, stdin.readline().split())\nprint(a + b)", *SUM),
        _stdin("from sys import stdin, read", "from sys import stdin\nd = stdin.read().split()\nprint(int(d[0]) + int(d[1]))", *SUM),
        _stdin("prelude stdin.readline kept newline", "s = stdin.readline()\nprint(len(s))", ("ab\n", "3")),
        _stdin("prelude stdin.readline past end", "stdin.readline()\nstdin.readline()\nprint('x')", ("ab\n", "x")),
        _stdin("input() with prelude", "print(int(input()) * 2)", ("21\n", "42"), ("5", "10")),
        _stdin("open(0).read", "d = open(0).read().split()\nprint(int(d[0]) + int(d[1]))", *SUM),
        _stdin("open(0) lines", "l = open(0).readlines()\nprint(len(l))", ("1\n2\n", "2")),
        _stdin("sys.stdin.read(n)", "import sys\nprint(sys.stdin.read(2))", ("abcdef\n", "ab")),
        _stdin("fileinput", "import fileinput\nt = 0\nfor line in fileinput.input():\n    t += sum(map(int, line.split()))\nprint(t)", *SUM),
        _stdin("sys.stdin.fileno", "import os, sys\nd = os.read(sys.stdin.fileno(), 100).split()\nprint(int(d[0]) + int(d[1]))", *SUM),
        _stdin("os.read(0)", "import os\nd = os.read(0, 100).split()\nprint(sum(map(int, d)))", ("1 2\n", "3")),
        _stdin("readline(size)", "import sys\nprint(sys.stdin.readline(2))", ("abcdef\n", "ab")),
        _stdin("stdin tell", "import sys\nsys.stdin.readline()\nprint(sys.stdin.tell())", ("ab\ncd\n", "3")),
        _stdin("input() spaces", "s = input()\nprint(len(s))", ("  a  \n", "5")),
        _stdin("input() crlf", "s = input()\nprint(len(s))", ("ab\r\n", "3")),
        _stdin("main function with guard", "import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n\nif __name__ == '__main__':\n    main()", *SUM),
        _stdin("main function no guard", "def main():\n    a, b = map(int, input().split())\n    print(a + b)\nmain()", *SUM),
        _stdin("guard with double quotes", 'def main():\n    a, b = map(int, input().split())\n    print(a + b)\nif __name__ == "__main__":\n    main()', *SUM),
        _stdin("guard not last", "def main():\n    a, b = map(int, input().split())\n    print(a + b)\nif __name__ == '__main__':\n    main()\nx = 1", *SUM),
        _stdin("global in function", "total = 0\ndef add(x):\n    global total\n    total += x\na, b = map(int, input().split())\nadd(a)\nadd(b)\nprint(total)", *SUM),
        _stdin("nonlocal closure", "def f():\n    t = 0\n    def g(x):\n        nonlocal t\n        t += x\n    for v in map(int, input().split()):\n        g(v)\n    return t\nprint(f())", *SUM),
        _stdin("class at top level", "class P:\n    def __init__(self, a, b):\n        self.s = a + b\na, b = map(int, input().split())\nprint(P(a, b).s)", *SUM),
        _stdin("lambda recursion", "import sys\nsys.setrecursionlimit(10000)\nf = lambda n: 0 if n == 0 else n + f(n - 1)\na, b = map(int, input().split())\nprint(a + b if a + b < 0 else f(0) + a + b)", *SUM),
        _stdin("lru_cache", "from functools import lru_cache\n@lru_cache(None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib(int(input())))", ("30\n", "832040"), ("90", "2880067194370816120")),
        _stdin("deep recursion 5000", "import sys\nsys.setrecursionlimit(20000)\ndef d(n):\n    return 0 if n == 0 else 1 + d(n - 1)\nprint(d(int(input())))", ("5000\n", "5000")),
        _stdin("threading", "import threading\nr = []\nt = threading.Thread(target=lambda: r.append(sum(map(int, input().split()))))\nt.start()\nt.join()\nprint(r[0])", *SUM),
        _stdin("import inside function", "def main():\n    import sys\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\nmain()", *SUM),
        _stdin("syntax error", "a, b = map(int, input().split()\nprint(a + b)", *SUM),
        _stdin("name error", "print(a + b)", *SUM),
        _stdin("wrong answer", "a, b = map(int, input().split())\nprint(a - b)", *SUM),
        _stdin("right on first test only", "a, b = map(int, input().split())\nprint(3)", *SUM),
    ]
    # ---------------------------------------------------------------- output comparison
    out += [
        _stdin("float mean", "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) / n)\nprint(max(a))", *FLOATS),
        _stdin("float mean .6f", "n = int(input())\na = list(map(int, input().split()))\nprint(f'{sum(a) / n:.6f}')\nprint(max(a))", *FLOATS),
        _stdin("float max as 2.0", "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) / n)\nprint(float(max(a)))", *FLOATS),
        _stdin("float max as 2.000", "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) / n)\nprint(f'{max(a):.3f}')", *FLOATS),
        _stdin("trailing spaces", "a, b = map(int, input().split())\nprint(a + b, '  ')", *SUM),
        _stdin("leading blank line", "a, b = map(int, input().split())\nprint()\nprint(a + b)", *SUM),
        _stdin("trailing blank lines", "a, b = map(int, input().split())\nprint(a + b)\nprint()\nprint()", *SUM),
        _stdin("blank line between", "print(1)\nprint()\nprint(2)", ("", "1\n2")),
        _stdin("two values on one line vs two lines", "print(1, 2)", ("", "1\n2")),
        _stdin("extra spaces inside", "print('1   2')", ("", "1 2")),
        _stdin("text with extra space inside", "print('a  b')", ("", "a b")),
        _stdin("tabs", "print('1\\t2')", ("", "1 2")),
        _stdin("sys.stdout.write no newline", "import sys\na, b = map(int, input().split())\nsys.stdout.write(str(a + b))", *SUM),
        _stdin("print end=''", "a, b = map(int, input().split())\nprint(a + b, end='')", *SUM),
        _stdin("yes case", "print('YES')", ("", "Yes")),
        _stdin("scientific notation", "print('1e3')", ("", "1000")),
        _stdin("negative zero", "print(-0.0)", ("", "0")),
        _stdin("nan text", "print('nan')", ("", "nan")),
        _stdin("inf", "print(float('inf'))", ("", "inf")),
        _stdin("leading zeros", "print('007')", ("", "7")),
        _stdin("plus sign", "print('+5')", ("", "5")),
        _stdin("stderr output", "import sys\na, b = map(int, input().split())\nprint('debug', file=sys.stderr)\nprint(a + b)", *SUM),
        _stdin("os.write(1)", "import os\na, b = map(int, input().split())\nos.write(1, (str(a + b) + '\\n').encode())", *SUM),
        _stdin("stdout.buffer.write", "import sys\na, b = map(int, input().split())\nsys.stdout.buffer.write(str(a + b).encode())", *SUM),
        _stdin("stdout.flush", "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.stdout.flush()", *SUM),
        _stdin("stdout.close", "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.stdout.close()", *SUM),
        _stdin("print flush=True", "a, b = map(int, input().split())\nprint(a + b, flush=True)", *SUM),
        _stdin("many lines", "n = int(input())\nprint('\\n'.join(str(i) for i in range(n)))", ("1000\n", "\n".join(str(i) for i in range(1000)))),
        _stdin("join with spaces", "n = int(input())\nprint(*range(n))", ("5\n", "0 1 2 3 4")),
        _stdin("unicode", "print('héllo')", ("", "héllo")),
    ]
    # ---------------------------------------------------------------- exits
    out += [
        _stdin("exit()", "a, b = map(int, input().split())\nprint(a + b)\nexit()\nprint('more')", *SUM),
        _stdin("exit(1)", "a, b = map(int, input().split())\nprint(a + b)\nexit(1)", *SUM),
        _stdin("sys.exit()", "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit()", *SUM),
        _stdin("sys.exit(1)", "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(1)", *SUM),
        _stdin("raise SystemExit", "a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit", *SUM),
        _stdin("quit()", "a, b = map(int, input().split())\nprint(a + b)\nquit()", *SUM),
        _stdin("os._exit(0)", "import os\na, b = map(int, input().split())\nprint(a + b)\nos._exit(0)", *SUM),
        _stdin("exit in the middle", "import sys\nprint(1)\nsys.exit(0)\nprint(2)", ("", "1")),
        _stdin("KeyboardInterrupt", "a, b = map(int, input().split())\nprint(a + b)\nraise KeyboardInterrupt", *SUM),
    ]
    # ---------------------------------------------------------------- the reliability guard
    guarded = [
        ("os.getcwd", "import os\nos.getcwd()"),
        ("os.chdir", "import os\nos.chdir('/')"),
        ("subprocess.run", "import subprocess\nsubprocess.run(['true'])"),
        ("subprocess.check_output", "import subprocess\nsubprocess.check_output(['echo'])"),
        ("os.system", "import os\nos.system('true')"),
        ("os.popen", "import os\nos.popen('true').read()"),
        ("shutil.rmtree", "import shutil\nshutil.rmtree('/nonexistent-dir')"),
        ("import resource", "import resource"),
        ("import psutil", "import psutil"),
        ("import joblib", "import joblib"),
        ("help", "help()"),
        ("os.environ set", "import os\nos.environ['X'] = '1'"),
        ("os.putenv", "import os\nos.putenv('X', '1')"),
        ("os.fork", "import os\nos.fork()"),
        ("os.kill", "import os\nos.kill(os.getpid(), 0)"),
        ("os.remove", "import os\nopen('f.txt', 'w').close()\nos.remove('f.txt')"),
        ("os.unlink", "import os\nos.unlink('nonexistent.txt')"),
        ("os.rename", "import os\nos.rename('a', 'b')"),
        ("multiprocessing pool", "from multiprocessing import Pool\nwith Pool(2) as p:\n    p.map(abs, [1])"),
        ("tempfile", "import tempfile\ntempfile.TemporaryFile().close()"),
        ("open write", "open('out.txt', 'w').write('x')"),
        ("os.path.exists", "import os\nos.path.exists('/')"),
        ("os.listdir", "import os\nos.listdir('.')"),
        ("pathlib cwd", "import pathlib\npathlib.Path.cwd()"),
        ("time.sleep small", "import time\ntime.sleep(0.1)"),
        ("random seed", "import random\nrandom.seed(0)\nrandom.random()"),
        ("signal.alarm(0)", "import signal\nsignal.alarm(0)"),
    ]
    for name, code in guarded:
        out.append(_stdin(f"guard: {name}", code + "\na, b = map(int, input().split())\nprint(a + b)", *SUM))
    # ---------------------------------------------------------------- timeouts (the benchmark grades with a 2 s limit)
    out += [
        _stdin("infinite loop", "while True:\n    pass", *SUM),
        _stdin("sleep past the limit", "import time\ntime.sleep(4)\na, b = map(int, input().split())\nprint(a + b)", *SUM),
        _stdin("slow second test", "import time\na, b = map(int, input().split())\nif a == 10:\n    time.sleep(4)\nprint(a + b)", *SUM),
        _stdin("swallow the alarm", "import time\ntry:\n    t = time.time()\n    while time.time() - t < 3:\n        pass\nexcept Exception:\n    pass\n"
               "a, b = map(int, input().split())\nprint(a + b)", *SUM[:1]),
        _stdin("swallow the alarm with bare except", "import time\nt = time.time()\nwhile time.time() - t < 3:\n    try:\n        time.sleep(0.01)\n    except:\n        pass\n"
               "a, b = map(int, input().split())\nprint(a + b)", *SUM[:1]),
        _stdin("ignore SIGALRM", "import signal, time\nsignal.signal(signal.SIGALRM, lambda *a: None)\ntime.sleep(3)\na, b = map(int, input().split())\nprint(a + b)", *SUM[:1]),
        _stdin("cancel the alarm", "import signal, time\nsignal.alarm(0)\ntime.sleep(3)\na, b = map(int, input().split())\nprint(a + b)", *SUM[:1]),
        _stdin("catch BaseException then loop", "import time\nwhile True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        break\n"
               "a, b = map(int, input().split())\nprint(a + b)", *SUM[:1]),
    ]
    # ---------------------------------------------------------------- call-based
    two_sum = [("[2, 7, 11, 15]\n9", "[0, 1]"), ("[3, 2, 4]\n6", "[1, 2]"), ("[3, 3]\n6", "[0, 1]")]
    ok = ("class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, x in enumerate(nums):\n"
          "            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i\n")
    out += [
        _call("call: correct", ok, "twoSum", *two_sum),
        _call("call: typed with List", "from typing import List\n" + ok.replace("(self, nums, target)", "(self, nums: List[int], target: int) -> List[int]"), "twoSum", *two_sum),
        _call("call: List without import", ok.replace("(self, nums, target)", "(self, nums: List[int], target: int) -> List[int]"), "twoSum", *two_sum),
        _call("call: tuple result", ok.replace("return [seen[target - x], i]", "return (seen[target - x], i)"), "twoSum", *two_sum),
        _call("call: reversed", ok.replace("return [seen[target - x], i]", "return [i, seen[target - x]]"), "twoSum", *two_sum),
        _call("call: wrong name", ok.replace("def twoSum", "def two_sum"), "twoSum", *two_sum),
        _call("call: no class", "def twoSum(nums, target):\n    return [0, 1]", "twoSum", *two_sum[:1]),
        _call("call: helper outside class", "def helper(nums, target):\n    seen = {}\n    for i, x in enumerate(nums):\n        if target - x in seen:\n            return [seen[target - x], i]\n        seen[x] = i\n"
              "class Solution:\n    def twoSum(self, nums, target):\n        return helper(nums, target)", "twoSum", *two_sum),
        _call("call: prints too", ok.replace("seen = {}", "seen = {}\n        print('debug')"), "twoSum", *two_sum),
        _call("call: raises", "class Solution:\n    def twoSum(self, nums, target):\n        raise ValueError", "twoSum", *two_sum),
        _call("call: None", "class Solution:\n    def twoSum(self, nums, target):\n        pass", "twoSum", *two_sum),
        _call("call: mutates input", ok.replace("seen = {}", "seen = {}\n        nums.append(0)"), "twoSum", *two_sum),
        _call("call: numpy int64 list", "import numpy as np\n" + ok.replace("return [seen[target - x], i]", "return [np.int64(seen[target - x]), np.int64(i)]"), "twoSum", *two_sum),
        _call("call: numpy array", "import numpy as np\n" + ok.replace("return [seen[target - x], i]", "return np.array([seen[target - x], i])"), "twoSum", *two_sum),
        _call("call: nested tuple", "class Solution:\n    def f(self, n):\n        return [(i, i) for i in range(n)]", "f", ("2", "[[0, 0], [1, 1]]")),
        _call("call: nested list", "class Solution:\n    def f(self, n):\n        return [[i, i] for i in range(n)]", "f", ("2", "[[0, 0], [1, 1]]")),
        _call("call: float exact", "class Solution:\n    def f(self, a, b):\n        return a / b", "f", ("1\n4", "0.25"), ("1\n3", "0.3333333333333333")),
        _call("call: float near", "class Solution:\n    def f(self, a, b):\n        return round(a / b, 5)", "f", ("1\n3", "0.3333333333333333")),
        _call("call: int vs float", "class Solution:\n    def f(self, a, b):\n        return float(a + b)", "f", ("1\n2", "3")),
        _call("call: bool vs int", "class Solution:\n    def f(self, a, b):\n        return a < b", "f", ("1\n2", "true")),
        _call("call: bool as 1", "class Solution:\n    def f(self, a, b):\n        return 1 if a < b else 0", "f", ("1\n2", "true")),
        _call("call: string", "class Solution:\n    def f(self, s):\n        return s[::-1]", "f", ('"abc"', '"cba"')),
        _call("call: string vs list", "class Solution:\n    def f(self, s):\n        return list(s[::-1])", "f", ('"abc"', '"cba"')),
        _call("call: dict result", "class Solution:\n    def f(self, n):\n        return {'a': n}", "f", ("1", '{"a": 1}')),
        _call("call: set result", "class Solution:\n    def f(self, n):\n        return {n}", "f", ("1", "[1]")),
        _call("call: generator", "class Solution:\n    def f(self, n):\n        return (i for i in range(n))", "f", ("2", "[0, 1]")),
        _call("call: list of strings", "class Solution:\n    def f(self, n):\n        return [str(i) for i in range(n)]", "f", ("2", '["0", "1"]')),
        _call("call: None expected", "class Solution:\n    def f(self, n):\n        return None", "f", ("1", "null")),
        _call("call: infinite loop", "class Solution:\n    def f(self, n):\n        while True:\n            pass", "f", ("1", "1")),
        _call("call: deep recursion", "import sys\nsys.setrecursionlimit(100000)\nclass Solution:\n    def f(self, n):\n        return 0 if n == 0 else 1 + self.f(n - 1)", "f", ("20000", "20000")),
        _call("call: init with state", "class Solution:\n    def __init__(self):\n        self.k = 1\n    def f(self, n):\n        return n + self.k", "f", ("1", "2")),
        _call("call: init needing args", "class Solution:\n    def __init__(self, k):\n        self.k = k\n    def f(self, n):\n        return n", "f", ("1", "1")),
        _call("call: Solution mentioned in a comment", "# class Solution is not used\ndef f(n):\n    return n", "f", ("1", "1")),
        _call("call: big int", "class Solution:\n    def f(self, n):\n        return 10 ** n", "f", ("5000", BIG)),
        _call("call: big int off by one", "class Solution:\n    def f(self, n):\n        return 10 ** n + 1", "f", ("5000", BIG)),
        _call("call: big int input", "class Solution:\n    def f(self, n):\n        return n % 7", "f", (BIG, str(10**50 % 7 if False else pow(10, 5000, 7)))),
        _call("call: guard os.getcwd", "import os\nclass Solution:\n    def f(self, n):\n        os.getcwd()\n        return n", "f", ("1", "1")),
        _call("call: swallow the alarm", "import time\nclass Solution:\n    def f(self, n):\n        try:\n            t = time.time()\n            while time.time() - t < 3:\n                pass\n"
              "        except Exception:\n            pass\n        return n", "f", ("1", "1")),
        _call("call: exit()", "class Solution:\n    def f(self, n):\n        exit()", "f", ("1", "1")),
    ]
    # ---------------------------------------------------------------- long integers and numpy on stdin
    out += [
        _stdin("print 10**5000", "print(10 ** 5000)", ("", BIG)),
        _stdin("print 10**60000", "print(10 ** 60000)", ("", "1")),
        _stdin("int of 5000 digits", "n = int(input())\nprint(n % 7)", (BIG + "\n", str(pow(10, 5000, 7)))),
        _stdin("lift the int limit", "import sys\nsys.set_int_max_str_digits(0)\nprint(len(str(10 ** 60000)))", ("", "60001")),
        _stdin("numpy sum", "import numpy as np\na = np.array(list(map(int, input().split())))\nprint(a.sum())", *SUM),
        _stdin("numpy float", "import numpy as np\nprint(np.float64(1) / 3)", ("", "0.3333333333333333")),
        _stdin("numpy array print", "import numpy as np\nprint(np.array([1, 2]))", ("", "[1 2]")),
        _stdin("numpy loadtxt stdin", "import numpy as np, sys\na = np.loadtxt(sys.stdin, dtype=int)\nprint(int(a.sum()))", ("1 2\n", "3")),
        _stdin("math.gcd", "import math\na, b = map(int, input().split())\nprint(math.gcd(a, b))", ("12 18\n", "6")),
        _stdin("prelude names", "print(gcd(12, 18), floor(2.5), ascii_lowercase[:2], deque([1]).pop())", ("", "6 2 ab 1")),
    ]
    # ---------------------------------------------------------------- extraction from the reply
    prog = "a, b = map(int, input().split())\nprint(a + b)"
    out += [
        _stdin("reply: after think", "", *SUM, reply=f"Think...\n</think>\n```python\n{prog}\n```"),
        _stdin("reply: only inside think", "", *SUM, reply=f"Let me try\n```python\n{prog}\n```\nok\n</think>\nDone."),
        _stdin("reply: think never closed", "", *SUM, reply=f"Let me try\n```python\n{prog}\n```\nand so on"),
        _stdin("reply: last block wrong", "", *SUM, reply=f"</think>\n```python\n{prog}\n```\nor\n```python\nprint(0)\n```"),
        _stdin("reply: last block right", "", *SUM, reply=f"```python\nprint(0)\n```\n</think>\n```python\n{prog}\n```"),
        _stdin("reply: no block", "", *SUM, reply=f"</think>\n{prog}"),
        _stdin("reply: one fence only", "", *SUM, reply=f"</think>\n```python\n{prog}"),
        _stdin("reply: fences with text", "", *SUM, reply=f"</think>\nCode: ```python\n{prog}\n``` done"),
        _stdin("reply: plain fence", "", *SUM, reply=f"</think>\n```\n{prog}\n```"),
        _stdin("reply: inline code after", "", *SUM, reply=f"</think>\n```python\n{prog}\n```\nUse `a` and ```b```."),
        _stdin("reply: indented block", "", *SUM, reply="</think>\n  ```python\n  a, b = map(int, input().split())\n  print(a + b)\n  ```"),
        _stdin("reply: cut mid-block", "", *SUM, reply=f"```python\n{prog}\n```\n</think>\n```python\nprint("),
    ]
    return out
