"""Reading any image into the one model: what a layout or an archive holds, checked, or one clear error."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from gosmall.build.assemble import PlatformParts, assemble
from gosmall.build.compile import Binary
from gosmall.build.runtime_files import RuntimeFiles
from gosmall.build.source import SourceInfo
from gosmall.config import parse_project
from gosmall.digest import Digest
from gosmall.errors import GosmallError
from gosmall.images.docker_archive import write_docker_archive
from gosmall.images.model import MEDIA_INDEX, Image, Platform, canonical_json
from gosmall.images.oci_layout import write_oci_layout
from gosmall.images.source import MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, read_docker_archive, read_path
from gosmall.layer_files import FileEntry

SOURCE = SourceInfo("v1", "0123456789abcdef0123456789abcdef01234567", "https://example.com/a.git", 1767323045)


def image(tmp_path: Path, *platforms: str, marker: bytes = b"a") -> Image:
    (tmp_path / "app").mkdir(parents=True, exist_ok=True)
    config = parse_project(
        {"images": {"app": {"package": "app", "repository": "gosmall.test/src", "tzdata": "none", "platforms": list(platforms)}}},
        tmp_path / "pyproject.toml",
    ).images[0]
    runtime = RuntimeFiles((FileEntry("/etc/marker", "file", 0o444, "files", data=marker),), ())
    parts = []
    for platform in config.platforms:
        path = tmp_path / str(platform).replace("/", "_")
        path.write_bytes(b"\x7fELF program")
        parts.append(PlatformParts(Binary(path, "app", platform, 12, False), runtime))
    return assemble(config, tuple(parts), SOURCE)


def test_a_layout_and_an_archive_read_back_as_the_image_that_was_written(tmp_path: Path) -> None:
    written = image(tmp_path, "linux/amd64", "linux/arm64")
    write_oci_layout(written, tmp_path / "layout", "gosmall.test/src", ("a", "b"))
    assert read_path(tmp_path / "layout") == written  # two tags, one image
    with (tmp_path / "image.tar").open("wb") as stream:
        write_docker_archive(written.manifests[1], stream, "gosmall.test/src", ("a",), SOURCE.epoch)
    archived = read_path(tmp_path / "image.tar").manifests[0]
    assert (archived.platform, archived.config, [layer.tar for layer in archived.layers]) == (
        Platform.parse("linux/arm64"),
        written.manifests[1].config,
        [layer.tar for layer in written.manifests[1].layers],
    )


def test_a_layout_naming_two_images_is_refused_naming_them(tmp_path: Path) -> None:
    one, two = image(tmp_path / "1", "linux/amd64"), image(tmp_path / "2", "linux/amd64", marker=b"b")
    write_oci_layout(one, tmp_path / "layout", "gosmall.test/src", ("one",))
    write_oci_layout(two, tmp_path / "other", "gosmall.test/src", ("two",))
    for blob in (tmp_path / "other" / "blobs" / "sha256").iterdir():
        (tmp_path / "layout" / "blobs" / "sha256" / blob.name).write_bytes(blob.read_bytes())
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    index["manifests"] += json.loads((tmp_path / "other" / "index.json").read_text())["manifests"]
    (tmp_path / "layout" / "index.json").write_text(json.dumps(index))
    with pytest.raises(GosmallError, match=r"names 2 different images \(one, two\); audit takes one"):
        read_path(tmp_path / "layout")


def test_a_damaged_blob_or_layer_is_named(tmp_path: Path) -> None:
    written = image(tmp_path, "linux/amd64")
    write_oci_layout(written, tmp_path / "layout", "gosmall.test/src", ("a",))
    layer = tmp_path / "layout" / "blobs" / "sha256" / written.manifests[0].layers[0].blob.digest.hex
    layer.write_bytes(layer.read_bytes()[:-10])
    with pytest.raises(GosmallError, match=r"does not hash to sha256:"):
        read_path(tmp_path / "layout")


def test_an_index_skips_attestations_and_a_zstd_layer_is_read(tmp_path: Path) -> None:
    written = image(tmp_path, "linux/amd64")
    write_oci_layout(written, tmp_path / "layout", "gosmall.test/src", ("a",))
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    manifest = written.manifests[0].manifest
    attestation = {"mediaType": manifest.media_type, "digest": str(manifest.digest), "size": manifest.size}
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                manifest.descriptor(platform=Platform.parse("linux/amd64")).to_json(),
                {**attestation, "platform": {"os": "unknown", "architecture": "unknown"}},
            ],
        }
    )
    (blobs / Digest.of(index).hex).write_bytes(index)
    top = {"mediaType": MEDIA_INDEX, "digest": str(Digest.of(index)), "size": len(index)}
    (tmp_path / "layout" / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [top]}))
    read = read_path(tmp_path / "layout")
    assert [m.platform for m in read.manifests] == [Platform.parse("linux/amd64")] and read.index is not None

    def with_layer(blob: bytes) -> None:
        replace_layer(tmp_path / "layout", written, blob, MEDIA_LAYER_ZSTD)

    # The same layer, zstd-compressed in two frames (zstd, like gzip, may concatenate them): the same tar, the same diff_id.
    tar = written.manifests[0].layers[0].tar
    with_layer(zstandard.compress(tar[:1000]) + zstandard.compress(tar[1000:]))
    layer = read_path(tmp_path / "layout").manifests[0].layers[0]
    assert (layer.blob.media_type, layer.tar) == (MEDIA_LAYER_ZSTD, tar)
    # zstd's magic before anything else is a damaged layer, named.
    with_layer(b"\x28\xb5\x2f\xfd" + gzip.compress(b""))
    with pytest.raises(GosmallError, match=r"layer 1 \(sha256:[0-9a-f]{64}\) is not readable zstd"):
        read_path(tmp_path / "layout")


def replace_layer(layout: Path, written: Image, blob: bytes, media_type: str) -> None:
    """The layout's one manifest, pointing at `blob` as its layer instead (the same tar, compressed some other way)."""
    blobs = layout / "blobs" / "sha256"
    manifest = written.manifests[0].manifest
    (blobs / Digest.of(blob).hex).write_bytes(blob)
    document = json.loads(manifest.data)
    document["layers"][0].update(mediaType=media_type, digest=str(Digest.of(blob)), size=len(blob))
    changed = canonical_json(document)
    (blobs / Digest.of(changed).hex).write_bytes(changed)
    top = {"mediaType": manifest.media_type, "digest": str(Digest.of(changed)), "size": len(changed)}
    (layout / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [top]}))


