"""Publisher: a `Build` into a registry over the distribution API, and the fan-in index.

The order keeps every tag whole: each blob (a HEAD first, so what the
registry has is not sent again; a blob this repository lacks but another
repository of the same registry has, one this run pushed it to or one the
project configures, is mounted from there with `?mount=&from=`; a blob over
`chunk_size` goes in PATCH chunks, so no request carries more than one
deadline can move), each platform's manifest by digest, the index by digest,
and only then each tag. A HEAD on every tag must then answer report.json's
`digest`, and the pushed reference is written into report.json.

A build of only some of an image's platforms (`build-small --platform`) is
pushed by digest, untagged: its tags belong to the index that
`index_from_reports` assembles in the fan-in job from each platform job's
report.json and the manifests they pushed, read back by digest, with
assemble.py's own `index_blob`, so its digest is a one-machine build's.

What another try can fix (no connection, a reset, 429, 5xx) is tried again by
`RegistryClient.retrying`, with backoff and a bound; a blob is retried whole,
from its HEAD, since an upload session may not survive what went wrong.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

from ..build.assemble import index_blob
from ..build.built import Build
from ..build.source import describe_source
from ..config import ImageConfig, ProjectConfig, unpushable_repository
from ..digest import Digest
from ..errors import GosmallError
from ..images.model import MEDIA_MANIFEST, Artifact, Blob, Image, MediaTypes, Platform, PlatformImage, canonical_json
from ..reference import Reference, ReferenceError, parse_normalized_named
from ..registry.client import (
    MANIFEST_ACCEPT,
    Answer,
    RegistryClient,
    RegistryUnavailable,
    _fail,
    _parse_digest,
    list_referrers,
    pull_blob,
    pull_manifest,
    raise_if_unavailable,
    registry_base,
)
from ..reporter import RecordingReporter, Reporter
from .referrers import Route, push_referrers
from .report import human, report_json

# Bytes per upload request: a blob above this goes in PATCH chunks, so that a request of 4 MiB, not a whole
# layer, has to finish within the client's per-request deadline on a slow link.
CHUNK_SIZE = 4 * 2**20

# The referrers a fan-in index takes over from its platforms: SPDX SBOMs, in-toto statements, DSSE envelopes.
CARRIED_ARTIFACT_TYPES = ("application/spdx+json", "application/vnd.in-toto+json", "application/vnd.dsse.envelope.v1+json")
# A build's referrers (its SBOM, its provenance): trust/ makes them, the task hands the maker in.
Proofs = Callable[[Build], Sequence[Artifact]]


@dataclass(frozen=True)
class Pushed:
    """What one image became in its registry: `repository@digest`, and the tags that now name it."""

    image: str
    repository: str
    digest: Digest
    tags: tuple[str, ...]  # none for one platform of a fan-out

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "reference": self.reference, "repository": self.repository, "digest": str(self.digest), "tags": list(self.tags)}  # fmt: skip


class RegistryPublisher:
    """Pushes each Build it is handed to its configured repository; `pushed` lists the results in order.

    One per run: it remembers which repository each blob went to, so a second image sharing a layer mounts it.
    """

    def __init__(
        self, project: ProjectConfig, client: RegistryClient, *, chunk_size: int = CHUNK_SIZE, proofs: Proofs | None = None
    ) -> None:
        self.project = project
        self.client = client
        self.chunk_size = chunk_size
        self.proofs = proofs  # the SBOM and provenance referrers of a build, made on the trust floor and handed in
        self.pushed: list[Pushed] = []
        self._blobs_at: dict[tuple[str, Digest], str] = {}  # (registry, blob) -> a repository there that has it

    def publish(self, build: Build, reporter: Reporter) -> None:
        config = build.config
        configured = next((i for i in self.project.images if i.name == config.name), config)
        whole = tuple(m.platform for m in build.image.manifests) == configured.platforms
        tags = config.tags if whole else ()
        ref = repository_reference(config)
        if whole:
            reporter.step(f"{config.name}: pushing {build.digest} to {config.repository} as {', '.join(tags)}")
        else:
            platforms = ", ".join(str(m.platform) for m in build.image.manifests)
            reporter.step(f"{config.name}: pushing {platforms} to {config.repository} by digest, untagged (`gosmall index` tags the whole)")
        pusher = _Pusher(self.client, ref, reporter, self.chunk_size, self._mount_sources(ref), self._blobs_at)
        digest = pusher.push(
            build.image, tags, Digest.parse(str(build.report["digest"])), retry_command=f"`gosmall push --image {config.name}`"
        )
        if self.proofs is not None:
            artifacts = self.proofs(build)
            reporter.step(f"{config.name}: pushing {len(artifacts)} referrer(s) of {digest} (SBOM, provenance)")
            try:
                push_referrers(pusher, self.client, ref, digest, artifacts, reporter)
            except RegistryUnavailable as exc:
                raise pusher.stopped(exc, f"`gosmall push --image {config.name}`") from None
            except GosmallError as exc:
                raise GosmallError(
                    f"{config.repository}@{digest} is pushed{' and tagged' if tags else ''}, but its SBOM and provenance "
                    f"referrers were not: {exc.message}",
                    code=exc.code,
                ) from None
        pushed = Pushed(config.name, config.repository, digest, tags)
        self.pushed.append(pushed)
        record_push(build, pushed, reporter)

    def _mount_sources(self, ref: Reference) -> tuple[str, ...]:
        """Repositories of the project's other images on the same registry: where a shared layer may already be."""
        others = (repository_reference(image) for image in self.project.images)
        return tuple(dict.fromkeys(o.path for o in others if o.domain == ref.domain and o.path != ref.path))


