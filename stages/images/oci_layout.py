"""Writer: an `Image` as an OCI image layout directory.

`oci-layout`, `index.json` and `blobs/sha256/<hex>`, the shape skopeo,
crane, containerd and registries' push tools all read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .model import MEDIA_INDEX, Artifact, Descriptor, Image, canonical_json


def layout_index(image: Image, repository: str, tags: tuple[str, ...], referrers: Sequence[Artifact] = ()) -> bytes:
    """index.json: the top descriptor once per tag, named the way skopeo and containerd look it up.

    Then each referrer (the SBOM artifact) without a ref.name: image-layout.md makes index.json the place "to
    discover auxiliary descriptors", and readers look an image up by its ref.name, so the image entries stay
    first and as they were.
    """
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
    manifests.extend(artifact.descriptor() for artifact in referrers)
    return canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests})


def write_oci_layout(image: Image, directory: Path, repository: str, tags: tuple[str, ...], referrers: Sequence[Artifact] = ()) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    for blob in (*image.blobs(), *(b for artifact in referrers for b in (*artifact.blobs, artifact.manifest))):
        (blobs / blob.digest.hex).write_bytes(blob.data)
    (directory / "index.json").write_bytes(layout_index(image, repository, tags, referrers))


def read_index(directory: Path) -> dict[str, object]:
    return json.loads((directory / "index.json").read_bytes())
