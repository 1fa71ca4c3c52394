"""What a killed gosmall leaves behind, named so that the next run can tell its own.

SIGKILL (or a power cut) runs no cleanup: a build leaves its work directory in
TMPDIR and `.<image>.tmp-*` or `.<image>.old-*` beside its output, a smoke
test leaves its container running. Each of these carries an owner token: the
gosmall process's PID, when that process started (so a reused PID is not
mistaken for it), and which machine it ran on (boot and PID namespace, so a
PID seen from another container means nothing here). A later run removes a
leftover only when its token says it came from this machine and that process
no longer runs: never a live concurrent build's, never another container's,
never anything that does not carry a token.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .reporter import Reporter

# <pid>-<start time>-<machine>, as it appears in names and labels.
TOKEN = r"(?P<token>[1-9][0-9]*-[0-9]+-[0-9a-f]{8})"

# What every output directory gosmall writes holds (publish/outputs.py), and what the up-to-date check
# (build/fresh.py) looks for: the mark of an output gosmall owns, kept here with the other marks of ownership.
MARKER = ".gosmall-output"
MARKER_TEXT = b"gosmall build-small wrote this directory; the next build of this image replaces it whole.\n"


@dataclass(frozen=True)
class Owner:
    """The gosmall process that made a temporary directory or container."""

    pid: int
    started: int  # clock ticks after boot (/proc/<pid>/stat); 0 where the system does not say
    machine: str  # 8 hex digits for the boot and PID namespace the process ran in

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, _started(pid) or 0, _machine())

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        match = re.fullmatch(TOKEN, token)
        if match is None:
            return None
        pid, started, machine = match["token"].split("-")
        return cls(int(pid), int(started), machine)

    @property
    def token(self) -> str:
        return f"{self.pid}-{self.started}-{self.machine}"

    def is_gone(self) -> bool:
        """This machine's process that no longer runs; a process elsewhere is never judged gone."""
        return self.machine == _machine() and not _running(self.pid, self.started)


def owned_name_pattern(prefix: str) -> re.Pattern[str]:
    """Names `make_owned_dir(directory, prefix)` gives, with the owner in the group `token`."""
    return re.compile(re.escape(prefix) + TOKEN + r"-[A-Za-z0-9_]+")


def make_owned_dir(directory: Path, prefix: str) -> Path:
    """A new private directory `<prefix><token>-<random>` in `directory`."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{Owner.current().token}-", dir=directory))


def remove_stale(directory: Path, pattern: re.Pattern[str]) -> tuple[tuple[Path, Owner], ...]:
    """Remove the directories in `directory` named by `pattern` whose owner is gone; say which.

    Only real directories of this user are removed: a link, a file or another
    user's directory of that name was not made by this user's gosmall.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        owner = Owner.parse(match["token"]) if match else None
        if owner is None or not owner.is_gone():
            continue
        path = directory / name
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append((path, owner))
    return tuple(removed)


def report_removed(reporter: Reporter, removed: tuple[tuple[Path, Owner], ...]) -> None:
    for path, owner in removed:
        reporter.detail(f"removed {path}, left by gosmall process {owner.pid}, which no longer runs")


@contextmanager
def owned_temporary_directory(prefix: str, reporter: Reporter | None = None) -> Iterator[Path]:
    """A private directory `<prefix><token>-*` in TMPDIR, removed after; killed runs' of that prefix are removed first.

    For every temporary directory gosmall makes (a build's work directory, strip's and the audit's
    scratch, the lock's clone), so a SIGKILL leaves nothing the next run cannot tell is its to remove.
    """
    temp = Path(tempfile.gettempdir())
    removed = remove_stale(temp, owned_name_pattern(prefix))
    if reporter is not None:
        report_removed(reporter, removed)
    try:
        directory = make_owned_dir(temp, prefix)
    except OSError as exc:
        from .errors import GosmallError

        raise GosmallError(
            f"Cannot create a work directory in {temp}: {exc.strerror or exc}. Set TMPDIR to a writable directory."
        ) from None
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _running(pid: int, started: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _stat_fields(pid)
    if now is None:
        return True  # no /proc to ask: a process with that PID runs, so it may be the owner
    if now[0] == "Z":
        return False  # killed, waiting only for its parent to notice
    return started == 0 or int(now[19]) == started


def _started(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, from the state (field 3) on."""
    # Opened relative to the /proc/<pid> directory: qemu-user answers a process's own /proc/self/stat
    # and /proc/<own pid>/stat with an emulated start time that no other process sees, so a build under
    # emulation would look dead to the next one (which then removed its live work directory).
    try:
        directory = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
        try:
            stat_fd = os.open("stat", os.O_RDONLY, dir_fd=directory)
        finally:
            os.close(directory)
        with os.fdopen(stat_fd, "rb") as stream:
            text = stream.read().decode("ascii", errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces and parentheses.
    fields = text[text.rfind(")") + 1 :].split()
    return fields if len(fields) > 19 else None


def _machine() -> str:
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
        except OSError:
            parts.append("")
    if not any(parts):
        parts.append(socket.gethostname())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]
