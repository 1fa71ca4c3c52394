"""Proof: an SPDX 2.3 SBOM of a `Build`, and the OCI 1.1 artifact that carries it beside the image.

`sbom_document` is pure: everything it says comes from the Build, so
`build-small` and `gosmall sbom` (which reads the Build back) write the same
bytes. It describes

* the image: a `pkg:oci` purl for the top digest and for each platform's manifest;
* every regular file of each platform's layer, with its SHA-256 (and the SHA-1 SPDX requires);
* each Go binary in the layer, from the build info Go embeds (`buildinfo.py`): its main module, every
  dependency module with version, `h1:` hash and replacement, the Go toolchain, and the build settings,
  plus the -ldflags gosmall passed (Go leaves them out of the build info under -trimpath);
* where the runtime files came from (`Build.facts`, gathered by `file_sources` at build time): Go's
  zoneinfo.zip by Go version, the CA bundle by certifi's version, system time zones and a cgo binary's
  libraries by the Debian package and version the build machine's dpkg database names.

`created` is SOURCE_DATE_EPOCH's time and the document namespace is derived from the image digest, so two
builds of one commit give the same bytes (one canonical JSON encoding). `sbom_artifact` wraps the document
in an artifact manifest whose `subject` is the image's top manifest or index.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from .. import __version__
from ..build.assemble import rfc3339
from ..build.buildinfo import BuildInfo, BuildInfoError, Module, h1_hex, read_build_info
from ..build.built import Build, FileSource
from ..build.libraries import NSSWITCH_PATH, LibraryClosure
from ..build.runtime_files import ZONEINFO_ZIP
from ..config import ImageConfig
from ..elf import MAGIC
from ..errors import GosmallError
from ..images.model import MEDIA_MANIFEST, Artifact, Blob, Platform, PlatformImage, canonical_json
from ..images.oci_layout import layout_index
from ..layer_files import FileEntry

SBOM_FILE = "sbom.spdx.json"
MEDIA_SPDX_JSON = "application/spdx+json"
MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"  # image-spec's empty descriptor: the config of an artifact that needs none
OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


# -- the document -----------------------------------------------------------------


def sbom_document(build: Build) -> bytes:
    """The SPDX 2.3 JSON document of `build`, in canonical JSON."""
    return canonical_json(_Document(build).to_json())


def sbom_artifact(build: Build, document: bytes | None = None) -> Artifact:
    """The OCI 1.1 artifact that carries the SBOM: empty config, one layer, `subject` the image's top manifest or index.

    What a writer stores (the OCI layout) and a pusher uploads with the image, so registries list it as a referrer.
    """
    layer = Blob(MEDIA_SPDX_JSON, sbom_document(build) if document is None else document)
    return artifact_of(build, layer, MEDIA_SPDX_JSON, {"org.opencontainers.image.title": SBOM_FILE})


def artifact_of(
    build: Build, layer: Blob, artifact_type: str, layer_annotations: Mapping[str, str], annotations: Mapping[str, str] | None = None
) -> Artifact:
    """`layer` as an OCI 1.1 artifact: empty config, `subject` the image's top manifest or index, dated SOURCE_DATE_EPOCH.

    The one shape of every referrer gosmall makes (the SBOM, in-toto statements, DSSE envelopes).
    """
    config = Blob(MEDIA_EMPTY, EMPTY_JSON)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": artifact_type,
        "config": config.descriptor().to_json(),
        "layers": [layer.descriptor(annotations=dict(layer_annotations)).to_json()],
        "subject": build.image.top.to_json(),
        "annotations": {"org.opencontainers.image.created": rfc3339(build.epoch), **(annotations or {})},
    }
    return Artifact(artifact_type, Blob(MEDIA_MANIFEST, canonical_json(manifest)), (config, layer))


@dataclass(frozen=True)
class _LayerFile:
    path: str  # absolute, in the image
    data: bytes

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.data).hexdigest()  # noqa: S324 - SPDX requires SHA-1 beside SHA-256

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class _Document:
    """Collects packages, files and relationships once, each under one SPDX id, then sorts them."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self.packages: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.relationships: set[tuple[str, str, str]] = set()

    def to_json(self) -> dict[str, Any]:
        build = self.build
        digest = build.digest
        image_id = "SPDXRef-Image"
        multi = build.image.index is not None
        self.relationships.add(("SPDXRef-DOCUMENT", "DESCRIBES", image_id))
        top = self._image_package(image_id, digest.hex, None if multi else build.image.manifests[0].platform)
        top["sourceInfo"] = _provenance(build)
        if multi:
            top["filesAnalyzed"] = False
        for platform_image in build.image.manifests:
            package_id = image_id
            if multi:
                package_id = f"SPDXRef-Image-{_slug(str(platform_image.platform))}"
                self._image_package(package_id, platform_image.manifest.digest.hex, platform_image.platform)
                self.relationships.add((image_id, "CONTAINS", package_id))
            self._platform(package_id, platform_image)
        return {
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": f"{build.config.repository}@{digest}",
            "documentNamespace": f"https://spdx.org/spdxdocs/gosmall/{build.config.repository}/{digest.algorithm}-{digest.hex}",
            "creationInfo": {"created": rfc3339(build.epoch), "creators": [f"Tool: gosmall-{__version__}"]},
            "packages": [self.packages[k] for k in sorted(self.packages)],
            "files": [self.files[k] for k in sorted(self.files)],
            "relationships": [
                {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b} for a, kind, b in sorted(self.relationships)
            ],
        }

    def _image_package(self, spdx_id: str, hex_digest: str, platform: Platform | None) -> dict[str, Any]:
        repository = self.build.config.repository
        qualifiers = {"repository_url": repository}
        if platform is not None:
            qualifiers["arch"] = platform.architecture
        package: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": repository if platform is None or self.build.image.index is None else f"{repository} {platform}",
            "versionInfo": f"sha256:{hex_digest}",
            "downloadLocation": "NOASSERTION",
            "primaryPackagePurpose": "CONTAINER",
            "builtDate": rfc3339(self.build.epoch),
            "checksums": [{"algorithm": "SHA256", "checksumValue": hex_digest}],
            "externalRefs": [_purl_ref(purl("oci", [repository.rsplit("/", 1)[-1].lower()], f"sha256:{hex_digest}", qualifiers))],
        }
        self.packages[spdx_id] = package
        return package

    def _platform(self, package_id: str, platform_image: PlatformImage) -> None:
        platform = platform_image.platform
        facts = self.build.facts_for(platform)
        sources = {s.path: s for s in facts.sources}
        files = sorted(_layer_files(platform_image), key=lambda f: f.path)
        package = self.packages[package_id]
        package["filesAnalyzed"] = True
        package["packageVerificationCode"] = {"packageVerificationCodeValue": _verification_code(files)}
        for layer_file in files:
            file_id = f"SPDXRef-File-{_slug(str(platform))}-{_slug(layer_file.path)}-{_short(str(platform), layer_file.path)}"
            entry: dict[str, Any] = {
                "SPDXID": file_id,
                "fileName": "." + layer_file.path,
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": layer_file.sha1},
                    {"algorithm": "SHA256", "checksumValue": layer_file.sha256},
                ],
            }
            self.files[file_id] = entry
            self.relationships.add((package_id, "CONTAINS", file_id))
            comments: list[str] = []
            if layer_file.data[:4] == MAGIC:
                go, lines = self._go_binary(file_id, layer_file, facts.ldflags if layer_file.path == facts.binary else "")
                entry["fileTypes"] = ["APPLICATION", "BINARY"] if go else ["BINARY"]
                comments.extend(lines)
            source = sources.get(layer_file.path)
            if source is not None:
                self.relationships.add((file_id, "GENERATED_FROM", self._source_package(source)))
                if source.note:
                    comments.insert(0, source.note)
            if comments:
                entry["comment"] = "\n".join(comments)

    def _go_binary(self, file_id: str, layer_file: _LayerFile, ldflags: str) -> tuple[bool, list[str]]:
        """Whether it is a Go binary; its modules and toolchain as packages linked to it, its build settings as comment lines."""
        try:
            info = read_build_info(layer_file.data)
        except BuildInfoError as exc:
            return False, [f"Go build info unreadable: {exc}"]
        if info is None:
            return False, []
        go_id = self._source_package(FileSource(layer_file.path, "golang", "stdlib", info.go_version))
        self.relationships.add((go_id, "BUILD_TOOL_OF", file_id))
        self.relationships.add((file_id, "STATIC_LINK", go_id))
        self.relationships.add((file_id, "GENERATED_FROM", self._module_package(info.main, main=True)))
        for dep in info.deps:
            self.relationships.add((file_id, "STATIC_LINK", self._module_package(dep, main=False)))
        return True, _build_settings(info, ldflags)

    def _module_package(self, module: Module, *, main: bool) -> str:
        spdx_id = f"SPDXRef-GoModule-{_slug(module.path)}-{_slug(module.version)}-{_short(*_identity(module))}"
        built = module.replace if module.replace is not None else module
        directory = module.replace is not None and _is_directory(module.replace.path)
        package: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": module.path,
            "versionInfo": module.version if directory or module.replace is None else module.replace.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "APPLICATION" if main else "LIBRARY",
        }
        if not directory:
            # The code that was linked: the replacement's, when a `replace` names another module.
            published = built.version if built.version and built.version != "(devel)" else ""
            package["externalRefs"] = [_purl_ref(purl("golang", built.path.split("/"), published))]
        checksum = h1_hex(built.sum)
        if checksum:
            package["checksums"] = [{"algorithm": "SHA256", "checksumValue": checksum}]
        package["sourceInfo"] = _module_source(module, main)
        self.packages[spdx_id] = package
        return spdx_id

    def _source_package(self, source: FileSource) -> str:
        """The package a file came from, once per package and version, whichever file names it."""
        key = (source.ecosystem, source.namespace, source.name, source.version, source.arch)
        spdx_id = f"SPDXRef-Package-{source.ecosystem}-{_slug(source.name)}-{_slug(source.version)}-{_short(*key)}"
        if spdx_id in self.packages:
            return spdx_id
        package: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": source.name,
            "versionInfo": source.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
        }
        if source.ecosystem == "golang":
            # Syft's and Grype's name for Go's standard library, runtime and toolchain files.
            package["name"] = "go"
            package["comment"] = "The Go toolchain: it compiled the binary, and its runtime and standard library are linked in."
            locator = purl("golang", ["stdlib"], source.version.removeprefix("go"))
        elif source.ecosystem == "pypi":
            locator = purl("pypi", [source.name.lower().replace("_", "-")], source.version)
        else:
            package["supplier"] = f"Organization: {source.namespace}"
            locator = purl("deb", [source.namespace, source.name.lower()], source.version, {"arch": source.arch} if source.arch else {})
        package["externalRefs"] = [_purl_ref(locator)]
        self.packages[spdx_id] = package
        return spdx_id


