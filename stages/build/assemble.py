"""Stage 5: turn a binary and its runtime files into an OCI image, in memory.

No clock, no host names, no daemon: one layer tar with sorted paths and
fixed owners, modes and mtimes; gzip through a pinned libdeflate (compression.py:
its bytes are part of the digest and do not depend on the CPU); canonical JSON for
config, manifest and index.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ImageConfig
from ..digest import Digest
from ..errors import GosmallError
from ..images.model import MEDIA_LAYER_GZIP, Blob, Image, Layer, MediaTypes, Platform, PlatformImage, canonical_json
from ..layer_files import EXECUTABLE, FileEntry, merge_entries
from .cache import compressed_layer
from .compile import Binary
from .compression import compressor_id, gunzip, gzip
from .runtime_files import RuntimeFiles
from .source import SourceInfo, rfc3339

HEALTHCHECK_INTERVAL_NS = 5_000_000_000
HEALTHCHECK_TIMEOUT_NS = 3_000_000_000


@dataclass(frozen=True)
class PlatformParts:
    binary: Binary
    runtime: RuntimeFiles


# Called with a platform's config and uncompressed layer as soon as they exist, before the layer is compressed:
# all `docker load` needs (pipeline.py loads the image into the engine meanwhile).
Ready = Callable[[Platform, Blob, bytes], None]


def assemble(image: ImageConfig, parts: tuple[PlatformParts, ...], source: SourceInfo, *, ready: Ready | None = None) -> Image:
    manifests = tuple(_platform_image(image, p, source, ready) for p in parts)
    if len(manifests) == 1:
        return Image(manifests, None)
    return Image(manifests, index_blob(manifests, source, MediaTypes.of(image.format)))


def index_blob(manifests: tuple[PlatformImage, ...], source: SourceInfo, media: MediaTypes) -> Blob:
    """The multi-platform index (an OCI index or a Docker manifest list) over the platforms' manifests."""
    index: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media.index,
        "manifests": [m.manifest.descriptor(platform=m.platform).to_json() for m in manifests],
    }
    if media.annotations:
        index["annotations"] = _annotations(source)
    return Blob(media.index, canonical_json(index))


def layer_entries(image: ImageConfig, part: PlatformParts) -> tuple[FileEntry, ...]:
    """Every path in the layer, parents included, sorted, each once; the entrypoint must be one of them."""
    binary = FileEntry(f"/{part.binary.name}", "file", EXECUTABLE, "binary", data=part.binary.path.read_bytes(), origin="go build")
    entries = merge_entries((*part.runtime.entries, binary))
    if image.entrypoint:
        _check_entrypoint(image, entries, binary.path)
    return entries


def _check_entrypoint(image: ImageConfig, entries: tuple[FileEntry, ...], binary: str) -> None:
    """A scratch image has no shell and no PATH: the entrypoint must name an executable file in the layer."""
    program = image.entrypoint[0]
    by_path = {e.path: e for e in entries}
    entry = by_path.get(program)
    seen: set[str] = set()
    while entry is not None and entry.kind == "symlink" and entry.path not in seen:
        seen.add(entry.path)
        entry = by_path.get(posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.link_target)))
    if entry is None or entry.kind != "file" or not entry.mode & 0o111:
        files = sorted(e.path for e in entries if e.kind == "file" and e.mode & 0o111)
        raise GosmallError(
            f"[tool.gosmall.images.{image.name}] entrypoint: {program!r} is not an executable file in the image; "
            f"the executables there are: {', '.join(files)}. Point entrypoint at one of them, or remove it to run {binary}."
        )


def build_layer_tar(entries: tuple[FileEntry, ...], epoch: int) -> bytes:
    out = io.BytesIO()
    # PAX only where USTAR cannot hold a field; no atime/ctime records are ever written.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.lstrip("/") + ("/" if entry.kind == "dir" else ""))
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""  # no host user names
            info.mtime = epoch
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link_target
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


