"""The sandbox in which generated code runs: the only place in the library that executes model output.

Every program runs in its own process, started through `setpriv` + `unshare`:

- a throwaway user id per worker slot (default 61000 + slot; no file on the machine belongs to it), so the program
  cannot write anything the machine owns, cannot signal any other process, and `RLIMIT_NPROC` (per user id, not
  enforced for root) bounds a fork bomb;
- new user, network, mount and PID namespaces: no network (only a down loopback), its own `/proc`, and a process
  tree that dies with its first process;
- fresh `tmpfs` mounts over the world-writable folders (`/tmp`, `/var/tmp`, `/dev/shm`, `/run/lock`), the throwaway
  working directory being `/tmp/work` inside one of them: nothing written there survives the program;
- resource limits: CPU seconds, address space, file size, number of processes, no core files;
- an environment holding only `PATH`, `LANG`, `LC_ALL` and `HOME` (so no `HF_TOKEN` and no `*_TOKEN` / `*_KEY`);
- a session of its own, killed as a whole (`os.killpg`) at the wall-clock timeout.

This needs root (to switch to the throwaway user id) and user namespaces. Where they are missing, `Sandbox` refuses
to run unless it is created with `allow_unsandboxed=True`, which runs programs as plain subprocesses with the same
limits, scrubbed environment and timeout, and warns that nothing else is contained.

The module is also the program that runs inside the namespaces (`python -I sandbox.py`): it reads a JSON payload
(limits, a harness's source and its arguments) from stdin, sets up the mounts and limits, and executes the harness,
whose JSON result goes to stdout. It imports nothing outside the standard library at the top for that reason.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger("hf_ssgr")

__all__ = ["SandboxLimits", "SandboxResult", "Sandbox", "isolation_available", "scrubbed_environment"]

_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_WORKDIR = "/tmp/work"
_ENV_KEEP = ("PATH", "LANG", "LC_ALL")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program (all enforced by the kernel through `setrlimit`).

    `cpu_seconds` and `wall_seconds` bound the whole run; `memory_bytes` is the address space (`RLIMIT_AS`),
    `file_bytes` the largest file it may write, `processes` the processes and threads of its user id, `tmpfs_bytes`
    the size of each fresh `tmpfs` (its working directory included).
    """

    cpu_seconds: int = 60
    wall_seconds: float = 60.0
    memory_bytes: int = 4 << 30
    file_bytes: int = 64 << 20
    processes: int = 64
    tmpfs_bytes: int = 256 << 20

    def __post_init__(self):
        for name in ("cpu_seconds", "wall_seconds", "memory_bytes", "file_bytes", "processes", "tmpfs_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)}.")


@dataclass
class SandboxResult:
    """What came back from one program: its harness's JSON result (`None` if it produced none), why it stopped
    (`"ok"`, `"timeout"`, `"killed"` by a signal, `"error"` for a non-zero exit or unreadable output), the exit code,
    the tail of stderr and the wall seconds."""

    output: Any
    status: str
    returncode: int | None
    stderr: str = ""
    seconds: float = 0.0
    isolated: bool = True