def _provenance(build: Build) -> str:
    source = build.report.get("source", {})
    words = [f"built by gosmall {build.report.get('builder', {}).get('gosmall', __version__)}"]
    if source.get("revision"):
        words.append(f"from revision {source['revision']}")
    if source.get("version"):
        words.append(f"(version {source['version']})")
    return " ".join(words) + f"; tags: {', '.join(build.config.tags)}"


def _build_settings(info: BuildInfo, ldflags: str) -> list[str]:
    lines = [f"Go binary of {info.path}, built by {info.go_version}; its build info says:"]
    lines.extend(f"build {key}={value}" for key, value in info.settings)
    if ldflags:
        lines.append(f"build -ldflags={ldflags} (as gosmall passed them: Go leaves -ldflags out of the build info under -trimpath)")
    return lines


def _module_source(module: Module, main: bool) -> str:
    words = ["the main module" if main else "a dependency module"]
    if module.sum:
        words.append(f"go.sum {module.sum}")
    if module.replace is not None:
        replacement = module.replace
        if _is_directory(replacement.path):
            words.append(f"replaced by the directory {replacement.path} (go.mod replace), not the published {module.version}")
        else:
            words.append(f"replaced by {replacement.path} {replacement.version} (go.mod replace)")
            if replacement.sum:
                words.append(f"go.sum {replacement.sum}")
    return "; ".join(words)


