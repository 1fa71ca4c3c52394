"""Proof of origin: a SLSA provenance v1 statement of a `Build`, and the OCI 1.1 artifact that carries it.

`provenance_statement` is pure: an in-toto Statement v1 whose one subject is the image's top digest (what a user
pulls by) and whose predicate (`https://slsa.dev/provenance/v1`) says

* `buildDefinition.buildType`: BUILD_TYPE, documented in the README;
* `externalParameters`: the image's resolved config (every [tool.gosmall] key as the build applied it) and its
  platforms;
* `resolvedDependencies`: the git repository and commit, the Go toolchain (its version, and the sha256 of its
  `go` binary when the machine that pushes holds that very Go), every module the build info of each platform's
  binary names with its `h1:` hash (as `dirHash`, the in-toto name for it), and where the runtime files came
  from (certifi's and Go's tzdata versions, the Debian packages of a cgo binary's libraries);
* `runDetails.builder`: gosmall and its version; on GitHub Actions also the workflow, run and commit that ran it.

No clock is read: `metadata` holds only the CI run's id, so pushing one build twice makes the same statement,
and the same referrer. What the machine knows beyond the Build (the git remote, the go binary, CI's variables)
is gathered once at the edge by `gather_facts`; the image itself never changes because of any of it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit, urlunsplit

from .. import __version__
from ..build.buildinfo import BuildInfoError, Module, h1_hex, read_build_info
from ..build.built import Build, FileSource
from ..images.model import Artifact, Blob, canonical_json
from .sbom import artifact_of, sbom_artifact

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
SPDX_DOCUMENT = "https://spdx.dev/Document"  # cosign's predicate type for `--type spdx` / `spdxjson`
MEDIA_IN_TOTO = "application/vnd.in-toto+json"
BUILD_TYPE = "urn:gosmall:buildtype:go-scratch-image:v1"
# Docker buildx's name for it on attestation layers; on our referrer manifests too, so a listing can filter.
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
GITHUB_VARIABLES = ("GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_SHA", "GITHUB_WORKFLOW_REF")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class MachineFacts:
    """What the pushing machine knows about a build that the Build does not hold."""

    git_remote: str = ""  # the source repository's URL, credentials removed
    go_sha256: str = ""  # of the `go` binary of the very Go release that built it, when this machine has it
    ci: tuple[tuple[str, str], ...] = ()  # GITHUB_* variables that name the run, sorted


def gather_facts(
    build: Build, environ: Mapping[str, str], *, go_binary: Path | None = None, runner: Runner = subprocess.run
) -> MachineFacts:
    """The edge: ask git for the remote, hash the go binary, read CI's variables."""
    ci = tuple(sorted((name, environ[name]) for name in GITHUB_VARIABLES if environ.get(name)))
    remote = ""
    if environ.get("GITHUB_REPOSITORY"):
        remote = f"{environ.get('GITHUB_SERVER_URL') or 'https://github.com'}/{environ['GITHUB_REPOSITORY']}"
    else:
        root = build.config.project_root or build.config.package
        try:
            done = runner(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True, timeout=30)
            remote = done.stdout.strip() if done.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            remote = ""
    digest = ""
    if go_binary is not None and go_binary.is_file():
        digest = hashlib.sha256(go_binary.read_bytes()).hexdigest()
    return MachineFacts(_without_credentials(remote), digest, ci)


def provenance_statement(build: Build, facts: MachineFacts = MachineFacts()) -> bytes:
    """The in-toto Statement v1 with the SLSA provenance v1 predicate of `build`, in canonical JSON."""
    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [statement_subject(build)],
            "predicateType": SLSA_PROVENANCE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": {
                        "image": build.config.name,
                        "config": _plain(build.config, _root(build)),
                        "platforms": [str(m.platform) for m in build.image.manifests],
                    },
                    "internalParameters": {"source_date_epoch": build.epoch},
                    "resolvedDependencies": _dependencies(build, facts),
                },
                "runDetails": _run_details(build, facts),
            },
        }
    )


def statement_subject(build: Build) -> dict[str, Any]:
    return {"name": build.config.repository, "digest": {build.digest.algorithm: build.digest.hex}}


def in_toto_artifact(build: Build, statement: bytes, predicate_type: str) -> Artifact:
    """An unsigned statement as an OCI 1.1 artifact: empty config, the statement as its one layer, `subject` the image."""
    return referrer_artifact(build, Blob(MEDIA_IN_TOTO, statement), MEDIA_IN_TOTO, predicate_type)


def referrer_artifact(build: Build, layer: Blob, artifact_type: str, predicate_type: str) -> Artifact:
    """`layer` as a referrer of the image, marked with the predicate type it carries (cosign's annotation)."""
    return artifact_of(build, layer, artifact_type, {PREDICATE_ANNOTATION: predicate_type}, {PREDICATE_ANNOTATION: predicate_type})


def sbom_statement(build: Build, document: bytes) -> bytes:
    """The SPDX document as cosign attests one (`--type spdxjson`): an in-toto Statement v1 whose predicate it is."""
    return canonical_json(
        {"_type": STATEMENT_TYPE, "subject": [statement_subject(build)], "predicateType": SPDX_DOCUMENT, "predicate": json.loads(document)}
    )


# -- the parts --------------------------------------------------------------------


def _root(build: Build) -> Path | None:
    """What config paths are written relative to: the project, else (no config) the directory holding the output
    (`<root>/dist/<image>`), so no home directory or checkout path of the build machine reaches a registry."""
    return build.config.project_root or build.output_dir.parent.parent


