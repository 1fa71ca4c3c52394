"""gosmall.lock: the digests one commit builds to, and the check that it still does.

`lock` builds every image from a clean clone of a commit (uncommitted changes never leak in)
and writes the digests, with what made them (Go, the compressor, gosmall, SOURCE_DATE_EPOCH,
each image's settings), to gosmall.lock at the project root: sorted keys, 2-space indent, a
trailing newline, so a rebuild of the same commit rewrites it byte for byte. `verify-lock`
builds the same way and compares; a difference names the image, the platform, the digests
and the likely cause.

Which commit: HEAD, except when HEAD differs from the lock's revision only in gosmall.lock
itself. Committing the lock makes a new commit, and the image carries its revision, so no
lock can hold the digests of the commit that contains it; the commit before has the same
sources, and that is the one the lock describes and verify-lock rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..build.built import Build, BuildSmall
from ..config import ProjectConfig, load_project
from ..errors import FOUND, GosmallError
from ..leftovers import owned_temporary_directory
from ..reporter import Reporter

LOCK_NAME = "gosmall.lock"
LOCK_FORMAT = 1
DIGEST_FIELDS = ("manifest_digest", "config_digest", "layer_digest", "diff_id")
# The project-wide keys that change what an image is; output and pinning do not.
_IMAGE_AFFECTING_TOP_KEYS = ("platforms", "go_version", "format")


@dataclass(frozen=True)
class ImageLock:
    digest: str
    config: str  # sha256 of the image's [tool.gosmall] settings, to tell "config changed" from "source changed"
    platforms: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # platform -> (field, digest) in DIGEST_FIELDS order
    media_type: str = ""  # the top document's: which format (OCI or Docker schema 2) the digest is of

    def platform(self, name: str) -> dict[str, str] | None:
        return next((dict(fields) for p, fields in self.platforms if p == name), None)


@dataclass(frozen=True)
class Lock:
    revision: str
    source_date_epoch: int
    go: str  # "go1.27.3"
    compressor: tuple[tuple[str, str | int], ...]  # name, version, level
    gosmall: str
    images: tuple[tuple[str, ImageLock], ...]

    def image(self, name: str) -> ImageLock | None:
        return next((i for n, i in self.images if n == name), None)

    def to_json(self) -> bytes:
        document = {
            "format": LOCK_FORMAT,
            "revision": self.revision,
            "source_date_epoch": self.source_date_epoch,
            "go": self.go,
            "compressor": dict(self.compressor),
            "gosmall": self.gosmall,
            "images": {
                name: {
                    "digest": i.digest,
                    "config": i.config,
                    "media_type": i.media_type,
                    "platforms": {p: dict(f) for p, f in i.platforms},
                }
                for name, i in self.images
            },
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Difference:
    image: str
    platform: str  # "" for the image as a whole
    what: str  # "layer_digest, diff_id differ", "is not in gosmall.lock", ...
    digests: tuple[tuple[str, str, str], ...] = ()  # (field, in the lock, now)


# -- making and reading -------------------------------------------------------------


def lock_from_builds(builds: Sequence[Build], pyproject: Path) -> Lock:
    """A Lock from what build_small returned: every value comes from each build's report."""
    if not builds:
        raise GosmallError(f"{pyproject}: no image was built, so there is nothing to lock.")
    reports: list[Mapping[str, Any]] = [b.report for b in builds]
    first = reports[0]
    settings = image_settings(pyproject)
    images = []
    for build, report in zip(builds, reports):
        name = build.config.name
        platforms = tuple(
            (platform, tuple((f, str(entry[f])) for f in DIGEST_FIELDS)) for platform, entry in sorted(report["platforms"].items())
        )
        images.append((name, ImageLock(str(report["digest"]), settings.get(name, ""), platforms, str(report.get("media_type", "")))))
    return Lock(
        revision=str(first["source"]["revision"]),
        source_date_epoch=int(first["source"]["source_date_epoch"]),
        go=", ".join(sorted({str(r["builder"].get("go", "")) for r in reports})),
        compressor=tuple(sorted(dict(first["builder"]["compressor"]).items())),
        gosmall=str(first["builder"]["gosmall"]),
        images=tuple(sorted(images)),
    )


def image_settings(pyproject: Path) -> dict[str, str]:
    """Per image, a digest of the settings that make it: its own table and the project-wide keys that reach it."""
    table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("gosmall", {})
    shared = {k: table[k] for k in _IMAGE_AFFECTING_TOP_KEYS if k in table}
    return {
        # Sorted and compact like every gosmall document; default=str for TOML dates, which JSON lacks.
        name: "sha256:" + hashlib.sha256(json.dumps({"project": shared, "image": body}, sort_keys=True, default=str).encode()).hexdigest()
        for name, body in table.get("images", {}).items()
    }


