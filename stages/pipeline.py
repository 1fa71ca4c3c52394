"""The build-small pipeline, stage by stage, for each configured image.

toolchain -> compile -> prove -> runtime files -> assemble -> write, with
every output first written to a temporary directory beside the target and
renamed into place only when all of it succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assemble import PlatformParts, assemble
from .compile import compile_binary, host_platform, plan_compile
from .config import ImageConfig, ProjectConfig
from .docker_archive import write_docker_archive_file
from .errors import GosmallError
from .image import Image, Platform
from .libraries import CollectedFile, collect_libraries
from .oci_layout import write_oci_layout
from .prove import prove_binary
from .report import build_report, enforce_max_size, platform_sizes, report_json, show_libraries, show_size_table
from .reporter import Reporter
from .runtime_files import collect_runtime_files, with_libraries
from .source import SourceInfo, describe_source
from .toolchain import find_module, find_toolchain


@dataclass(frozen=True)
class BuildResult:
    config: ImageConfig
    image: Image
    output_dir: Path
    report: Mapping[str, Any]


def build_small(
    project: ProjectConfig,
    reporter: Reporter,
    *,
    names: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> tuple[BuildResult, ...]:
    images = project.images if not names else tuple(i for n in names for i in project.image(n))
    source = describe_source(project.root, environ)
    return tuple(build_image(project, image, source, reporter) for image in images)


def build_image(project: ProjectConfig, config: ImageConfig, source: SourceInfo, reporter: Reporter) -> BuildResult:
    reporter.step(f"{config.name}: building {config.package.relative_to(project.root) or '.'} for {', '.join(map(str, config.platforms))}")
    module = find_module(config.package)
    toolchain = find_toolchain(module)
    reporter.detail(f"toolchain {toolchain.version_text} ({toolchain.source}: {toolchain.go})")

    parts: list[PlatformParts] = []
    libraries: dict[Platform, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gosmall-build-") as workdir:
        for platform in config.platforms:
            plan = plan_compile(config, module, platform, source.version)
            binary = compile_binary(plan, toolchain, Path(workdir))
            facts = prove_binary(binary)
            reporter.detail(
                f"{platform}: {binary.name} {binary.size:,} bytes, {facts.machine}, {'static' if facts.static else 'dynamic'}, stripped"
            )
            runtime = collect_runtime_files(config, toolchain)
            if not facts.static:
                closure = collect_libraries(
                    binary.path,
                    binary_image_path=f"/{binary.name}",
                    extra_libs=config.libs,
                    search_paths=config.lib_search_paths,
                    strip=config.strip_libs,
                )
                runtime = with_libraries(runtime, closure, config.lib_search_paths)
                libraries[platform] = {"libraries": [_library_json(f) for f in closure.files]}
                show_libraries(reporter, platform, closure)
            parts.append(PlatformParts(binary, runtime))
        image = assemble(config, tuple(parts), source)

    sizes = platform_sizes(
        image,
        {p.binary.platform: p.binary.size for p in parts},
        {p.binary.platform: p.runtime for p in parts},
    )
    enforce_max_size(config, sizes)
    docker_platform = host_platform() if host_platform() in config.platforms else config.platforms[0]
    report = build_report(config, image, sizes, source, docker_platform, libraries)
    output_dir = project.output_dir(config)
    write_outputs(image, config, report, docker_platform, source, output_dir)
    reporter.step(f"{config.name}: {image.digest} -> {output_dir}")
    show_size_table(reporter, config, sizes, str(image.digest))
    return BuildResult(config, image, output_dir, report)


def write_outputs(
    image: Image, config: ImageConfig, report: Mapping[str, Any], docker_platform: Platform, source: SourceInfo, target: Path
) -> None:
    """All outputs into a temp dir beside `target`, then swapped in: a failure leaves the old output intact."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise GosmallError(
            f"Cannot create the output directory {target.parent}: {exc}. Check `output` in [tool.gosmall] and its permissions."
        ) from None
    try:
        write_oci_layout(image, staging / "oci", config.repository, config.tags)
        platform_image = image.for_platform(docker_platform)
        assert platform_image is not None
        write_docker_archive_file(platform_image, staging / "image.tar", config.repository, config.tags, source.epoch)
        (staging / "report.json").write_bytes(report_json(dict(report)))
        os.chmod(staging, 0o755)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, target: Path) -> None:
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, previous)
    try:
        os.rename(staging, target)
    except BaseException:
        if previous is not None:
            os.rename(previous, target)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _library_json(library: CollectedFile) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": library.path,
        "kind": library.kind,
        "size": library.size,
        "needed_by": list(library.needed_by),
        "reason": library.reason,
    }
    if library.kind == "symlink":
        entry["link_target"] = library.link_target
    return entry
