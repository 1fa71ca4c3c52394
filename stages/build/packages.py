"""Go main packages named on the command line, or all of a module's: what `go list` says they are.

`gosmall build-small ./cmd/app` and `gosmall init` ask the toolchain gosmall
builds with (same environment: GOTOOLCHAIN=local, GOPROXY=off, -mod flag), so
build tags, `//go:build ignore` files and nested modules are judged as `go
build` judges them. A directory that is not a main package, or lies outside the
module, is one error before anything is compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import ImageConfig, ProjectConfig, image_name_for, load_package_project, package_image
from ..errors import GosmallError
from .compile import host_platform
from .toolchain import GoModule, Runner, Toolchain, find_module, find_toolchain, run_go

# Never a main package of the module: vendored code and test data (`go list ./...` skips them too).
SKIPPED_DIRS = ("vendor", "testdata")


@dataclass(frozen=True)
class GoPackage:
    import_path: str
    name: str  # the package clause; "main" for a command
    dir: Path
    error: str = ""  # why go could not load it, "" when it could


def list_packages(
    toolchain: Toolchain, module: GoModule, patterns: Sequence[str], *, runner: Runner = subprocess.run
) -> tuple[GoPackage, ...]:
    """`go list -e` of `patterns` (relative to the module root), one GoPackage each, errors kept per package."""
    # JSON, not a -f template: an error message (or a directory) may hold any character.
    fields = "-json=ImportPath,Name,Dir,Error" if toolchain.version >= (1, 19) else "-json"
    done = run_go(toolchain, module, ["list", "-e", fields, *patterns], cwd=module.root, runner=runner)
    text = done.stdout or ""
    if done.returncode != 0 and not text.strip():
        raise GosmallError(
            f"`go list {' '.join(patterns)}` in {module.root} failed ({toolchain.version_text}):\n{(done.stderr or '').strip()}"
        )
    packages = []
    decoder, at = json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            break
        document, at = decoder.raw_decode(text, at)
        error = document.get("Error") or {}
        packages.append(
            GoPackage(
                str(document.get("ImportPath", "")),
                str(document.get("Name", "")),
                Path(str(document.get("Dir", ""))),
                str(error.get("Err", "")) if isinstance(error, dict) else str(error),
            )
        )
    return tuple(packages)


def main_packages(toolchain: Toolchain, module: GoModule, *, runner: Runner = subprocess.run) -> tuple[GoPackage, ...]:
    """Every main package of the module (`./...`), vendor/ and testdata/ skipped; a package go cannot load is an error."""
    found = []
    for package in list_packages(toolchain, module, ["./..."], runner=runner):
        relative = package.dir.relative_to(module.root).parts if package.dir.is_relative_to(module.root) else ()
        if any(part in SKIPPED_DIRS for part in relative):
            continue
        if package.error:
            raise GosmallError(f"Go cannot load the package in {package.dir} ({package.import_path}):\n{package.error}")
        if package.name == "main":
            found.append(package)
    if not found:
        raise GosmallError(
            f"The Go module in {module.root} ({module.path}) has no main package (`package main` with a func main); "
            "gosmall builds commands. Add one, e.g. cmd/app/main.go, and run again."
        )
    return tuple(sorted(found, key=lambda p: p.dir))


def resolve_main_packages(
    arguments: Sequence[str], toolchain: Toolchain, module: GoModule, *, cwd: Path, runner: Runner = subprocess.run
) -> tuple[Path, ...]:
    """The directories `arguments` (paths relative to `cwd`, as `go build` takes them) name, each a main package of `module`."""
    directories: list[Path] = []
    for argument in arguments:
        lexical = Path(os.path.normpath(cwd / argument))
        resolved = lexical.resolve()
        if not _inside(lexical, module.root) or not _inside(resolved, module.root):
            raise GosmallError(
                f"{argument!r} ({resolved}) is outside the Go module in {module.root} (its go.mod); gosmall builds the main "
                f"packages of the module it runs in. Name a package under {module.root}, or run gosmall in the other module."
            )
        if not resolved.is_dir():
            raise GosmallError(f"{argument!r} is not a directory ({resolved}); name the directory of a Go main package, e.g. ./cmd/app.")
        directories.append(resolved)
    patterns = ["./" + d.relative_to(module.root).as_posix() for d in directories]
    listed = list_packages(toolchain, module, patterns, runner=runner)
    for argument, directory, pattern in zip(arguments, directories, patterns):
        # A package go could not place in the module has no Dir, only the pattern as its import path.
        package = next((p for p in listed if (p.dir.resolve() == directory if p.dir.parts else p.import_path == pattern)), None)
        if package is None:
            raise GosmallError(f"{argument!r} ({directory}): `go list` said nothing about it; is it a Go package?")
        if "does not contain package" in package.error or "outside main module" in package.error:
            raise GosmallError(
                f"{argument!r} ({directory}) belongs to another Go module (a go.mod below {module.root}), so it is outside "
                "this one. Run gosmall in that module's directory."
            )
        if package.error:
            if "no Go files" in package.error or "build constraints exclude all Go files" in package.error:
                raise GosmallError(f"{argument!r} ({directory}) is not a main package: it holds no Go files that build for Linux.")
            raise GosmallError(f"Go cannot load {argument!r} ({package.import_path}):\n{package.error}")
        if package.name != "main":
            raise GosmallError(
                f"{argument!r} is package {package.name} ({package.import_path}), not a main package: gosmall builds commands. "
                "Name the directory of a `package main`, e.g. ./cmd/app."
            )
    return tuple(directories)


def project_for_packages(
    arguments: Sequence[str], *, cwd: Path | None = None, environ: Mapping[str, str] | None = None, runner: Runner = subprocess.run
) -> ProjectConfig:
    """The project to build for packages named on the command line, narrowed to their images.

    A package a [tool.gosmall] image names is built as configured (every image that names it); any
    other is built with the defaults (image = directory name) plus the table's top-level settings.
    """
    cwd = (cwd or Path.cwd()).resolve()
    module = find_module(cwd)
    project, platforms = load_package_project(cwd, module.root, host_platform(), environ)
    toolchain = find_toolchain(module, go_version=project.go_version)
    selected: list[ImageConfig] = []
    for argument, directory in zip(arguments, resolve_main_packages(arguments, toolchain, module, cwd=cwd, runner=runner)):
        configured = [i for i in project.images if i.package == directory]
        if configured:
            selected.extend(i for i in configured if i not in selected)
            continue
        if not _inside(directory, project.root):
            raise GosmallError(
                f"{argument!r} ({directory}) is outside the project of {project.pyproject}; its images and output live under "
                f"{project.root}. Run gosmall where that package's pyproject.toml is."
            )
        image = package_image(project, directory, image_name_for(directory), platforms, environ)
        clash = next((i for i in (*project.images, *selected) if i.name == image.name), None)
        if clash is not None:
            raise GosmallError(
                f"{argument!r} would be image '{image.name}' ({project.output_dir(image)}), as {clash.package} already is. "
                f"Give it an image of its own in [tool.gosmall.images] of {project.pyproject} (gosmall init writes one per package)."
            )
        selected.append(image)
    return replace(project, images=tuple(selected))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
