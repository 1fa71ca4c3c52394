"""Tasks about references and images: keys and signatures, pins, resolve, the lock, the SBOM and the audit. Wiring only."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

from invoke import Exit, task

from ..config import load_project
from ..errors import COULD_NOT_RUN, FOUND, GosmallError
from ..reporter import make_reporter
from .wiring import (
    IMAGE_HELP,
    INSECURE_CACHE_HELP,
    INSECURE_HELP,
    PATH_HELP,
    insecure_hosts,
    machine_facts,
    paths,
    pin_scope,
    read_builds,
    registry_client,
    signing_key,
    speaks_to_user,
)


@task
@speaks_to_user
def keygen(c: Any) -> None:
    """Write a signing key pair in the current directory: cosign.key (encrypted) and cosign.pub, in cosign's format.

    cosign and skopeo (--sign-by-sigstore-private-key, a sigstoreSigned policy) use the same files. The password comes
    from GOSMALL_SIGNING_PASSWORD, else a prompt. An existing key is never overwritten. Exit status: 0 written; 2 it
    could not (a key already there, no password).
    """
    from ..trust.sign import check_no_key_pair, generate_key_pair, signing_password, write_key_pair

    check_no_key_pair(Path.cwd())
    private, public = write_key_pair(Path.cwd(), generate_key_pair(signing_password(confirm=True)))
    make_reporter().step(f"Wrote {private.name} (keep it secret) and {public.name} (give it to whoever verifies)")


@task(iterable=["insecure_registry"], help={"key": "The cosign private key (cosign.key from `gosmall keygen`); its password from GOSMALL_SIGNING_PASSWORD, else a prompt.",
                                            "image": IMAGE_HELP, "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def sign(c: Any, key: str = "", image: str | None = None, insecure_registry: list[str] | None = None) -> None:
    """Sign each image's pushed digest (report.json's) and store the signature beside it, the way cosign does.

    The signature is a simple-signing payload signed with ECDSA P-256, under the tag sha256-<hex>.sig of the image's
    repository; cosign and skopeo (use-sigstore-attachments) read it there. The provenance and SBOM statements are
    attested too, as DSSE envelopes under sha256-<hex>.att (cosign verify-attestation reads them) and as referrers.
    Prints the .sig reference per image. Exit
    status: 0 signed; 2 it could not (no key or wrong password, not built, not pushed, the registry refused).
    """
    from ..publish.push import repository_reference
    from ..trust.sign import attest_image, sign_image

    if not key:
        raise GosmallError("sign needs --key: the cosign private key to sign with (`gosmall keygen` writes cosign.key).")
    project = load_project()
    builds = read_builds(project, image)
    private = signing_key(key)
    client = registry_client(insecure_registry)
    reporter = make_reporter()
    for build in builds:
        repository = repository_reference(build.config)
        print(sign_image(client, repository, build.digest, private, reporter))
        attest_image(client, repository, build, private, machine_facts(build), reporter)  # named on stderr: stdout stays the .sig


@task(iterable=["insecure_registry"], help={"image": "The image: repo@sha256:... or repo:tag.", "key": "The cosign public key (cosign.pub).",
                                            "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def verify_signature(c: Any, image: str, key: str = "", insecure_registry: list[str] | None = None) -> None:
    """Check that IMAGE carries a signature by KEY, stored the way cosign and skopeo store it, for its own repository.

    Exit status: 0 a signature checks out; 1 there is none, or none by this key for this image and repository; 2 it
    could not run (no key, bad reference, the registry failed).
    """
    from ..trust.sign import read_public_key, verify_image_signature

    if not key:
        raise GosmallError("verify-signature needs --key: the cosign public key to check with (cosign.pub).")
    verified = verify_image_signature(registry_client(insecure_registry), image, read_public_key(Path(key)))
    print(f"{verified.repository}@{verified.digest}: signed by {key} as {verified.docker_reference}")


@task(iterable=["insecure_registry"], help={"image": "The image: repo@sha256:... or repo:tag.", "key": "The cosign public key (cosign.pub).",
                                            "type": "slsaprovenance1 (default: the SLSA provenance v1 statement) or spdx (the SPDX SBOM statement).",
                                            "format": "text, or json ({verified, image, digest, predicate_type, commit, builder, found_in} or {verified: false, image, problem}).",
                                            "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def verify_attestation(
    c: Any,
    image: str,
    key: str = "",
    type: str = "slsaprovenance1",
    format: str = "text",
    insecure_registry: list[str] | None = None,  # noqa: A002
) -> None:
    """Check that IMAGE carries an in-toto attestation of TYPE signed by KEY (a DSSE envelope, as cosign attests) whose subject is IMAGE.

    Looks in cosign's sha256-<hex>.att and in the image's referrers. Prints the subject digest, the source commit and
    the builder. Exit status: 0 verified; 1 none by this key for this image (none at all, a bad signature, a subject
    that is another image: the message says which); 2 it could not run (no key, bad reference, the registry failed).
    """
    from ..trust.sign import ATTESTATION_TYPES, read_public_key, verify_image_attestation

    if format not in ("text", "json"):
        raise GosmallError(f"--format {format!r} is not known; use text or json.")
    if type not in ATTESTATION_TYPES:
        raise GosmallError(f"--type {type!r} is not known; use {' or '.join(ATTESTATION_TYPES)}.")
    if not key:
        raise GosmallError("verify-attestation needs --key: the cosign public key to check with (cosign.pub).")
    public = read_public_key(Path(key))
    try:
        attested = verify_image_attestation(registry_client(insecure_registry), image, public, ATTESTATION_TYPES[type])
    except GosmallError as error:
        if error.code == FOUND and format == "json":
            print(json.dumps({"verified": False, "image": image, "problem": error.message}, indent=2))
        raise
    if format == "json":
        print(json.dumps(attested.to_json(), indent=2))
        return
    print(f"{attested.repository}@{attested.digest}: {type} attestation signed by {key}")
    print(f"  source commit: {attested.commit or '(not named)'}")
    print(f"  builder: {attested.builder or '(not named)'}")


@task(iterable=["path"], help={"path": PATH_HELP, "format": "text (path:line:col: message), json (a list of {path, line, column, reference, problem, message}) or sarif (SARIF 2.1.0, for code scanning)."})  # fmt: skip
@speaks_to_user
def verify_pins(c: Any, path: list[str] | None = None, format: str = "text") -> None:  # noqa: A002 - the flag is --format
    """List every image reference that is not pinned by sha256 digest.

    Runs anywhere: in a gosmall project it skips the project's output; elsewhere it scans the git work tree (or the
    current directory) as it is, Dockerfiles, Compose files, Kubernetes manifests and GitHub workflows alike.
    Exit status: 0 every reference is pinned; 1 unpinned or invalid references (or unreadable files) were found;
    2 it could not run (bad flag, bad config, missing path), and then nothing is printed on stdout.
    """
    from ..trust.pinning import format_findings, scan_project

    if format not in ("text", "json", "sarif"):
        raise GosmallError(f"--format {format!r} is not known; use text, json or sarif.")
    root, output = pin_scope()
    result = scan_project(root, paths(path), output_dir=output)
    shown = format_findings(result, format, Path.cwd())  # type: ignore[arg-type]
    if shown or format != "text":
        print(shown)
    if not result.ok:
        raise Exit(code=FOUND)
    print(f"all {len(result.occurrences)} image reference(s) in {len(result.files)} file(s) are pinned by digest", file=sys.stderr)


@task(iterable=["path"], help={"path": PATH_HELP, "check": "Only report what would change; exit 1 if anything would.",
                               "timeout": "Seconds the run may spend asking registries, in all (default 120)."})  # fmt: skip
@speaks_to_user
def pin(c: Any, path: list[str] | None = None, check: bool = False, timeout: int = 120) -> None:
    """Rewrite unpinned image references to name:tag@sha256:... with the digest their registry serves now.

    Runs anywhere, like verify-pins. A symlinked file is edited at its target, which must be inside the project; the
    link stays. Up to 8 references are resolved at once, and no run asks registries for longer than --timeout.
    Exit status: 0 everything is pinned (with --check: nothing would change); 1 references are left unpinned or invalid
    (with --check: or would change); 2 it could not run (bad flag, bad config, missing path, a registry that did not
    answer in time or refused access).
    """
    from ..trust.pinning import format_pin_result, pin_references

    if timeout <= 0:
        raise GosmallError(f"--timeout {timeout}: must be a positive number of seconds.")
    root, output = pin_scope()
    result = pin_references(root, paths(path), check=check, output_dir=output, timeout=timeout)
    shown = format_pin_result(result, Path.cwd())
    if shown:
        print(shown)
    failed = [f for f in result.unresolved if f.code == COULD_NOT_RUN]
    if failed:
        raise GosmallError(
            f"{len(failed)} reference(s) could not be resolved, because a registry could not be asked (see above). "
            f"Check that it is reachable and your credentials (docker login), or allow more than --timeout {timeout} seconds.",
            code=COULD_NOT_RUN,
        )
    if result.exit_status:
        raise Exit(code=result.exit_status)


@task(iterable=["filename", "insecure_registry"],
      help={"filename": "A file or directory whose gosmall:// and ko:// references to resolve (repeatable; "
                        "`gosmall resolve k8s/` also works).",
            "write": "Edit the files in place (as `gosmall pin` does) instead of printing them.",
            "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def resolve(c: Any, filename: list[str] | None = None, write: bool = False, insecure_registry: list[str] | None = None) -> None:
    """Build and push the images that YAML files and Dockerfiles name as gosmall://NAME or ko://IMPORTPATH; print them with repository@sha256:...

    NAME is an image of [tool.gosmall.images] or a main package path (gosmall://./cmd/app, no config needed); a ko://
    reference is matched by the main package's import path, so manifests written for ko resolve unchanged. Only the
    images referenced are built; every other byte of each file is kept. With --write the files are edited in place,
    under the same rules as pin. Exit status: 0 resolved; 2 it could not run (no such image, missing path, bad config,
    registry refused), and then nothing is built or printed.
    """
    from ..pipeline import build_small as run_build_small
    from ..trust.resolve import resolve_references

    if not filename:
        raise GosmallError("Name the files to resolve: gosmall resolve -f k8s/ (a file or directory, repeatable).")
    reporter = make_reporter(out=sys.stderr)  # stdout is the documents
    result = resolve_references(
        Path.cwd(),
        paths(filename),
        client=registry_client(insecure_registry),
        reporter=reporter,
        build_small=functools.partial(run_build_small, insecure=insecure_hosts(insecure_registry)),  # the shared Go cache's host too
        write=write,
    )
    if not write:
        sys.stdout.write(result.documents)


@task(iterable=["insecure_registry"], help={"insecure_registry": INSECURE_CACHE_HELP})
@speaks_to_user
def lock(c: Any, insecure_registry: list[str] | None = None) -> None:
    """Build every image from a clean clone of HEAD and write gosmall.lock: digests, Go, compressor, revision.

    Uncommitted changes are left out (a warning names them). On the same commit, or on the commit that only adds
    gosmall.lock, it rewrites the file byte for byte. Exit status: 0 written; 2 it could not run (not a git
    repository, a failed build).
    """
    from ..pipeline import build_small as run_build_small
    from ..trust.lock import lock_project

    reporter = make_reporter()
    build = functools.partial(run_build_small, insecure=insecure_hosts(insecure_registry))
    path, written = lock_project(load_project(), reporter, build)
    reporter.step(f"{path}: {len(written.images)} image(s) of {written.revision[:12]}")


@task(iterable=["insecure_registry"], help={"image": IMAGE_HELP, "insecure_registry": INSECURE_CACHE_HELP})
@speaks_to_user
def verify_lock(c: Any, image: str | None = None, insecure_registry: list[str] | None = None) -> None:
    """Rebuild every image (or one) from a clean clone of HEAD and compare its digests with gosmall.lock.

    Exit status: 0 the digests are the lock's; 1 they differ (each difference is named with its likely cause: Go
    version, compressor version, source changed since the lock's revision, config changed); 2 it could not run (no
    lock, not a git repository, a failed build).
    """
    from ..pipeline import build_small as run_build_small
    from ..trust.lock import verify_project_lock

    reporter = make_reporter()
    build = functools.partial(run_build_small, insecure=insecure_hosts(insecure_registry))
    built = verify_project_lock(load_project(), reporter, build, names=(image,) if image else ())
    reporter.step(f"gosmall.lock matches a clean rebuild of {built.revision[:12]}: {', '.join(n for n, _ in built.images)}")


@task(iterable=["insecure_registry"],
      help={"image": IMAGE_HELP, "reference": "An image in a registry (repo@sha256:... or repo:tag): download its SBOM referrer instead.",
            "output": "With REFERENCE: write the SBOM to this file instead of stdout.", "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def sbom(c: Any, reference: str = "", image: str | None = None, output: str = "", insecure_registry: list[str] | None = None) -> None:
    """Write <output>/<image>/sbom.spdx.json (SPDX 2.3) and its referrer in the OCI layout again, from the built output;
    or, given REFERENCE, download the SBOM pushed beside that image.

    build-small writes both; this reads the build back (report.json and the layout, checked) and makes the same bytes,
    e.g. for an output an older gosmall wrote without them. With REFERENCE the SBOM referrer is read from the
    registry, its manifest and layer checked by digest and its subject against the image, and written to stdout or
    -o FILE. Exit status: 0 written; 2 it could not run (not built, a damaged output; no SBOM referrer, registry failed).
    """
    if reference:
        if image:
            raise GosmallError(f"sbom: give REFERENCE ({reference}) or --image {image}, not both.")
        from ..atomic import write_beside
        from ..trust.proofs import fetch_sbom

        ref, digest, document = fetch_sbom(registry_client(insecure_registry), reference)
        if output:
            write_beside(Path(output), document)
            make_reporter(out=sys.stderr).step(f"{ref.name}@{digest}: its SBOM written to {output}")
        else:
            sys.stdout.buffer.write(document)
            sys.stdout.flush()
        return
    if output:
        raise GosmallError("sbom: -o/--output goes with a REFERENCE; --image writes <output>/<image>/sbom.spdx.json.")
    from ..trust.sbom import write_sbom

    reporter = make_reporter()
    for build in read_builds(load_project(), image):
        reporter.step(f"{build.config.name}: {write_sbom(build)}")


@task(iterable=["allow"], help={"target": "An OCI layout directory (or a gosmall output directory), a docker-archive image.tar, an image in the Docker engine by name, or docker://host/repo@sha256:... in a registry.",
                                "format": "text (platform: path-or-key: rule: finding), json (a list of {platform, rule, level, path or key, message}) or sarif (SARIF 2.1.0, for code scanning).",
                                "allow": "A rule id whose findings do not fail the audit and are not shown (repeatable); a gosmall output's audit_allow applies too.",
                                "max-layer-size": "The most one layer (or blob) may decompress to, e.g. 16GiB; past it the image is refused (exit 2). Default: GOSMALL_MAX_LAYER_SIZE, else 4GiB."})  # fmt: skip
@speaks_to_user
def audit(c: Any, target: str, format: str = "text", allow: list[str] | None = None, max_layer_size: str = "") -> None:  # noqa: A002 - the flag is --format
    """Audit an image, gosmall's or anyone's: root user, shells, setuid, writable or foreign-owned files, entrypoint, secrets, accounts, leftovers.

    Each platform's config and flattened file system is checked; a gosmall output directory is also held to its
    max_size and its audit_allow. Info findings (labels, healthcheck) are shown and never fail. gzip, zstd and plain
    layers are read; none may decompress past --max-layer-size. Exit status: 0 no finding above info; 1 a finding not
    allowed; 2 it could not run (unreadable or missing image, a layer over the cap, no engine, registry refused), and
    then nothing is printed on stdout.
    """
    from ..trust.audit import audit_target, check_allowed, failing, format_findings
    from ..trust.audit import max_layer_size as layer_cap

    if format not in ("text", "json", "sarif"):
        raise GosmallError(f"--format {format!r} is not known; use text, json or sarif.")
    allowed = check_allowed(allow or ())
    done = audit_target(target, max_layer_size=layer_cap(max_layer_size, os.environ))
    findings = tuple(f for f in done.findings if f.rule not in allowed | done.allowed)
    shown = format_findings(findings, format, target=target, anchor=done.anchor(Path.cwd()))  # type: ignore[arg-type]
    if shown or format != "text":
        print(shown)
    if failing(findings):
        raise Exit(code=FOUND)
    print(f"{target}: no finding fails the audit", file=sys.stderr)


@task(iterable=["target"], help={"target": "What to check, as `audit` takes it: an output directory, an OCI layout, an image.tar, an engine image or docker://host/repo@sha256:... (repeatable); default: the project's outputs.",
                                 "db": "The Go vulnerability database: a directory or file:// URL in its published layout (index/db.json, index/modules.json, ID/<id>.json), or an https:// URL; default: GOVULNDB, then [tool.gosmall] vulndb.",
                                 "format": "text (per image and platform: ID, aliases, summary, module@version, fixed in, symbols), json, or sarif (SARIF 2.1.0, one result per vulnerability and binary).",
                                 "all": "Exit 1 on any vulnerability that affects a module version, called or not."})  # fmt: skip
@speaks_to_user
def vulns(c: Any, target: list[str] | None = None, db: str = "", format: str = "text", all: bool = False) -> None:  # noqa: A002 - the flags are --format and --all
    """Match every Go binary in each image against the Go vulnerability database: called, or imported but not called.

    A vulnerability is called when one of its functions is in the binary, linked or inlined (read from the stripped
    binary's pclntab and inline trees); imported when its module is at an affected version but none of its functions
    is. Only a URL database uses the network. Exit status: 0 nothing called (with --all: nothing affected); 1 a
    vulnerability is called (with --all: any affects a binary); 2 it could not run (no database, a damaged one, an
    unreadable image), and then nothing is printed on stdout.
    """
    import os

    from ..config import NoProjectError
    from ..trust.vulns import HOW_TO_GET_ONE, check_targets, database_location, exit_status, format_results, open_database

    if format not in ("text", "json", "sarif"):
        raise GosmallError(f"--format {format!r} is not known; use text, json or sarif.")
    try:
        project = load_project(images_required=not target)
    except NoProjectError:
        if not target:
            raise GosmallError(
                "vulns checks the images TARGET names (an output directory, an OCI layout, an image.tar, an engine image or "
                "docker://host/repo@sha256:...), or, with none named, the outputs of the project here; there is no "
                "pyproject.toml with [tool.gosmall] in this directory or above it. Name a TARGET."
            ) from None
        project = None
    configured = (project.vulndb, project.root) if project is not None else (None, Path.cwd())
    where = database_location(db, os.environ, configured[0], root=configured[1], cwd=Path.cwd())
    if where is None:
        raise GosmallError(f"vulns needs the Go vulnerability database. {HOW_TO_GET_ONE}")
    database = open_database(*where)
    targets = list(target or ()) or [str(project.output_dir(image)) for image in project.images]  # type: ignore[union-attr]
    results = check_targets(targets, database)
    print(format_results(results, format, everything=all, cwd=Path.cwd()))  # type: ignore[arg-type]
    status = exit_status(results, everything=all)
    if status:
        raise Exit(code=status)
