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
  output someone edited, removed or replaced is rebuilt, never trusted. gosmall's own rewrites of
  a built output (a push recorded in report.json, `gosmall sbom`) go through `rewriting`, which
  records the new identities, so they do not turn the next no-op into a full build.

All of it, with what the build said (its warnings and its size table, replayed on an
up-to-date run), is remembered in gosmall's cache (cache.py), keyed by the output directory, not
written into it: the output stays the same bytes on every machine. The file identities are read
in the staging directory before the swap (a rename keeps them), so a record can only ever
describe the files that one build wrote; a concurrent build that swapped in its own output
makes the record not match, which means a rebuild, never a wrong answer. A cgo image is always
rebuilt: its shared libraries come from the host, which no build ID vouches for.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from ..config import ImageConfig, ProjectConfig
from ..digest import Digest
from ..images.model import Image
from ..layer_files import FileEntry
from ..leftovers import MARKER
from ..reporter import Reporter
from .built import Build, MadeFrom, PlatformFacts, PlatformInputs, Said, read_build
from .cache import file_identity, remember, remembered
from .compile import Binary, CompilePlan
from .compression import compressor_id
from .needs import Needs, ship_what_is_needed
from .runtime_files import RuntimeFiles, collect_runtime_files
from .source import SourceInfo
from .toolchain import Toolchain

FORMAT = 1
HOST_FACTS = ("/var/lib/dpkg/status", "/etc/os-release", "/usr/lib/os-release")

SAYS = ("step", "detail", "warn", "table")  # the Reporter methods a record may replay


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
        *_vulndb_facts(project),
    ]
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()


def _vulndb_facts(project: ProjectConfig) -> list[Any]:
    """The vulnerability database build-small checks against (trust/vulns.py) and its policy. A local database's
    index changes whenever a record does (it lists each one's modified time); a URL's is not asked on a no-op build."""
    from_environment = os.environ.get("GOVULNDB", "").strip()
    location = from_environment or project.vulndb
    if not location or project.vulns == "off":
        return []
    if location.startswith("https://"):
        return [location, project.vulns]
    directory = Path(location.removeprefix("file://")).expanduser()
    directory = directory if directory.is_absolute() else (Path.cwd() if from_environment else project.root) / directory
    index = (directory / "index" / name for name in ("db.json", "db.json.gz", "modules.json", "modules.json.gz"))
    return [location, project.vulns, *(file_identity(p) for p in index)]


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
    _remember(output_dir, made_from.to_json(), said, files)


def _remember(output_dir: Path, made_from: dict[str, Any], said: Said, files: dict[str, Any]) -> None:
    remember("outputs", [FORMAT, str(output_dir)], {"made_from": made_from, "said": [list(s) for s in said], "files": files})


@contextmanager
def rewriting(output_dir: Path, *paths: Path) -> Iterator[None]:
    """Around a rewrite of `paths` in a built output (push recording report.json, `gosmall sbom`): when the record
    matched the output before, it is made to match it after, so the next unchanged build stays a no-op.

    Only these paths may differ afterwards; any other file of the output that changed meanwhile (a concurrent build
    swapped its own in, someone edited one) leaves the record as it was, which means a rebuild, never a wrong answer.
    What is rewritten must be what the build wrote again, or a record of the push: nothing the inputs decide.
    """
    record = read_record(output_dir)
    current = record is not None and (output_dir / MARKER).is_file() and record.files == output_files(output_dir)
    yield
    if record is None or not current:
        return
    named = {path.relative_to(output_dir).as_posix() for path in paths}
    now = output_files(output_dir)
    if {k: v for k, v in now.items() if k not in named} != {k: v for k, v in record.files.items() if k not in named}:
        return
    if read_record(output_dir) != record:
        return  # another build recorded its own output meanwhile
    _remember(output_dir, record.made_from, record.said, now)


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

    package = Path(__file__).resolve().parent.parent  # the whole package, not only build/
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


# -- the decision -----------------------------------------------------------------


