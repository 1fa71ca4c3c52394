"""Writer: an `Image` as an OCI image layout directory.

`oci-layout`, `index.json` and `blobs/sha256/<hex>`, the shape skopeo,
crane, containerd and registries' push tools all read.
"""

from __future__ import annotations

import json
from pathlib import Path

from .image import MEDIA_INDEX, Descriptor, Image, canonical_json


def layout_index(image: Image, repository: str, tags: tuple[str, ...]) -> bytes:
    """index.json: the top descriptor once per tag, named the way skopeo and containerd look it up."""
    top = image.top
    manifests = [
        Descriptor(
            top.media_type,
            top.digest,
            top.size,
            annotations=(("io.containerd.image.name", f"{repository}:{tag}"), ("org.opencontainers.image.ref.name", tag)),
        ).to_json()
        for tag in tags
    ]
    return canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests})


def write_oci_layout(image: Image, directory: Path, repository: str, tags: tuple[str, ...]) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    for blob in image.blobs():
        (blobs / blob.digest.hex).write_bytes(blob.data)
    (directory / "index.json").write_bytes(layout_index(image, repository, tags))


def read_index(directory: Path) -> dict[str, object]:
    return json.loads((directory / "index.json").read_bytes())
