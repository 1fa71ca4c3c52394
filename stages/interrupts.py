"""How gosmall stops: SIGTERM like Ctrl-C, and the few steps no signal may cut in half.

`kill`, systemd, CI runners and `docker stop` send SIGTERM; Python's default
for it ends the process on the spot, with no cleanup. While a task runs,
SIGTERM raises `Interrupted` (a KeyboardInterrupt) instead, so the same
`finally` blocks run as for Ctrl-C: temporary directories are removed, the
`go build` process group is killed, a smoke container is removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, and the outputs this run had already replaced when it came."""

    def __init__(self, signum: int = signal.SIGINT, replaced: tuple[Path, ...] = ()) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.replaced = replaced

    @classmethod
    def of(cls, stop: KeyboardInterrupt, replaced: Sequence[Path] = ()) -> Interrupted:
        """`stop` (a plain KeyboardInterrupt is Ctrl-C), with `replaced` before what it already names."""
        if isinstance(stop, Interrupted):
            return cls(stop.signum, (*replaced, *stop.replaced))
        return cls(signal.SIGINT, tuple(replaced))

    @property
    def exit_status(self) -> int:
        # What a shell reports for a process ended by that signal: 130 for Ctrl-C, 143 for SIGTERM.
        return 128 + self.signum


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Interrupted(SIGTERM)`; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; signals are delivered there anyway
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, and are delivered right after it.

    For steps that must not be cut in half: swapping an output into place, removing a container.
    """
    blocking = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    if not blocking:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _load_prctl() -> Any:
    # Looked up here, in the parent: the child after fork may not import or take locks other threads held.
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no parent-death signal there
        return None


_prctl = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn of the `go build`s gosmall starts: they take signals as usual, and die when gosmall dies.

    A mask blocked while the process was started is inherited; unblocked here. PR_SET_PDEATHSIG has the
    kernel kill the child when the thread that started it ends, SIGKILL included, which no handler of
    gosmall's sees. Only async-signal-safe calls: pthread_sigmask and one foreign function already loaded.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def kill_running_groups() -> None:
    """Kill every process group run_as_group is waiting on, in any thread.

    Ctrl-C and SIGTERM reach the main thread only; platforms compiled in worker threads are stopped
    through this, so their compilers do not go on writing into a directory being removed.
    """
    with _running_lock:
        for process in _running:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


def watch_group(process: subprocess.Popen[bytes]) -> None:
    """Have kill_running_groups kill this process's group too, until unwatch_group."""
    with _running_lock:
        _running.add(process)


def unwatch_group(process: subprocess.Popen[bytes]) -> None:
    with _running_lock:
        _running.discard(process)


def run_as_group(
    args: Sequence[str], *, on_stderr: Callable[[str], bool] | None = None, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(args, capture_output=True, ...)`, the child in a process group of its own.

    `go build` starts compilers and the linker; when gosmall is interrupted,
    killing `go` alone would leave them running, writing into a directory that
    is being removed. The whole group is killed instead. (It is also why a
    Ctrl-C reaches gosmall only, which then does this.)

    `on_stderr` (text mode) sees each line of stderr as it comes, and says whether it belongs in the captured
    stderr (False: it was a progress line, not something to show).
    """
    options.pop("capture_output", None)
    # The thread that starts it waits for it, so the parent-death signal fires only if gosmall itself dies.
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent, **options
    ) as process:
        watch_group(process)
        try:
            if on_stderr is None:
                stdout, stderr = process.communicate()
            else:
                stdout, stderr = communicate_by_line(process, on_stderr)
        except BaseException:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            unwatch_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def communicate_by_line(process: subprocess.Popen[Any], on_stderr: Callable[[str], bool]) -> tuple[Any, str]:
    """communicate(), but stderr read line by line in this thread (stdout in another, so neither pipe fills up);
    stderr comes back as text, without the lines `on_stderr` said were not for it."""
    assert process.stdout is not None and process.stderr is not None
    out: list[Any] = []
    reader = threading.Thread(target=lambda: out.append(process.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    kept = []
    for raw in process.stderr:
        line = raw if isinstance(raw, str) else raw.decode(errors="replace")
        if on_stderr(line):
            kept.append(line)
    reader.join()
    process.wait()
    return (out[0] if out else ""), "".join(kept)
