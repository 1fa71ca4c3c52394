"""`gosmall init`: write down, as a [tool.gosmall] table, what a build with no config does.

One image per main package, each built once (in memory, nothing written) so
that its runtime files are what its binary links, not a guess from the
source. The table is appended to pyproject.toml as text: every byte the file
had stays where it was, comments included, so no TOML writer is needed. A file
that already has [tool.gosmall] is never touched.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .atomic import write_beside
from .build.compile import host_platform
from .build.needs import NEED_FUNCTIONS
from .build.packages import main_packages, resolve_main_packages
from .build.source import describe_source
from .build.toolchain import find_module, find_toolchain
from .config import NO_CONFIG_TABLE, image_name_for, package_image, parse_project, project_without_table, unpushable_repository
from .errors import GosmallError
from .images.model import Platform
from .pipeline import SharedGoCache, build_image
from .reporter import Reporter


@dataclass(frozen=True)
class InitImage:
    name: str
    package: str  # "./cmd/app": relative to pyproject.toml
    repository: str
    needs: tuple[tuple[str, tuple[str, ...]], ...]  # ("tzdata", ("time.LoadLocation",)), as the build read them


def init_project(
    arguments: Sequence[str],
    reporter: Reporter,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    insecure: Sequence[str] = (),
) -> tuple[Path, tuple[InitImage, ...]]:
    """Append a [tool.gosmall] table for the named main packages (default: all of the module's) to its pyproject.toml.

    `insecure`: --insecure-registry, for a shared Go cache (GOSMALL_REMOTE_CACHE) on a plain-HTTP host."""
    cwd = (cwd or Path.cwd()).resolve()
    module = find_module(cwd)
    pyproject = module.root / "pyproject.toml"
    before = _read_without_table(pyproject)  # refused before minutes of building
    platform = host_platform()
    project = project_without_table(module.root, (platform,))
    toolchain = find_toolchain(module)
    if arguments:
        directories = resolve_main_packages(arguments, toolchain, module, cwd=cwd)
    else:
        directories = tuple(p.dir.resolve() for p in main_packages(toolchain, module))
    source = describe_source(module.root, environ)
    shared = SharedGoCache.of(project, environ, insecure)
    images = []
    for directory, name in zip(directories, image_names(directories, module.root)):
        image = package_image(project, directory, name, (platform,), environ)
        build = build_image(project, image, source, reporter, shared=shared)
        facts = build.report["platforms"][str(platform)].get("needs", [])
        needs = tuple((str(n["need"]), tuple(map(str, n["because"]))) for n in facts)
        relative = directory.relative_to(module.root).as_posix()
        images.append(InitImage(name, "." if relative == "." else f"./{relative}", image.repository, needs))
    newline = b"\r\n" if b"\r\n" in before else b"\n"
    table = init_table(tuple(images), platform).replace("\n", newline.decode()).encode()
    after = before + (newline if before and not before.endswith(b"\n") else b"") + (newline if before else b"") + table
    _check(after, pyproject)
    write_beside(pyproject, after)
    return pyproject, tuple(images)


def image_names(directories: Sequence[Path], root: Path) -> tuple[str, ...]:
    """Each package's directory name; packages that share one are named by their path instead (cmd-app, tools-app)."""
    names = [image_name_for(d) for d in directories]
    for i, directory in enumerate(directories):
        if names.count(image_name_for(directory)) > 1:
            relative = directory.relative_to(root).as_posix()
            names[i] = re.sub(r"[^a-z0-9_.-]+", "-", relative.lower()).strip("-_.") or image_name_for(root)
    return tuple(names)


def init_table(images: tuple[InitImage, ...], platform: Platform) -> str:
    """The [tool.gosmall] table, each key with a short comment."""
    lines = [
        "[tool.gosmall]",
        "# Written by `gosmall init`: what `gosmall build-small ./PACKAGE` does with no config. Every key: gosmall's README.",
        "# Each image is built into <output>/<image>/.",
        f"output = {_string(str(NO_CONFIG_TABLE['output']))}",
        '# The platforms of every image; add "linux/arm64" (or another) for a multi-platform index.',
        f"platforms = [{_string(str(platform))}]",
        '# Unpinned image references in the project (Dockerfiles, manifests, workflows): "warn", or "error" to fail the build.',
        f"pinning = {_string(str(NO_CONFIG_TABLE['pinning']))}",
    ]
    for image in images:
        needs = dict(image.needs)
        lines += [
            "",
            f"[tool.gosmall.images.{_key(image.name)}]",
            "# The Go main package, relative to this file.",
            f"package = {_string(image.package)}",
            "# Where the image is tagged and pushed"
            + (
                ": gosmall.local/... loads into a local engine but is never pushed; put your registry here."
                if unpushable_repository(image.repository)
                else "."
            ),
            f"repository = {_string(image.repository)}",
            "# Its tags.",
            'tags = ["latest"]',
            "# It runs as 65532:65532, not as root.",
            'user = "nonroot"',
        ]
        if "tzdata" in needs:
            lines.append(
                f'# The binary links {", ".join(needs["tzdata"])}: Go\'s zone database ("embed" compiles it in; zones = [...] ships only those).'
            )
            lines.append('tzdata = "zip"')
        else:
            lines.append(f"# The binary never links {NEED_FUNCTIONS['tzdata'][0]}, so it cannot read a zone database: none is shipped.")
            lines.append('tzdata = "none"')
        if "ca_certs" in needs:
            lines.append(f"# The binary links {', '.join(needs['ca_certs'])}: a CA bundle for TLS.")
            lines.append("ca_certs = true")
        else:
            lines.append("# The binary never loads system CA roots: no CA bundle.")
            lines.append("ca_certs = false")
    return "\n".join(lines) + "\n"


def _string(text: str) -> str:
    # A JSON string is a TOML basic string: the same escapes.
    return json.dumps(text, ensure_ascii=False)


def _key(name: str) -> str:
    return name if re.match(r"^[A-Za-z0-9_-]+$", name) else _string(name)


def _read_without_table(pyproject: Path) -> bytes:
    """The file's bytes ("" when there is none), refused when it already has [tool.gosmall] or is not a regular file."""
    if pyproject.is_symlink() or (pyproject.exists() and not pyproject.is_file()):
        raise GosmallError(f"{pyproject} is not a regular file (a link or something else); init writes only a regular pyproject.toml.")
    if not pyproject.exists():
        return b""
    try:
        data = pyproject.read_bytes()
        document = tomllib.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise GosmallError(f"{pyproject} cannot be read: {exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise GosmallError(f"{pyproject} is not valid TOML ({exc}); init appends to valid files only. Fix it and run again.") from None
    tool = document.get("tool", {})
    if isinstance(tool, dict) and "gosmall" in tool:
        raise GosmallError(
            f"{pyproject} already has a [tool.gosmall] table; init leaves it as it is. To add an image by hand, add a table "
            'such as\n\n[tool.gosmall.images.NAME]\npackage = "./cmd/NAME"\nrepository = "registry.example.com/NAME"\n\n'
            "to it (every key: gosmall's README), or build a package no image names with the defaults: "
            "gosmall build-small ./cmd/NAME"
        )
    return data


def _check(after: bytes, pyproject: Path) -> None:
    """The whole new file parses, and its table is one gosmall accepts, before anything is written."""
    try:
        table = tomllib.loads(after.decode("utf-8"))["tool"]["gosmall"]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise GosmallError(
            f"{pyproject}: a [tool.gosmall] table cannot be appended to it ({exc}); it may define `tool` as an inline table. "
            "Nothing was written; add the table by hand."
        ) from None
    parse_project(table, pyproject)
