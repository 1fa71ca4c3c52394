"""Any image, wherever it is, read into the one image model (`image.Image`), for audit.

Four places an image can be, one reader each, one result:

- an OCI image layout directory (`oci-layout`, `index.json`, `blobs/`), or a
  gosmall output directory holding one in `oci/`;
- a docker-archive tar, as `docker save` and gosmall's image.tar write it;
- the local Docker engine, by name: the engine saves the image as a docker
  archive (the docker SDK's `images.get(name).save()`), read like a file;
- `docker://host/repo@sha256:…` (or `:tag`) in a registry, pulled over the
  distribution API with registry.py's client (credentials, deadlines).

Every blob is checked against its digest and every layer against its diff_id,
so what is audited is what the image names. A docker archive carries no
manifest: its platform image gets one made here from its config and layers,
so it has no annotations, which is the truth about such an archive.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..digest import Digest
from ..errors import GosmallError
from ..layer_files import read_regular_file
from ..redact import printable, redact
from ..reference import Reference, ReferenceError, parse_normalized_named
from .model import (
    INDEX_MEDIA_TYPES,
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
    Blob,
    Image,
    Layer,
    MediaTypes,
    Platform,
    PlatformImage,
    canonical_json,
)

if TYPE_CHECKING:  # pragma: no cover
    import docker

    # Imported where a registry is read: reading a layout (every `load`) needs no HTTP client.
    from ..registry.client import RegistryClient

MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REGISTRY_PREFIX = "docker://"
_MANIFEST_TYPES = (MEDIA_MANIFEST, MediaTypes.of("docker").manifest)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_STORE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def read_target(target: str, *, client: RegistryClient | None = None, engine: docker.DockerClient | None = None) -> Image:
    """The image TARGET names: docker://… in a registry, a path on disk, else a name in the Docker engine."""
    if target.startswith(REGISTRY_PREFIX):
        from ..registry.client import RegistryClient

        return read_registry_image(_reference(target[len(REGISTRY_PREFIX) :], target), client or RegistryClient.from_environment())
    path = Path(target).expanduser()
    if os.path.lexists(path):
        return read_path(path)
    if target.startswith((".", "/", "~")) or not _is_reference(target):
        raise GosmallError(
            f"{printable(target)}: no such file or directory. Give an OCI layout directory, an image.tar, an image name, or docker://host/repo@sha256:…."
        )
    if engine is None:
        from ..docker_host import connect

        engine = connect()
    return read_engine_image(engine, target)


