"""Writer: an `Image` as an OCI image layout directory.

`oci-layout`, `index.json` and `blobs/sha256/<hex>`, the shape skopeo,
crane, containerd and registries' push tools all read.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

from .digest import Digest
from .errors import GosmallError
from .image import INDEX_MEDIA_TYPES, MEDIA_INDEX, Blob, Descriptor, Image, Layer, Platform, PlatformImage, canonical_json


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


def read_oci_layout(directory: Path) -> Image:
    """The image an OCI layout written by `write_oci_layout` holds, every blob checked against its digest.

    Layers are decompressed once, so the value is the same `Image` the build made (its tars give
    `diff_id`s, checked against the config, and the docker archive).
    """
    blobs = directory / "blobs" / "sha256"

    def blob(media_type: str, digest_text: object, where: str) -> Blob:
        try:
            digest = Digest.parse(str(digest_text))
            data = (blobs / digest.hex).read_bytes()
        except (ValueError, OSError) as exc:
            raise _unreadable(directory, f"{where}: {exc}") from None
        if Digest.of(data) != digest:
            raise _unreadable(directory, f"{where}: blob {digest} does not hash to its name")
        return Blob(media_type, data)

    try:
        index = json.loads((directory / "index.json").read_bytes())
        top = index["manifests"][0]
        index_blob: Blob | None = None
        entries: list[tuple[str, str, Platform | None]] = [(top["mediaType"], top["digest"], None)]
        if top["mediaType"] in INDEX_MEDIA_TYPES:
            index_blob = blob(top["mediaType"], top["digest"], "index.json")
            entries = [(m["mediaType"], m["digest"], Platform.from_json(m["platform"])) for m in json.loads(index_blob.data)["manifests"]]
        manifests = []
        for media_type, digest, platform in entries:
            manifest = blob(media_type, digest, "manifest")
            document = json.loads(manifest.data)
            config = blob(document["config"]["mediaType"], document["config"]["digest"], "config")
            config_document = json.loads(config.data)
            layers = []
            for descriptor, diff_id in zip(document["layers"], config_document["rootfs"]["diff_ids"]):
                compressed = blob(descriptor["mediaType"], descriptor["digest"], "layer")
                layer = Layer(compressed, gzip.decompress(compressed.data))
                if str(layer.diff_id) != diff_id:
                    raise _unreadable(directory, f"layer {compressed.digest} does not decompress to its diff_id {diff_id}")
                layers.append(layer)
            if platform is None:
                platform = Platform.from_json(config_document)
            manifests.append(PlatformImage(platform, tuple(layers), config, manifest))
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zlib.error) as exc:
        raise _unreadable(directory, f"{type(exc).__name__}: {exc}") from None
    return Image(tuple(manifests), index_blob)


def _unreadable(directory: Path, why: str) -> GosmallError:
    return GosmallError(
        f"{directory} is not an OCI layout gosmall can read back ({why}); it may be damaged or from another tool. "
        "Run `gosmall build-small` again."
    )
