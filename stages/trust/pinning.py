"""Trust: find every image reference in a project and hold it to a digest.

A tag can be moved to other bytes at any time; a digest cannot. This stage
finds every image a project pulls and says which are not pinned
(`name[:tag]@sha256:<64 hex>`), and can pin them in place.

The public surface, all returning values and never printing:

- `scan_project(root, paths=(), *, output_dir=None, scalar_prefixes=()) -> ScanResult`
  Finds references in Dockerfiles (`Dockerfile`, `*.Dockerfile`,
  `Dockerfile.*`, `Containerfile`), Compose files (`compose*.y*ml`,
  `docker-compose*.y*ml`), Kubernetes manifests (any other YAML with a
  `kind:` key), GitHub workflows (`.github/workflows/*.y*ml`) and
  `[tool.gosmall]` in pyproject.toml. With no `paths` it scans the project:
  the files git knows (tracked, plus untracked ones that are not ignored, so
  a new Dockerfile is checked before its first commit), or, outside a git
  checkout, the whole tree; `.git`, `vendor`, `node_modules` and the output
  dir are skipped either way. Files that cannot be read or parsed do not stop
  the scan: they become findings too (problem `unreadable` or
  `invalid-yaml`, with the position of the fault), so `ScanResult.findings`
  is the one list to show and `ScanResult.ok` the one answer. A named path
  that does not exist is a `GosmallError`: the scan could not do its job.
  Only regular files are opened (a FIFO would hang the scan, a device never
  end it). A symbolic link is followed only to a file inside `root`; a file
  reached both directly and through links is scanned once, under its own
  name. `scalar_prefixes` widens the YAML scan for `resolve`: every plain or
  quoted scalar whose whole value starts with one (keys, lists, flow style,
  any depth, any YAML file) is a reference too; `verify-pins` and `pin`
  pass none, so their places stay as listed above.
- `scan_root(start) -> Path`: where a scan looks when there is no gosmall
  project: the git work tree holding `start`, else `start`.
- `format_findings(result, fmt, root) -> str`: `path:line:col: message`
  lines, a JSON list of {path, line, column, reference, problem,
  message}, or a SARIF 2.1.0 log (one rule per problem); paths relative to
  `root`.
- `enforce_pinning(result, policy) -> tuple[str, ...]`: the `pinning`
  policy of `build-small` (`"error"` raises `GosmallError`, `"warn"` returns
  the lines to warn with, `"off"` returns nothing).
- `pin_references(root, paths=(), *, check, output_dir=None, resolver=None)
  -> PinResult` and `format_pin_result(result, root) -> str`: ask each
  reference's registry for the digest of its tag and rewrite the reference
  to `name:tag@sha256:…` in place. Only the reference's own characters
  change: files are edited as text by line and column (never re-dumped), so
  comments, quoting, spacing and order stay byte for byte; a link is kept
  and its target edited. With `check=True` nothing is written. A reference
  that cannot be resolved is listed in `PinResult.unresolved`, never guessed
  or dropped. Up to `RESOLVE_WORKERS` references are resolved at once, and
  the whole run is bounded by `timeout` seconds: a registry that never
  answers costs one bound, not one per reference.
- `apply_changes(root, changes)` and `rewrite_file(path, changes) -> str`:
  the rewrite `pin` and `resolve` share: each change replaces one
  reference's characters at its line and column, every other byte is kept;
  `apply_changes` writes each file atomically (a link kept, its target
  inside `root`), `rewrite_file` only returns the new text.

Positions are 1-based; a column points at the first character of the
reference as written (after `docker://` in a workflow, after a quote in
YAML, at `$` when a Dockerfile builds it from ARGs).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.tokens import ScalarToken

from ..atomic import write_beside
from ..digest import Digest
from ..errors import COULD_NOT_RUN, FOUND, GosmallError
from ..redact import printable
from ..reference import Reference, ReferenceError, parse_normalized_named

Problem = Literal["not-pinned", "unresolvable", "invalid-reference", "resolve-failed", "unreadable", "invalid-yaml"]
FileKind = Literal["dockerfile", "compose", "kubernetes", "workflow", "pyproject"]
Format = Literal["text", "json", "sarif"]
Policy = Literal["error", "warn", "off"]

SKIPPED_DIRS = frozenset({".git", "vendor", "node_modules"})
DOCKERFILE_NAMES = ("Dockerfile", "*.Dockerfile", "Dockerfile.*", "Containerfile")
COMPOSE_NAMES = ("compose*.yml", "compose*.yaml", "docker-compose*.yml", "docker-compose*.yaml")
WORKLOAD_CONTAINER_KEYS = ("containers", "initContainers", "ephemeralContainers")
RESOLVE_WORKERS = 8  # registries at once: enough to hide latency, few enough not to look like a flood
RUN_TIMEOUT = 120.0  # seconds a whole `pin` may spend asking registries


# -- values ---------------------------------------------------------------------


@dataclass(frozen=True)
class Occurrence:
    """One image reference as it stands in a file, pinned or not."""

    path: Path
    line: int  # 1-based
    column: int  # 1-based, first character of `written`
    written: str  # the characters in the file
    reference: str  # what it means once ARGs are substituted ("" if it cannot be known)
    unresolved: str = ""  # e.g. "ARG BASE": why `reference` cannot be known
    editable: bool = True  # `written` stands verbatim on one line at line:column


@dataclass(frozen=True)
class Finding:
    """One thing wrong: an unpinned or bad reference, or a file that could not be scanned."""

    path: Path
    line: int
    column: int
    reference: str
    problem: Problem
    detail: str = ""
    code: int = FOUND  # the exit status it calls for: COULD_NOT_RUN when a registry could not be asked

    @property
    def message(self) -> str:
        if self.problem == "not-pinned":
            return f"{self.reference}: not pinned by digest"
        if self.problem == "unresolvable":
            return f"{self.reference}: unresolvable {self.detail}"
        if self.problem == "invalid-reference":
            return f"{self.reference}: invalid reference: {self.detail}"
        if self.problem == "resolve-failed":
            return f"{self.reference}: cannot resolve digest: {self.detail}"
        if self.problem == "unreadable":
            return f"cannot read file: {self.detail}"
        return f"invalid YAML: {self.detail}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path.as_posix(), self.line, self.column, self.reference)

    def render(self, root: Path) -> str:
        # Paths and references are the user's text: no escape sequence in them reaches the terminal.
        return printable(f"{_shown(self.path, root)}:{self.line}:{self.column}: {self.message}")

    def to_json(self, root: Path) -> dict[str, object]:
        return {
            "path": _shown(self.path, root),
            "line": self.line,
            "column": self.column,
            "reference": self.reference,
            "problem": self.problem,
            "message": self.message,
        }


@dataclass(frozen=True)
class ScanResult:
    root: Path
    files: tuple[Path, ...]  # every file looked at
    occurrences: tuple[Occurrence, ...]  # every reference found, pinned ones too
    findings: tuple[Finding, ...]  # sorted by path, line, column

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class PinChange:
    path: Path
    line: int
    column: int
    old: str  # the characters replaced
    new: str  # what replaces them
    digest: Digest


@dataclass(frozen=True)
class PinResult:
    root: Path
    check: bool
    changes: tuple[PinChange, ...]  # made, or (check) that would be made
    unresolved: tuple[Finding, ...]  # references left as they are, and why

    @property
    def ok(self) -> bool:
        """Nothing left unpinned (and, with --check, nothing to change)."""
        return not self.unresolved and not (self.check and self.changes)

    @property
    def exit_status(self) -> int:
        """0 all pinned; FOUND something left or (--check) to change; COULD_NOT_RUN a registry could not be asked."""
        codes = [f.code for f in self.unresolved] + ([FOUND] if self.check and self.changes else [])
        return max(codes, default=0)


class Resolver(Protocol):
    """Asks a registry which manifest a tag points at now."""

    def resolve(self, reference: Reference) -> Digest: ...


# -- scanning -----------------------------------------------------------------


def scan_project(
    root: Path, paths: Sequence[Path] = (), *, output_dir: Path | None = None, scalar_prefixes: tuple[str, ...] = ()
) -> ScanResult:
    """Every image reference under `root` (or in `paths`) and what is wrong with them.

    With `scalar_prefixes` (resolve's `gosmall://`, `ko://`), every YAML scalar whose whole value starts with one of
    them is a reference too, wherever it sits: a key or a value at any depth, in a list, in flow style, quoted or
    plain (block scalars `|` and `>` are text, not references), in any YAML file, `kind:` or not.
    """
    root = Path(os.path.realpath(root))
    files, missing = _files_to_scan(root, paths, output_dir)
    occurrences: list[Occurrence] = []
    findings: list[Finding] = list(missing)
    for path, kind in files:
        found, problems = _scan_file(path, kind, scalar_prefixes)
        occurrences.extend(found)
        findings.extend(problems)
    findings.extend(f for f in map(_judge, occurrences) if f is not None)
    return ScanResult(
        root,
        tuple(p for p, _ in files),
        tuple(sorted(occurrences, key=lambda o: (o.path.as_posix(), o.line, o.column))),
        tuple(sorted(findings, key=Finding.sort_key)),
    )


# SARIF rules: what each problem means and how to fix it.
PROBLEM_HELP: dict[Problem, tuple[str, str]] = {
    "not-pinned": ("an image reference is not pinned by digest", "A tag can be moved to other bytes at any time. Run `gosmall pin`."),
    "unresolvable": ("an image reference is built from values a scan cannot know", "Write the reference out, pinned by digest."),
    "invalid-reference": ("an image reference is not a valid reference", "Fix it to name[:tag]@sha256:<64 hex>."),
    "resolve-failed": ("the registry did not give a reference's digest", "Check the name, the credentials and the network."),
    "unreadable": ("a file to scan cannot be read as text", "Make it a readable UTF-8 file, or leave it out of the paths."),
    "invalid-yaml": ("a YAML file to scan does not parse", "Fix the YAML at the position shown."),
}


def format_findings(result: ScanResult, fmt: Format, root: Path) -> str:
    root = root.resolve()
    if fmt == "sarif":
        from .sarif import SarifResult, SarifRule, artifact_uri, format_sarif

        rules = [SarifRule(problem, "error", short, help) for problem, (short, help) in PROBLEM_HELP.items()]
        results = [
            SarifResult(f.problem, "error", f.message, artifact_uri(_shown(f.path, root)), f.line, f.column) for f in result.findings
        ]
        return format_sarif(rules, results)
    if fmt == "json":
        return json.dumps([f.to_json(root) for f in result.findings], indent=2)
    return "\n".join(f.render(root) for f in result.findings)


def enforce_pinning(result: ScanResult, policy: Policy) -> tuple[str, ...]:
    """Apply `[tool.gosmall] pinning`: raise for "error", return the warnings for "warn"."""
    if policy == "off" or result.ok:
        return ()
    lines = tuple(f.render(result.root) for f in result.findings)
    if policy == "warn":
        return lines
    raise GosmallError(
        f'{len(lines)} image reference problem(s) found, and pyproject.toml [tool.gosmall] pinning is "error":\n'
        + "\n".join(lines)
        + "\nRun `gosmall pin` to pin each reference to the digest its registry serves now, fix the others by hand, "
        'or set pinning = "warn" in [tool.gosmall] to build anyway.',
        code=FOUND,
    )


def _judge(occurrence: Occurrence) -> Finding | None:
    o = occurrence
    if o.unresolved:
        return Finding(o.path, o.line, o.column, o.written, "unresolvable", o.unresolved)
    try:
        ref = parse_normalized_named(o.reference)
    except ReferenceError as exc:
        return Finding(o.path, o.line, o.column, o.reference, "invalid-reference", exc.reason)
    if ref.is_pinned:
        return None
    return Finding(o.path, o.line, o.column, o.reference, "not-pinned")


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# -- which files --------------------------------------------------------------


def file_kind(relative: PurePosixPath) -> FileKind | None:
    """What kind of file gosmall scans this is, by name (None: not one)."""
    name = relative.name
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in DOCKERFILE_NAMES):
        return "dockerfile"
    if name == "pyproject.toml":
        return "pyproject"
    if not (name.endswith(".yml") or name.endswith(".yaml")):
        return None
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in COMPOSE_NAMES):
        return "compose"
    if relative.parent.as_posix().endswith(".github/workflows"):
        return "workflow"
    # Any other YAML may be a Kubernetes manifest; `_scan_file` looks for `kind:`.
    return "kubernetes"


def _files_to_scan(root: Path, paths: Sequence[Path], output_dir: Path | None) -> tuple[list[tuple[Path, FileKind]], list[Finding]]:
    skip_under = Path(os.path.realpath(output_dir)) if output_dir is not None else None
    refused: dict[Path, Finding] = {}
    chosen: dict[Path, tuple[Path, FileKind]] = {}  # real path -> (the name it is shown and read by, kind)
    project = _project_files(root)

    def consider(path: Path, explicit: bool) -> None:
        if skip_under is not None and (path == skip_under or skip_under in path.parents):
            return
        try:
            relative = PurePosixPath(path.relative_to(root).as_posix())
        except ValueError:
            relative = PurePosixPath(path.as_posix())
        if not explicit and SKIPPED_DIRS.intersection(relative.parts[:-1]):
            return
        kind = file_kind(relative)
        if kind is None and explicit:
            # Named on the command line under another name (`prod.docker`):
            # the user says it is a Dockerfile.
            kind = "dockerfile"
        if kind is None:
            return
        real = Path(os.path.realpath(path))
        if real != path and not _inside(real, root):
            refused[path] = Finding(
                path, 1, 1, "", "unreadable",
                f"it is a symbolic link to {real}, outside the project ({root}); gosmall never follows a link out of "
                "the project. Check or pin that file where it lives, or copy it into the project.",
            )  # fmt: skip
            return
        # One file, one scan: a link and its target are the same references. The
        # file's own name wins over a link's.
        if real not in chosen or path == real:
            chosen[real] = (path, kind)

    if not paths:
        for path in project:
            consider(path, explicit=False)
    for given in paths:
        path = Path(os.path.abspath(given if given.is_absolute() else root / given))
        if path.is_dir():
            for candidate in project if root == path or root in path.parents else _walk(path):
                if candidate == path or path in candidate.parents:
                    consider(candidate, explicit=False)
        elif path.exists() or path.is_symlink():
            consider(path, explicit=True)
        else:
            raise GosmallError(
                f"{given}: no such file or directory. Name files or directories that exist, or none to look at the whole project ({root})."
            )
    files = sorted(((shown, kind) for shown, kind in chosen.values()), key=lambda item: item[0].as_posix())
    return files, list(refused.values())


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def scan_root(start: Path) -> Path:
    """Where to look without a gosmall project: the git work tree holding `start`, else `start` itself."""
    start = Path(os.path.realpath(start))
    try:
        top = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False)
    except OSError:
        return start
    if top.returncode != 0 or not top.stdout.strip():
        return start
    return Path(os.path.realpath(top.stdout.strip()))


def _project_files(root: Path) -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=False,
        )
    except OSError:
        listed = None
    if listed is None or listed.returncode != 0:
        return _walk(root)
    names = sorted({n for n in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if n})
    # A tracked file deleted from the work tree is not there to scan.
    return [root / n for n in names if (root / n).is_file() or (root / n).is_symlink()]


def _walk(top: Path) -> list[Path]:
    out: list[Path] = []
    for directory, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        out.extend(Path(directory) / f for f in sorted(filenames))
    return out


# -- reading one file -----------------------------------------------------------


def _read_text(path: Path) -> tuple[str | None, Finding | None]:
    try:
        data = _read_regular(path)
    except OSError as exc:
        return None, Finding(path, 1, 1, "", "unreadable", exc.strerror or str(exc))
    if data is None:
        return None, Finding(path, 1, 1, "", "unreadable", "it is not a regular file (a FIFO, socket or device); gosmall reads only files")
    # A NUL never appears in a text file; without this check a binary file
    # that happens to decode would be scanned as gibberish instructions.
    if b"\0" in data:
        return None, Finding(path, 1, 1, "", "unreadable", "it is a binary file, not text")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, Finding(path, line, 1, "", "unreadable", f"it is not UTF-8 text ({exc.reason} at byte {exc.start})")


def _read_regular(path: Path) -> bytes | None:
    """The bytes of a regular file, or None for anything else, which is never opened: a FIFO would block, /dev/zero never end."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None
    # O_NONBLOCK: should a FIFO take the file's place after the stat, opening it still returns.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return handle.read()


def _scan_file(path: Path, kind: FileKind, scalar_prefixes: tuple[str, ...] = ()) -> tuple[list[Occurrence], list[Finding]]:
    text, problem = _read_text(path)
    if text is None:
        return [], [problem] if problem else []
    if kind == "dockerfile":
        return _scan_dockerfile(path, text), []
    if kind == "pyproject":
        return _scan_pyproject(path, text)
    found: list[Occurrence] = []
    problems: list[Finding] = []
    if kind != "kubernetes" or re.search(r"(?m)^\s*kind\s*:", text):
        found, problems = _scan_yaml(path, text, kind)
    # A file that never spells a prefix holds no such scalar: it is not parsed again (nor refused if it does not parse).
    if problems or not any(prefix in text for prefix in scalar_prefixes):
        return found, problems
    scalars, problems = _scan_scalars(path, text, scalar_prefixes)
    # One reference per place: where both scans saw it, the whole scalar is what it says.
    by_place = {(o.line, o.column): o for o in found}
    by_place.update({(o.line, o.column): o for o in scalars})
    return list(by_place.values()), problems


def _lines(text: str) -> list[str]:
    # Split on \n only (str.splitlines also splits on \x0c, \u2028, … which
    # neither Docker nor YAML treat as line ends); a \r before it is kept out.
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


# -- Dockerfiles ----------------------------------------------------------------

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class _Word:
    """A whitespace-separated word of an instruction, with the place of each character."""

    text: str
    places: tuple[tuple[int, int], ...]  # (line, column), 1-based, per character

    def at(self, offset: int) -> tuple[int, int]:
        return self.places[offset]

    def on_one_line(self, start: int, end: int) -> bool:
        first, last = self.places[start], self.places[end - 1]
        return first[0] == last[0] and last[1] - first[1] == end - start - 1


def _instructions(text: str) -> Iterable[list[_Word]]:
    """Logical instructions (continuations joined, comments dropped) as words."""
    lines = _lines(text)
    escape = "\\"
    i = 0
    # Parser directives are only read at the very top, before anything else.
    while i < len(lines):
        directive = _DIRECTIVE.match(lines[i])
        if directive is None:
            break
        if directive.group(1).lower() == "escape" and directive.group(2) in ("\\", "`"):
            escape = directive.group(2)
        i += 1
    while i < len(lines):
        if not lines[i].strip() or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        chars: list[tuple[str, int, int]] = []
        while i < len(lines):
            body = lines[i].rstrip()
            continued = body.endswith(escape)
            if continued:
                body = body[:-1]
            chars.extend((c, i + 1, col + 1) for col, c in enumerate(body))
            i += 1
            if not continued:
                break
            chars.append((" ", i, len(body) + 1))
            # Comment and blank lines inside a continuation are dropped by Docker.
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
        logical = "".join(c for c, _, _ in chars)
        words = [_Word(m.group(), tuple((line, col) for _, line, col in chars[m.start() : m.end()])) for m in re.finditer(r"\S+", logical)]
        if words:
            yield words
        heredoc = _HEREDOC.search(logical)
        if heredoc and words[0].text.upper() in ("RUN", "COPY", "ADD"):
            # The heredoc body is file content or a script, not instructions.
            strip_tabs = heredoc.group(1) == "-"
            while i < len(lines):
                end = lines[i].lstrip("\t") if strip_tabs else lines[i]
                i += 1
                if end == heredoc.group(3):
                    break


def _expand(word: str, args: dict[str, str | None]) -> tuple[str, str]:
    """`word` with $NAME / ${NAME} / ${NAME:-default} substituted, and the first ARG that has no value."""
    missing: list[str] = []

    def substitute(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        value = args.get(name)
        operator, word_ = m.group(2), m.group(3) or ""
        if operator in (":-", "-"):
            return value if value else word_
        if operator in (":+", "+"):
            return word_ if value else ""
        if not value:
            missing.append(name)
            return ""
        return value

    expanded = _VARIABLE.sub(substitute, word)
    return expanded, (f"ARG {missing[0]}" if missing else "")


def _unquote(text: str) -> tuple[str, int]:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1], 1
    return text, 0


def _scan_dockerfile(path: Path, text: str) -> list[Occurrence]:
    found: list[Occurrence] = []
    global_args: dict[str, str | None] = {}
    stage_args: dict[str, str | None] = {}
    stage_count = 0
    stages: set[str] = set()  # names and numbers of the stages so far, lowercase
    in_stage = False

    def record(word: _Word, start: int, end: int, args: dict[str, str | None]) -> None:
        written = word.text[start:end]
        value, missing = _expand(written, args)
        line, column = word.at(start)
        if not missing and (value.lower() in stages or value == "scratch"):
            return
        found.append(Occurrence(path, line, column, written, value if not missing else "", missing, word.on_one_line(start, end)))

    for words in _instructions(text):
        instruction = words[0].text.upper()
        if instruction == "ARG":
            target = stage_args if in_stage else global_args
            for word in words[1:]:
                name, eq, value = word.text.partition("=")
                target[name] = _unquote(value)[0] if eq else None
        elif instruction == "FROM":
            rest = [w for w in words[1:] if not w.text.startswith("--")]
            if rest:
                image = rest[0]
                # FROM sees only the ARGs declared before the first FROM.
                record(image, 0, len(image.text), global_args)
                if len(rest) >= 3 and rest[1].text.upper() == "AS":
                    stages.add(rest[2].text.lower())
            # A stage is named by its number too: COPY --from=0.
            stages.add(str(stage_count))
            stage_count += 1
            in_stage = True
            stage_args = {}
        elif instruction == "COPY":
            for word in words[1:]:
                if word.text.lower().startswith("--from="):
                    value, quote = _unquote(word.text[7:])
                    start = 7 + quote
                    record(word, start, start + len(value), {**global_args, **stage_args})
        elif instruction == "RUN":
            for word in words[1:]:
                if not word.text.lower().startswith("--mount="):
                    continue
                offset = 8
                for option in word.text[8:].split(","):
                    key, eq, value = option.partition("=")
                    if eq and key.strip().lower() == "from":
                        start = offset + len(key) + 1
                        record(word, start, start + len(value), {**global_args, **stage_args})
                    offset += len(option) + 1
    return found


# -- YAML files -------------------------------------------------------------------


def _scan_yaml(path: Path, text: str, kind: FileKind) -> tuple[list[Occurrence], list[Finding]]:
    lines = _lines(text)
    found: list[Occurrence] = []
    problems: list[Finding] = []
    yaml = YAML(typ="rt")
    try:
        # Documents before a broken one are still checked.
        for document in yaml.load_all(text):
            finder = {"compose": _compose_images, "workflow": _workflow_images, "kubernetes": _kubernetes_images}[kind]
            for mapping, key, prefix in finder(document):
                found.append(_yaml_occurrence(path, lines, mapping, key, prefix))
    except MarkedYAMLError as exc:
        problems.append(_yaml_problem(path, exc))
    except YAMLError as exc:
        problems.append(Finding(path, 1, 1, "", "invalid-yaml", str(exc)))
    return found, problems


def _yaml_occurrence(path: Path, lines: list[str], mapping: Any, key: str, prefix: str) -> Occurrence:
    line0, col0 = mapping.lc.value(key)
    value = str(mapping[key])
    row = lines[line0] if line0 < len(lines) else ""
    if row[col0 : col0 + 1] in ("'", '"'):
        col0 += 1  # the reference starts after the quote
    col0 += len(prefix)
    reference = value[len(prefix) :]
    editable = row[col0 : col0 + len(reference)] == reference
    unresolved = ""
    if "${{" in reference:
        unresolved = "expression ${{ … }} (only GitHub Actions knows its value)"
    elif "$" in reference:
        variable = _VARIABLE.search(reference)
        unresolved = f"variable {variable.group(1) or variable.group(4)}" if variable else "variable"
    return Occurrence(path, line0 + 1, col0 + 1, reference, "" if unresolved else reference, unresolved, editable)


def _scan_scalars(path: Path, text: str, prefixes: tuple[str, ...]) -> tuple[list[Occurrence], list[Finding]]:
    """Every plain or quoted scalar of every document whose whole value starts with one of `prefixes`.

    Read from the scanner's tokens, not the loaded documents: a token has the scalar's own start and end (an
    event's start is its anchor or tag), and keys, flow collections and aliased values are all tokens alike.
    """
    lines = _lines(text)
    found: list[Occurrence] = []
    try:
        for token in YAML(typ="rt").scan(text):
            if not isinstance(token, ScalarToken) or token.style in ("|", ">") or not token.value.startswith(prefixes):
                continue
            start, end = token.start_mark, token.end_mark
            quote = 0 if token.plain else 1
            row = lines[start.line] if start.line < len(lines) else ""
            column = start.column + quote
            # As written, on one line: no escape, no folded line, so its characters can be replaced in place.
            editable = start.line == end.line and end.column - start.column == len(token.value) + 2 * quote
            editable = editable and row[column : column + len(token.value)] == token.value
            found.append(Occurrence(path, start.line + 1, column + 1, token.value, token.value, "", editable))
        # The tokens alone do not say that the documents are well formed; the parser does.
        for _ in YAML(typ="rt").parse(text):
            pass
    except MarkedYAMLError as exc:
        return [], [_yaml_problem(path, exc)]
    except YAMLError as exc:
        return [], [Finding(path, 1, 1, "", "invalid-yaml", str(exc))]
    return found, []


def _yaml_problem(path: Path, exc: MarkedYAMLError) -> Finding:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    why = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    return Finding(path, line, column, "", "invalid-yaml", why or str(exc))


YamlHit = tuple[Any, str, str]  # (mapping, key, prefix before the reference)


def _compose_images(document: Any) -> Iterable[YamlHit]:
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict):
        return
    for service in services.values():
        if isinstance(service, dict) and isinstance(service.get("image"), str):
            yield service, "image", ""