def test_a_gzip_layer_of_several_members_or_a_lying_size_field_reads_as_its_tar(tmp_path: Path) -> None:
    # One member is decompressed in one call; anything else (several members, a size field that is not the size) is read
    # by the stream, which gives the same tar or refuses it.
    written = image(tmp_path, "linux/amd64")
    write_oci_layout(written, tmp_path / "layout", "gosmall.test/src", ("a",))
    tar = written.manifests[0].layers[0].tar
    # Two members, each a whole gzip stream: the same tar (and so the same diff_id) as one member.
    replace_layer(tmp_path / "layout", written, gzip.compress(tar[:1000], mtime=0) + gzip.compress(tar[1000:], mtime=0), MEDIA_LAYER_GZIP)
    assert read_path(tmp_path / "layout").manifests[0].layers[0].tar == tar
    # Two halves: the last member's size field fits the first member too, so a reader that stopped after one member
    # would return half the tar (and refuse the image for its diff_id).
    half = len(tar) // 2
    assert len(tar) == 2 * half
    replace_layer(tmp_path / "layout", written, gzip.compress(tar[:half], mtime=0) + gzip.compress(tar[half:], mtime=0), MEDIA_LAYER_GZIP)
    assert read_path(tmp_path / "layout").manifests[0].layers[0].tar == tar
    # The size field is part of gzip's trailer: a stream that lies about it is damaged, and named so.
    one = gzip.compress(tar, mtime=0)
    replace_layer(tmp_path / "layout", written, one[:-4] + (10).to_bytes(4, "little"), MEDIA_LAYER_GZIP)
    with pytest.raises(GosmallError, match=r"layer 1 \(sha256:[0-9a-f]{64}\) is not readable gzip"):
        read_path(tmp_path / "layout")


def test_an_archive_whose_layer_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    written = image(tmp_path, "linux/amd64")
    stream = io.BytesIO()
    write_docker_archive(written.manifests[0], stream, "gosmall.test/src", ("a",), SOURCE.epoch)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(stream.getvalue())) as source, tarfile.open(fileobj=out, mode="w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name == f"blobs/sha256/{written.manifests[0].layers[0].diff_id.hex}":
                data = data[:600] + bytes([data[600] ^ 1]) + data[601:]  # one bit of the layer, same size
            member.size = len(data)
            target.addfile(member, io.BytesIO(data) if member.isfile() else None)
    out.seek(0)
    with pytest.raises(GosmallError, match=r"rootfs.diff_ids do not match its layers"):
        read_docker_archive(out, "image.tar")


def test_an_artifact_beside_the_image_in_a_layout_is_not_an_image(tmp_path: Path) -> None:
    written = image(tmp_path, "linux/amd64")
    write_oci_layout(written, tmp_path / "layout", "gosmall.test/src", ("a",))
    sbom = canonical_json({"schemaVersion": 2, "artifactType": "application/spdx+json", "subject": written.top.to_json()})
    (tmp_path / "layout" / "blobs" / "sha256" / Digest.of(sbom).hex).write_bytes(sbom)
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/spdx+json",
            "digest": str(Digest.of(sbom)),
            "size": len(sbom),
        }
    )
    (tmp_path / "layout" / "index.json").write_text(json.dumps(index))
    assert read_path(tmp_path / "layout") == written
