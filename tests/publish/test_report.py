"""Stage 7: the numbers a person reads in the size table and a machine reads in report.json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gosmall.build.assemble import PlatformParts, assemble
from gosmall.build.compile import Binary
from gosmall.build.runtime_files import RuntimeFiles
from gosmall.build.source import SourceInfo
from gosmall.config import ImageConfig, parse_project
from gosmall.errors import GosmallError
from gosmall.images.model import Image, Platform
from gosmall.layer_files import FileEntry
from gosmall.publish.report import PlatformSizes, build_report, enforce_max_size, human, platform_sizes, report_json, show_size_table
from gosmall.reporter import RecordingReporter

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
SOURCE = SourceInfo("v1.2.3", "0123456789abcdef0123456789abcdef01234567", "", 86400)
RUNTIME = RuntimeFiles((FileEntry("/etc/passwd", "file", 0o444, "users", data=b"x" * 1000),), ())


def image_config(root: Path, **keys: Any) -> ImageConfig:
    (root / "app").mkdir(parents=True, exist_ok=True)
    table = {"images": {"app": {"package": "app", "repository": "example.com/app", "tags": ["latest", "v1"], **keys}}}
    return parse_project(table, root / "pyproject.toml").images[0]


def built(tmp_path: Path, config: ImageConfig, *platforms: Platform) -> tuple[Image, tuple[PlatformSizes, ...]]:
    parts = []
    for platform in platforms:
        path = tmp_path / str(platform).replace("/", "_")
        path.write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
        parts.append(PlatformParts(Binary(path, "app", platform, path.stat().st_size, False), RUNTIME))
    image = assemble(config, tuple(parts), SOURCE)
    sizes = platform_sizes(image, {p.binary.platform: p.binary.size for p in parts}, {p.binary.platform: p.runtime for p in parts})
    return image, sizes


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (12 * 2**20, "12.0 MiB"),
        (int(2.25 * 2**30), "2.2 GiB"),
        (2**40, "1024.0 GiB"),
    ],
)
def test_human_sizes_use_binary_units(size: int, text: str) -> None:
    assert human(size) == text


def test_sizes_are_measured_from_the_image(tmp_path: Path) -> None:
    image, sizes = built(tmp_path, image_config(tmp_path), AMD64)
    (s,) = sizes
    assert (s.platform, s.binary_size, s.runtime_files_size) == (AMD64, 2052, 1000)
    assert s.layer_size == image.manifests[0].layers[0].blob.size
    assert s.image_size == len(image.manifests[0].layers[0].tar) > s.binary_size + s.runtime_files_size


def test_an_image_over_max_size_is_refused_with_both_sizes(tmp_path: Path) -> None:
    config = image_config(tmp_path, max_size="1KiB")
    sizes = (PlatformSizes(AMD64, 0, 0, 0, 1024), PlatformSizes(ARM64, 0, 0, 0, 2048))
    with pytest.raises(GosmallError) as caught:
        enforce_max_size(config, sizes)
    assert caught.value.message == (
        "Image 'app' for linux/arm64 is 2.0 KiB uncompressed (2048 bytes), over its max_size of 1.0 KiB (1024 bytes) "
        "in [tool.gosmall.images.app]. Nothing was written. "
        'Shrink it (tzdata = "embed" or zones, fewer files) or raise max_size.'
    )


def test_an_image_at_max_size_or_without_one_passes(tmp_path: Path) -> None:
    sizes = (PlatformSizes(AMD64, 0, 0, 0, 1024),)
    enforce_max_size(image_config(tmp_path, max_size=1024), sizes)
    enforce_max_size(image_config(tmp_path), (PlatformSizes(AMD64, 0, 0, 0, 2**40),))


def test_the_report_names_every_digest_and_size(tmp_path: Path) -> None:
    config = image_config(tmp_path)
    image, sizes = built(tmp_path, config, AMD64, ARM64)
    report = build_report(config, image, sizes, SOURCE, ARM64, {ARM64: {"libraries": []}})
    assert report["image"] == "app" and report["repository"] == "example.com/app" and report["tags"] == ["latest", "v1"]
    assert report["digest"] == str(image.digest)
    assert report["references"] == [f"example.com/app:latest@{image.digest}", f"example.com/app:v1@{image.digest}"]
    assert report["media_type"] == "application/vnd.oci.image.index.v1+json"
    assert report["docker_platform"] == "linux/arm64"
    assert report["source"] == {"version": "v1.2.3", "revision": SOURCE.revision, "source_date_epoch": 86400}
    assert report["builder"]["gosmall"] == "0.1.0"
    assert report["builder"]["compressor"] == {"name": "deflate", "version": "0.8.1", "level": 6}
    assert report["builder"]["go"] == ""  # not given here; the pipeline passes the toolchain's
    assert sorted(report["platforms"]) == ["linux/amd64", "linux/arm64"]
    for platform_image, s in zip(image.manifests, sizes):
        entry = report["platforms"][str(platform_image.platform)]
        assert entry["manifest_digest"] == str(platform_image.manifest.digest)
        assert entry["config_digest"] == str(platform_image.config.digest)
        assert entry["layer_digest"] == str(platform_image.layers[0].blob.digest)
        assert entry["diff_id"] == str(platform_image.layers[0].diff_id)
        assert (entry["binary_size"], entry["runtime_files_size"], entry["layer_size"], entry["image_size"]) == (
            s.binary_size, s.runtime_files_size, s.layer_size, s.image_size,
        )  # fmt: skip
    assert report["platforms"]["linux/arm64"]["libraries"] == []
    assert "libraries" not in report["platforms"]["linux/amd64"]


def test_report_json_is_stable_sorted_and_ends_with_a_newline(tmp_path: Path) -> None:
    config = image_config(tmp_path)
    image, sizes = built(tmp_path, config, AMD64)
    report = build_report(config, image, sizes, SOURCE, AMD64)
    text = report_json(report)
    assert text.endswith(b"}\n")
    assert json.loads(text) == report
    assert text == report_json(dict(reversed(list(report.items()))))
    assert report["media_type"] == "application/vnd.oci.image.manifest.v1+json"


def test_the_size_table_has_four_rows_per_platform(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    config = image_config(tmp_path)
    sizes = (PlatformSizes(AMD64, 7_340_032, 408_467, 3_145_728, 7_800_000), PlatformSizes(ARM64, 1024, 0, 512, 2048))
    digest = "sha256:" + "ab" * 32
    show_size_table(reporter, config, sizes, digest)
    assert reporter.messages("table") == ["example.com/app sha256:abababababab…"]
    assert reporter.messages("row") == [
        "linux/amd64 | binary (stripped) | 7.0 MiB | 7,340,032",
        "linux/amd64 | runtime files | 398.9 KiB | 408,467",
        "linux/amd64 | layer (gzip) | 3.0 MiB | 3,145,728",
        "linux/amd64 | image (uncompressed) | 7.4 MiB | 7,800,000",
        "linux/arm64 | binary (stripped) | 1.0 KiB | 1,024",
        "linux/arm64 | runtime files | 0 B | 0",
        "linux/arm64 | layer (gzip) | 512 B | 512",
        "linux/arm64 | image (uncompressed) | 2.0 KiB | 2,048",
    ]


def test_a_renamed_repository_shows_in_the_table_title(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    config = replace(image_config(tmp_path), repository="registry.example.com:5000/team/app")
    show_size_table(reporter, config, (), "sha256:" + "0" * 64)
    assert reporter.messages("table") == ["registry.example.com:5000/team/app sha256:000000000000…"]
    assert reporter.messages("row") == []