def _workflow_images(document: Any) -> Iterable[YamlHit]:
    jobs = document.get("jobs") if isinstance(document, dict) else None
    if not isinstance(jobs, dict):
        return
    for job in jobs.values():
        if not isinstance(job, dict):
            continue
        container = job.get("container")
        if isinstance(container, str):
            yield job, "container", ""
        elif isinstance(container, dict) and isinstance(container.get("image"), str):
            yield container, "image", ""
        services = job.get("services")
        if isinstance(services, dict):
            for service in services.values():
                if isinstance(service, dict) and isinstance(service.get("image"), str):
                    yield service, "image", ""
        steps = job.get("steps")
        for step in steps if isinstance(steps, list) else ():
            if isinstance(step, dict) and isinstance(step.get("uses"), str) and step["uses"].startswith("docker://"):
                yield step, "uses", "docker://"


def _kubernetes_images(document: Any) -> Iterable[YamlHit]:
    if not isinstance(document, dict) or "kind" not in document:
        return
    # Pod specs sit at different depths per workload kind (Pod: spec,
    # Deployment: spec.template.spec, CronJob: spec.jobTemplate.spec.template.spec,
    # List: items[*]…), so every container list anywhere in the document counts.
    yield from _container_lists(document)


def _container_lists(node: Any) -> Iterable[YamlHit]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in WORKLOAD_CONTAINER_KEYS and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        yield container, "image", ""
            else:
                yield from _container_lists(value)
    elif isinstance(node, list):
        for item in node:
            yield from _container_lists(item)


