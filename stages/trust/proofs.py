"""What proof an image in a registry carries, read from the registry alone: its SBOM, provenance, signature.

`carried_proofs` lists them for `audit docker://…` (as info findings): the image's referrers (through the
referrers API, or the referrers tag schema's `sha256-<hex>` index) by artifact type, and cosign's
`sha256-<hex>.sig` and `.att` tags. `fetch_sbom` is `gosmall sbom REF`: the SPDX referrer's manifest is read
by the digest the listing names (so its bytes are checked), its `subject` must be the image, and its one
layer is read by digest too, so what is written is exactly what was pushed, and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from ..digest import Digest
from ..errors import COULD_NOT_RUN, GosmallError
from ..reference import Reference, ReferenceError, parse_normalized_named
from ..registry.client import MANIFEST_ACCEPT, RegistryClient, RegistryResolver, list_referrers, pull_blob, pull_manifest
from .provenance import MEDIA_IN_TOTO, PREDICATE_ANNOTATION, SLSA_PROVENANCE
from .sbom import MEDIA_SPDX_JSON
from .sign import MEDIA_DSSE, attestation_tag, signature_tag

Kind = Literal["SBOM", "provenance", "signed attestation", "signature"]


@dataclass(frozen=True)
class Proof:
    kind: Kind
    where: str  # the referrer's digest, or the cosign tag


def resolve_digest(client: RegistryClient, ref: Reference) -> Digest:
    if ref.digest:
        return Digest.parse(ref.digest)
    try:
        return RegistryResolver(client).resolve(ref)
    except GosmallError as exc:
        raise GosmallError(exc.message, code=COULD_NOT_RUN) from None


def carried_proofs(client: RegistryClient, ref: Reference, digest: Digest) -> tuple[Proof, ...]:
    """Every proof `ref`'s repository holds for `digest`: referrers by artifact type, then cosign's tags."""
    found: list[Proof] = []
    for entry in list_referrers(client, ref, digest).manifests:
        kind = _kind(entry.get("artifactType"), entry.get("annotations"))
        if kind is not None:
            found.append(Proof(kind, f"referrer {entry['digest']}"))
    for tag, kind in ((signature_tag(digest), "signature"), (attestation_tag(digest), "signed attestation")):
        if _tag_exists(client, ref, tag):
            found.append(Proof(kind, f"{ref.name}:{tag}"))  # type: ignore[arg-type]
    return tuple(found)


def _kind(artifact_type: object, annotations: object) -> Kind | None:
    predicate = annotations.get(PREDICATE_ANNOTATION) if isinstance(annotations, dict) else None
    if artifact_type == MEDIA_SPDX_JSON:
        return "SBOM"
    if artifact_type == MEDIA_IN_TOTO and predicate in (SLSA_PROVENANCE, None):
        return "provenance"
    if artifact_type == MEDIA_DSSE:
        return "signed attestation"
    return None


def _tag_exists(client: RegistryClient, ref: Reference, tag: str) -> bool:
    scope = f"repository:{ref.path}:pull"
    answer = client.request("HEAD", ref.domain, f"/v2/{ref.path}/manifests/{tag}", scope, headers={"Accept": MANIFEST_ACCEPT})
    return answer.status_code == 200


def fetch_sbom(client: RegistryClient, image: str) -> tuple[Reference, Digest, bytes]:
    """The SPDX document pushed as a referrer of `image`, checked by digest and subject; COULD_NOT_RUN when none."""
    ref = parse_image(image)
    digest = resolve_digest(client, ref)
    problems: list[str] = []
    for entry in list_referrers(client, ref, digest).manifests:
        if entry.get("artifactType") != MEDIA_SPDX_JSON:
            continue
        manifest, _ = pull_manifest(client, ref, str(entry["digest"]))  # checked against the listed digest
        try:
            document = json.loads(manifest)
            subject = Digest.parse(document["subject"]["digest"])
            [layer] = [layer for layer in document["layers"] if layer.get("mediaType") == MEDIA_SPDX_JSON]
            layer_digest, size = Digest.parse(layer["digest"]), int(layer["size"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            problems.append(f"referrer {entry['digest']} is not an SBOM artifact with one {MEDIA_SPDX_JSON} layer")
            continue
        if subject != digest:
            problems.append(f"referrer {entry['digest']} names {subject} as its subject, not {digest}")
            continue
        return ref, digest, pull_blob(client, ref, layer_digest, size)
    why = f" ({'; '.join(problems)})" if problems else ""
    raise GosmallError(
        f"{ref.name}@{digest} carries no SBOM referrer{why}. `gosmall push` (or `build-small --push`) pushes one beside the image.",
        code=COULD_NOT_RUN,
    )


def parse_image(image: str) -> Reference:
    """`image` (repo@sha256:…, repo:tag, either after docker://) as a reference; a bad one is named."""
    try:
        ref = parse_normalized_named(image.removeprefix("docker://"))
    except ReferenceError as exc:
        raise GosmallError(exc.message) from None
    if ref.digest is None and ref.tag is None:
        raise GosmallError(f"{image!r} names no image: give repo@sha256:… or repo:tag.")
    return ref