def scrubbed_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a program sees: only `PATH`, `LANG`, `LC_ALL` of `env` (default `os.environ`), and `HOME` set
    to its working directory. Tokens and keys (`HF_TOKEN`, `*_TOKEN`, `*_KEY`, anything else) are left out."""
    env = os.environ if env is None else env
    out = {k: env[k] for k in _ENV_KEEP if k in env}
    out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    out["HOME"] = _WORKDIR
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    return out


_ISOLATION: dict[str, str | None] = {}


def isolation_available() -> str | None:
    """Why the namespace sandbox cannot run here, or `None` when it can (checked once by starting one through it)."""
    if "why_not" in _ISOLATION:
        return _ISOLATION["why_not"]
    why = None
    if not sys.platform.startswith("linux"):
        why = f"the sandbox needs Linux namespaces; this is {sys.platform}"
    elif os.geteuid() != 0:
        why = "the sandbox switches to a throwaway user id, which needs root"
    elif shutil.which("setpriv") is None or shutil.which("unshare") is None:
        why = "setpriv and unshare (util-linux) are not on PATH"
    elif sandbox_python() is None:
        why = (
            f"no Python interpreter the throwaway user may run: {sys.executable} lies in a folder closed to other "
            "users, and neither /usr/bin/python3 nor /usr/local/bin/python3 is usable"
        )
    else:
        probe = subprocess.run(
            [*_launcher(61000), sandbox_python(), "-I", "-c", "pass"],
            capture_output=True,
            text=True,
            timeout=30,
            env=scrubbed_environment(),
        )
        if probe.returncode != 0:
            why = f"creating user/network/mount/PID namespaces failed: {probe.stderr.strip()[-300:]}"
    _ISOLATION["why_not"] = why
    return why


def _world_executable(path: str) -> bool:
    """Whether a user id that owns nothing may execute `path` (o+x on the file and on every folder above it)."""
    import stat

    real = os.path.realpath(path)
    if not os.path.isfile(real):
        return False
    parts = real.split(os.sep)
    for i in range(1, len(parts) + 1):
        node = os.sep.join(parts[:i]) or os.sep
        if not os.stat(node).st_mode & stat.S_IXOTH:
            return False
    return True


def sandbox_python() -> str | None:
    """The interpreter programs run under: this one where other users may run it, else the system's Python 3."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and _world_executable(candidate):
            return os.path.realpath(candidate)
    return None


def _launcher(uid: int) -> list[str]:
    return [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
    ]  # fmt: skip


class Sandbox:
    """Runs harness programs in the sandbox, several at once (one worker slot, hence one user id, per program).

    Args:
        limits: the resource limits of every program.
        workers: how many programs run at once (default: the usable CPU cores).
        allow_unsandboxed: where the namespace sandbox is unavailable, run programs as plain subprocesses (with the
            limits, scrubbed environment and timeout, but no isolation of the file system, network or processes)
            instead of refusing. Warned about when used.
        base_uid: the first throwaway user id (slot i runs as `base_uid + i`); pick ids no account uses.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        workers: int | None = None,
        allow_unsandboxed: bool = False,
        base_uid: int = 61000,
    ):
        self.limits = limits or SandboxLimits()
        self.workers = int(workers or len(os.sched_getaffinity(0)) or 1)
        if not 1 <= self.workers <= 256:
            raise ValueError(f"Sandbox workers must be 1 to 256, got {workers}.")
        why_not = isolation_available()
        self.isolated = why_not is None
        if not self.isolated:
            if not allow_unsandboxed:
                raise RuntimeError(
                    f"Generated code cannot be sandboxed here: {why_not}. Run as root on Linux with util-linux's "
                    "setpriv and unshare and user namespaces enabled, or accept running model-written programs "
                    "without isolation with allow_unsandboxed=True (LiveCodeBench: `allow_unsandboxed: true` in the "
                    "task metadata)."
                )
            msg = (
                f"Running generated code WITHOUT a sandbox ({why_not}): programs get resource limits, a scrubbed "
                "environment and a timeout only; they can read and write your files and reach the network."
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            logger.warning(msg)
        self._slots: queue.Queue[int] = queue.Queue()
        for i in range(self.workers):
            self._slots.put(base_uid + i)

    def run(self, harness: str, args: dict, wall_seconds: float | None = None) -> SandboxResult:
        """Run `harness` (Python source defining `main(args, emit)`; `emit(obj)` sends the JSON result) on `args`.
        Blocks until it ends or `wall_seconds` (default the limits') pass; thread-safe."""
        uid = self._slots.get()
        try:
            return self._run(uid, harness, args, float(wall_seconds or self.limits.wall_seconds))
        finally:
            self._slots.put(uid)

    def map(self, harness: str, many_args: list[dict], wall_seconds: list[float] | None = None) -> list[SandboxResult]:
        """`run` over many argument sets, `workers` at a time, results in order."""
        from concurrent.futures import ThreadPoolExecutor

        walls = wall_seconds or [None] * len(many_args)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda aw: self.run(harness, aw[0], aw[1]), zip(many_args, walls)))

    def _run(self, uid: int, harness: str, args: dict, wall: float) -> SandboxResult:
        payload = json.dumps(
            {"limits": asdict(self.limits), "harness": harness, "args": args, "isolated": self.isolated}
        )
        runner = [sandbox_python() or sys.executable, "-I", "-c", _runner_source()]
        argv = [*_launcher(uid), *runner] if self.isolated else runner
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hf-ssgr-sandbox-") as cwd:  # used when not isolated
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=scrubbed_environment(), start_new_session=True, cwd="/" if self.isolated else cwd,
            )  # fmt: skip
            out, err, status = _communicate(proc, payload.encode(), wall)
        seconds = time.perf_counter() - start
        result = None
        if status == "ok":
            if proc.returncode < 0:
                status = "killed"
            try:
                result = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
            except (ValueError, IndexError):
                status = "error" if status == "ok" else status
        stderr = err.decode("utf-8", "replace")[-2000:]
        return SandboxResult(result, status, proc.returncode, stderr, seconds, self.isolated)