def read_lock(path: Path) -> Lock | None:
    """The lock at `path`, None when there is none; a damaged one is an error naming the file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GosmallError(f"{path} cannot be read as JSON ({exc}); restore it from git or write a new one with `gosmall lock`.") from None
    try:
        if document.get("format") != LOCK_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, this gosmall writes {LOCK_FORMAT}")
        images = []
        for name, body in sorted(document["images"].items()):
            platforms = tuple(
                (platform, tuple((f, str(fields[f])) for f in DIGEST_FIELDS)) for platform, fields in sorted(body["platforms"].items())
            )
            images.append((name, ImageLock(str(body["digest"]), str(body.get("config", "")), platforms, str(body.get("media_type", "")))))
        return Lock(
            revision=str(document["revision"]),
            source_date_epoch=int(document["source_date_epoch"]),
            go=str(document["go"]),
            compressor=tuple(sorted(dict(document["compressor"]).items())),
            gosmall=str(document["gosmall"]),
            images=tuple(images),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise GosmallError(
            f"{path} is not a gosmall.lock this gosmall can read ({type(exc).__name__}: {exc}); write a new one with `gosmall lock`."
        ) from None


def write_lock(path: Path, lock: Lock) -> None:
    """Beside the target, then renamed: an interrupted write leaves the old lock as it was."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise GosmallError(f"{path} exists and is not a regular file; gosmall writes gosmall.lock only as one. Move it away and run again.")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(lock.to_json())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- comparing ----------------------------------------------------------------------


def compare(locked: Lock, built: Lock, names: Sequence[str] = ()) -> tuple[Difference, ...]:
    """Every digest of every image (or of the named ones) that is not as the lock says."""
    differences: list[Difference] = []
    wanted = list(names) or sorted({n for n, _ in locked.images} | {n for n, _ in built.images})
    for name in wanted:
        old, new = locked.image(name), built.image(name)
        if old is None:
            differences.append(Difference(name, "", "is not in gosmall.lock"))
            continue
        if new is None:
            differences.append(Difference(name, "", "is in gosmall.lock but is no longer configured"))
            continue
        for platform in sorted({p for p, _ in old.platforms} | {p for p, _ in new.platforms}):
            before, after = old.platform(platform), new.platform(platform)
            if before is None or after is None:
                differences.append(Difference(name, platform, "is not in gosmall.lock" if before is None else "is no longer built"))
                continue
            changed = tuple((f, before[f], after[f]) for f in DIGEST_FIELDS if before[f] != after[f])
            if changed:
                differences.append(Difference(name, platform, f"{', '.join(f for f, _, _ in changed)} differ", changed))
        if old.digest != new.digest:
            differences.append(Difference(name, "", "digest differs", (("digest", old.digest, new.digest),)))
    return tuple(differences)


def likely_causes(
    locked: Lock, built: Lock, changed_files: Sequence[str], names: Sequence[str], differences: Sequence[Difference] = ()
) -> tuple[str, ...]:
    """What differs among the inputs the lock records, most likely first."""
    causes: list[str] = []
    changed_files = [f for f in changed_files if Path(f).name != LOCK_NAME]
    if locked.revision != built.revision:
        files = ""
        if changed_files:
            files = f": {', '.join(changed_files[:10])}{' …' if len(changed_files) > 10 else ''}"
        causes.append(f"source changed since the lock's revision {locked.revision[:12]} (now {built.revision[:12]}){files}")
    for name in names:
        old, new = locked.image(name), built.image(name)
        if old and new and old.config and old.config != new.config:
            causes.append(f"config changed: the settings of image '{name}' in [tool.gosmall] are not those the lock was made with")
    if locked.go != built.go:
        causes.append(f"Go version: the lock was made with {locked.go}, this build used {built.go} (go_version in [tool.gosmall] holds it)")
    if locked.compressor != built.compressor:
        causes.append(
            f"compressor version: the lock has {_compressor(locked)}, this build used {_compressor(built)} (install gosmall's pin)"
        )
    if locked.gosmall != built.gosmall:
        causes.append(f"gosmall version: the lock was made by gosmall {locked.gosmall}, this is {built.gosmall}")
    if locked.source_date_epoch != built.source_date_epoch:
        causes.append(
            f"SOURCE_DATE_EPOCH: the lock has {locked.source_date_epoch}, this build {built.source_date_epoch} "
            "(unset it to use the commit time, or set it as the lock was made)"
        )
    recompressed = [d for d in differences if d.platform and "layer_digest" in d.what and "diff_id" not in d.what]
    if recompressed and locked.compressor == built.compressor:
        causes.append(
            f"the same layer contents (diff_id) compressed to other bytes ({', '.join(d.platform for d in recompressed)}) with the "
            f"same compressor, {_compressor(built)}: its output depends on this machine, which gosmall's pin is meant to rule out"
        )
    if not causes:
        causes.append(
            "none of the recorded inputs changed (revision, Go, compressor, gosmall, SOURCE_DATE_EPOCH, config), so this machine "
            "builds other bytes from the same inputs: please report it to gosmall with both report.json files"
        )
    return tuple(causes)