def repository_reference(config: ImageConfig) -> Reference:
    """The registry and repository `config` is pushed to; gosmall's made-up local name is refused before any request."""
    refused = unpushable_repository(config.repository)
    if refused:
        raise GosmallError(refused)
    try:
        return parse_normalized_named(config.repository)
    except ReferenceError as exc:
        raise GosmallError(f"[tool.gosmall.images.{config.name}] repository: {config.repository!r} cannot be pushed to: {exc}") from None


def push_image(client: RegistryClient, ref: Reference, image: Image, tags: tuple[str, ...], *, reporter: Reporter | None = None) -> Digest:
    """Push `image` to `ref`'s repository under `tags`, in the order that keeps every tag whole; its digest."""
    pusher = _Pusher(client, ref, reporter or RecordingReporter(), CHUNK_SIZE, (), {})
    return pusher.push(image, tags, image.digest, retry_command="the push")


def push_manifest(
    client: RegistryClient, ref: Reference, manifest: Blob, blobs: Sequence[Blob], tags: tuple[str, ...], *, reporter: Reporter | None = None, retry_command: str = "the push"
) -> Digest:  # fmt: skip
    """Push `blobs`, then `manifest` under `tags`, each checked like an image's: for a document that is not an
    `Image`, such as a signature. Its digest."""
    pusher = _Pusher(client, ref, reporter or RecordingReporter(), CHUNK_SIZE, (), {})
    try:
        for blob in blobs:
            pusher.blob(blob)
    except RegistryUnavailable as exc:
        raise pusher.stopped(exc, retry_command) from None
    return pusher.tag(manifest, tags, manifest.digest, retry_command=retry_command)


def push_artifacts(
    client: RegistryClient, ref: Reference, subject: Digest, artifacts: Sequence[Artifact], reporter: Reporter, *, retry_command: str
) -> Route:
    """Push referrers of `subject` (already in `ref`'s repository) and have the registry list them; the route taken."""
    pusher = _Pusher(client, ref, reporter, CHUNK_SIZE, (), {})
    try:
        return push_referrers(pusher, client, ref, subject, artifacts, reporter)
    except RegistryUnavailable as exc:
        raise pusher.stopped(exc, retry_command) from None