def _runner_source() -> str:
    """This file's source, handed to the interpreter with `-c` (the throwaway user may not be able to read it)."""
    if "source" not in _RUNNER:
        with open(os.path.abspath(__file__), encoding="utf-8") as f:
            _RUNNER["source"] = f.read().replace("from __future__ import annotations\n", "")
    return _RUNNER["source"]


_RUNNER: dict[str, str] = {}


def _communicate(proc: subprocess.Popen, payload: bytes, wall: float) -> tuple[bytes, bytes, str]:
    """Feed the payload and collect the output; at the timeout, kill the whole session. Either way, kill whatever
    the program left behind in its session."""
    try:
        out, err = proc.communicate(payload, timeout=wall)
        status = "ok"
    except subprocess.TimeoutExpired:
        status = "timeout"
        _kill_group(proc.pid)
        out, err = proc.communicate()
    _kill_group(proc.pid)
    return out, err, status


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------------------------
# Inside the sandbox


def _mount_tmpfs(paths: tuple[str, ...], size: int) -> None:
    """Fresh tmpfs over each world-writable folder (inside the mount namespace, so only this program sees them)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_nosuid, ms_nodev = 2, 4
    for path in paths:
        if not os.path.isdir(path):
            continue
        if libc.mount(b"tmpfs", path.encode(), b"tmpfs", ms_nosuid | ms_nodev, f"size={size},mode=1777".encode()):
            err = ctypes.get_errno()
            raise OSError(err, f"mounting a tmpfs over {path} failed: {os.strerror(err)}")


def _set_limits(limits: dict) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _runner_main() -> None:
    payload = json.loads(sys.stdin.buffer.read())
    limits = payload["limits"]
    if payload["isolated"]:
        _mount_tmpfs(_WORLD_WRITABLE, limits["tmpfs_bytes"])
        os.makedirs(_WORKDIR)
        os.chdir(_WORKDIR)
    out_fd = os.dup(1)  # the result channel; the program's own writes to fd 1/2 go nowhere
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sys.stdin = open(os.devnull)  # noqa: SIM115

    def emit(obj) -> None:
        os.write(out_fd, ("\n" + json.dumps(obj) + "\n").encode())

    _set_limits(limits)
    namespace: dict[str, Any] = {"__name__": "hf_ssgr_harness"}
    exec(compile(payload["harness"], "<harness>", "exec"), namespace)  # the harness runs the program under test
    namespace["main"](payload["args"], emit)


if __name__ == "__main__":
    _runner_main()
