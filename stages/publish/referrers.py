"""Publisher piece: OCI 1.1 referrers (the SBOM, the provenance, a signed attestation) beside a pushed image.

Each referrer is an artifact manifest whose `subject` names the image. Its blobs and the manifest go up by
digest, as an image's do. Then the registry must list it:

* a registry with the referrers API says so by answering the PUT with `OCI-Subject`, or by answering
  `GET /v2/<name>/referrers/<digest>` at all: it lists the manifest itself, and nothing more is pushed;
* elsewhere (Debian's docker-registry 2.8 among them) the client keeps the list, per the distribution spec's
  referrers tag schema: the image index tagged `sha256-<hex>` is read, our descriptors are appended to what it
  lists (another tool's entries, a previous push's, all kept in their order), and it is pushed back, only when
  something was added, so pushing one build twice leaves the tag as it was.

The documents are made above this floor (trust/ knows SBOM and provenance; publish/ never imports it) and
handed in as `Artifact` values; this module only moves bytes. What the registry already lists is not pushed
again: a second push of one build asks one listing and sends nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from ..digest import Digest
from ..errors import GosmallError
from ..images.model import MEDIA_INDEX, Artifact, Blob
from ..reference import Reference
from ..registry.client import Answer, RegistryClient, list_referrers, merge_referrers, referrer_descriptor, referrers_tag
from ..reporter import Reporter

Route = Literal["api", "tag"]


class ManifestPusher(Protocol):
    """push.py's pusher for one repository: blobs by HEAD-then-upload, manifests by PUT, each retried."""

    def blob(self, blob: Blob) -> None: ...

    def manifest(self, blob: Blob, where: str) -> Answer: ...


def push_referrers(
    pusher: ManifestPusher, client: RegistryClient, ref: Reference, subject: Digest, artifacts: Sequence[Artifact], reporter: Reporter
) -> Route:
    """Push `artifacts` (each with `subject` in its manifest) and see that the registry lists them; the route taken."""
    if not artifacts:
        return "api"
    listed = client.retrying(lambda: list_referrers(client, ref, subject), reporter.detail)
    known = {str(m.get("digest")) for m in listed.manifests}
    missing = [a for a in artifacts if str(a.manifest.digest) not in known]
    if not missing:
        # Pushed before (the same build, pushed again): its manifests and blobs are there, and listed.
        reporter.detail(f"{len(artifacts)} referrer(s) of {subject}: already listed")
        return "api" if listed.api else "tag"
    artifacts = missing
    subjects: list[str] = []
    for artifact in artifacts:
        for blob in artifact.blobs:
            pusher.blob(blob)
        answer = pusher.manifest(artifact.manifest, str(artifact.manifest.digest))
        subjects.append(answer.headers.get("OCI-Subject", "").strip())
    if all(said == str(subject) for said in subjects):
        reporter.detail(f"{len(artifacts)} referrer(s) of {subject}: indexed by the registry (OCI-Subject)")
        return "api"
    listed = client.retrying(lambda: list_referrers(client, ref, subject), reporter.detail)  # again: as it is now
    ours = [referrer_descriptor(a.manifest.data, a.manifest.media_type) for a in artifacts]
    if listed.api:
        unlisted = {str(d["digest"]) for d in ours} - {str(m.get("digest")) for m in listed.manifests}
        if unlisted:
            raise GosmallError(
                f"{ref.name}: the registry has the referrers API but does not list {', '.join(sorted(unlisted))} as a "
                f"referrer of {subject} after the push. Check the registry's referrers support, then push again."
            )
        reporter.detail(f"{len(artifacts)} referrer(s) of {subject}: listed by the referrers API")
        return "api"
    tag = referrers_tag(subject)
    merged = merge_referrers(listed.index, ours)
    if merged is None:
        reporter.detail(f"{ref.name}:{tag} already lists the {len(artifacts)} referrer(s)")
        return "tag"
    pusher.manifest(Blob(MEDIA_INDEX, merged), tag)
    known = {str(m.get("digest")) for m in listed.manifests}
    added = sum(1 for d in ours if str(d["digest"]) not in known)
    reporter.detail(f"{ref.name}:{tag}: the referrers list, {len(listed.manifests)} entr(ies) kept and {added} added")
    return "tag"
