"""The output directory: what a build may replace, and how it swaps a new output in.

gosmall holds `<output>/<image>` to the rule Go's `go build -o` follows for a
file that is not an object file: it replaces only what it made. Every output
directory it writes holds a marker file, `.gosmall-output`; a directory
without one is also taken as gosmall's when its report.json names gosmall as
its builder (outputs of versions before the marker). Anything else there, a
user's directory, a file, a symbolic link, a FIFO, is refused, never removed
and never followed.

A build writes into `.<image>.tmp-<owner>-*` beside the target, then, holding
a lock on `<output>` (concurrent builds take turns) and with Ctrl-C and SIGTERM
held, renames the old output to `.<image>.old-<owner>-*`, renames the new one
in and removes the old: each output is either the old one or the new one,
never half of each. What a killed build leaves there is removed by the next
build (see leftovers.py).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import GosmallError
from ..interrupts import Interrupted, held
from ..leftovers import MARKER, MARKER_TEXT, TOKEN, Owner, make_owned_dir, remove_stale, report_removed
from ..reporter import Reporter

# report.json of a large cgo closure is some kilobytes; anything near this is not ours.
_REPORT_LIMIT = 16 * 1024 * 1024


def check_replaceable(target: Path) -> None:
    """Nothing at `target`, or an output directory gosmall wrote; otherwise one paragraph saying what to do."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise GosmallError(
            f"Cannot look at the output {target}: {exc.strerror}. Check `output` in [tool.gosmall] and its permissions."
        ) from None
    if stat.S_ISDIR(info.st_mode) and is_gosmall_output(target):
        return
    if stat.S_ISLNK(info.st_mode):
        what = "a symbolic link (gosmall does not follow one there)"
    elif stat.S_ISDIR(info.st_mode):
        what = f"a directory gosmall did not write (it holds no {MARKER} marker and no report.json by gosmall)"
    elif stat.S_ISREG(info.st_mode):
        what = "a file"
    else:
        what = "neither a file nor a directory (a FIFO, socket or device)"
    raise GosmallError(
        f"Refusing to replace {target}: it is {what}, and gosmall replaces only output directories it wrote. "
        f"Move it out of the way, or choose another `output` in [tool.gosmall] or another name for image "
        f"'{target.name}' in [tool.gosmall.images], and build again."
    )


def is_gosmall_output(directory: Path) -> bool:
    if _read_regular(directory / MARKER, len(MARKER_TEXT)) == MARKER_TEXT:
        return True
    data = _read_regular(directory / "report.json", _REPORT_LIMIT)
    try:
        report = json.loads(data) if data is not None else None
    except ValueError:
        return False
    builder = report.get("builder") if isinstance(report, dict) else None
    return isinstance(builder, dict) and "gosmall" in builder


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; no link is followed, no FIFO waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def prepare_output_dir(output: Path) -> None:
    """`<output>` exists and is a real directory: created if missing, never a link that is followed."""
    try:
        try:
            info = os.lstat(output)
        except FileNotFoundError:
            output.mkdir(parents=True, exist_ok=True)  # exist_ok: a concurrent build may create it first
            info = os.lstat(output)
    except OSError as exc:
        raise GosmallError(
            f"Cannot create the output directory {output}: {exc.strerror or exc}. Check `output` in [tool.gosmall] and its permissions."
        ) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        what = "a symbolic link, which gosmall does not follow" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise GosmallError(
            f"The output directory {output} is {what}. Point `output` in [tool.gosmall] at a real directory "
            f"(or move {output} away), and build again."
        )


# .<image>.tmp-<owner>-<random> and .<image>.old-<owner>-<random>, of any image.
_LEFTOVER = re.compile(r"\.[^/]+\.(?:tmp|old)-" + TOKEN + r"-[A-Za-z0-9_]+")


def remove_leftovers(output: Path, reporter: Reporter) -> None:
    """Remove what killed builds left in `output`; a live build's, and anything not named so, are left alone."""
    report_removed(reporter, remove_stale(output, _LEFTOVER))


def make_staging_dir(target: Path) -> Path:
    try:
        return make_owned_dir(target.parent, f".{target.name}.tmp-")
    except OSError as exc:
        raise GosmallError(
            f"Cannot create a directory in {target.parent}: {exc.strerror or exc}. Check `output` in [tool.gosmall] and its permissions."
        ) from None


def swap_into_place(staging: Path, target: Path) -> None:
    """Make `staging` the output at `target`, removing the old one; concurrent builds take turns.

    A Ctrl-C or SIGTERM during the swap is held until it is done; one that then
    stops the build is an `Interrupted` naming `target` as replaced.
    """
    (staging / MARKER).write_bytes(MARKER_TEXT)
    swapped = False
    try:
        with _locked(target.parent), held():
            # Again, under the lock: a concurrent build, or the user, may have put something there meanwhile.
            check_replaceable(target)
            previous = None
            if os.path.lexists(target):
                previous = target.with_name(f".{target.name}.old-{Owner.current().token}-{secrets.token_hex(4)}")
                os.rename(target, previous)
            try:
                os.rename(staging, target)
            except OSError as exc:
                if previous is not None:
                    _put_back(previous, target, exc)
                raise
            swapped = True
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
    except KeyboardInterrupt as stop:
        if swapped:
            raise Interrupted.of(stop, (target,)) from None
        raise
    except OSError as exc:
        raise GosmallError(
            f"Cannot move the new output into {target}: {exc.strerror or exc}. The previous output, if any, was left as it was."
        ) from None


def _put_back(previous: Path, target: Path, cause: OSError) -> None:
    try:
        os.rename(previous, target)
    except OSError:
        raise GosmallError(
            f"Cannot move the new output into {target} ({cause.strerror or cause}), nor the previous output back "
            f"from {previous}, where it is now: move it back with `mv {previous} {target}`."
        ) from None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # A lock on the directory itself (flock(2) takes a directory), so no lock file is left behind;
    # closing the descriptor, or the process dying, releases it. O_NOFOLLOW: never a link.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL):
                raise
            # A file system without locks (some NFS): each rename is still atomic.
        yield
    finally:
        os.close(fd)
