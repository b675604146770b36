"""The sandbox for generated code: hostile programs are contained, scored wrong, and the evaluation carries on."""

import json
import os
import socket
import subprocess
import threading
import time

import pytest

import hf_ssgr.evaluation.sandbox as sandbox_module
from hf_ssgr.evaluation.livecodebench import grade_programs
from hf_ssgr.evaluation.sandbox import Sandbox, SandboxLimits, isolation_available, scrubbed_environment

WHY_NOT = isolation_available()
needs_isolation = pytest.mark.skipif(WHY_NOT is not None, reason=f"no namespace sandbox here: {WHY_NOT}")

# A harness that runs `args["code"]` and reports what it saw or which exception it raised.
HARNESS = """
def main(args, emit):
    ns = {}
    try:
        exec(args["code"], ns)
        emit({"ok": True, "value": ns.get("value")})
    except BaseException as err:
        emit({"ok": False, "error": type(err).__name__ + ": " + str(err)})
"""
LIMITS = SandboxLimits(cpu_seconds=5, wall_seconds=4.0, memory_bytes=512 << 20, file_bytes=1 << 20, processes=32)

# One problem with one stdin test: print the sum of two numbers.
SUM_TESTS = json.dumps({"tests": [{"input": "2 3\n", "output": "5\n"}], "fn_name": None})
SUM_OK = "a, b = map(int, input().split())\nprint(a + b)\n"