def record_push(build: Build, pushed: Pushed, reporter: Reporter) -> None:
    """Write `pushed` into the build's report.json: where the image is now, for the fan-in job and for people.

    Only a report.json of this very build is changed (its digest says so), through a temporary file and a rename.
    """
    from ..build.fresh import rewriting

    path = build.output_dir / "report.json"
    try:
        report = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        report = None
    if not isinstance(report, dict) or report.get("digest") != str(pushed.digest):
        reporter.warn(f"{path} is not the report of {pushed.digest}; the push to {pushed.reference} was not recorded there.")
        return
    report["pushed"] = {"reference": pushed.reference, "tags": list(pushed.tags)}
    temporary = path.with_name(f".report.json.tmp-{os.getpid()}")
    try:
        # Through fresh.py: the up-to-date record learns the new report.json, so the next unchanged build is a no-op.
        with rewriting(build.output_dir, path):
            temporary.write_bytes(report_json(report))
            os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise GosmallError(f"{path}: the push to {pushed.reference} succeeded, but recording it failed: {exc.strerror or exc}.") from None


# -- fan-in: one index from the platform jobs' reports ----------------------------


def index_from_reports(project: ProjectConfig, config: ImageConfig, reports: Sequence[Path], client: RegistryClient) -> Blob:
    """The top document a one-machine build of this commit makes, from the platform jobs' pushes.

    Each report.json names its platforms' manifest digests; together they must cover the image's platforms,
    once each, all built from this checkout's commit (the index's annotations are this commit's, as on one
    machine). Every manifest and its config are read back from the registry by digest and checked; the index
    is assemble.py's, over them in the configured order.
    """
    if not reports:
        raise GosmallError(f"index --image {config.name}: name each platform job's report.json with --from (repeatable).")
    source = describe_source(project.root).declared(config.labels)  # as build_image does
    found: dict[Platform, tuple[Digest, Path]] = {}
    for path in reports:
        for platform, digest in _platform_manifests(path, config, (source.version, source.revision, source.epoch)):
            if platform in found and found[platform][0] != digest:
                raise GosmallError(
                    f"{path} and {found[platform][1]} both name {platform} of '{config.name}', with different manifests "
                    f"({digest} and {found[platform][0]}); pass one report per platform."
                )
            found.setdefault(platform, (digest, path))
    missing = [str(p) for p in config.platforms if p not in found]
    extra = [str(p) for p in found if p not in config.platforms]
    if missing or extra:
        said = f"lack {', '.join(missing)}" if missing else f"also name {', '.join(extra)}, which is not one of them"
        fix = "; ".join(f"`gosmall build-small --image {config.name} --platform {p} --push`" for p in missing) or "drop that report"
        raise GosmallError(
            f"index --image {config.name}: the image's platforms are {', '.join(map(str, config.platforms))}, but the reports "
            f"{said}. Build and push each missing one in its own job ({fix}) and pass its report.json with --from."
        )
    ref = repository_reference(config)
    media = MediaTypes.of(config.format)
    manifests = tuple(_read_back(client, ref, platform, found[platform][0], media) for platform in config.platforms)
    if len(manifests) == 1:
        return manifests[0].manifest  # one platform: the manifest is the image, as on one machine
    return index_blob(manifests, source, media)


def push_index(client: RegistryClient, config: ImageConfig, top: Blob, reporter: Reporter) -> Pushed:
    """Push the fan-in's `top` by digest, then under the image's tags, each checked by a HEAD."""
    reporter.step(f"{config.name}: pushing the index {top.digest} to {config.repository} as {', '.join(config.tags)}")
    pusher = _Pusher(client, repository_reference(config), reporter, CHUNK_SIZE, (), {})
    again = f"`gosmall index --image {config.name}` with the same --from reports"
    try:
        pusher.manifest(top, str(top.digest))
    except RegistryUnavailable as exc:
        raise pusher.stopped(exc, again) from None
    digest = pusher.tag(top, config.tags, top.digest, retry_command=again)
    return Pushed(config.name, config.repository, digest, config.tags)