def read_path(path: Path) -> Image:
    """An OCI layout directory (or a gosmall output directory with one in oci/), or a docker-archive file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise GosmallError(f"{path}: cannot be read: {exc.strerror}.") from None
    if stat.S_ISDIR(mode):
        for layout in (path, path / "oci"):
            if (layout / "oci-layout").is_file():
                return read_oci_layout(layout)
        raise GosmallError(f"{path} is a directory without an oci-layout file, so it is not an OCI image layout.")
    if not stat.S_ISREG(mode):
        raise GosmallError(f"{path} is neither a regular file nor a directory; give an OCI layout directory or an image.tar.")
    with path.open("rb") as stream:
        return read_docker_archive(stream, str(path))


def _is_reference(text: str) -> bool:
    try:
        parse_normalized_named(text)
    except ReferenceError:
        return False
    return True


def _reference(text: str, target: str) -> Reference:
    try:
        return parse_normalized_named(text)
    except ReferenceError as exc:
        raise GosmallError(f"{printable(target)} is not an image reference: {exc}") from None


class _Store(Protocol):
    """Where manifests and blobs come from, each checked against its digest."""

    @property
    def label(self) -> str: ...

    def manifest(self, digest: Digest) -> bytes: ...
    def blob(self, digest: Digest, size: int) -> bytes: ...


# -- OCI layout -------------------------------------------------------------------


@dataclass(frozen=True)
class _LayoutStore:
    root: Path

    @property
    def label(self) -> str:
        return str(self.root)

    def manifest(self, digest: Digest) -> bytes:
        return self.blob(digest, -1)

    def blob(self, digest: Digest, size: int) -> bytes:
        path = self.root / "blobs" / digest.algorithm / digest.hex
        data, _ = read_regular_file(path, f"OCI layout {self.root}")
        if Digest.of(data) != digest:
            raise GosmallError(f"{path}: its content does not hash to {digest}; the OCI layout is damaged.")
        return data


def read_oci_layout(root: Path) -> Image:
    store = _LayoutStore(root)
    index_path = root / "index.json"
    index = _json(read_regular_file(index_path, "OCI layout")[0], str(index_path))
    try:
        # An artifact beside the image (an SBOM or a signature whose subject it is) is not an image to audit.
        tops = {Digest.parse(d["digest"]): d for d in index["manifests"] if not d.get("artifactType")}
    except _STORE_ERRORS as exc:
        raise GosmallError(f"{index_path} is not an OCI image index ({exc}).") from None
    if not tops:
        raise GosmallError(f"{index_path} names no image.")
    if len(tops) > 1:
        names = sorted(_ref_name(d) or str(digest) for digest, d in tops.items())
        raise GosmallError(
            f"{index_path} names {len(tops)} different images ({', '.join(map(printable, names))}); audit takes one. "
            "Copy the one you mean to a layout of its own (skopeo copy oci:DIR:REF oci:OTHER)."
        )
    digest, descriptor = next(iter(tops.items()))
    return _read_image(store, store.manifest(digest), str(descriptor.get("mediaType", "")), digest)


def _ref_name(descriptor: Any) -> str:
    annotations = descriptor.get("annotations") if isinstance(descriptor, dict) else None
    return str(annotations.get("org.opencontainers.image.ref.name", "")) if isinstance(annotations, dict) else ""


# -- registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class _RegistryStore:
    client: RegistryClient
    ref: Reference

    @property
    def label(self) -> str:
        return str(self.ref)

    def manifest(self, digest: Digest) -> bytes:
        from ..registry.client import pull_manifest

        return pull_manifest(self.client, self.ref, str(digest))[0]

    def blob(self, digest: Digest, size: int) -> bytes:
        from ..registry.client import pull_blob

        return pull_blob(self.client, self.ref, digest, size)


def read_registry_image(ref: Reference, client: RegistryClient) -> Image:
    from ..registry.client import pull_manifest

    where = ref.digest or ref.tag or "latest"
    data, media_type = pull_manifest(client, ref, where)
    return _read_image(_RegistryStore(client, ref), data, media_type, Digest.of(data))


# -- manifests and indexes, wherever they are ---------------------------------------


def _read_image(store: _Store, data: bytes, media_type: str, digest: Digest) -> Image:
    document = _json(data, f"{store.label}: manifest {digest}")
    media_type = media_type or str(document.get("mediaType", ""))
    if media_type not in INDEX_MEDIA_TYPES and "manifests" not in document:
        return Image((_platform_image(store, data, media_type or MEDIA_MANIFEST, digest, None),), None)
    images: list[PlatformImage] = []
    try:
        children = [c for c in document["manifests"] if _is_image(c)]
        for child in children:
            child_digest = Digest.parse(child["digest"])
            platform = Platform(child["platform"]["os"], child["platform"]["architecture"], child["platform"].get("variant", ""))
            images.append(_platform_image(store, store.manifest(child_digest), child["mediaType"], child_digest, platform))
    except _STORE_ERRORS as exc:
        raise GosmallError(f"{store.label}: index {digest} is not an OCI image index ({exc}).") from None
    if not images:
        raise GosmallError(f"{store.label}: index {digest} lists no image manifest for any platform.")
    return Image(tuple(images), Blob(media_type or MEDIA_INDEX, data))


def _is_image(descriptor: Any) -> bool:
    """An image manifest for a real platform; not an attestation (BuildKit's unknown/unknown) or an artifact."""
    platform = descriptor.get("platform") or {}
    return (
        descriptor.get("mediaType") in _MANIFEST_TYPES and not descriptor.get("artifactType") and platform.get("os", "unknown") != "unknown"
    )


def _platform_image(store: _Store, data: bytes, media_type: str, digest: Digest, platform: Platform | None) -> PlatformImage:
    where = f"{store.label}: manifest {digest}"
    document = _json(data, where)
    try:
        config_descriptor = document["config"]
        config = Blob(
            str(config_descriptor["mediaType"]), store.blob(Digest.parse(config_descriptor["digest"]), int(config_descriptor["size"]))
        )
        layers = tuple(
            _layer(store.blob(Digest.parse(d["digest"]), int(d["size"])), str(d["mediaType"]), f"{where}, layer {number}")
            for number, d in enumerate(document["layers"], start=1)
        )
    except _STORE_ERRORS as exc:
        raise GosmallError(f"{where} is not an image manifest ({exc}).") from None
    return _checked(PlatformImage(platform or _config_platform(config.data, where), layers, config, Blob(media_type, data)), where)


def _layer(data: bytes, media_type: str, where: str) -> Layer:
    return Layer(Blob(media_type, data), _uncompressed(data, where))


def _uncompressed(data: bytes, where: str) -> bytes:
    """A layer's tar: by its first bytes, since a docker archive names no media type."""
    if data[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise GosmallError(f"{where} is not readable gzip ({exc}); the image is damaged.") from None
    if data[:4] == _ZSTD_MAGIC:
        raise GosmallError(
            f"{where} is zstd-compressed, which gosmall cannot read yet. Convert it to gzip (skopeo copy --dest-compress-format gzip)."
        )
    return data


def _config_platform(config: bytes, where: str) -> Platform:
    document = _json(config, f"{where}: config")
    return Platform(str(document.get("os", "")), str(document.get("architecture", "")), str(document.get("variant", "") or ""))


def _checked(image: PlatformImage, where: str) -> PlatformImage:
    """The config's rootfs.diff_ids must be the layers' uncompressed digests, or it describes another image."""
    document = _json(image.config.data, f"{where}: config")
    rootfs = document.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if diff_ids != [str(layer.diff_id) for layer in image.layers]:
        raise GosmallError(
            f"{where}: the config's rootfs.diff_ids do not match its layers' uncompressed digests; the image is damaged or assembled wrong."
        )
    return image


def _json(data: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise GosmallError(f"{where} is not JSON ({redact(str(exc), limit=100)}).") from None
    if not isinstance(document, dict):
        raise GosmallError(f"{where} is not a JSON object.")
    return document


# -- docker archive and the engine ------------------------------------------------------


def read_docker_archive(stream: IO[bytes], label: str) -> Image:
    """One image from a docker-archive tar (`docker save`, gosmall's image.tar), from a seekable stream."""
    try:
        with tarfile.open(fileobj=stream, mode="r:*") as archive:
            entries = _json_list(_member(archive, "manifest.json", label), f"{label}: manifest.json")
            configs = {str(e.get("Config")) for e in entries if isinstance(e, dict)}
            if len(configs) != 1:
                raise GosmallError(f"{label} holds {len(configs)} images; audit takes one. Save one image per archive (docker save NAME).")
            entry = entries[0]
            config = _member(archive, str(entry["Config"]), label)
            layers = tuple(_archive_layer(_member(archive, str(name), label), f"{label}: {name}") for name in entry["Layers"])
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise GosmallError(f"{label} is not a readable docker archive ({exc}).") from None
    except _STORE_ERRORS as exc:
        raise GosmallError(f"{label}: manifest.json does not describe an image ({exc}).") from None
    config_blob = Blob(MEDIA_CONFIG, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_blob.descriptor().to_json(),
        "layers": [layer.blob.descriptor().to_json() for layer in layers],
    }
    image = PlatformImage(_config_platform(config, label), layers, config_blob, Blob(MEDIA_MANIFEST, canonical_json(manifest)))
    return Image((_checked(image, label),), None)


def _archive_layer(data: bytes, where: str) -> Layer:
    # `docker save` writes layers as tar; an engine with the containerd store keeps them gzip-compressed.
    return _layer(data, MEDIA_LAYER_GZIP if data[:2] == _GZIP_MAGIC else MEDIA_LAYER_TAR, where)


def _member(archive: tarfile.TarFile, name: str, label: str) -> bytes:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise GosmallError(
            f"{label} has no {printable(name)}, which its manifest.json names; it is not a complete docker archive."
        ) from None
    # extractfile follows a link to another member, as `docker save` writes for a layer two images share.
    stream = archive.extractfile(member)
    if stream is None:
        raise GosmallError(f"{label}: {printable(name)} is not a file in the archive.")
    return stream.read()


def _json_list(data: bytes, where: str) -> list[Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise GosmallError(f"{where} is not JSON ({redact(str(exc), limit=100)}).") from None
    if not isinstance(document, list) or not document:
        raise GosmallError(f"{where} is not a list of images.")
    return document


def read_engine_image(client: docker.DockerClient, name: str) -> Image:
    """The image the Docker engine has under `name` (a name, name:tag, ID or name@digest), saved and read as an archive."""
    import requests
    from docker.errors import DockerException, ImageNotFound

    label = f"{printable(name)} (Docker engine)"
    try:
        image = client.images.get(name)
        with tempfile.TemporaryFile(prefix="gosmall-audit-") as stream:
            _write_all(stream, image.save())
            stream.seek(0)
            return read_docker_archive(stream, label)
    except ImageNotFound:
        raise GosmallError(
            f"{printable(name)}: no such file or directory, and the Docker engine has no image of that name. "
            "Give an OCI layout directory, an image.tar, a local image's name (docker images), or docker://host/repo@sha256:…."
        ) from None
    except (DockerException, requests.RequestException) as exc:
        raise GosmallError(f"{label}: the engine could not save the image: {redact(str(exc))}.") from None


def _write_all(stream: IO[bytes], chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        stream.write(chunk)
