"""Writer: one platform of an `Image` as an archive `docker load` accepts.

The layer goes in uncompressed: `docker load` would only decompress it again,
and the engine's image ID is the config digest either way.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import BinaryIO

from ..digest import Digest
from .model import Blob, PlatformImage, canonical_json


def write_docker_archive(image: PlatformImage, stream: BinaryIO, repository: str, tags: tuple[str, ...], epoch: int) -> None:
    write_docker_archive_of(image.config, tuple(layer.tar for layer in image.layers), stream, repository, tags, epoch)


def write_docker_archive_of(
    config: Blob, layer_tars: tuple[bytes, ...], stream: BinaryIO, repository: str, tags: tuple[str, ...], epoch: int
) -> None:
    """The same archive from a config and its uncompressed layers alone: what `docker load` needs exists before the
    layers are compressed (the manifest is not in it), so an image can be loaded while the build finishes."""
    # Names carry no "sha256:": tar treats a colon as a remote tape drive (go-containerregistry's reason too).
    config_name = f"blobs/sha256/{config.digest.hex}"
    layer_names = [f"blobs/sha256/{Digest.of(tar).hex}" for tar in layer_tars]
    manifest = [{"Config": config_name, "RepoTags": [f"{repository}:{tag}" for tag in tags], "Layers": layer_names}]
    members = {
        config_name: config.data,
        **dict(zip(layer_names, layer_tars)),
        "manifest.json": canonical_json(manifest),
    }
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for directory in ("blobs/", "blobs/sha256/"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, epoch
            tar.addfile(info)
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o444, epoch
            tar.addfile(info, io.BytesIO(members[name]))


def write_docker_archive_file(image: PlatformImage, path: Path, repository: str, tags: tuple[str, ...], epoch: int) -> None:
    with path.open("wb") as stream:
        write_docker_archive(image, stream, repository, tags, epoch)