def _uid_processes(first_uid: int, count: int) -> list[str]:
    """Processes still running under the sandbox's user ids."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,comm="], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return [" ".join(r) for r in rows if first_uid <= int(r[0]) < first_uid + count and not r[2].startswith("Z")]


@pytest.fixture(scope="module")
def box():
    return Sandbox(LIMITS, workers=2, base_uid=61100)


def test_scrubbed_environment_keeps_no_secret():
    env = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HF_TOKEN": "hf_x", "OPENAI_API_KEY": "k", "GH_TOKEN": "t",
           "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root", "PYTHONPATH": "/x"}  # fmt: skip
    clean = scrubbed_environment(env)
    assert clean["PATH"] == "/usr/bin" and clean["LANG"] == "C.UTF-8" and clean["HOME"] == "/tmp/work"
    assert not any(k.endswith(("_TOKEN", "_KEY")) or "SECRET" in k or k == "PYTHONPATH" for k in clean)


def test_refuses_without_isolation_unless_opted_in(monkeypatch):
    monkeypatch.setitem(sandbox_module._ISOLATION, "why_not", "no namespaces in this test")
    with pytest.raises(RuntimeError, match="allow_unsandboxed=True"):
        Sandbox(LIMITS)
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        plain = Sandbox(LIMITS, workers=1, allow_unsandboxed=True)
    assert not plain.isolated
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("MY_SERVICE_KEY", "k")
    seen = plain.run(HARNESS, {"code": "import os\nvalue = dict(os.environ)"})
    assert seen.status == "ok" and not seen.isolated
    assert "HF_TOKEN" not in seen.output["value"] and "MY_SERVICE_KEY" not in seen.output["value"]
    start = time.perf_counter()
    loop = plain.run(HARNESS, {"code": "while True: pass"}, wall_seconds=1.5)
    assert loop.status == "timeout" and time.perf_counter() - start < 5


# ----------------------------------------------------------------------------------------------------------------
# Hostile programs (inside the namespace sandbox)


@needs_isolation
def test_infinite_loop_is_killed_at_the_timeout(box):
    start = time.perf_counter()
    res = box.run(HARNESS, {"code": "while True: pass"}, wall_seconds=1.5)
    assert res.status == "timeout" and res.output is None and time.perf_counter() - start < 5
    assert _uid_processes(61100, 2) == []


@needs_isolation
def test_fork_bomb_is_bounded_and_cleaned_up(box):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = box.run(HARNESS, {"code": bomb}, wall_seconds=2.0)
    assert res.status in ("timeout", "killed")
    time.sleep(0.2)
    assert _uid_processes(61100, 2) == []  # the whole process tree is gone
    count_forks = (
        "import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nvalue = n"
    )
    counted = box.run(HARNESS, {"code": count_forks})
    assert counted.status == "ok" and counted.output["value"] < LIMITS.processes  # RLIMIT_NPROC holds


@needs_isolation
def test_memory_bomb_hits_the_address_space_limit(box):
    res = box.run(HARNESS, {"code": "x = bytearray(2 << 30)"})
    assert res.status == "ok" and res.output == {"ok": False, "error": "MemoryError: "}


@needs_isolation
def test_writes_outside_the_working_directory_are_contained(box, tmp_path):
    target = tmp_path / "escaped"
    os.chmod(tmp_path, 0o777)  # even a world-writable folder of the machine is out of reach
    code = (
        "import os\nvalue = {}\n"
        f"for p in ['/etc/hf_ssgr_escape', {str(target)!r}, '/tmp/hf_ssgr_escape', '/dev/shm/hf_ssgr_escape',"
        " 'here.txt']:\n"
        "    try:\n        open(p, 'w').write('x')\n        value[p] = 'written'\n"
        "    except OSError as e:\n        value[p] = type(e).__name__\n"
        "value['cwd'] = os.getcwd()\n"
    )
    res = box.run(HARNESS, {"code": code})
    seen = res.output["value"]
    assert seen["/etc/hf_ssgr_escape"] == "PermissionError"
    assert seen[str(target)] in ("PermissionError", "FileNotFoundError")  # /tmp is the sandbox's own tmpfs
    assert seen["here.txt"] == "written" and seen["cwd"] == "/tmp/work"  # its own throwaway folder
    assert not target.exists()
    for path in ("/etc/hf_ssgr_escape", "/tmp/hf_ssgr_escape", "/dev/shm/hf_ssgr_escape"):
        assert not os.path.exists(path)  # written inside the sandbox's private tmpfs, gone with it
    big = box.run(HARNESS, {"code": "open('big', 'wb').write(b'x' * (2 << 20))"})
    assert big.status in ("ok", "killed") and (big.output is None or big.output["ok"] is False)  # RLIMIT_FSIZE


@needs_isolation
def test_secrets_are_not_in_the_environment(box, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    res = box.run(HARNESS, {"code": "import os\nvalue = [os.environ.get('HF_TOKEN'), sorted(os.environ)]"})
    assert res.output["value"][0] is None
    assert not any(k.endswith(("_TOKEN", "_KEY")) for k in res.output["value"][1])


@needs_isolation
def test_no_network_even_to_this_machine(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []
    waiter = threading.Thread(target=lambda: accepted.append(_accept(server)))
    waiter.start()
    res = box.run(HARNESS, {"code": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"})
    outside = box.run(HARNESS, {"code": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)"})
    waiter.join()
    server.close()
    assert res.output["ok"] is False and outside.output["ok"] is False
    assert accepted == [None]  # nothing reached the listening socket


def _accept(server):
    try:
        return server.accept()
    except OSError:
        return None


@needs_isolation
def test_killing_the_parent_or_everything_reaches_nothing_outside(box):
    me = os.getpid()
    res = box.run(HARNESS, {"code": f"import os, signal\nos.kill({me}, signal.SIGKILL)"})
    assert res.output["ok"] is False and "No such process" in res.output["error"]  # another PID namespace
    res = box.run(HARNESS, {"code": "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(os.getppid(), 9)"})
    assert res.status in ("killed", "error", "ok")
    assert os.getpid() == me  # this process (the evaluation) lives on


@needs_isolation
def test_hostile_programs_are_scored_wrong_and_grading_carries_on(box, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    me = os.getpid()
    hostile = [
        "while True: pass",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "x = bytearray(4 << 30)\n" + SUM_OK,
        "open('/etc/hf_ssgr_escape', 'w').write('x')\n" + SUM_OK,
        "import os\nprint(os.environ['HF_TOKEN'])",
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n" + SUM_OK,
        f"import os, signal\nos.kill({me}, signal.SIGKILL)\n" + SUM_OK,
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)\n" + SUM_OK,
    ]
    programs = hostile + [SUM_OK]
    start = time.perf_counter()
    verdicts = grade_programs(programs, [SUM_TESTS] * len(programs), box, timeout=1)
    assert [v.passed for v in verdicts] == [False] * len(hostile) + [True]
    assert time.perf_counter() - start < 60
    assert not os.path.exists("/etc/hf_ssgr_escape")
    time.sleep(0.2)
    assert _uid_processes(61100, 2) == []


@needs_isolation
def test_programs_run_in_parallel(box):
    start = time.perf_counter()
    results = box.map(HARNESS, [{"code": "import time\ntime.sleep(1)\nvalue = 1"}] * 2)
    assert [r.output["value"] for r in results] == [1, 1]
    assert time.perf_counter() - start < 1.9  # two workers: the two sleeps overlap


def test_environment_variable_opts_in_to_running_without_isolation(monkeypatch):
    import hf_ssgr.evaluation.livecodebench as lcb

    monkeypatch.setitem(sandbox_module._ISOLATION, "why_not", "no namespaces in this test")
    monkeypatch.setattr(lcb, "_SANDBOXES", {})
    monkeypatch.delenv("HF_SSGR_ALLOW_UNSANDBOXED", raising=False)
    with pytest.raises(RuntimeError, match="cannot be sandboxed"):
        lcb.get_sandbox()
    monkeypatch.setenv("HF_SSGR_ALLOW_UNSANDBOXED", "1")
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        box = lcb.get_sandbox()
    assert not box.isolated
    flood = "import sys\nsys.stdout.write('x' * (80 << 20))\n"  # beyond the harness's output limit
    verdict = grade_programs([flood, SUM_OK], [SUM_TESTS] * 2, box, timeout=5)
    assert verdict[0].reason == "output limit exceeded" and verdict[1].passed