def build_unless_current(compiled: Compiled, reporter: Reporter, build: Callable[[Compiled, Reporter], Build]) -> Build:
    """The one up-to-date decision: the Build already in the output directory when it is current (what that build said
    is said again), else `build(compiled)`, carrying what it was made of for the next run's check."""
    output_dir = compiled.project.output_dir(compiled.config)
    record = read_record(output_dir)
    made_from = _made_from(compiled, _recorded_needs(record))
    if record is not None and made_from is not None and is_current(record, made_from, output_dir):
        stored = up_to_date_build(compiled.config, output_dir, record.said)
        if stored is not None:
            replay(record.said, reporter)
            return stored
    recorder = Recorder(reporter)
    built = build(compiled, recorder)
    if made_from is None:  # the needs the record lacked are known now
        made_from = _made_from(compiled, _built_needs(built))
    return replace(built, made_from=made_from, said=tuple(recorder.said))


def _recorded_needs(record: Record | None) -> Mapping[str, Sequence[Mapping[str, Any]]]:
    platforms = record.made_from.get("platforms", {}) if record is not None else {}
    return {p: tuple(entry.get("needs", ())) for p, entry in platforms.items() if isinstance(entry, dict)}


def _built_needs(build: Build) -> Mapping[str, Sequence[Mapping[str, Any]]]:
    return {p: tuple(entry.get("needs", ())) for p, entry in build.report["platforms"].items()}


@dataclass(frozen=True)
class Compiled:
    """One image once Go has built it: what the up-to-date check and the rest of the build both start from."""

    project: ProjectConfig
    config: ImageConfig
    source: SourceInfo
    toolchain: Toolchain
    plans: Sequence[CompilePlan]
    binaries: Sequence[Binary]
    common: RuntimeFiles  # the runtime files every platform ships, unless what it links decides (follow_needs)


def _made_from(compiled: Compiled, needs_of: Mapping[str, Sequence[Mapping[str, Any]]]) -> MadeFrom | None:
    """What the image is made of, for the up-to-date check; None when no check can vouch for it (cgo: host libraries)."""
    c = compiled
    if any(plan.cgo for plan in c.plans) or not all(binary.build_id for binary in c.binaries):
        return None
    platforms = []
    for binary in c.binaries:
        runtime = c.common
        needs: tuple[Mapping[str, Any], ...] = ()
        if c.config.follow_needs:
            # What ships depends on what the binary links: needs read from a binary with this build ID.
            if str(binary.platform) not in needs_of:
                return None
            needs = tuple(needs_of[str(binary.platform)])
            shipped = ship_what_is_needed(c.config, Needs.from_json(needs))[0]
            runtime = collect_runtime_files(shipped, c.toolchain, never_ship=(c.project.output,))
        inputs = PlatformInputs(binary.build_id, runtime_digest(runtime.entries, runtime.env), needs)
        platforms.append((str(binary.platform), inputs))
    return MadeFrom(common_inputs(c.project, c.config, c.source, c.toolchain, compressor_id()), tuple(platforms))


class _UpToDateBuild(Build):
    """An up-to-date output's Build: report.json read now, the OCI layout only when a publisher asks for the image."""

    def __init__(self, config: ImageConfig, report: Mapping[str, Any], output_dir: Path, said: Said) -> None:
        facts = tuple((p, PlatformFacts.from_json(report["platforms"].get(str(p), {}))) for p in config.platforms)
        fields = {"config": config, "report": report, "output_dir": output_dir, "facts": facts, "said": said, "up_to_date": True}
        for name, value in fields.items():
            object.__setattr__(self, name, value)  # frozen, as Build is; made_from stays None

    # Reading and checking every blob costs a no-op build more than Go's own check; a build that only
    # writes the output directory never needs them.
    @functools.cached_property
    def image(self) -> Image:
        return read_build(self.config, self.output_dir).image


def up_to_date_build(config: ImageConfig, output_dir: Path, said: Said) -> Build | None:
    """The Build already in `output_dir` (fresh.py said it is current), or None when its report.json cannot say."""
    try:
        report = json.loads((output_dir / "report.json").read_text(encoding="utf-8"))
        Digest.parse(report["digest"])
        return _UpToDateBuild(config, report, output_dir, said)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
