"""Resolve: build and push the images a deployment names, and put their digests where it names them.

`gosmall resolve -f k8s/` is ko's `ko resolve`: YAML files (any: Kubernetes,
Compose, Tekton, Argo, Helm values, a CRD) and Dockerfiles name images as `gosmall://NAME` (a key of
[tool.gosmall.images], or a main package path such as `gosmall://./cmd/app`,
relative to the project root, the Go module's with no config) or `ko://IMPORTPATH` (a main package's import
path, so manifests written for ko resolve unchanged). Each named image is built
and pushed once, and each reference becomes `repository@sha256:…`.

This is `pin` with another resolver (DESIGN: one engine): references are found
by pinning's scan, and replaced by pinning's rewrite, so comments, quoting, key
order and `---` separators stay byte for byte and a link is kept and its target
edited. The scan is pin's, widened as ko's is: in YAML, every plain or quoted
scalar whose whole value starts with `gosmall://` or `ko://` is a reference,
wherever it sits (a ConfigMap value, a Tekton step, a key); in a Dockerfile,
pin's places. Every reference is checked before anything is built: one that
names no image is an error with its position, and nothing is built or pushed,
so nothing unresolved is ever printed as a success.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..build.built import BuildSmall
from ..build.compile import host_platform
from ..build.toolchain import Runner, find_module, find_toolchain
from ..config import ImageConfig, NoProjectError, ProjectConfig, load_project, project_without_table
from ..errors import GosmallError
from ..redact import printable
from ..reporter import Reporter
from .pinning import Occurrence, PinChange, apply_changes, rewrite_file, scan_project

if TYPE_CHECKING:  # imported where used: finding references needs no registry client
    from ..publish.push import Pushed
    from ..registry.client import RegistryClient

SCHEMES = ("gosmall://", "ko://")
SCAN_PROBLEMS = ("unreadable", "invalid-yaml")  # findings that stop a resolve; the others are about tags, not ours


@dataclass(frozen=True)
class ResolvedFile:
    path: Path  # as named (a link stays a link)
    text: str  # its text with every reference replaced


@dataclass(frozen=True)
class ResolveResult:
    root: Path
    files: tuple[ResolvedFile, ...]  # every file looked at, in order
    changes: tuple[PinChange, ...]  # one per reference

    @property
    def documents(self) -> str:
        """The files as one stream, as `kubectl apply -f -` takes it: YAML files joined by `---`."""
        out = ""
        previous_yaml = False
        for file in self.files:
            is_yaml = file.path.suffix in (".yml", ".yaml")
            if out and not out.endswith("\n"):
                out += "\n"
            if out and previous_yaml and is_yaml:
                out += "---\n"
            out += file.text
            previous_yaml = is_yaml
        return out


def resolve_references(
    start: Path,
    paths: Sequence[Path],
    *,
    client: RegistryClient,
    reporter: Reporter,
    build_small: BuildSmall,
    write: bool,
    environ: Mapping[str, str] | None = None,
    runner: Runner = subprocess.run,
) -> ResolveResult:
    """Build and push every image the files under `paths` reference, and replace each reference with its digest.

    With `write`, the files are edited in place; either way the result holds each file's new text.
    """
    project = _project(start, environ)
    scan = scan_project(project.root, paths, output_dir=project.output, scalar_prefixes=SCHEMES)
    problems = [f for f in scan.findings if f.problem in SCAN_PROBLEMS]
    if problems:
        raise GosmallError("\n".join(f.render(Path.cwd()) for f in problems))
    references = [o for o in scan.occurrences if o.reference.startswith(SCHEMES)]
    wanted = _images_referenced(references, project, environ=environ, runner=runner)
    images = tuple({image.name: image for image in wanted.values()}.values())
    pushed: dict[str, Pushed] = {}
    if images:
        from ..publish.push import RegistryPublisher

        selected = replace(project, images=images)
        publisher = RegistryPublisher(selected, client)
        build_small(selected, reporter, environ=environ, publishers=(publisher,))
        pushed = {p.image: p for p in publisher.pushed}
    else:
        reporter.warn(f"no gosmall:// or ko:// reference in {len(scan.files)} file(s); nothing to build")
    changes = []
    for o in references:
        # Digest only, no tag: the form ko prints, and the one a tag moved later cannot change.
        image = pushed[wanted[o].name]
        changes.append(PinChange(o.path, o.line, o.column, o.written, image.reference, image.digest))
    files = [path for path in scan.files if path.name != "pyproject.toml"]
    by_file = {path: [c for c in changes if c.path == path] for path in files}
    result = ResolveResult(scan.root, tuple(ResolvedFile(p, rewrite_file(p, by_file[p], command="resolve")) for p in files), tuple(changes))
    if write:
        apply_changes(scan.root, changes, command="resolve")
    return result


def _project(start: Path, environ: Mapping[str, str] | None) -> ProjectConfig:
    """The nearest [tool.gosmall] project, else the Go module's defaults (its images come from the references)."""
    try:
        return load_project(start, images_required=False, environ=environ)
    except NoProjectError:
        return project_without_table(find_module(start).root, (host_platform(),))


