"""Writers: one `Image` value as an OCI image layout and as an archive `docker load` accepts."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from gosmall.build.assemble import PlatformParts, assemble
from gosmall.build.compile import Binary
from gosmall.build.runtime_files import RuntimeFiles
from gosmall.build.source import SourceInfo
from gosmall.config import parse_project
from gosmall.images.docker_archive import write_docker_archive, write_docker_archive_file
from gosmall.images.model import Image, Platform
from gosmall.images.oci_layout import read_index, write_oci_layout
from gosmall.layer_files import FileEntry
from tests.oci_schema import errors

EPOCH = 1767323045
SOURCE = SourceInfo("v1", "", "", EPOCH)
RUNTIME = RuntimeFiles((FileEntry("/etc/passwd", "file", 0o444, "users", data=b"root:x:0:0::/:\n"),), ())


def build(tmp_path: Path, *platforms: str) -> Image:
    (tmp_path / "app").mkdir(exist_ok=True)
    config = parse_project({"images": {"app": {"package": "app"}}}, tmp_path / "pyproject.toml").images[0]
    parts = []
    for text in platforms:
        platform = Platform.parse(text)
        path = tmp_path / text.replace("/", "_")
        path.write_bytes(f"binary for {text}".encode())
        parts.append(PlatformParts(Binary(path, "app", platform, path.stat().st_size, False), RUNTIME))
    return assemble(config, tuple(parts), SOURCE)


@pytest.fixture
def single(tmp_path: Path) -> Image:
    return build(tmp_path, "linux/amd64")


@pytest.fixture
def multi(tmp_path: Path) -> Image:
    return build(tmp_path, "linux/amd64", "linux/arm64")


# -- OCI image layout ------------------------------------------------------------------


def test_the_layout_has_its_marker_file(tmp_path: Path, single: Image) -> None:
    write_oci_layout(single, tmp_path / "oci", "example.com/app", ("latest",))
    marker = json.loads((tmp_path / "oci" / "oci-layout").read_text())
    assert marker == {"imageLayoutVersion": "1.0.0"}
    assert errors("image-layout-schema.json", marker) == []


def test_index_json_names_the_image_once_per_tag(tmp_path: Path, multi: Image) -> None:
    write_oci_layout(multi, tmp_path / "oci", "example.com/app", ("latest", "v1"))
    index = read_index(tmp_path / "oci")
    assert errors("image-index-schema.json", index) == []
    manifests = index["manifests"]
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in manifests] == ["latest", "v1"]  # type: ignore[index]
    assert [m["annotations"]["io.containerd.image.name"] for m in manifests] == ["example.com/app:latest", "example.com/app:v1"]  # type: ignore[index]
    for descriptor in manifests:  # type: ignore[attr-defined]
        assert descriptor["digest"] == str(multi.digest)
        assert descriptor["mediaType"] == "application/vnd.oci.image.index.v1+json"
        assert descriptor["size"] == multi.top.size


def test_every_blob_is_stored_under_its_digest_and_nothing_else(tmp_path: Path, multi: Image) -> None:
    layout = tmp_path / "oci"
    write_oci_layout(multi, layout, "example.com/app", ("latest",))
    stored = {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    assert set(stored) == {b.digest.hex for b in multi.blobs()}
    for name, data in stored.items():
        assert hashlib.sha256(data).hexdigest() == name
    assert multi.digest.hex in stored  # the index the tags point at
    assert sorted(p.name for p in layout.iterdir()) == ["blobs", "index.json", "oci-layout"]


def test_a_single_platform_layout_points_at_the_manifest(tmp_path: Path, single: Image) -> None:
    write_oci_layout(single, tmp_path / "oci", "example.com/app", ("latest",))
    (descriptor,) = read_index(tmp_path / "oci")["manifests"]  # type: ignore[misc]
    assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads((tmp_path / "oci" / "blobs" / "sha256" / single.digest.hex).read_bytes())
    assert errors("image-manifest-schema.json", manifest) == []


def test_rewriting_a_layout_gives_the_same_files(tmp_path: Path, multi: Image) -> None:
    for name in ("one", "two"):
        write_oci_layout(multi, tmp_path / name, "example.com/app", ("latest",))
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert one == two


# -- docker load archive -----------------------------------------------------------------


def archive_bytes(image: Image, tags: tuple[str, ...] = ("latest", "v1")) -> bytes:
    stream = io.BytesIO()
    write_docker_archive(image.manifests[0], stream, "example.com/app", tags, EPOCH)
    return stream.getvalue()


def test_the_archive_manifest_names_the_tags_config_and_layers(single: Image) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive_bytes(single))) as tar:
        (entry,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] == ["example.com/app:latest", "example.com/app:v1"]
        platform_image = single.manifests[0]
        assert tar.extractfile(entry["Config"]).read() == platform_image.config.data  # type: ignore[union-attr]
        (layer_name,) = entry["Layers"]
        layer = tar.extractfile(layer_name).read()  # type: ignore[union-attr]
    assert layer == platform_image.layers[0].tar  # uncompressed: docker load would only decompress it again
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == json.loads(platform_image.config.data)["rootfs"]["diff_ids"][0]


def test_archive_member_names_have_no_colon_and_fixed_times(single: Image) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive_bytes(single))) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos][:2] == ["blobs", "blobs/sha256"]
    assert "manifest.json" in [i.name for i in infos]
    for info in infos:
        assert ":" not in info.name
        assert info.mtime == EPOCH
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")


def test_the_archive_is_the_same_bytes_every_time(tmp_path: Path, single: Image) -> None:
    first = archive_bytes(single)
    assert archive_bytes(single) == first
    write_docker_archive_file(single.manifests[0], tmp_path / "image.tar", "example.com/app", ("latest", "v1"), EPOCH)
    assert (tmp_path / "image.tar").read_bytes() == first


def test_the_archive_holds_one_platform_of_a_multi_platform_image(multi: Image) -> None:
    stream = io.BytesIO()
    arm = multi.for_platform(Platform.parse("linux/arm64"))
    assert arm is not None
    write_docker_archive(arm, stream, "example.com/app", ("latest",), EPOCH)
    with tarfile.open(fileobj=io.BytesIO(stream.getvalue())) as tar:
        (entry,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(tar.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
    assert config["architecture"] == "arm64"
    assert entry["Config"] == f"blobs/sha256/{arm.config.digest.hex}"
