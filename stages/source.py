"""What the build is of: version, revision and the one timestamp it may use.

Reproducible builds take their clock from SOURCE_DATE_EPOCH, else from the
last git commit, else 0 — never from the wall clock.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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
    url = public_url(_git(root, "config", "--get", "remote.origin.url"))
    return SourceInfo(version, revision, url, source_date_epoch(root, environ, revision))


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
