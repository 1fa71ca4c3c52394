"""How far a `go build` is: packages done out of the total, on a terminal's status line and nowhere else.

Done comes from Go's own output (`go build -v` prints each package as it compiles it, on stderr) or, with
the shared Go cache, from the cache program (gocache.py), which says on its stderr (Go passes it on) each
package archive Go put and each one it served, and whether that came from the registry. The total is
`go list -deps` for the platform, started only at the first sign that Go has work to do (a package
compiled, an output fetched): a build Go finds up to date runs no extra `go list` and costs nothing more.

Off a terminal (`StatusLine.watched` is False) none of this happens: no `-v`, no `go list`, no counting.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..interrupts import run_as_group
from .gocache import PROGRESS_ENV, PROGRESS_LINE
from .toolchain import run_go

if TYPE_CHECKING:
    from ..reporter import StatusLine
    from .toolchain import GoModule, Toolchain


@dataclass(frozen=True)
class Listing:
    """What `go list -deps` needs to see a platform's packages as its `go build` does."""

    toolchain: Toolchain
    module: GoModule
    package: Path
    env: Mapping[str, str]  # GOOS, GOARCH, CGO_ENABLED...: not the cache program, which `go list` has no use for
    tags: tuple[str, ...]


# What `go build -v` prints for a package: its import path alone on a line. Go's own messages have spaces
# (`# pkg`, `file.go:1:2: ...`, `go: ...`), so they are never taken for one.
_IMPORT_PATH = re.compile(r"[A-Za-z0-9_.~+\-]+(?:/[A-Za-z0-9_.~+\-]+)*\n?")
# Listed by `go list -deps` but never compiled, so never printed by -v or put by Go.
_NEVER_COMPILED = frozenset({"unsafe", "C"})


@dataclass
class _Counts:
    total: int | None = None  # None until `go list -deps` answered
    done: int = 0
    shared: int = 0  # of done: served from the registry
    listing: bool = False
    succeeded: bool = False  # Go is done and said so: then every package is done, however late the total comes


def with_package_names(args: list[str]) -> list[str]:
    """`go build -v ...`: Go prints each package it compiles (nothing when all is up to date)."""
    return [args[0], "-v", *args[1:]]


def without_package_names(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Go's stderr as it would be without -v: a failure shows the compiler's words, not the packages built before it."""
    if not done.stderr:
        return done
    kept = "".join(line for line in done.stderr.splitlines(keepends=True) if _IMPORT_PATH.fullmatch(line) is None)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, kept)


class PackageProgress:
    """One image's `go build` status line: every platform's packages added up, e.g. `57/394 packages, 12 from the shared cache`."""

    def __init__(self, line: StatusLine, message: str, *, shared_cache: bool) -> None:
        self.line, self.message, self.shared_cache = line, message, shared_cache
        self._lock = threading.Lock()
        self._platforms: dict[str, _Counts] = {}

    def platform(self, name: str, listing: Listing) -> PlatformProgress:
        with self._lock:
            counts = self._platforms.setdefault(name, _Counts())
        return PlatformProgress(self, counts, listing)

    def _show(self) -> None:
        with self._lock:
            known = [c for c in self._platforms.values() if c.total is not None]
            if not known:
                return  # no total yet: a count of nothing would say nothing
            total = sum(c.total or 0 for c in known)
            done = sum(min(c.done, c.total or 0) for c in known)
            shared = sum(c.shared for c in known)
        said = f"{self.message}: {done}/{total} packages"
        self.line.update(said + (f", {shared} from the shared cache" if self.shared_cache else ""))


class PlatformProgress:
    """One platform's `go build`: the flags and variables that make Go and the cache program say what they did, and
    `saw(line)` for each line of Go's stderr."""

    def __init__(self, image: PackageProgress, counts: _Counts, listing: Listing) -> None:
        self.image, self.counts, self.listing = image, counts, listing

    def env(self) -> dict[str, str]:
        return {PROGRESS_ENV: "1"} if self.image.shared_cache else {}

    def saw(self, line: str) -> bool:
        """Count a progress line and leave it out of the captured stderr (False); keep any other line (True)."""
        if self.image.shared_cache:
            if not line.startswith(PROGRESS_LINE):
                return True
            kind = line[len(PROGRESS_LINE) :].strip()
            self._count(shared=kind == "remote", work=kind != "local")
            return False
        if _IMPORT_PATH.fullmatch(line) is None:
            return True
        self._count(shared=False, work=True)
        return False

    def finished(self, ok: bool) -> None:
        """Go is done: every package of a build that succeeded is done, whether Go compiled it or found it up to date."""
        if ok:
            with self.image._lock:
                self.counts.succeeded = True
                self.counts.done = max(self.counts.done, self.counts.total or 0)
            self.image._show()

    def _count(self, *, shared: bool, work: bool) -> None:
        with self.image._lock:
            self.counts.done += 1
            self.counts.shared += shared
            start = work and not self.counts.listing
            self.counts.listing = self.counts.listing or start
        if start:
            threading.Thread(target=self._list, name="gosmall-go-list", daemon=True).start()
        self.image._show()

    def _list(self) -> None:
        """The total: `go list -deps` with the build's platform and tags (not its cache program: Go lists without one)."""
        how = self.listing
        args = ["list", "-deps", "-f", "{{.ImportPath}}", "-tags", ",".join(how.tags), "."]
        try:
            listed = run_go(how.toolchain, how.module, args, cwd=how.package, env=how.env, runner=run_as_group)
        except OSError:
            return
        if listed.returncode != 0:
            return  # the build says what is wrong; the line just has no count
        packages = {p for p in listed.stdout.split() if p not in _NEVER_COMPILED}
        with self.image._lock:
            self.counts.total = len(packages)
            if self.counts.succeeded:
                self.counts.done = self.counts.total
        self.image._show()
