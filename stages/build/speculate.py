"""`go build` starts before Python is ready: the console script's first step, not its fifth.

A rebuild is mostly Go's own up-to-date check (or its link), and gosmall's own start (Python, invoke,
the config) costs about as much again. `gosmall build-small` therefore remembers, per directory and
command line, the `go build` commands its last successful run made, and `cli.main` starts them
again before importing anything else. When the build reaches `compile`, it claims the process
started for its kept output (cache.go_output's key) and uses its result only if the command,
directory and environment are exactly the ones it would run now; otherwise the speculative
process is killed and the real command runs under the same lock. Go's own up-to-date check makes
a speculative run harmless: at worst it links a binary the build then links again.

Nothing secret is remembered: only the command line and the variables gosmall itself sets; the
rest of the environment is the one the user runs with. A speculative process holds the kept
output's lock from the start, is killed with the build's other process groups on Ctrl-C or
SIGTERM, and is killed at exit if no build claimed it. `GOSMALL_CACHE=off` turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import importlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

KIND = "speculation"
KEY = re.compile(r"[0-9a-f]{32}")  # cache.key_of's
# The variables compile and Toolchain.env set; a remembered command carrying any other is not started.
# GOCACHEPROG is left out on purpose: a build with the shared Go cache (gocache.py) is never started early,
# because its cache program reports its counts to the run that started it; compile does not remember it either.
SET_BY_GOSMALL = frozenset({"GOROOT", "GOTOOLCHAIN", "GOFLAGS", "GOPROXY", "CGO_ENABLED", "GOOS", "GOARCH", "GOARM", "CC"})
# What gosmall sets per build, left out of the comparison: it only says where Go keeps its scratch files.
SCRATCH = ("GOTMPDIR", "TMPDIR")


@dataclass
class Speculation:
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    lock: IO[str]  # the kept output's lock, held since the start
    scratch: Path

    def matches(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> bool:
        return self.argv == tuple(argv) and self.cwd == str(cwd) and _comparable(self.env) == _comparable(env)

    def result(self, on_stderr: Callable[[str], bool] | None = None) -> subprocess.CompletedProcess[str]:
        """What Go said and did; `on_stderr` sees its stderr line by line as it comes (interrupts.run_as_group's)."""
        if self.process.poll() is None:
            _warm_up(self.process)  # Go is still at work (linking, most likely): Python's next imports cost nothing now
        try:
            if on_stderr is None:
                stdout, raw = self.process.communicate()
                stderr = raw.decode(errors="replace")
            else:
                from ..interrupts import communicate_by_line

                stdout, stderr = communicate_by_line(self.process, on_stderr)
        except BaseException:
            self.kill()
            raise
        return subprocess.CompletedProcess(list(self.argv), self.process.returncode, stdout.decode(errors="replace"), stderr)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()

    def close(self) -> None:
        """Release the lock and the scratch directory (the process is done or killed)."""
        from ..interrupts import unwatch_group

        unwatch_group(self.process)
        with contextlib.suppress(OSError):
            fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass
class _State:
    started: dict[str, Speculation] = field(default_factory=dict)  # by kept-output key
    commands: list[dict[str, Any]] = field(default_factory=list)  # what this run's builds ran, to remember
    warm: list[Callable[[], object]] = field(default_factory=list)  # steps to take while waiting for Go
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def _comparable(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in SCRATCH}


def _record_key(cwd: Path, argv: Sequence[str]) -> list[str]:
    return [str(cwd), *argv]


# The commands that build: `run` too, whose edit -> running container loop is the one a developer waits on (issue 28).
SPECULATED = ("build-small", "run")


def start(argv: Sequence[str], cwd: Path | None = None) -> None:
    """Start the `go build`s the last run of this command line in this directory made. Never fails: it only may help."""
    if not argv or argv[0] not in SPECULATED:
        return
    # Ctrl-C and SIGTERM wait while the early builds start and their cleanup is put in place: a signal between
    # a `go build` starting and the handler that kills it would leave Go running with the kept output's lock.
    # A signal that came in the meantime is delivered when they are unblocked, to the handler below.
    from ..interrupts import STOP_SIGNALS

    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        from .cache import remembered  # small; the stages that use what Go builds are not

        known: Any = remembered(KIND, _record_key(cwd or Path.cwd(), argv))
        for command in (known or {}).get("commands", ()):
            _start_one(command)
    except Exception:  # noqa: BLE001, S110 - speculation is an optimisation; the build itself reports real problems
        pass
    finally:
        if _state.started:  # what did start is killed at exit, also when a later one could not
            atexit.register(abandon)
            # Until the task's own handler takes over (interrupts.sigterm_as_ctrl_c), SIGTERM ends the run through
            # atexit, so the early builds are killed rather than left writing the kept output after the lock is gone.
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _start_one(command: Mapping[str, Any]) -> None:
    """One remembered command, if it is still the shape gosmall records: `go build ... -o <the kept output>`.

    The lock and the output come from the key, in this cache, never from the record as paths: whatever
    the cache holds, an early build writes only the kept output whose lock it holds.
    """
    from .cache import SCRATCH_PREFIX, go_output_lock

    key, argv, cwd, variables = str(command["key"]), tuple(map(str, command["argv"])), str(command["cwd"]), dict(command["set"])
    lock_path = go_output_lock(key) if KEY.fullmatch(key) else None
    if lock_path is None or not _is_kept_go_build(argv, lock_path.parent / key) or not set(variables) <= SET_BY_GOSMALL:
        return
    from ..interrupts import die_with_parent, watch_group
    from ..leftovers import make_owned_dir

    lock = lock_path.open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another build holds it: leave Go to that one
    except OSError:
        lock.close()
        return
    scratch = None
    try:
        # Beside the kept outputs, as compile's own builds do (cache.go_scratch): Go's last step is then a rename.
        scratch = make_owned_dir(lock_path.parent, SCRATCH_PREFIX)
        env = {**os.environ, **{str(k): str(v) for k, v in variables.items()}, "GOTMPDIR": str(scratch), "TMPDIR": str(scratch)}
        # Only the main thread runs here (the console script's first step), so preexec_fn is safe.
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent
        )
    except BaseException:
        lock.close()  # closing the descriptor releases the lock
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    watch_group(process)
    _state.started[key] = Speculation(argv, cwd, env, process, lock, scratch)