def _identity(module: Module) -> tuple[str, ...]:
    replace = module.replace or Module("", "")
    return (module.path, module.version, module.sum, replace.path, replace.version, replace.sum)


def _is_directory(path: str) -> bool:
    # cmd/go's rule (modfile.IsDirectoryPath): a replacement starting with ./ ../ or / is a directory, not a module.
    return path.startswith(("./", "../", "/")) or path in (".", "..")


def _layer_files(platform_image: PlatformImage) -> Iterator[_LayerFile]:
    """Every regular file the platform's layers put in the image (a later layer's copy of a path wins)."""
    files: dict[str, _LayerFile] = {}
    for layer in platform_image.layers:
        with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
            for member in tar:
                if member.isfile():
                    stream = tar.extractfile(member)
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    path = "/" + name.lstrip("/")
                    files[path] = _LayerFile(path, stream.read() if stream else b"")
    return iter(files.values())


def _verification_code(files: Sequence[_LayerFile]) -> str:
    # SPDX 2.3 7.9.4: the SHA-1 of the sorted, concatenated SHA-1s of the package's files.
    return hashlib.sha1("".join(sorted(f.sha1 for f in files)).encode()).hexdigest()  # noqa: S324


def _slug(text: str) -> str:
    """A readable part of an SPDX id, which allows letters, digits, '.' and '-' only."""
    return "".join(c if c.isascii() and (c.isalnum() or c in ".-") else "-" for c in text).strip("-")[:80] or "x"


