"""The one image model: blobs, descriptors, manifests and indexes.

Field names follow the OCI image spec. A document is serialised once, to
canonical JSON; its digest hashes exactly those bytes and nothing re-encodes
it afterwards (like go-containerregistry's Manifest/RawManifest twins).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..digest import Digest

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

Format = Literal["oci", "docker"]


@dataclass(frozen=True)
class MediaTypes:
    """One media-type family for every document of an image: OCI, or Docker schema 2 (which podman
    and buildah need to keep a Healthcheck: they read it only from Docker-format configs)."""

    index: str
    manifest: str
    config: str
    layer_gzip: str
    annotations: bool  # Docker schema 2 has no annotations field

    @classmethod
    def of(cls, format: Format) -> MediaTypes:  # noqa: A002 - the config key is `format`
        return _FAMILIES[format]


_FAMILIES: dict[str, MediaTypes] = {
    "oci": MediaTypes(MEDIA_INDEX, MEDIA_MANIFEST, MEDIA_CONFIG, MEDIA_LAYER_GZIP, annotations=True),
    "docker": MediaTypes(
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        annotations=False,
    ),
}
INDEX_MEDIA_TYPES = frozenset(family.index for family in _FAMILIES.values())


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: one encoding, so one digest."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else "")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Platform:
        return cls(str(document["os"]), str(document["architecture"]), str(document.get("variant", "")))

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class Blob:
    """Bytes with the media type they are stored under."""

    media_type: str
    data: bytes

    # Hashed once per value: the bytes cannot change, and a build asks for a layer's digest many
    # times (descriptors, blobs(), the report, the SBOM).
    @functools.cached_property
    def digest(self) -> Digest:
        return Digest.of(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, *, platform: Platform | None = None, annotations: Mapping[str, str] | None = None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, platform, tuple(sorted((annotations or {}).items())))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Layer:
    """A layer keeps its compressed blob apart from its uncompressed tar (diff_id)."""

    blob: Blob  # compressed, what registries and OCI layouts store
    tar: bytes  # uncompressed, what `docker load` and rootfs.diff_ids use

    @functools.cached_property
    def diff_id(self) -> Digest:
        return Digest.of(self.tar)


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image: its layers, config and manifest blobs."""

    platform: Platform
    layers: tuple[Layer, ...]
    config: Blob
    manifest: Blob

    @property
    def uncompressed_size(self) -> int:
        return sum(len(layer.tar) for layer in self.layers)


@dataclass(frozen=True)
class Image:
    """What `assemble` produces and every writer consumes.

    `top` is the manifest itself for one platform, an index over them for more.
    """

    manifests: tuple[PlatformImage, ...]
    index: Blob | None

    @property
    def top(self) -> Descriptor:
        if self.index is not None:
            return self.index.descriptor()
        return self.manifests[0].manifest.descriptor()

    @property
    def digest(self) -> Digest:
        return self.top.digest

    def blobs(self) -> tuple[Blob, ...]:
        """Every blob once, in a stable order."""
        seen: dict[Digest, Blob] = {}
        for image in self.manifests:
            for blob in (*(layer.blob for layer in image.layers), image.config, image.manifest):
                seen.setdefault(blob.digest, blob)
        if self.index is not None:
            seen.setdefault(self.index.digest, self.index)
        return tuple(seen[d] for d in sorted(seen))

    def for_platform(self, platform: Platform) -> PlatformImage | None:
        for image in self.manifests:
            if image.platform == platform:
                return image
        return None


@dataclass(frozen=True)
class Artifact:
    """An OCI 1.1 artifact: a manifest whose `subject` is an image (the SBOM beside it), and the blobs it names.

    Stored and pushed like an image manifest; registries list it as a referrer of its subject's digest.
    """

    artifact_type: str
    manifest: Blob
    blobs: tuple[Blob, ...]  # its config and layers

    def descriptor(self) -> dict[str, Any]:
        """The manifest's descriptor with its artifactType, as an index or index.json lists a referrer."""
        return {**self.manifest.descriptor().to_json(), "artifactType": self.artifact_type}