def carry_referrers(client: RegistryClient, config: ImageConfig, top: Blob, reporter: Reporter) -> int:
    """Give the fan-in's index the referrers its platform jobs pushed beside each platform's manifest.

    A referrer names its subject inside its own bytes, so each (the SBOM, the provenance, any DSSE attestation)
    is pushed again as a manifest with the same config and layers, already in the repository, and `subject` the
    index; the platform's referrers stay as they are. How many the index carries now.
    """
    ref = repository_reference(config)
    try:
        document = json.loads(top.data)
    except (ValueError, RecursionError):
        return 0
    platforms = [Digest.parse(m["digest"]) for m in document.get("manifests", [])] if "manifests" in document else []
    subject = top.descriptor().to_json()
    artifacts: list[Artifact] = []
    for platform in platforms:
        for entry in client.retrying(functools.partial(list_referrers, client, ref, platform), reporter.detail).manifests:
            if entry.get("artifactType") not in CARRIED_ARTIFACT_TYPES:
                continue
            data, media_type = client.retrying(functools.partial(pull_manifest, client, ref, str(entry["digest"])), reporter.detail)
            try:
                manifest = json.loads(data)
            except (ValueError, RecursionError):
                continue
            if not isinstance(manifest, dict) or (manifest.get("subject") or {}).get("digest") != str(platform):
                continue
            manifest["subject"] = subject
            artifacts.append(Artifact(str(entry["artifactType"]), Blob(media_type or MEDIA_MANIFEST, canonical_json(manifest)), ()))
    if not artifacts:
        return 0
    reporter.step(f"{config.name}: the index {top.digest} takes over {len(artifacts)} referrer(s) of its platforms")
    push_artifacts(
        client, ref, top.digest, artifacts, reporter, retry_command=f"`gosmall index --image {config.name}` with the same --from reports"
    )
    return len(artifacts)