def _short(*parts: str) -> str:
    """Eight hex digits that keep two ids apart when their readable parts agree."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def _purl_ref(locator: str) -> dict[str, str]:
    return {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator}


def purl(kind: str, path: Sequence[str], version: str = "", qualifiers: Mapping[str, str] | None = None) -> str:
    """A package URL as the purl spec builds one: each segment percent-encoded, ':' kept, qualifiers sorted by key."""
    text = f"pkg:{kind}/" + "/".join(_purl_encode(segment) for segment in path if segment)
    if version:
        text += "@" + _purl_encode(version)
    if qualifiers:
        text += "?" + "&".join(f"{key}={_purl_encode(value)}" for key, value in sorted(qualifiers.items()) if value)
    return text


def _purl_encode(text: str) -> str:
    return quote(text, safe=":")


def write_sbom(build: Build) -> Path:
    """<output>/<image>/sbom.spdx.json and its referrer in the OCI layout, made again from a Build `read_build` gave.

    The same bytes build-small writes; index.json keeps its image entries and names the new referrer after them.
    Each file is written beside its target and renamed over it, and a path that is not a regular file (a link) is
    refused, never followed.
    """
    from ..build.fresh import rewriting

    document = sbom_document(build)
    artifact = sbom_artifact(build, document)
    layout = build.output_dir / "oci"
    blobs = [(layout / "blobs" / blob.digest.algorithm / blob.digest.hex, blob.data) for blob in (*artifact.blobs, artifact.manifest)]
    path = build.output_dir / SBOM_FILE
    # Through fresh.py: the same bytes again under new inodes must not turn the next unchanged build into a full one.
    with rewriting(build.output_dir, *(target for target, _ in blobs), layout / "index.json", path):
        for target, data in blobs:
            if not target.is_file() or target.is_symlink():
                _replace(target, data)
        _replace(layout / "index.json", layout_index(build.image, build.config.repository, build.config.tags, (artifact,)))
        _replace(path, document)
    return path


def _replace(path: Path, data: bytes) -> None:
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise GosmallError(
                f"{path} is not a regular file, so gosmall did not write it and will not replace it; "
                "remove it, then run `gosmall sbom` again."
            )
        temporary = path.with_name(f".{path.name}.gosmall-{os.getpid()}")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise GosmallError(f"Cannot write {path}: {exc.strerror or exc}.") from None


# -- the facts, gathered while building -------------------------------------------


def file_sources(
    config: ImageConfig,
    entries: Sequence[FileEntry],
    closure: LibraryClosure | None,
    go_version: str,
    *,
    runner: Runner = subprocess.run,
    os_release: Sequence[Path] = OS_RELEASE,
) -> tuple[FileSource, ...]:
    """Where each runtime file of one platform came from, as far as this machine can tell.

    Go's zoneinfo.zip has no version field: its source is the Go release (`go_version`, "go1.27.3"). The CA bundle
    is certifi's, by its installed version. System time zones and a cgo binary's libraries are looked up in the
    dpkg database (the file's own path, or its merged-/usr twin); a file no package owns, or a machine without
    dpkg, gives no source, and the SBOM says nothing rather than guess. gosmall's own generated files
    (/etc/passwd, /etc/nsswitch.conf) have none.
    """
    sources: list[FileSource] = []
    host_paths: dict[str, str] = {}  # image path -> host path to ask dpkg about
    notes: dict[str, str] = {}
    for entry in entries:
        if entry.kind != "file":
            continue
        if entry.role == "tzdata" and entry.path == ZONEINFO_ZIP:
            note = f"Go {go_version}'s lib/time/zoneinfo.zip, the time zone database Go ships (it has no version of its own)"
            if config.zones:
                note += f"; reduced to the {len(set(config.zones))} zone(s) in `zones`"
            sources.append(FileSource(entry.path, "golang", "stdlib", go_version, note=note))
        elif entry.role == "tzdata" and entry.origin:
            host_paths[entry.path] = entry.origin
        elif entry.role == "ca_certs":
            note = "certifi's CA bundle"
            if config.extra_ca_certs:
                note += f", with the {len(config.extra_ca_certs)} file(s) of extra_ca_certs appended"
            sources.append(FileSource(entry.path, "pypi", "certifi", _installed_version("certifi"), note=note))
    for library in closure.files if closure is not None else ():
        if library.kind == "file" and library.path != NSSWITCH_PATH:
            host_paths[library.path] = str(library.host_path)
            if library.data is not None:
                notes[library.path] = "debug sections stripped (strip_libs)"
    sources.extend(_debian_sources(host_paths, notes, runner, _distribution(os_release)))
    return tuple(sorted(sources, key=lambda s: s.path))


def _installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - a source checkout run without installing
        return "unknown"


_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def _dpkg_paths(host: str) -> tuple[str, ...]:
    """The path, then its merged-/usr twin: Debian's dpkg database still lists many files under /lib."""
    parts = host.split("/")
    if len(parts) > 3 and parts[1] == "usr" and parts[2] in _MERGED_USR:
        return host, "/" + "/".join(parts[2:])
    if len(parts) > 2 and parts[1] in _MERGED_USR:
        return host, "/usr" + host
    return (host,)


def _debian_sources(host_paths: Mapping[str, str], notes: Mapping[str, str], runner: Runner, distribution: str) -> list[FileSource]:
    dpkg = shutil.which("dpkg-query")
    if not host_paths or dpkg is None:
        return []
    # dpkg-query --search takes glob patterns; a path with glob characters is not asked about rather than misread.
    candidates = {image: [p for p in _dpkg_paths(host) if not set(p) & set("*?[\\")] for image, host in host_paths.items()}
    asked = sorted({p for paths in candidates.values() for p in paths})
    owners: dict[str, str] = {}
    for line in _dpkg_query(runner, dpkg, ["--search", "--", *asked]).splitlines():
        owner, separator, path = line.partition(": ")
        # "a, b: /dir" is shared by several packages; "diversion by x from: /path" names no owner.
        if separator and " " not in owner and "," not in owner:
            owners[path] = owner
    if not owners:
        return []
    showformat = "--showformat=${binary:Package}\t${Package}\t${Architecture}\t${Version}\n"
    shown = _dpkg_query(runner, dpkg, ["--show", showformat, "--", *sorted(set(owners.values()))])
    packages: dict[str, list[str]] = {}
    for line in shown.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and all(fields):
            packages[fields[0]] = fields[1:]
    sources = []
    for image, paths in sorted(candidates.items()):
        found = next((owners[p] for p in paths if p in owners), None)
        if found is not None and found in packages:
            name, arch, package_version = packages[found]
            sources.append(FileSource(image, "deb", name, package_version, distribution, arch, notes.get(image, "")))
    return sources


def _dpkg_query(runner: Runner, dpkg: str, args: list[str]) -> str:
    try:
        done = runner([dpkg, *args], capture_output=True, text=True, timeout=120, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return ""
    # Exit 1 when some path has no owner; what it found is on stdout all the same.
    return done.stdout if done.returncode in (0, 1) else ""


def _distribution(candidates: Sequence[Path]) -> str:
    """os-release's ID ("debian", "ubuntu"): the purl namespace of the packages dpkg names."""
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ID" and value.strip().strip("\"'"):
                return value.strip().strip("\"'").lower()
    return "debian"