# -- pyproject.toml ---------------------------------------------------------------


def _scan_pyproject(path: Path, text: str) -> tuple[list[Occurrence], list[Finding]]:
    try:
        table = tomllib.loads(text).get("tool", {}).get("gosmall")
    except tomllib.TOMLDecodeError as exc:
        return [], [Finding(path, 1, 1, "", "unreadable", f"it is not valid TOML ({exc})")]
    if not isinstance(table, dict):
        return [], []
    found: list[Occurrence] = []
    lines = _lines(text)
    for key, value in _image_strings(table):
        # tomllib keeps no positions: find the quoted value on a line that
        # assigns the key.
        for number, row in enumerate(lines, start=1):
            match = re.search(rf"""(?:^|[\s,{{]){re.escape(key)}\s*=\s*(["'])({re.escape(value)})\1""", row)
            if match:
                found.append(Occurrence(path, number, match.start(2) + 1, value, value))
                break
    return found, []


def _image_strings(table: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _image_strings(value)
        elif isinstance(value, str) and ("image" in key.lower() or "base" in key.lower()):
            try:
                parse_normalized_named(value)
            except ReferenceError:
                continue  # not an image reference, just a string under such a key
            yield key, value


# -- pinning ------------------------------------------------------------------


def pin_references(
    root: Path,
    paths: Sequence[Path] = (),
    *,
    check: bool,
    output_dir: Path | None = None,
    resolver: Resolver | None = None,
    timeout: float = RUN_TIMEOUT,
) -> PinResult:
    """Pin every unpinned reference to the digest its registry serves now, asking registries for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    if resolver is None:
        from ..registry.client import RegistryResolver

        resolver = RegistryResolver.from_environment(deadline=deadline)
    scan = scan_project(root, paths, output_dir=output_dir)
    unresolved = [f for f in scan.findings if f.problem != "not-pinned"]
    wanted: list[tuple[Occurrence, Reference]] = []
    for occurrence in scan.occurrences:
        if occurrence.unresolved:
            continue  # already a finding
        try:
            ref = parse_normalized_named(occurrence.reference)
        except ReferenceError:
            continue  # already a finding
        if not ref.is_pinned:
            wanted.append((occurrence, ref))
    digests = _resolve_all(resolver, {ref for _, ref in wanted}, deadline, timeout)
    changes: list[PinChange] = []
    for occurrence, ref in wanted:
        outcome = digests[ref]
        where = (occurrence.path, occurrence.line, occurrence.column, occurrence.reference)
        if isinstance(outcome, GosmallError):
            unresolved.append(Finding(*where, "resolve-failed", outcome.message, outcome.code))
            continue
        new = occurrence.written + (":latest" if ref.tag is None else "") + f"@{outcome}"
        if not occurrence.editable:
            unresolved.append(
                Finding(
                    *where,
                    "resolve-failed",
                    f"it is not written on one line as is, so it cannot be rewritten in place; write {new} there by hand",
                )
            )
            continue
        changes.append(PinChange(occurrence.path, occurrence.line, occurrence.column, occurrence.written, new, outcome))
    if not check:
        apply_changes(scan.root, changes)
    return PinResult(scan.root, check, tuple(changes), tuple(sorted(unresolved, key=Finding.sort_key)))


def format_pin_result(result: PinResult, root: Path) -> str:
    root = root.resolve()
    verb = "would pin" if result.check else "pinned"
    lines = [printable(f"{_shown(c.path, root)}:{c.line}:{c.column}: {verb} {c.old} -> {c.new}") for c in result.changes]
    lines += [f.render(root) for f in result.unresolved]
    return "\n".join(lines)


def _resolve_all(resolver: Resolver, refs: set[Reference], deadline: float, timeout: float) -> dict[Reference, Digest | GosmallError]:
    """Each reference's digest, or the error that says why not; several at once, none past `deadline`."""
    if not refs:
        return {}
    # Not a `with` block: leaving it would wait for a resolver stuck past the deadline.
    pool = ThreadPoolExecutor(max_workers=min(RESOLVE_WORKERS, len(refs)), thread_name_prefix="gosmall-resolve")
    futures: dict[Reference, Future[Digest]] = {ref: pool.submit(resolver.resolve, ref) for ref in sorted(refs, key=str)}
    # A moment past the deadline, so that a registry resolver's own deadline error arrives first.
    wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()) + 1.0)
    pool.shutdown(wait=False, cancel_futures=True)
    out: dict[Reference, Digest | GosmallError] = {}
    for ref, future in futures.items():
        if not future.done() or future.cancelled():
            out[ref] = GosmallError(
                f"not resolved: asking registries may take {timeout:g} s in all, and that time ran out. "
                "Check that the registry is up, or allow more time (gosmall pin --timeout SECONDS).",
                code=COULD_NOT_RUN,
            )
        elif isinstance(future.exception(), GosmallError):
            out[ref] = future.exception()  # type: ignore[assignment]
        else:
            out[ref] = future.result()  # our bug, if it raises: shown with its traceback
    return out