def _plain(value: Any, root: Path | None) -> Any:
    """A config value as JSON: paths relative to the project (an absolute path names the machine, not the build)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), root) for f in fields(value) if f.name not in ("project_root",)}
    if isinstance(value, Path):
        if root is not None:
            try:
                return value.relative_to(root).as_posix() or "."
            except ValueError:
                pass
        return value.as_posix()
    if isinstance(value, (tuple, list)):
        return [_plain(v, root) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _dependencies(build: Build, facts: MachineFacts) -> list[dict[str, Any]]:
    source = build.report.get("source", {})
    out: list[dict[str, Any]] = []
    git: dict[str, Any] = {"name": "source"}
    if facts.git_remote:
        git["uri"] = f"git+{facts.git_remote}"
    if source.get("revision"):
        git["digest"] = {"gitCommit": str(source["revision"])}
    if source.get("version"):
        git["annotations"] = {"version": str(source["version"])}
    out.append(git)
    go_version = str(build.report.get("builder", {}).get("go", ""))
    if go_version:
        go: dict[str, Any] = {"name": "go", "uri": f"pkg:golang/stdlib@{go_version.removeprefix('go')}"}
        if facts.go_sha256:
            go["digest"] = {"sha256": facts.go_sha256}
        out.append(go)
    modules: dict[str, dict[str, Any]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for platform_image in build.image.manifests:
        platform_facts = build.facts_for(platform_image.platform)
        for module in _modules(platform_image, platform_facts.binary):
            entry = _module_entry(module)
            modules.setdefault(entry["uri"], entry)
        for file_source in platform_facts.sources:
            entry = _source_entry(file_source)
            key = canonical_json(entry).decode()
            sources.setdefault(key, entry)
    out.extend(modules[k] for k in sorted(modules))
    out.extend(sources[k] for k in sorted(sources))
    return out


def _modules(platform_image: Any, binary: str) -> list[Module]:
    """The dependency modules (and the main module) in the build info of the binary gosmall compiled."""
    import io
    import tarfile

    if not binary:
        return []
    wanted = binary.lstrip("/")
    data = b""
    for layer in platform_image.layers:
        with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if member.isfile() and name.lstrip("/") == wanted:
                    stream = tar.extractfile(member)
                    data = stream.read() if stream else b""
    try:
        info = read_build_info(data) if data else None
    except BuildInfoError:
        return []
    return [info.main, *info.deps] if info is not None else []


def _module_entry(module: Module) -> dict[str, Any]:
    built = module.replace if module.replace is not None else module
    version = built.version if built.version and built.version != "(devel)" else ""
    uri = f"pkg:golang/{quote(built.path, safe='/')}" + (f"@{quote(version, safe='')}" if version else "")
    entry: dict[str, Any] = {"name": module.path, "uri": uri}
    hexed = h1_hex(built.sum)
    if hexed:
        entry["digest"] = {"dirHash": hexed}
    if module.replace is not None:
        entry["annotations"] = {"replaces": f"{module.path} {module.version}".strip()}
    return entry


def _source_entry(source: FileSource) -> dict[str, Any]:
    if source.ecosystem == "golang":
        uri = f"pkg:golang/stdlib@{source.version.removeprefix('go')}"
    elif source.ecosystem == "pypi":
        uri = f"pkg:pypi/{source.name.lower().replace('_', '-')}@{source.version}"
    else:
        uri = f"pkg:deb/{source.namespace}/{source.name.lower()}@{quote(source.version, safe='')}" + (
            f"?arch={source.arch}" if source.arch else ""
        )
    annotations = {"path": source.path}
    if source.note:
        annotations["note"] = source.note
    return {"name": source.name, "uri": uri, "annotations": annotations}


def _run_details(build: Build, facts: MachineFacts) -> dict[str, Any]:
    builder: dict[str, Any] = {
        "id": f"pkg:pypi/gosmall@{build.report.get('builder', {}).get('gosmall', __version__)}",
        "version": {"gosmall": str(build.report.get("builder", {}).get("gosmall", __version__))},
    }
    details: dict[str, Any] = {"builder": builder}
    ci = dict(facts.ci)
    if ci:
        # CI's identity: the workflow that ran gosmall, at the commit it ran for.
        server = "https://github.com"
        dependency: dict[str, Any] = {"name": "ci"}
        if ci.get("GITHUB_WORKFLOW_REF"):
            dependency["uri"] = f"{server}/{ci['GITHUB_WORKFLOW_REF']}"
        if ci.get("GITHUB_SHA"):
            dependency["digest"] = {"gitCommit": ci["GITHUB_SHA"]}
        dependency["annotations"] = {k: v for k, v in sorted(ci.items())}
        builder["builderDependencies"] = [dependency]
        if ci.get("GITHUB_REPOSITORY") and ci.get("GITHUB_RUN_ID"):
            details["metadata"] = {"invocationId": f"{server}/{ci['GITHUB_REPOSITORY']}/actions/runs/{ci['GITHUB_RUN_ID']}"}
    return details


def _without_credentials(url: str) -> str:
    """A remote URL without a user or token in it (`https://user:token@host/x` happens in CI checkouts)."""
    if "://" not in url:
        return url  # scp-like `git@host:path`: a user name, never a secret
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def proof_artifacts(build: Build, facts: MachineFacts = MachineFacts()) -> tuple[Artifact, ...]:
    """The referrers every push carries: the SPDX SBOM (the bytes of sbom.spdx.json) and the provenance statement."""
    return (sbom_artifact(build), in_toto_artifact(build, provenance_statement(build, facts), SLSA_PROVENANCE))