def _is_kept_go_build(argv: Sequence[str], kept: Path) -> bool:
    """`<...>/go build <flags> -o <kept>/<binary> .`, as compile_binary runs it for a kept output."""
    if len(argv) < 5 or Path(argv[0]).name != "go" or argv[1] != "build" or argv[-3] != "-o" or argv[-1] != ".":
        return False
    return Path(argv[-2]).parent == kept


def import_while_go_runs(*modules: str, first: bool = False) -> None:
    """Modules the run will need unless it is up to date, imported while a claimed early `go build` is still running.

    Waiting for Go's link is idle time for Python; a rebuild after a change then pays for the stages
    that assemble, audit and publish (and the docker SDK for --load) inside Go's time, not after it.
    A no-op, whose early build is done before it is claimed, imports nothing more.
    """
    while_go_runs(*(functools.partial(importlib.import_module, module) for module in modules), first=first)


def while_go_runs(*steps: Callable[[], object], first: bool = False) -> None:
    """Steps the run will take unless it is up to date (connecting to the engine), taken while a claimed early `go build`
    still runs, in order, each only if Go is still at work when its turn comes; a step that fails is left to the build.

    `first`: before the steps asked for earlier. The build asks so for what it needs the moment Go is done (assembling,
    the audit), ahead of what the task asked for the engine (the docker SDK, the connection), which the image's load
    needs only later, on its own thread; and a no-op whose check is still ending meets the small steps first.
    """
    with _state.lock:
        if first:
            _state.warm[:0] = steps
        else:
            _state.warm.extend(steps)


def _warm_up(process: subprocess.Popen[bytes]) -> None:
    # One step at a time, and none once Go is done: a no-op's up-to-date check that ends as it is claimed (a loaded
    # machine) must not wait for the docker SDK's import. What is left is taken when the build needs it, if it does.
    while process.poll() is None:
        with _state.lock:
            if not _state.warm:
                return
            step = _state.warm.pop(0)
        with contextlib.suppress(Exception):  # a real problem shows when the build takes the step itself
            step()


def claim(key: str) -> Speculation | None:
    """The process started for the kept output `key`, now the caller's (with its lock held), or None."""
    with _state.lock:
        return _state.started.pop(key, None)


def ran(key: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
    """What a build ran, to start at once next time: the command and the variables gosmall set, never the rest."""
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v and k not in SCRATCH}
    with _state.lock:
        _state.commands.append({"key": key, "argv": list(argv), "cwd": str(cwd), "set": changed})


def remember_run(argv: Sequence[str], cwd: Path | None = None) -> None:
    """After a successful build-small (or `run`'s build): the commands it ran are what the next run with this command
    line starts."""
    if not argv or argv[0] not in SPECULATED or not _state.commands:
        return
    from .cache import remember

    remember(KIND, _record_key(cwd or Path.cwd(), argv), {"commands": _state.commands})


def abandon() -> None:
    """Kill and clean up every speculative process no build claimed (the build failed early, or did not need it)."""
    with _state.lock:
        left, _state.started = list(_state.started.values()), {}
    for speculation in left:
        speculation.kill()
        speculation.close()