def describe_differences(differences: Sequence[Difference], causes: Sequence[str]) -> str:
    lines = []
    for d in differences:
        lines.append(f"- image '{d.image}'{f', {d.platform}' if d.platform else ''}: {d.what}")
        lines += [f"    {field}: {old} in the lock, {new} now" for field, old, new in d.digests]
    lines += [f"likely cause: {cause}" for cause in causes]
    return "\n".join(lines)


def _compressor(lock: Lock) -> str:
    fields = dict(lock.compressor)
    return f"{fields.get('name')} {fields.get('version')} level {fields.get('level')}"


# -- building a commit, cleanly -----------------------------------------------------


@dataclass(frozen=True)
class Repository:
    top: Path  # the work tree's top level
    project: Path  # the project root, relative to `top`
    head: str


def open_repository(project: ProjectConfig) -> Repository:
    top = _git(project.root, "rev-parse", "--show-toplevel", what="find the git repository")
    head = _git(project.root, "rev-parse", "--verify", "HEAD", what="read HEAD")
    return Repository(Path(top), project.root.relative_to(Path(top).resolve()), head)


def commit_to_build(repo: Repository, locked: Lock | None) -> str:
    """HEAD, or the lock's revision when HEAD differs from it only in gosmall.lock (the lock's own commit)."""
    if locked is None or locked.revision == repo.head:
        return repo.head
    changed = changed_since(repo, locked.revision)
    if changed is not None and set(changed) <= {(repo.project / LOCK_NAME).as_posix()}:
        return locked.revision
    return repo.head


def changed_since(repo: Repository, revision: str) -> list[str] | None:
    """Paths that differ between `revision` and HEAD; None when this clone does not have `revision`."""
    if _run_git(repo.top, "cat-file", "-e", f"{revision}^{{commit}}").returncode != 0:
        return None
    return _git(repo.top, "diff", "--name-only", "--no-renames", revision, repo.head, what="compare with the lock's revision").splitlines()


def uncommitted(repo: Repository) -> list[str]:
    """Tracked files with changes not in HEAD (gosmall.lock aside): what a clean build leaves out."""
    lock = (repo.project / LOCK_NAME).as_posix()
    # Not stripped: each line is "XY path", and X may be a space.
    status = _git(repo.top, "status", "--porcelain", "--untracked-files=no", what="read the work tree's status", strip=False)
    return [line[3:] for line in status.splitlines() if line[3:] != lock]


