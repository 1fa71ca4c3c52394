"""Stage 5: binary + runtime files -> layer, config, manifest (and index), with no clock and no host."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from gosmall.build.assemble import PlatformParts, assemble, build_layer_tar, compress_layer, layer_entries
from gosmall.build.compile import Binary
from gosmall.build.runtime_files import RuntimeFiles
from gosmall.build.source import SourceInfo
from gosmall.config import ImageConfig, parse_project
from gosmall.errors import GosmallError
from gosmall.images.model import MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_MANIFEST, Platform
from gosmall.layer_files import FileEntry
from tests.oci_schema import errors

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
SOURCE = SourceInfo("v1.2.3", "0123456789abcdef0123456789abcdef01234567", "https://example.com/app.git", 1767323045)

RUNTIME = RuntimeFiles(
    (
        FileEntry("/usr/share/zoneinfo.zip", "file", 0o444, "tzdata", data=b"PK zones"),
        FileEntry("/etc/passwd", "file", 0o444, "users", data=b"root:x:0:0::/:\n"),
        FileEntry("/tmp", "dir", 0o1777, "dirs"),
        FileEntry("/home/nonroot", "dir", 0o700, "dirs", uid=65532, gid=65532),
        FileEntry("/srv/a-b", "file", 0o444, "files", data=b"dash"),
        FileEntry("/srv/a/x", "file", 0o555, "files", data=b"deep"),
        FileEntry("/srv/a.txt", "file", 0o444, "files", data=b"dot"),
        FileEntry("/usr/share/zoneinfo/UTC", "symlink", 0o777, "tzdata", link_target="Etc/UTC"),
    ),
    (("ZONEINFO", "/usr/share/zoneinfo.zip"),),
)


def image_config(root: Path, **keys: Any) -> ImageConfig:
    (root / "app").mkdir(parents=True, exist_ok=True)
    table = {"images": {"app": {"package": "app", "repository": "example.com/app", **keys}}}
    return parse_project(table, root / "pyproject.toml").images[0]


def binary(tmp_path: Path, platform: Platform = AMD64, data: bytes = b"\x7fELF not really a program") -> Binary:
    path = tmp_path / str(platform).replace("/", "_") / "app"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Binary(path, "app", platform, len(data), False)


def parts(tmp_path: Path, *platforms: Platform, runtime: RuntimeFiles = RUNTIME) -> tuple[PlatformParts, ...]:
    return tuple(PlatformParts(binary(tmp_path, p, f"binary for {p}".encode()), runtime) for p in platforms or (AMD64,))


def members(tar: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return archive.getmembers()


def config_of(image_manifest_config: bytes) -> dict[str, Any]:
    return json.loads(image_manifest_config)


# -- the layer ------------------------------------------------------------------


def test_layer_paths_are_sorted_with_parents_added_before_children(tmp_path: Path) -> None:
    (part,) = parts(tmp_path)
    entries = layer_entries(image_config(tmp_path), part)
    paths = [e.path for e in entries]
    assert paths == [
        "/app", "/etc", "/etc/passwd", "/home", "/home/nonroot", "/srv", "/srv/a", "/srv/a/x", "/srv/a-b", "/srv/a.txt",
        "/tmp", "/usr", "/usr/share", "/usr/share/zoneinfo", "/usr/share/zoneinfo/UTC", "/usr/share/zoneinfo.zip",
    ]  # fmt: skip
    seen: set[str] = set()
    for path in paths:
        assert all(str(p) in seen for p in PurePosixPath(path).parents if str(p) != "/"), path
        seen.add(path)
    added = {e.path: e for e in entries}
    assert (added["/usr/share"].kind, added["/usr/share"].mode, added["/usr/share"].uid) == ("dir", 0o755, 0)
    assert (added["/app"].mode, added["/app"].data) == (0o555, b"binary for linux/amd64")


def test_the_layer_tar_fixes_owner_mode_and_time_and_names_nobody(tmp_path: Path) -> None:
    (part,) = parts(tmp_path)
    tar = build_layer_tar(layer_entries(image_config(tmp_path), part), 86400)
    infos = {m.name: m for m in members(tar)}
    assert set(infos) == {e.path.lstrip("/") for e in layer_entries(image_config(tmp_path), part)}
    for member in infos.values():
        assert member.mtime == 86400
        assert member.uname == member.gname == ""
        assert not {"atime", "ctime", "mtime"} & set(member.pax_headers)
    assert (infos["home/nonroot"].uid, infos["home/nonroot"].gid, infos["home/nonroot"].mode) == (65532, 65532, 0o700)
    assert (infos["tmp"].mode, infos["tmp"].isdir()) == (0o1777, True)
    assert (infos["app"].mode, infos["app"].uid, infos["app"].isreg()) == (0o555, 0, True)
    assert infos["usr/share/zoneinfo/UTC"].issym() and infos["usr/share/zoneinfo/UTC"].linkname == "Etc/UTC"


def test_a_path_longer_than_ustar_allows_gets_only_a_path_record(tmp_path: Path) -> None:
    long = "/srv/" + "/".join(["d" * 60] * 3) + "/file"
    entries = (FileEntry(long, "file", 0o444, "files", data=b"x"),)
    (member,) = members(build_layer_tar(entries, 0))
    assert member.name == long.lstrip("/")
    assert set(member.pax_headers) <= {"path"}


def test_the_same_inputs_give_the_same_layer_bytes_in_any_order(tmp_path: Path) -> None:
    (part,) = parts(tmp_path)
    shuffled = PlatformParts(part.binary, RuntimeFiles(tuple(reversed(RUNTIME.entries)), RUNTIME.env))
    image = image_config(tmp_path)
    first = build_layer_tar(layer_entries(image, part), 0)
    assert build_layer_tar(layer_entries(image, shuffled), 0) == first
    assert compress_layer(first).data == compress_layer(first).data


def test_the_gzip_header_carries_no_time_and_the_layer_decompresses_to_the_tar(tmp_path: Path) -> None:
    (part,) = parts(tmp_path)
    tar = build_layer_tar(layer_entries(image_config(tmp_path), part), 1767323045)
    blob = compress_layer(tar)
    assert blob.media_type == MEDIA_LAYER_GZIP
    assert blob.data[:2] == b"\x1f\x8b" and blob.data[4:8] == b"\0\0\0\0"
    assert gzip.decompress(blob.data) == tar


def test_the_gzip_member_header_is_fixed_and_the_stream_is_one_member() -> None:
    data = b"".join(f"{i:08d} {i * i % 9973}\n".encode() for i in range(50000))
    blob = compress_layer(data)
    # deflate, no FTEXT/FHCRC/FEXTRA/FNAME/FCOMMENT, mtime 0, XFL 0, OS 255 ("unknown"): nothing of the host.
    assert blob.data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert blob.data[-8:] == struct.pack("<II", zlib.crc32(data), len(data))
    decompressor = zlib.decompressobj(wbits=31)
    assert decompressor.decompress(blob.data) == data and decompressor.eof and decompressor.unused_data == b""


def test_the_pinned_compressor_gives_the_bytes_it_gave_when_it_was_chosen() -> None:
    """A tripwire: another deflate version or level changes every layer digest, and must do so on purpose.

    If this fails after changing the pin in pyproject.toml or GZIP_LEVEL, update this digest, the size
    table in the README and benchmarks/results.md, and expect every gosmall.lock to need `gosmall lock`.
    """
    data = b"".join(f"{i:08d} {i * i % 9973}\n".encode() for i in range(50000))
    blob = compress_layer(data)
    assert (str(blob.digest), blob.size) == ("sha256:e1cd42ffd4d9adb4f9142eb4715353c929f7cb1440f084c5d0877b3bc1a66666", 216750)


# -- config, manifest, index ---------------------------------------------------------


def test_the_config_carries_what_the_user_configured(tmp_path: Path) -> None:
    image = image_config(
        tmp_path,
        user="1000:2000",
        args=["serve", "--port", "8080"],
        env={"B": "2", "A": "1", "ZONEINFO": "/elsewhere"},
        ports=[8080, "53/udp"],
        labels={"org.example.team": "core"},
        healthcheck=["/app", "health"],
        workdir="/srv",
    )
    result = assemble(image, parts(tmp_path), SOURCE)
    document = config_of(result.manifests[0].config.data)
    assert errors("config-schema.json", document) == []
    config = document["config"]
    assert config["User"] == "1000:2000"
    assert config["Entrypoint"] == ["/app"]
    assert config["Cmd"] == ["serve", "--port", "8080"]
    assert config["Env"] == ["A=1", "B=2", "ZONEINFO=/usr/share/zoneinfo.zip"]  # the runtime's own value wins
    assert config["ExposedPorts"] == {"53/udp": {}, "8080/tcp": {}}
    assert config["Labels"] == {"org.example.team": "core", **OCI_LABELS}
    assert config["Healthcheck"] == {"Test": ["CMD", "/app", "health"], "Interval": 5_000_000_000, "Timeout": 3_000_000_000, "Retries": 3}
    assert config["WorkingDir"] == "/srv"
    assert document["created"] == "2026-01-02T03:04:05Z"
    assert document["history"] == [
        {"created": "2026-01-02T03:04:05Z", "created_by": "gosmall: static app and its runtime files on scratch"}
    ]
    assert (document["os"], document["architecture"]) == ("linux", "amd64") and "variant" not in document
    assert document["rootfs"] == {"type": "layers", "diff_ids": [str(result.manifests[0].layers[0].diff_id)]}


def test_defaults_leave_out_what_was_not_configured(tmp_path: Path) -> None:
    result = assemble(image_config(tmp_path), parts(tmp_path), SOURCE)
    config = config_of(result.manifests[0].config.data)["config"]
    assert config == {
        "User": "65532:65532",
        "Entrypoint": ["/app"],
        "Env": ["ZONEINFO=/usr/share/zoneinfo.zip"],
        "WorkingDir": "/",
        "Labels": OCI_LABELS,
    }


# Issue 18: label tooling (`docker image ls --filter label=`, a registry linking a package to its
# source) reads the config's Labels, not the manifest's annotations.
OCI_LABELS = {
    "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
    "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
    "org.opencontainers.image.source": "https://example.com/app.git",
    "org.opencontainers.image.version": "v1.2.3",
}


def test_no_env_is_written_when_there_is_nothing_to_set(tmp_path: Path) -> None:
    no_env = RuntimeFiles(RUNTIME.entries, ())
    result = assemble(image_config(tmp_path, tzdata="none"), parts(tmp_path, runtime=no_env), SOURCE)
    assert "Env" not in config_of(result.manifests[0].config.data)["config"]


def test_a_user_label_that_contradicts_the_source_names_both(tmp_path: Path) -> None:
    key = "org.opencontainers.image.version"
    with pytest.raises(GosmallError, match=f"labels.{key} = 'v9', but gosmall sets {key} to 'v1.2.3'"):
        assemble(image_config(tmp_path, labels={key: "v9"}), parts(tmp_path), SOURCE)
    same = assemble(image_config(tmp_path, labels={key: "v1.2.3"}), parts(tmp_path), SOURCE)
    assert config_of(same.manifests[0].config.data)["config"]["Labels"][key] == "v1.2.3"


def test_history_says_a_static_binary_is_static(tmp_path: Path) -> None:
    result = assemble(image_config(tmp_path), parts(tmp_path), SOURCE)
    (entry,) = config_of(result.manifests[0].config.data)["history"]
    assert entry["created_by"] == "gosmall: static app and its runtime files on scratch"


def test_an_entrypoint_replaces_the_binary(tmp_path: Path) -> None:
    result = assemble(image_config(tmp_path, entrypoint=["/app", "--json"]), parts(tmp_path), SOURCE)
    assert config_of(result.manifests[0].config.data)["config"]["Entrypoint"] == ["/app", "--json"]


def test_one_platform_is_a_manifest_without_an_index(tmp_path: Path) -> None:
    result = assemble(image_config(tmp_path), parts(tmp_path), SOURCE)
    assert result.index is None
    assert result.top.media_type == MEDIA_MANIFEST
    assert result.digest == result.manifests[0].manifest.digest
    manifest = json.loads(result.manifests[0].manifest.data)
    assert errors("image-manifest-schema.json", manifest) == []
    assert manifest["config"]["digest"] == str(result.manifests[0].config.digest)
    assert manifest["layers"] == [result.manifests[0].layers[0].blob.descriptor().to_json()]
    assert manifest["annotations"] == {
        "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
        "org.opencontainers.image.version": "v1.2.3",
        "org.opencontainers.image.revision": SOURCE.revision,
        "org.opencontainers.image.source": "https://example.com/app.git",
    }


def test_outside_git_no_revision_or_source_is_claimed(tmp_path: Path) -> None:
    result = assemble(image_config(tmp_path), parts(tmp_path), SourceInfo("dev", "", "", 0))
    annotations = json.loads(result.manifests[0].manifest.data)["annotations"]
    assert annotations == {"org.opencontainers.image.created": "1970-01-01T00:00:00Z", "org.opencontainers.image.version": "dev"}


def test_two_platforms_are_an_index_with_platform_descriptors(tmp_path: Path) -> None:
    arm_v7 = Platform.parse("linux/arm/v7")
    result = assemble(image_config(tmp_path), parts(tmp_path, AMD64, ARM64, arm_v7), SOURCE)
    assert result.index is not None and result.top.media_type == MEDIA_INDEX
    index = json.loads(result.index.data)
    assert errors("image-index-schema.json", index) == []
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
    ]
    for descriptor, platform_image in zip(index["manifests"], result.manifests):
        assert descriptor["digest"] == str(platform_image.manifest.digest)
        assert descriptor["size"] == platform_image.manifest.size
    assert config_of(result.manifests[2].config.data)["variant"] == "v7"
    assert len({m.layers[0].diff_id for m in result.manifests}) == 3


def test_the_digest_is_reproducible_and_follows_the_epoch(tmp_path: Path) -> None:
    image = image_config(tmp_path)
    first = assemble(image, parts(tmp_path, AMD64, ARM64), SOURCE)
    again = assemble(image, parts(tmp_path, AMD64, ARM64), SOURCE)
    later = assemble(image, parts(tmp_path, AMD64, ARM64), replace(SOURCE, epoch=SOURCE.epoch + 1))
    assert again.digest == first.digest
    assert later.digest != first.digest
    assert later.manifests[0].layers[0].diff_id != first.manifests[0].layers[0].diff_id  # the tar's mtimes moved too


def test_the_digest_follows_the_binary(tmp_path: Path) -> None:
    image = image_config(tmp_path)
    one = assemble(image, (PlatformParts(binary(tmp_path / "a", data=b"one"), RUNTIME),), SOURCE)
    two = assemble(image, (PlatformParts(binary(tmp_path / "b", data=b"two"), RUNTIME),), SOURCE)
    assert one.digest != two.digest


def test_every_blob_is_listed_once(tmp_path: Path) -> None:
    result = assemble(image_config(tmp_path), parts(tmp_path, AMD64, ARM64), SOURCE)
    blobs = result.blobs()
    assert len(blobs) == 2 * 3 + 1
    assert [b.digest for b in blobs] == sorted(b.digest for b in blobs)


@pytest.mark.parametrize("epoch", [0, 1767323045])
def test_created_is_rfc3339_utc(tmp_path: Path, epoch: int) -> None:
    result = assemble(image_config(tmp_path), parts(tmp_path), replace(SOURCE, epoch=epoch))
    created = config_of(result.manifests[0].config.data)["created"]
    assert created == {0: "1970-01-01T00:00:00Z", 1767323045: "2026-01-02T03:04:05Z"}[epoch]
