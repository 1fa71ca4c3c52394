"""Writer: one platform of an `Image` as an archive `docker load` accepts.

The layer goes in uncompressed: `docker load` would only decompress it again,
and the engine's image ID is the config digest either way.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import BinaryIO

from .model import PlatformImage, canonical_json


def write_docker_archive(image: PlatformImage, stream: BinaryIO, repository: str, tags: tuple[str, ...], epoch: int) -> None:
    # Names carry no "sha256:": tar treats a colon as a remote tape drive (go-containerregistry's reason too).
    config_name = f"blobs/sha256/{image.config.digest.hex}"
    layer_names = [f"blobs/sha256/{layer.diff_id.hex}" for layer in image.layers]
    manifest = [{"Config": config_name, "RepoTags": [f"{repository}:{tag}" for tag in tags], "Layers": layer_names}]
    members = {
        config_name: image.config.data,
        **{name: layer.tar for name, layer in zip(layer_names, image.layers)},
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
