"""What the build is of: version, revision and the one timestamp it may use.

Reproducible builds take their clock from SOURCE_DATE_EPOCH, else from the
last git commit, else 0 — never from the wall clock.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import GosmallError


@dataclass(frozen=True)
class SourceInfo:
    version: str  # `git describe`, else "dev"
    revision: str  # full commit id, "" outside git
    url: str  # the `origin` remote, "" when none
    epoch: int  # seconds since 1970, for every timestamp in the image


def describe_source(root: Path, environ: Mapping[str, str] | None = None) -> SourceInfo:
    environ = os.environ if environ is None else environ
    revision = _git(root, "rev-parse", "HEAD")
    version = _git(root, "describe", "--tags", "--always", "--dirty") or "dev"
    url = _git(root, "config", "--get", "remote.origin.url")
    # A local path as origin would make two clones of one commit differ.
    if url and not ("://" in url or "@" in url):
        url = ""
    return SourceInfo(version, revision, url, source_date_epoch(root, environ, revision))


def source_date_epoch(root: Path, environ: Mapping[str, str], revision: str) -> int:
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if text:
        if not text.isdigit():
            raise GosmallError(
                f"SOURCE_DATE_EPOCH={text!r} is not a whole number of seconds since 1970; "
                "set it to e.g. $(git log -1 --format=%ct) or unset it."
            )
        return int(text)
    if revision:
        committed = _git(root, "log", "-1", "--format=%ct")
        if committed.isdigit():
            return int(committed)
    return 0


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