def compress_layer(tar: bytes, media_type: str = MEDIA_LAYER_GZIP) -> Blob:
    # An unchanged layer comes from gosmall's cache, checked against its diff_id before it is used.
    return Blob(media_type, compressed_layer(tar, Digest.of(tar), compressor_id(), gzip, gunzip))


def _platform_image(image: ImageConfig, part: PlatformParts, source: SourceInfo, ready: Ready | None = None) -> PlatformImage:
    media = MediaTypes.of(image.format)
    tar = build_layer_tar(layer_entries(image, part), source.epoch)
    diff_id = Digest.of(tar)
    created = rfc3339(source.epoch)
    config = {
        "created": created,
        "architecture": part.binary.platform.architecture,
        "os": part.binary.platform.os,
        "config": _runtime_config(image, part, source),
        "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
        "history": [{"created": created, "created_by": _created_by(part)}],
    }
    if part.binary.platform.variant:
        config["variant"] = part.binary.platform.variant
    config_blob = Blob(media.config, canonical_json(config))
    if ready is not None:
        ready(part.binary.platform, config_blob, tar)
    # The config names the layer by its diff_id: compressing it after cannot change the config (nor the image ID).
    layer = Layer(compress_layer(tar, media.layer_gzip), tar)
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media.manifest,
        "config": config_blob.descriptor().to_json(),
        "layers": [layer.blob.descriptor().to_json()],
    }
    if media.annotations:
        manifest["annotations"] = _annotations(source)
    return PlatformImage(part.binary.platform, (layer,), config_blob, Blob(media.manifest, canonical_json(manifest)))


def _created_by(part: PlatformParts) -> str:
    """The history line `docker history` and umoci show: what was built, truthfully."""
    name = part.binary.name
    libraries = [e for e in part.runtime.entries if e.role == "libraries" and e.kind == "file" and ".so" in e.path]
    if not part.binary.cgo and not libraries:
        return f"gosmall: static {name} and its runtime files on scratch"
    return f"gosmall: dynamic (cgo) {name}, the {len(libraries)} shared libraries it links, and its runtime files on scratch"


def _labels(image: ImageConfig, source: SourceInfo) -> dict[str, str]:
    """The user's labels and the org.opencontainers.image.* values, which label tooling reads from the config."""
    labels = dict(image.labels)
    for key, value in _annotations(source).items():
        if labels.get(key, value) != value:
            raise GosmallError(
                f"[tool.gosmall.images.{image.name}] labels.{key} = {labels[key]!r}, but gosmall sets {key} to {value!r} "
                "from the source (SOURCE_DATE_EPOCH, git describe, the commit, the origin remote); remove the label, "
                "or change what it is derived from."
            )
        labels[key] = value
    return labels


def _runtime_config(image: ImageConfig, part: PlatformParts, source: SourceInfo) -> dict[str, object]:
    env = dict(image.env)
    env.update(part.runtime.env)
    config: dict[str, object] = {
        "User": f"{image.uid}:{image.gid}",
        "Entrypoint": list(image.entrypoint) or [f"/{part.binary.name}"],
        "WorkingDir": image.workdir,
        "Labels": _labels(image, source),
    }
    if env:  # no "Env": [] when there is nothing to set
        config["Env"] = [f"{k}={v}" for k, v in sorted(env.items())]
    if image.args:
        config["Cmd"] = list(image.args)
    if image.ports:
        config["ExposedPorts"] = {port: {} for port in image.ports}
    if image.healthcheck:
        # Docker's field, outside the OCI schema but inside what it allows: engines that know it run it.
        config["Healthcheck"] = {
            "Test": ["CMD", *image.healthcheck],
            "Interval": HEALTHCHECK_INTERVAL_NS,
            "Timeout": HEALTHCHECK_TIMEOUT_NS,
            "Retries": 3,
        }
    return config


def _annotations(source: SourceInfo) -> dict[str, str]:
    annotations = {"org.opencontainers.image.created": rfc3339(source.epoch), "org.opencontainers.image.version": source.version}
    if source.revision:
        annotations["org.opencontainers.image.revision"] = source.revision
    if source.url:
        annotations["org.opencontainers.image.source"] = source.url
    return annotations
