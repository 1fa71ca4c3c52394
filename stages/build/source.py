"""What the build is of: version, revision and the one timestamp it may use.

Reproducible builds take their clock from SOURCE_DATE_EPOCH, else from the
last git commit, else 0 — never from the wall clock. These facts are also
what ldflags templates ({version}, {commit}, ...) are filled in with.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..errors import GosmallError

SOURCE_LABEL = "org.opencontainers.image.source"
DIRTY = "-dirty"  # what `git describe --dirty` appends
GIT_TIMEOUT = 30  # seconds, for all of its questions together


@dataclass(frozen=True)
class SourceInfo:
    version: str  # `git describe`, else "dev"
    revision: str  # full commit id, "" outside git
    url: str  # the `origin` remote, "" when none
    epoch: int  # seconds since 1970, for every timestamp in the image
    short_revision: str = ""  # the commit as git abbreviates it (`%h`), "" outside git
    tag: str = ""  # the tag at HEAD exactly (`git describe --tags --exact-match`), "" when none
    dirty: bool = False  # tracked files differ from HEAD (untracked ones do not count, as for `git describe --dirty`)

    def ldflags_values(self) -> dict[str, str]:
        """What each ldflags template name becomes. A dirty tree marks the commit and the tag as `git describe
        --dirty` marks the version ("-dirty" appended): the binary is not what that commit or tag holds."""
        mark = DIRTY if self.dirty else ""
        return {
            "version": self.version,
            "commit": self.revision + mark if self.revision else "",
            "short_commit": self.short_revision + mark if self.short_revision else "",
            "tag": self.tag + mark if self.tag else "",
            "date": rfc3339(self.epoch),  # never the wall clock: the same source builds the same bytes
        }

    def declared(self, labels: Sequence[tuple[str, str]]) -> SourceInfo:
        """The source URL an image's labels declare wins over the origin remote: a fork, an ssh or a `.git` URL
        of the same repository is not what the project says it is, and a clone from a local path has none."""
        url = dict(labels).get(SOURCE_LABEL, "")
        return replace(self, url=url) if url else self


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_source(root: Path, environ: Mapping[str, str] | None = None) -> SourceInfo:
    return ask_about_source(root).answer(environ)


def ask_about_source(root: Path) -> SourceQuestions:
    """git's answers about `root`, asked now and read when needed: a task asks before it imports the pipeline, so
    git answers while Python imports (each git start costs about as much as the answer)."""
    return SourceQuestions(
        _ask_git(root, "log", "-1", "--format=%H %h %ct"),
        _ask_git(root, "describe", "--tags", "--always", "--dirty"),
        # No name may match, so the answer is the abbreviated commit, "-dirty" appended as for the version.
        _ask_git(root, "describe", "--always", "--dirty", "--exclude=*"),
        _ask_git(root, "describe", "--tags", "--exact-match"),
        _ask_git(root, "config", "--get", "remote.origin.url"),
        deadline=time.monotonic() + GIT_TIMEOUT,
    )


class SourceQuestions:
    """Five git processes at once, no threads: each answer is a line, which fits any pipe, so every process can run to
    its end before the first one is read."""

    def __init__(self, *asked: subprocess.Popen[str] | None, deadline: float) -> None:
        self._asked, self._deadline = asked, deadline

    def answer(self, environ: Mapping[str, str] | None = None) -> SourceInfo:
        environ = os.environ if environ is None else environ
        head, described, state, exact, origin = (_answer(process, self._deadline) for process in self._asked)
        revision, short, committed = (head.split(" ") + ["", ""])[:3]
        return SourceInfo(
            described or "dev",
            revision,
            public_url(origin),
            source_date_epoch(environ, revision, committed),
            short_revision=short,
            tag=exact,
            dirty=bool(revision) and state.endswith(DIRTY),
        )


def public_url(url: str) -> str:
    """The origin as it may appear in an image: no local paths, no credentials.

    A local path (or file://) would make two clones of one commit differ; a CI
    job token in the URL must never be published in an annotation.
    """
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ssh", "git"):
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}@" if parts.scheme in ("ssh", "git") and parts.username and not parts.password else ""
        return urlunsplit((parts.scheme, user + host, parts.path, "", ""))
    # scp-like "git@host:path" has no scheme; anything else with no host is local.
    if not parts.scheme and re.match(r"^[\w.-]+@[\w.-]+:", url):
        return url
    return ""


def source_date_epoch(environ: Mapping[str, str], revision: str, committed: str) -> int:
    """SOURCE_DATE_EPOCH when set, else the commit's time (`committed`, git's %ct), else 0."""
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if text:
        if not text.isdigit():
            raise GosmallError(
                f"SOURCE_DATE_EPOCH={text!r} is not a whole number of seconds since 1970; "
                "set it to e.g. $(git log -1 --format=%ct) or unset it."
            )
        return int(text)
    if revision and committed.isdigit():
        return int(committed)
    return 0


def _ask_git(root: Path, *args: str) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(["git", *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return None


def _answer(process: subprocess.Popen[str] | None, deadline: float) -> str:
    """What git printed; "" when it failed, is missing, or did not answer in time."""
    if process is None:
        return ""
    try:
        stdout, _ = process.communicate(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return ""
    return stdout.strip() if process.returncode == 0 else ""
