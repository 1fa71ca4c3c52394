"""Any image, wherever it is, read into the one image model (`image.Image`), for audit.

Four places an image can be, one reader each, one result:

- an OCI image layout directory (`oci-layout`, `index.json`, `blobs/`), or a
  gosmall output directory holding one in `oci/`;
- a docker-archive tar, as `docker save` and gosmall's image.tar write it;
- the local Docker engine, by name: the engine saves the image as a docker
  archive (the docker SDK's `images.get(name).save()`), read as it streams;
- `docker://host/repo@sha256:…` (or `:tag`) in a registry, pulled over the
  distribution API with registry.py's client (credentials, deadlines).

Every blob is checked against its digest and every layer against its diff_id,
so what is audited is what the image names. A docker archive carries no
manifest: its platform image gets one made here from its config and layers,
so it has no annotations, which is the truth about such an archive.

An image that is not ours is read as untrusted input. No blob, and no layer
once decompressed (gzip, or zstd as buildx and podman write it), may be larger
than `max_layer_size` (`DEFAULT_MAX_LAYER_SIZE` unless the caller says
otherwise): a layer is decompressed once only to count its bytes, and kept
only when the count stays under the cap (decompressed again, unless it was
small enough to keep from the first pass), so a small layer that expands to
gigabytes of zeros costs CPU and neither memory nor disk. The engine's
`docker save` stream is read as it comes, never spooled to disk.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import zstandard

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
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
REGISTRY_PREFIX = "docker://"
_MANIFEST_TYPES = (MEDIA_MANIFEST, MediaTypes.of("docker").manifest)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_STORE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)
# A layout's blobs, a layer's tar and every docker-archive member are held in memory, so each is capped.
# 4 GiB: well above the largest layers real images ship, well below what a CI machine's memory holds.
DEFAULT_MAX_LAYER_SIZE = 4 * 2**30
_CHUNK = 2**20  # what one read of a decompressing stream asks for
_KEPT_WHILE_COUNTING = 32 * 2**20  # a layer this small is decompressed once; a bomb costs at most this much memory


def size_text(size: int) -> str:
    """A byte count as a user writes it back to --max-layer-size: "4GiB", "512MiB", else bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit} ({size} bytes)"
    return f"{size} bytes"


def _over_cap(what: str, limit: int) -> GosmallError:
    return GosmallError(
        f"{what} is larger than {size_text(limit)}, the most gosmall lets one layer or blob of an image decompress to, "
        "so it stopped reading there. An image that is not yours can be built to fill memory or disk this way. If you "
        "trust the image and its layers really are that large, raise the cap with --max-layer-size or "
        "GOSMALL_MAX_LAYER_SIZE (e.g. 16GiB)."
    )


def read_target(
    target: str,
    *,
    client: RegistryClient | None = None,
    engine: docker.DockerClient | None = None,
    max_layer_size: int = DEFAULT_MAX_LAYER_SIZE,
) -> Image:
    """The image TARGET names: docker://… in a registry, a path on disk, else a name in the Docker engine."""
    if target.startswith(REGISTRY_PREFIX):
        from ..registry.client import RegistryClient

        ref = _reference(target[len(REGISTRY_PREFIX) :], target)
        return read_registry_image(ref, client or RegistryClient.from_environment(), max_layer_size=max_layer_size)
    path = Path(target).expanduser()
    if os.path.lexists(path):
        return read_path(path, max_layer_size=max_layer_size)
    if target.startswith((".", "/", "~")) or not _is_reference(target):
        raise GosmallError(
            f"{printable(target)}: no such file or directory. Give an OCI layout directory, an image.tar, an image name, or docker://host/repo@sha256:…."
        )
    if engine is None:
        from ..docker_host import connect

        engine = connect()
    return read_engine_image(engine, target, max_layer_size=max_layer_size)