def apply_changes(root: Path, changes: Sequence[PinChange], *, command: str = "pin") -> None:
    """Make `changes` in their files, each written whole beside itself and renamed; a link is kept and its target edited."""
    by_file: dict[Path, list[PinChange]] = {}
    for change in changes:
        by_file.setdefault(change.path, []).append(change)
    for path, edits in by_file.items():
        # The scan saw that a link stays in the project; it is checked again, as it may have changed since.
        target = Path(os.path.realpath(path))
        if target != path and not _inside(target, root):
            raise GosmallError(
                f"{path}: it now links to {target}, outside the project ({root}); gosmall does not edit it. Run {command} again."
            )
        write_beside(target, rewrite_file(target, edits, command=command).encode("utf-8"))


def rewrite_file(path: Path, changes: Sequence[PinChange], *, command: str = "pin") -> str:
    """The text of `path` with `changes` made: only each reference's own characters differ, every other byte is kept."""
    text = path.read_bytes().decode("utf-8")
    starts = [0]
    for row in text.split("\n"):
        starts.append(starts[-1] + len(row) + 1)
    # From the end backwards, so earlier offsets stay valid.
    for edit in sorted(changes, key=lambda e: (e.line, e.column), reverse=True):
        offset = starts[edit.line - 1] + edit.column - 1
        if text[offset : offset + len(edit.old)] != edit.old:
            raise GosmallError(
                f"{path}:{edit.line}:{edit.column}: expected '{edit.old}' there, but the file changed while "
                f"gosmall {command} ran; run it again."
            )
        text = text[:offset] + edit.new + text[offset + len(edit.old) :]
    return text
