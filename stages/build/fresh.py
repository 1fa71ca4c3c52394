"""Whether an output directory already holds what building its image again would write.

A rebuild where nothing changed should cost what Go's own up-to-date check costs. Go decides
for the binary: `go build` into the kept output (cache.py) skips the link when nothing changed,
and the Go build ID it leaves in the binary ends in a hash of the linked bytes. gosmall decides for
the rest, from what it made the image of:

- gosmall itself (every module file's size and mtime) and the compressor's version;
- the image's settings as config.py resolved them, the output directory, the source facts
  (version, revision, SOURCE_DATE_EPOCH), the toolchain, and the host files the SBOM reads
  package versions from (dpkg's database, os-release);
- per platform, the binary's Go build ID and the runtime files' bytes (read again each time:
  a changed `files` entry or CA bundle is a change);
- every file of the output directory as it was written (inode, size, mtime, ctime), so an
  output someone edited, removed or replaced is rebuilt, never trusted.

All of it, with what the build said (its warnings and its size table, replayed on an
up-to-date run), is remembered in gosmall's cache (cache.py), keyed by the output directory, not
written into it: the output stays the same bytes on every machine. The file identities are read
in the staging directory before the swap (a rename keeps them), so a record can only ever
describe the files that one build wrote; a concurrent build that swapped in its own output
makes the record not match, which means a rebuild, never a wrong answer. A cgo image is always
rebuilt: its shared libraries come from the host, which no build ID vouches for.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..config import ImageConfig, ProjectConfig
from ..layer_files import FileEntry
from ..publish.outputs import MARKER
from ..reporter import Reporter
from .cache import file_identity, remember, remembered
from .source import SourceInfo
from .toolchain import Toolchain

FORMAT = 1
HOST_FACTS = ("/var/lib/dpkg/status", "/etc/os-release", "/usr/lib/os-release")

Said = tuple[tuple[str, str], ...]  # (reporter method, message), in order
SAYS = ("step", "detail", "warn", "table")  # the Reporter methods a record may replay


@dataclass(frozen=True)
class PlatformInputs:
    build_id: str  # Go's, of the binary compiled now
    runtime: str  # sha256 of the runtime files' paths, modes, owners and bytes
    needs: tuple[Mapping[str, Any], ...] = ()  # needs.py's evidence, which only the binary decides


@dataclass(frozen=True)
class MadeFrom:
    """What an image is made of, as far as an up-to-date check can tell; equal values give equal outputs."""

    common: str  # gosmall, compressor, settings, output, source, toolchain
    platforms: tuple[tuple[str, PlatformInputs], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "common": self.common,
            "platforms": {p: {"build_id": i.build_id, "runtime": i.runtime, "needs": list(i.needs)} for p, i in self.platforms},
        }


def common_inputs(project: ProjectConfig, config: ImageConfig, source: SourceInfo, toolchain: Toolchain, compressor: str) -> str:
    facts = [
        FORMAT,
        _gosmall_identity(),
        compressor,
        repr(config),
        str(project.output_dir(config)),
        repr(source),
        toolchain.version_text,
        str(toolchain.executable),
        file_identity(toolchain.executable),
        # What the SBOM asks the host about files it ships (which Debian package and version owns them).
        *(file_identity(Path(p)) for p in HOST_FACTS),
    ]
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()


def runtime_digest(entries: Sequence[FileEntry], env: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        head = [entry.path, entry.kind, entry.mode, entry.role, entry.uid, entry.gid, entry.link_target, len(entry.data)]
        digest.update(json.dumps(head).encode())
        digest.update(entry.data)
    digest.update(json.dumps(list(env)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Record:
    """What is remembered of the last build of an output directory: its inputs, what it said, the files it wrote."""

    made_from: dict[str, Any]
    said: Said
    files: dict[str, Any]


def read_record(output_dir: Path) -> Record | None:
    document: Any = remembered("outputs", [FORMAT, str(output_dir)])
    if document is None:
        return None
    try:
        said = tuple((str(kind), str(message)) for kind, message in document["said"])
        for kind, message in said:
            if kind not in SAYS:
                raise ValueError(kind)
            if kind == "table":
                _table(message)
        return Record(dict(document["made_from"]), said, dict(document["files"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not a record this gosmall can read: build


def is_current(record: Record | None, made_from: MadeFrom, output_dir: Path) -> bool:
    """Whether the recorded inputs are these and every output file is still the one that build wrote."""
    if record is None or record.made_from != made_from.to_json() or not (output_dir / MARKER).is_file():
        return False  # no marker: not an output gosmall would take as its own (outputs.py); the build decides
    return record.files == output_files(output_dir)


def output_files(output_dir: Path) -> dict[str, Any]:
    """Each file under the output directory and its identity; a link by its target."""
    found: dict[str, Any] = {}
    for directory, subdirectories, files in os.walk(output_dir):
        subdirectories.sort()
        for name in sorted(files):
            path = Path(directory, name)
            relative = path.relative_to(output_dir).as_posix()
            if relative != MARKER:  # written at the swap, after the files were recorded
                found[relative] = file_identity(path) if not path.is_symlink() else ["link", os.readlink(path)]
    return found


def write_record(output_dir: Path, made_from: MadeFrom, said: Said, files: dict[str, Any]) -> None:
    """`files`: output_files() of the staging directory, read before it was renamed to `output_dir`."""
    remember("outputs", [FORMAT, str(output_dir)], {"made_from": made_from.to_json(), "said": [list(s) for s in said], "files": files})


def replay(said: Said, reporter: Reporter) -> None:
    """Say again what a build said (read_record has checked every kind is one of SAYS)."""
    for kind, message in said:
        if kind == "table":
            reporter.table(*_table(message))
        else:
            getattr(reporter, kind)(message)


def _table(message: str) -> tuple[str, list[str], list[list[str]]]:
    title, columns, rows = json.loads(message)
    if not isinstance(title, str) or not all(isinstance(c, str) for c in columns) or not all(isinstance(v, str) for r in rows for v in r):
        raise ValueError("not a table")
    return title, list(columns), [list(r) for r in rows]


@cache
def _gosmall_identity() -> list[Any]:
    """gosmall's own code: an edited module (an editable install, a patched wheel) is another builder."""
    from .. import __version__

    package = Path(__file__).resolve().parent
    seen: list[Any] = [__version__]
    for directory, subdirectories, files in os.walk(package):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(directory, name))
                seen.append([os.path.relpath(os.path.join(directory, name), package), st.st_size, st.st_mtime_ns])
    return seen


class Recorder:
    """A reporter that passes every message on and keeps what an up-to-date run should say again."""

    def __init__(self, reporter: Any) -> None:
        self._reporter = reporter
        self.said: list[tuple[str, str]] = []

    def step(self, message: str) -> None:
        self.said.append(("step", message))
        self._reporter.step(message)

    def detail(self, message: str) -> None:
        self.said.append(("detail", message))
        self._reporter.detail(message)

    def warn(self, message: str) -> None:
        self.said.append(("warn", message))
        self._reporter.warn(message)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.said.append(("table", json.dumps([title, list(columns), [list(r) for r in rows]])))
        self._reporter.table(title, columns, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reporter, name)  # status and the rest: shown, not replayed