def build_commit(
    repo: Repository,
    commit: str,
    reporter: Reporter,
    build_small: BuildSmall,
    *,
    names: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Lock:
    """Build `commit` in a temporary clone, never the work tree, and return what its lock would be."""
    with owned_temporary_directory("gosmall-lock-") as temporary:
        clone = temporary / "src"
        # --shared borrows the objects instead of copying them; the clone sees every object the
        # repository has, so `git describe` abbreviates the commit as it would there.
        _git(temporary, "clone", "--quiet", "--shared", "--no-checkout", str(repo.top), str(clone), what="clone the repository")
        _git(clone, "checkout", "--quiet", "--detach", commit, what=f"check out {commit[:12]}")
        # The same abbreviation length as in the repository, and the same origin: both reach the image.
        _git(clone, "config", "core.abbrev", str(len(_git(repo.top, "rev-parse", "--short", commit, what="abbreviate"))), what="configure")
        origin = _run_git(repo.top, "config", "--get", "remote.origin.url").stdout.strip()
        if origin:
            _git(clone, "remote", "set-url", "origin", origin, what="set the clone's origin")
        else:
            _git(clone, "remote", "remove", "origin", what="drop the clone's origin")
        if not (clone / repo.project / "pyproject.toml").is_file():
            raise GosmallError(
                f"{repo.top / repo.project / 'pyproject.toml'} is not in commit {commit[:12]}; commit it, since lock and verify-lock "
                "build only what is committed."
            )
        project = load_project(clone / repo.project)
        reporter.step(f"Building {commit[:12]} in a clean clone ({clone})")
        builds = build_small(project, reporter, names=names, environ=environ)
        return lock_from_builds(builds, project.pyproject)


def lock_project(
    project: ProjectConfig, reporter: Reporter, build_small: BuildSmall, *, environ: Mapping[str, str] | None = None
) -> tuple[Path, Lock]:
    """`gosmall lock`: build every image from the commit and write gosmall.lock beside pyproject.toml."""
    repo = open_repository(project)
    path = project.root / LOCK_NAME
    commit = commit_to_build(repo, read_lock(path))
    _say_which(repo, commit, reporter)
    left_out = uncommitted(repo)
    if left_out:
        reporter.warn(
            f"uncommitted changes are not in the lock, which records commit {commit[:12]} as committed: {', '.join(left_out[:10])}"
        )
    lock = build_commit(repo, commit, reporter, build_small, environ=environ)
    write_lock(path, lock)
    return path, lock


def verify_project_lock(
    project: ProjectConfig,
    reporter: Reporter,
    build_small: BuildSmall,
    *,
    names: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Lock:
    """`gosmall verify-lock`: rebuild from a clean clone and raise a FOUND error naming every difference."""
    path = project.root / LOCK_NAME
    locked = read_lock(path)
    if locked is None:
        raise GosmallError(f"There is no {path}; write one with `gosmall lock` and commit it.")
    for name in names:
        project.image(name)  # an unknown name is a mistake to name, not a difference
    repo = open_repository(project)
    commit = commit_to_build(repo, locked)
    _say_which(repo, commit, reporter)
    changed = changed_since(repo, locked.revision) if commit != locked.revision else []
    if changed is None:
        raise GosmallError(
            f"{path} was made from commit {locked.revision[:12]}, which this clone does not have (a shallow clone?), so it cannot "
            "tell whether only gosmall.lock changed since. Fetch more history (`git fetch --deepen=1`; in GitHub Actions "
            "actions/checkout with fetch-depth: 2 or 0) and run again."
        )
    built = build_commit(repo, commit, reporter, build_small, names=names, environ=environ)
    wanted = names or tuple(sorted({n for n, _ in locked.images} | {n for n, _ in built.images}))
    differences = compare(locked, built, wanted)
    if differences:
        raise GosmallError(
            f"{path} does not match a clean rebuild of {commit[:12]}:\n"
            + describe_differences(differences, likely_causes(locked, built, changed, wanted, differences))
            + "\nIf the change is intended, run `gosmall lock` and commit gosmall.lock.",
            code=FOUND,
        )
    return built


def warn_if_unlike_lock(project: ProjectConfig, builds: Sequence[Build], reporter: Reporter) -> None:
    """After build-small: a build of the lock's own revision, from a clean tree, that differs from it is worth a warning."""
    try:
        locked = read_lock(project.root / LOCK_NAME)
    except GosmallError as error:
        reporter.warn(error.message)
        return
    if locked is None or not builds:
        return
    source = builds[0].report["source"]
    if source["revision"] != locked.revision or str(source["version"]).endswith("-dirty"):
        return  # another commit, or uncommitted changes: other digests are expected
    built = lock_from_builds(builds, project.pyproject)
    names = tuple(b.config.name for b in builds)
    differences = compare(locked, built, names)
    if differences:
        reporter.warn(
            f"this build of {locked.revision[:12]} differs from {project.root / LOCK_NAME}:\n"
            + describe_differences(differences, likely_causes(locked, built, [], names, differences))
            + "\n`gosmall verify-lock` rebuilds it from a clean clone."
        )


def _say_which(repo: Repository, commit: str, reporter: Reporter) -> None:
    if commit != repo.head:
        reporter.detail(f"HEAD {repo.head[:12]} differs from the lock's revision {commit[:12]} only in {LOCK_NAME}: that revision is built")


def _run_git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(["git", *args], 127, "", str(exc))


def _git(cwd: Path, *args: str, what: str, strip: bool = True) -> str:
    done = _run_git(cwd, *args)
    if done.returncode != 0:
        raise GosmallError(
            f"git could not {what} in {cwd} (`git {' '.join(args)}`: {done.stderr.strip() or f'exit {done.returncode}'}). "
            "gosmall lock and verify-lock build a commit, so the project must be in a git repository with at least one commit."
        )
    return done.stdout.strip() if strip else done.stdout