def _images_referenced(
    references: Sequence[Occurrence], project: ProjectConfig, *, environ: Mapping[str, str] | None, runner: Runner
) -> dict[Occurrence, ImageConfig]:
    """The image each reference names; every reference that names none is one line of one error, before any build."""
    by_name = {image.name: image for image in project.images}
    configured: dict[Path, list[ImageConfig]] = {}
    for image in project.images:
        configured.setdefault(image.package, []).append(image)
    wanted: dict[Occurrence, ImageConfig] = {}
    packages: dict[Occurrence, Path] = {}  # references to a package no image names: built with the defaults
    errors: list[str] = []
    import_paths: dict[str, Path] | None = None
    for occurrence in references:
        scheme, _, name = occurrence.reference.partition("://")
        where = _where(occurrence)
        directory: Path | None = None
        if not occurrence.editable:
            errors.append(f"{where}: it is not written on one line as is, so it cannot be replaced in place; write it out plainly")
            continue
        if scheme == "ko":
            if import_paths is None:
                import_paths = _import_paths(project, runner)
            directory = import_paths.get(name)
            if directory is None:
                known = ", ".join(sorted(import_paths)) or "none"
                errors.append(f"{where}: no such image; images: {known} (ko:// names a main package by its import path)")
                continue
        elif name == "." or name.startswith(("./", "../")):
            # Relative to the project, as [tool.gosmall.images] package is (with no table, the module root).
            directory = Path(os.path.normpath(project.root / name)).resolve()
            if directory not in configured and not _holds_go_files(directory):
                configured_names = ", ".join(sorted(by_name)) or "none configured"
                errors.append(
                    f"{where}: no such image; images: {configured_names}, and {name} holds no Go package "
                    "(name the directory of a main package, e.g. gosmall://./cmd/app)"
                )
                continue
        elif name in by_name:
            wanted[occurrence] = by_name[name]
            continue
        else:
            errors.append(f"{where}: no such image; images: {_names(by_name)}")
            continue
        images = configured.get(directory, [])
        if len(images) > 1:
            errors.append(f"{where}: that package is images {', '.join(i.name for i in images)}; name one, e.g. gosmall://{images[0].name}")
        elif images:
            wanted[occurrence] = images[0]
        else:
            packages[occurrence] = directory
    if errors:
        raise GosmallError("\n".join(errors))
    if packages:
        from ..build.packages import project_for_packages

        arguments = sorted({"./" + d.relative_to(project.root).as_posix() if d != project.root else "." for d in packages.values()})
        defaults = project_for_packages(arguments, cwd=project.root, environ=environ, runner=runner).images
        for occurrence, directory in packages.items():
            wanted[occurrence] = next(image for image in defaults if image.package == directory)
    return wanted


def _names(by_name: Mapping[str, ImageConfig]) -> str:
    return ", ".join(sorted(by_name)) or "none (no [tool.gosmall.images]; name a package instead, e.g. gosmall://./cmd/app)"


def _holds_go_files(directory: Path) -> bool:
    """Whether `directory` can be a Go package at all; `go list` says later whether it is a main one."""
    try:
        return any(p.suffix == ".go" and not p.name.endswith("_test.go") for p in directory.iterdir())
    except OSError:
        return False  # missing, or not a directory


def _import_paths(project: ProjectConfig, runner: Runner) -> dict[str, Path]:
    """Main packages by import path: each configured image's (no `go list` needed), then every one of the project's module."""
    found: dict[str, Path] = {}
    for image in project.images:
        module = find_module(image.package)
        relative = image.package.relative_to(module.root).as_posix()
        found.setdefault(module.path if relative == "." else f"{module.path}/{relative}", image.package)
    try:
        module = find_module(project.root)
    except GosmallError:
        return found  # no go.mod at the project's root: only configured images can be named
    from ..build.packages import main_packages

    toolchain = find_toolchain(module, go_version=project.go_version)
    for package in main_packages(toolchain, module, runner=runner):
        found.setdefault(package.import_path, package.dir.resolve())
    return found


def _where(occurrence: Occurrence) -> str:
    return printable(f"{_shown(occurrence.path)}:{occurrence.line}:{occurrence.column}: {occurrence.reference}")


def _shown(path: Path) -> str:
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()
