"""Stage 7: say what was built, in numbers, and hold the image to max_size.

report.json is the machine-readable record (digests and sizes per
platform); the size table is the same numbers for a person.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..build.compression import COMPRESSOR, GZIP_LEVEL
from ..build.libraries import LibraryClosure
from ..build.runtime_files import RuntimeFiles
from ..build.source import SourceInfo
from ..config import ImageConfig
from ..errors import FOUND, GosmallError
from ..images.model import Image, Platform
from ..reporter import Reporter


@dataclass(frozen=True)
class PlatformSizes:
    platform: Platform
    binary_size: int
    runtime_files_size: int
    layer_size: int  # compressed
    image_size: int  # uncompressed


def platform_sizes(image: Image, binaries: dict[Platform, int], runtime: dict[Platform, RuntimeFiles]) -> tuple[PlatformSizes, ...]:
    return tuple(
        PlatformSizes(
            m.platform,
            binaries[m.platform],
            runtime[m.platform].size(),
            sum(layer.blob.size for layer in m.layers),
            m.uncompressed_size,
        )
        for m in image.manifests
    )


def enforce_max_size(config: ImageConfig, sizes: tuple[PlatformSizes, ...]) -> None:
    if config.max_size is None:
        return
    for s in sizes:
        if s.image_size > config.max_size:
            raise GosmallError(
                f"Image '{config.name}' for {s.platform} is {human(s.image_size)} uncompressed ({s.image_size} bytes), "
                f"over its max_size of {human(config.max_size)} ({config.max_size} bytes) in [tool.gosmall.images.{config.name}]. "
                'Nothing was written. Shrink it (tzdata = "embed" or zones, fewer files) or raise max_size.',
                code=FOUND,
            )


def build_report(
    config: ImageConfig,
    image: Image,
    sizes: tuple[PlatformSizes, ...],
    source: SourceInfo,
    docker_platform: Platform,
    extra: dict[Platform, dict[str, Any]] | None = None,
    *,
    go: str = "",
) -> dict[str, Any]:
    platforms: dict[str, Any] = {}
    for m, s in zip(image.manifests, sizes):
        platforms[str(m.platform)] = {
            "manifest_digest": str(m.manifest.digest),
            "config_digest": str(m.config.digest),
            "layer_digest": str(m.layers[0].blob.digest),
            "diff_id": str(m.layers[0].diff_id),
            "binary_size": s.binary_size,
            "runtime_files_size": s.runtime_files_size,
            "layer_size": s.layer_size,
            "image_size": s.image_size,
            **(extra or {}).get(m.platform, {}),
        }
    return {
        "image": config.name,
        "repository": config.repository,
        "tags": list(config.tags),
        "references": [f"{config.repository}:{tag}@{image.digest}" for tag in config.tags],
        "digest": str(image.digest),
        "media_type": image.top.media_type,
        "docker_platform": str(docker_platform),
        "source": {"version": source.version, "revision": source.revision, "source_date_epoch": source.epoch},
        "builder": builder(go),
        "platforms": platforms,
    }


def report_json(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()


def show_size_table(
    reporter: Reporter, config: ImageConfig, sizes: tuple[PlatformSizes, ...], digest: str, vulns: Mapping[Platform, str] | None = None
) -> None:
    """The size table; `vulns`, when a vulnerability database is configured, adds a line per platform ("1 called / 2 imported")."""
    rows = []
    for s in sizes:
        for stage, size in (
            ("binary (stripped)", s.binary_size),
            ("runtime files", s.runtime_files_size),
            ("layer (gzip)", s.layer_size),
            ("image (uncompressed)", s.image_size),
        ):
            rows.append((str(s.platform), stage, human(size), f"{size:,}"))
        if vulns is not None and s.platform in vulns:
            rows.append((str(s.platform), "known vulnerabilities", vulns[s.platform], ""))
    reporter.table(f"{config.repository} {digest[:19]}…", ("platform", "stage", "size", "bytes"), rows)


def show_libraries(reporter: Reporter, platform: Platform, closure: LibraryClosure) -> None:
    """Every file the dynamic binary pulls in, and who needed it: nothing in the image goes unexplained."""
    rows = [
        (
            f.path + (f" -> {f.link_target}" if f.kind == "symlink" else ""),
            human(f.size) if f.kind == "file" else "link",
            f.reason,
            ", ".join(f.needed_by),
        )
        for f in closure.files
    ]
    reporter.table(f"{platform}: shared libraries", ("path", "size", "why", "needed by"), rows)
    if closure.links_glibc:
        reporter.detail(f"{platform}: links glibc, so /etc/nsswitch.conf and its NSS modules (files, dns) are included")


def human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def builder(go: str) -> dict[str, Any]:
    """What made the bytes besides the source: gosmall, the Go toolchain ("go1.27.3") and the layer compressor.

    The compressor's version is the installed distribution's, so a wheel that does not match the pin
    in pyproject.toml shows up here (and in gosmall.lock) rather than only as another digest.
    """
    return {"gosmall": __version__, "go": go, "compressor": {"name": COMPRESSOR, "version": _version_of(COMPRESSOR), "level": GZIP_LEVEL}}


def _version_of(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - a source checkout run without installing
        return "unknown"