def _platform_manifests(path: Path, config: ImageConfig, commit: tuple[str, str, int]) -> list[tuple[Platform, Digest]]:
    try:
        report = json.loads(path.read_bytes())
        image, repository, built = report["image"], report["repository"], report["source"]
        built_from = (built["version"], built["revision"], int(built["source_date_epoch"]))
        platforms = [(Platform.parse(str(p)), Digest.parse(entry["manifest_digest"])) for p, entry in report["platforms"].items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise GosmallError(f"--from {path}: not a gosmall build report ({why}). Pass the report.json a platform job wrote.") from None
    if (image, repository) != (config.name, config.repository):
        raise GosmallError(
            f"--from {path} is a report of '{image}' ({repository}), not of '{config.name}' ({config.repository}); "
            "pass the reports of this image's platform jobs."
        )
    if built_from != commit:
        raise GosmallError(
            f"--from {path} was built from {built_from[1][:12] or 'no commit'} (version {built_from[0]}, SOURCE_DATE_EPOCH "
            f"{built_from[2]}), but this checkout is {commit[1][:12] or 'no commit'} (version {commit[0]}, {commit[2]}). "
            "Run index in a checkout of the commit the platform jobs built, with the same SOURCE_DATE_EPOCH, so the index "
            "is the one a single machine would make."
        )
    return platforms


def _read_back(client: RegistryClient, ref: Reference, platform: Platform, digest: Digest, media: MediaTypes) -> PlatformImage:
    """`platform`'s manifest and config from the registry by digest, checked to be that platform's image."""
    data, media_type = client.retrying(lambda: pull_manifest(client, ref, str(digest)))
    try:
        descriptor = json.loads(data)["config"]
        config_digest, config_size = Digest.parse(descriptor["digest"]), int(descriptor["size"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise GosmallError(
            f"{ref}@{digest}: the registry holds no image manifest under this digest, so {platform} cannot go into the index."
        ) from None
    config = client.retrying(lambda: pull_blob(client, ref, config_digest, config_size))
    try:
        holds = Platform.from_json(json.loads(config))
    except (ValueError, KeyError, TypeError, RecursionError):
        holds = None
    if media_type != media.manifest or holds != platform:
        raise GosmallError(
            f"{ref}@{digest} is a {media_type or 'document'} for {holds or 'no platform'}, but the report names it as the "
            f"{media.manifest} of {platform}; rebuild and push that platform's job."
        )
    return PlatformImage(platform, (), Blob(str(descriptor.get("mediaType", media.config)), config), Blob(media_type, data))


# -- the protocol, for one repository ------------------------------------------------


@dataclass
class _Pusher:
    client: RegistryClient
    ref: Reference  # the repository; its tag, if any, is not used
    reporter: Reporter
    chunk_size: int
    mount_from: tuple[str, ...]  # repositories of the same registry that may hold a blob
    blobs_at: dict[tuple[str, Digest], str]  # shared by a run's pushers: where each blob went
    tagged: list[str] = field(default_factory=list)

    @property
    def scope(self) -> str:
        return f"repository:{self.ref.path}:pull,push"

    def push(self, image: Image, tags: tuple[str, ...], expected: Digest, *, retry_command: str) -> Digest:
        try:
            for platform_image in image.manifests:
                for blob in (*(layer.blob for layer in platform_image.layers), platform_image.config):
                    self.blob(blob)
                self.manifest(platform_image.manifest, str(platform_image.manifest.digest))
            if image.index is not None:
                self.manifest(image.index, str(image.index.digest))
        except RegistryUnavailable as exc:
            raise self.stopped(exc, retry_command) from None
        return self.tag(image.index or image.manifests[0].manifest, tags, expected, retry_command=retry_command)

    def tag(self, top: Blob, tags: tuple[str, ...], expected: Digest, *, retry_command: str) -> Digest:
        """Put `top` under each tag, then check that each (or, untagged, its digest) serves `expected`."""
        if top.digest != expected:
            raise GosmallError(f"{self.ref}: the image to push is {top.digest}, but report.json's digest is {expected}; build it again.")
        try:
            for tag in tags:
                self.manifest(top, tag)
                self.tagged.append(tag)
            for where in tags or (str(top.digest),):
                served = self._served(where)
                if served != expected:
                    raise GosmallError(
                        f"{self.ref}{'@' if where.startswith('sha256:') else ':'}{where}: after the push the registry serves "
                        f"{served}, not report.json's digest {expected}. Something else pushed to it meanwhile, or the registry "
                        "changed the manifest; push again and check who else writes to this repository."
                    )
        except RegistryUnavailable as exc:
            raise self.stopped(exc, retry_command) from None
        return expected

    def blob(self, blob: Blob) -> None:
        self.client.retrying(lambda: self._blob_once(blob), self.reporter.detail)
        self.blobs_at[(self.ref.domain, blob.digest)] = self.ref.path

    def manifest(self, blob: Blob, where: str) -> Answer:
        """PUT `blob` as the manifest `where` (a digest or a tag); the registry must file it under `blob`'s digest.

        The answer is returned: its `OCI-Subject` header says whether the registry indexed a referrer itself.
        """

        def put() -> Answer:
            answer = self._call("PUT", f"/v2/{self.ref.path}/manifests/{where}", headers={"Content-Type": blob.media_type}, data=blob.data)
            if answer.status_code not in (200, 201):
                raise self._fail(f"pushing manifest {where}", answer)
            said = answer.headers.get("Docker-Content-Digest")
            if said and _parse_digest(self.ref, said) != blob.digest:
                raise GosmallError(f"{self.ref}: the registry stored manifest {where} as {said.strip()}, not {blob.digest}.")
            return answer

        answer = self.client.retrying(put, self.reporter.detail)
        self.reporter.detail(f"manifest {blob.digest}" + ("" if where.startswith("sha256:") else f" tagged {where}"))
        return answer

    def _blob_once(self, blob: Blob) -> None:
        digest = blob.digest
        head = self._call("HEAD", f"/v2/{self.ref.path}/blobs/{digest}")
        if head.status_code == 200:
            self.reporter.detail(f"blob {digest} ({human(blob.size)}): already there")
            return
        if head.status_code != 404:
            raise self._fail(f"checking for blob {digest}", head)
        source = self.blobs_at.get((self.ref.domain, digest)) or next(iter(self.mount_from), None)
        location = self._start_upload(digest, source)
        if location is None:
            self.reporter.detail(f"blob {digest} ({human(blob.size)}): mounted from {source}")
            return
        chunks = 1
        if blob.size > self.chunk_size:
            chunks = 0
            for offset in range(0, blob.size, self.chunk_size):
                location = self._patch(location, blob.data[offset : offset + self.chunk_size], offset, digest)
                chunks += 1
        self._finish(location, digest, blob.data if chunks == 1 else b"")
        self.reporter.detail(f"blob {digest} ({human(blob.size)}): uploaded" + (f" in {chunks} chunks" if chunks > 1 else ""))

    def _start_upload(self, digest: Digest, source: str | None) -> str | None:
        """An upload session's location; None when the registry mounted the blob from `source` instead."""
        url = f"/v2/{self.ref.path}/blobs/uploads/"
        scope = self.scope
        if source:
            url += f"?mount={digest}&from={quote(source, safe='')}"
            scope += f" repository:{source}:pull"
        answer = self._call("POST", url, scope=scope)
        if source and answer.status_code == 201:
            return None
        if answer.status_code != 202 or "Location" not in answer.headers:
            raise self._fail(f"starting the upload of blob {digest}", answer)
        return self._location(answer)

    def _patch(self, location: str, chunk: bytes, offset: int, digest: Digest) -> str:
        end = offset + len(chunk) - 1
        headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))}
        answer = self._call("PATCH", location, headers=headers, data=chunk)
        if answer.status_code != 202 or "Location" not in answer.headers:
            raise self._fail(f"uploading bytes {offset}-{end} of blob {digest}", answer)
        held = answer.headers.get("Range", f"0-{end}").strip()
        if held != f"0-{end}":
            # The session lost or doubled a chunk: the blob starts again from its HEAD.
            raise RegistryUnavailable(f"{self.ref}: uploading blob {digest}, the registry holds bytes {held}, not 0-{end}")
        return self._location(answer)

    def _finish(self, location: str, digest: Digest, data: bytes) -> None:
        url = location + ("&" if "?" in location else "?") + f"digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        answer = self._call("PUT", url, headers=headers, data=data)
        if answer.status_code != 201:
            raise self._fail(f"uploading blob {digest}", answer)

    def _served(self, where: str) -> Digest:
        url = f"/v2/{self.ref.path}/manifests/{where}"
        answer = self.client.retrying(lambda: self._call("HEAD", url, headers={"Accept": MANIFEST_ACCEPT}), self.reporter.detail)
        if answer.status_code != 200:
            raise self._fail(f"checking manifest {where} after the push", answer)
        said = answer.headers.get("Docker-Content-Digest")
        if said:
            return _parse_digest(self.ref, said)
        answer = self.client.retrying(lambda: self._call("GET", url, headers={"Accept": MANIFEST_ACCEPT}), self.reporter.detail)
        if answer.status_code != 200:
            raise self._fail(f"getting manifest {where} after the push", answer)
        return Digest.of(answer.content)

    def _call(self, method: str, url: str, *, scope: str = "", headers: dict[str, str] | None = None, data: bytes | None = None) -> Answer:
        answer = self.client.request(method, self.ref.domain, url, scope or self.scope, headers=headers, data=data)
        return raise_if_unavailable(answer, f"{self.ref}: {method} {url.split('?', 1)[0]}")

    def _location(self, answer: Answer) -> str:
        return urljoin(
            registry_base(self.ref.domain, self.client.insecure) + f"/v2/{self.ref.path}/blobs/uploads/", answer.headers["Location"]
        )

    def _fail(self, what: str, answer: Answer) -> GosmallError:
        error = _fail(self.ref, what, answer)
        if answer.status_code in (401, 403):
            return GosmallError(f"{error.message} Credentials used: {self.client.credential_source(self.ref.domain)}.")
        return error

    def stopped(self, exc: RegistryUnavailable, retry_command: str) -> GosmallError:
        tags = (
            f"Tags already pushed ({', '.join(self.tagged)}) name the whole image."
            if self.tagged
            else "No tag was pushed, so none names a partial image."
        )
        return GosmallError(
            f"{self.ref}: the push stopped, because the registry {self.ref.domain} failed: {exc.message}. {tags} "
            f"Blobs it already has are not sent again: run {retry_command} again once it answers."
        )