def read_path(path: Path, *, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> Image:
    """An OCI layout directory (or a gosmall output directory with one in oci/), or a docker-archive file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise GosmallError(f"{path}: cannot be read: {exc.strerror}.") from None
    if stat.S_ISDIR(mode):
        for layout in (path, path / "oci"):
            if (layout / "oci-layout").is_file():
                return read_oci_layout(layout, max_layer_size=max_layer_size)
        raise GosmallError(f"{path} is a directory without an oci-layout file, so it is not an OCI image layout.")
    if not stat.S_ISREG(mode):
        raise GosmallError(f"{path} is neither a regular file nor a directory; give an OCI layout directory or an image.tar.")
    with path.open("rb") as stream:
        return read_docker_archive(stream, str(path), max_layer_size=max_layer_size)


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
    @property
    def limit(self) -> int: ...

    def manifest(self, digest: Digest) -> bytes: ...
    def blob(self, digest: Digest, size: int) -> bytes: ...


# -- OCI layout -------------------------------------------------------------------


@dataclass(frozen=True)
class _LayoutStore:
    root: Path
    limit: int

    @property
    def label(self) -> str:
        return str(self.root)

    def manifest(self, digest: Digest) -> bytes:
        return self.blob(digest, -1)

    def blob(self, digest: Digest, size: int) -> bytes:
        path = self.root / "blobs" / digest.algorithm / digest.hex
        data = _read_capped(path, f"OCI layout {self.root}", self.limit)
        if Digest.of(data) != digest:
            raise GosmallError(f"{path}: its content does not hash to {digest}; the OCI layout is damaged.")
        return data


def _read_capped(path: Path, what: str, limit: int) -> bytes:
    """A regular file of a layout, refused before it is read when it is larger than the cap."""
    try:
        on_disk = os.lstat(path).st_size
    except OSError:
        on_disk = 0  # read_regular_file says what is wrong with it
    if on_disk > limit:
        raise _over_cap(f"{path} ({on_disk} bytes)", limit)
    return read_regular_file(path, what)[0]


def read_oci_layout(root: Path, *, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> Image:
    store = _LayoutStore(root, max_layer_size)
    index_path = root / "index.json"
    index = _json(_read_capped(index_path, "OCI layout", max_layer_size), str(index_path))
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
    limit: int

    @property
    def label(self) -> str:
        return str(self.ref)

    def manifest(self, digest: Digest) -> bytes:
        from ..registry.client import pull_manifest

        return pull_manifest(self.client, self.ref, str(digest))[0]

    def blob(self, digest: Digest, size: int) -> bytes:
        from ..registry.client import pull_blob

        return pull_blob(self.client, self.ref, digest, size)


def read_registry_image(ref: Reference, client: RegistryClient, *, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> Image:
    from ..registry.client import pull_manifest

    where = ref.digest or ref.tag or "latest"
    data, media_type = pull_manifest(client, ref, where)
    return _read_image(_RegistryStore(client, ref, max_layer_size), data, media_type, Digest.of(data))


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
        config = Blob(str(config_descriptor["mediaType"]), _capped_blob(store, config_descriptor, f"{where}, config"))
        layers = tuple(_read_layer(store, d, f"{where}, layer {number}") for number, d in enumerate(document["layers"], start=1))
    except _STORE_ERRORS as exc:
        raise GosmallError(f"{where} is not an image manifest ({exc}).") from None
    return _checked(PlatformImage(platform or _config_platform(config.data, where), layers, config, Blob(media_type, data)), where)


def _read_layer(store: _Store, descriptor: Any, where: str) -> Layer:
    where = f"{where} ({Digest.parse(descriptor['digest'])})"
    return _layer(_capped_blob(store, descriptor, where), str(descriptor["mediaType"]), where, store.limit)


def _capped_blob(store: _Store, descriptor: Any, where: str) -> bytes:
    """The blob a descriptor names, refused before it is fetched when its stated size is over the cap."""
    size = int(descriptor["size"])
    if size > store.limit:
        raise _over_cap(f"{where} is {size} bytes compressed, so it", store.limit)
    return store.blob(Digest.parse(descriptor["digest"]), size)


def _layer(data: bytes, media_type: str, where: str, limit: int) -> Layer:
    return Layer(Blob(media_type, data), _uncompressed(data, where, limit))


class _Reader(Protocol):
    """What a decompressing stream offers: gzip's GzipFile, zstandard's stream_reader, the engine's chunks."""

    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


def _decompressing(data: bytes) -> tuple[str, Callable[[], _Reader]] | None:
    """The compression a layer's first bytes name, and a fresh stream of its decompressed bytes; None for a plain tar."""
    if data[:2] == _GZIP_MAGIC:
        return "gzip", lambda: gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
    if data[:4] == _ZSTD_MAGIC:
        # The decompressor's default window limit (128 MiB) also refuses a frame that asks for more memory than that.
        # Every frame is read: zstd, like gzip, may concatenate them.
        return "zstd", lambda: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return None


def _uncompressed(data: bytes, where: str, limit: int) -> bytes:
    """A layer's tar, at most `limit` bytes: by its first bytes, since a docker archive names no media type."""
    compression = _decompressing(data)
    if compression is None:
        if len(data) > limit:
            raise _over_cap(where, limit)
        return data
    kind, open_stream = compression
    from ..libdeflate import gunzip_one_member  # ctypes: loaded when a layer is read, not when this module is

    # One gzip member (what gosmall and most builders write) is decompressed in one call, three times as fast as
    # zlib's stream; anything else is read by the counting stream below.
    if kind == "gzip" and (whole := gunzip_one_member(data, min(limit, _KEPT_WHILE_COUNTING))) is not None:
        return whole
    try:
        # Counted first, kept second: a layer that expands past the cap costs CPU only, never memory. One that
        # ends within _KEPT_WHILE_COUNTING (most do) is kept from the first pass and not decompressed again.
        size = 0
        kept: list[bytes] = []
        with contextlib.closing(open_stream()) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _over_cap(f"{where}, once decompressed,", limit)
                if size <= _KEPT_WHILE_COUNTING:
                    kept.append(chunk)
                else:
                    kept.clear()
        if size <= _KEPT_WHILE_COUNTING:
            return b"".join(kept)
        with contextlib.closing(open_stream()) as stream:
            return stream.read()
    except (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError) as exc:
        raise GosmallError(f"{where} is not readable {kind} ({exc}); the image is damaged.") from None


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


def read_docker_archive(stream: IO[bytes], label: str, *, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> Image:
    """One image from a docker-archive tar (`docker save`, gosmall's image.tar), from a seekable stream."""
    try:
        with tarfile.open(fileobj=stream, mode="r:*") as archive:
            return _archive_image(lambda name: _member(archive, name, label, max_layer_size), label, max_layer_size)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise GosmallError(f"{label} is not a readable docker archive ({exc}).") from None


def _archive_image(member: Callable[[str], bytes], label: str, limit: int) -> Image:
    """The image a docker archive's manifest.json describes, its members read through `member`."""
    try:
        entries = _json_list(member("manifest.json"), f"{label}: manifest.json")
        configs = {str(e.get("Config")) for e in entries if isinstance(e, dict)}
        if len(configs) != 1:
            raise GosmallError(f"{label} holds {len(configs)} images; audit takes one. Save one image per archive (docker save NAME).")
        entry = entries[0]
        config = member(str(entry["Config"]))
        layers = tuple(
            _archive_layer(member(str(name)), f"{label}: layer {number} ({printable(str(name))})", limit)
            for number, name in enumerate(entry["Layers"], start=1)
        )
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


def _archive_layer(data: bytes, where: str, limit: int) -> Layer:
    # `docker save` writes layers as tar; an engine with the containerd store keeps them compressed.
    media_type = {"gzip": MEDIA_LAYER_GZIP, "zstd": MEDIA_LAYER_ZSTD}.get((_decompressing(data) or ("tar",))[0], MEDIA_LAYER_TAR)
    return _layer(data, media_type, where, limit)


def _member(archive: tarfile.TarFile, name: str, label: str, limit: int) -> bytes:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise _no_member(label, name) from None
    # extractfile follows a link to another member, as `docker save` writes for a layer two images share.
    stream = archive.extractfile(member)
    if stream is None:
        raise GosmallError(f"{label}: {printable(name)} is not a file in the archive.")
    size = stream.seek(0, io.SEEK_END)  # the linked member's size, for a link
    if size > limit:
        raise _over_cap(f"{label}: {printable(name)} ({size} bytes)", limit)
    stream.seek(0)
    return stream.read()


def _no_member(label: str, name: str) -> GosmallError:
    return GosmallError(f"{label} has no {printable(name)}, which its manifest.json names; it is not a complete docker archive.")


def _json_list(data: bytes, where: str) -> list[Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise GosmallError(f"{where} is not JSON ({redact(str(exc), limit=100)}).") from None
    if not isinstance(document, list) or not document:
        raise GosmallError(f"{where} is not a list of images.")
    return document


def read_engine_image(client: docker.DockerClient, name: str, *, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> Image:
    """The image the Docker engine has under `name` (a name, name:tag, ID or name@digest), saved and read as an archive.

    The saved archive is read as the engine sends it, each member checked against the cap before it is read,
    so nothing is written to disk and an oversized layer is refused at its header.
    """
    import requests
    from docker.errors import DockerException, ImageNotFound

    label = f"{printable(name)} (Docker engine)"
    try:
        image = client.images.get(name)
        members = _streamed_members(_Chunks(image.save()), label, max_layer_size)
    except ImageNotFound:
        raise GosmallError(
            f"{printable(name)}: no such file or directory, and the Docker engine has no image of that name. "
            "Give an OCI layout directory, an image.tar, a local image's name (docker images), or docker://host/repo@sha256:…."
        ) from None
    except (DockerException, requests.RequestException) as exc:
        raise GosmallError(f"{label}: the engine could not save the image: {redact(str(exc))}.") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise GosmallError(f"{label}: the engine's saved image is not a readable docker archive ({exc}).") from None

    def member(wanted: str) -> bytes:
        if wanted not in members:
            raise _no_member(label, wanted)
        return members[wanted]

    return _archive_image(member, label, max_layer_size)


def _streamed_members(stream: io.RawIOBase, label: str, limit: int) -> dict[str, bytes]:
    """Every regular member of a tar read front to back (the manifest can come last), links resolved to their targets."""
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for entry in archive:
            if entry.isreg():
                if entry.size > limit:
                    raise _over_cap(f"{label}: {printable(entry.name)} ({entry.size} bytes)", limit)
                data = archive.extractfile(entry)
                files[entry.name] = data.read() if data is not None else b""
            elif entry.islnk():
                links[entry.name] = entry.linkname
            elif entry.issym():
                links[entry.name] = posixpath.normpath(posixpath.join(posixpath.dirname(entry.name), entry.linkname))
    for name, target in links.items():
        for _ in range(len(links) + 1):  # a chain of links ends at a file within as many hops as there are links
            if target in files or target not in links:
                break
            target = links[target]
        if target in files:
            files[name] = files[target]
    return files


class _Chunks(io.RawIOBase):
    """The engine's `save()` chunks as a readable stream, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count
