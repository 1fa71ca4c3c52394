"""gosmall's tasks: wiring only. Each reads its flags, loads the config, calls stages.

The same collection backs `invoke <task>` in this repository (tasks.py imports
it) and the `gosmall` console script (stages.cli), so both run the same code.
Config layers, later wins: built-in defaults, [tool.gosmall] in the nearest
pyproject.toml, environment (SOURCE_DATE_EPOCH, DOCKER_HOST), task flags.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from invoke import Collection, Exit, task

from .config import ProjectConfig, load_project, parse_platform_flags, with_platforms
from .errors import COULD_NOT_RUN, FOUND, GosmallError
from .interrupts import Interrupted, sigterm_as_ctrl_c
from .reporter import Reporter, make_reporter

# Each task imports the stages it runs when it runs: a no-op build must cost little more than Go's own
# up-to-date check, and `gosmall --help` nothing but invoke.
if TYPE_CHECKING:
    from .build.built import Build
    from .publish.push import RegistryPublisher
    from .registry.client import RegistryClient

F = TypeVar("F", bound=Callable[..., Any])

IMAGE_HELP = "Only this image (a key of [tool.gosmall.images]); default: all of them."
PACKAGE_HELP = (
    "A Go main package directory, as `go build` takes it (repeatable; `gosmall build-small ./cmd/app ./cmd/worker` also "
    "works): built as the image [tool.gosmall] gives it, else with the defaults. No pyproject.toml needed."
)
PLATFORM_HELP = "Build for this platform instead of the configured ones, e.g. linux/arm64 (repeatable)."
# The last lines of each task's --help (stages.cli prints them).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "build-small": (
        "gosmall build-small ./cmd/app",
        "GOSMALL_REPO=ghcr.io/you gosmall build-small ./cmd/app --load",
        "gosmall build-small --image hello --smoke",
    ),
    "init": ("gosmall init && gosmall build-small", "GOSMALL_REPO=ghcr.io/you gosmall init ./cmd/app"),
    "run": ("gosmall run ./cmd/app -- --help", "gosmall run --image hello --network none"),
    "load": ("gosmall load --image hello",),
    "smoke": ("gosmall smoke --image hello",),
    "push": ("gosmall push --image hello", "gosmall push --format json --insecure-registry registry.lan:5000"),
    "index": ("gosmall index --image hello --from amd64/report.json --from arm64/report.json --push",),
    "keygen": ("GOSMALL_SIGNING_PASSWORD=... gosmall keygen",),
    "sign": ("gosmall sign --key cosign.key --image hello",),
    "verify-signature": ("gosmall verify-signature --key cosign.pub registry.lan:5000/hello:v1",),
    "verify-pins": ("gosmall verify-pins", "gosmall verify-pins k8s/ Dockerfile --format json"),
    "pin": ("gosmall pin --check", "gosmall pin Dockerfile"),
    "resolve": ("GOSMALL_REPO=ghcr.io/you gosmall resolve -f k8s/ | kubectl apply -f -", "gosmall resolve -f compose.yaml --write"),
    "lock": ("gosmall lock && git add gosmall.lock",),
    "verify-lock": ("gosmall verify-lock",),
    "sbom": ("gosmall sbom --image hello",),
    "audit": (
        "gosmall audit dist/hello",
        "gosmall audit docker://127.0.0.1:5000/app@sha256:... --format json",
        "gosmall audit dist/hello --format sarif > audit.sarif",
    ),
}
INSECURE_HELP = "A registry host (or host:port) to speak plain HTTP to (repeatable); loopback registries always are."
PUSHED_FORMAT_HELP = "text (repository@sha256:... per image) or json (a list of {image, reference, repository, digest, tags})."
PATH_HELP = "A file or directory to look at (repeatable; `gosmall verify-pins a b` also works); default: the whole project."


def speaks_to_user(function: F) -> F:
    """The one place a GosmallError, Ctrl-C or SIGTERM becomes a message on stderr and an exit status.

    SIGTERM (kill, systemd, CI, docker stop) is handled like Ctrl-C while the task runs, so the same cleanup runs.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_ctrl_c():
                return function(*args, **kwargs)
        except GosmallError as error:
            raise Exit(f"gosmall: error: {error.message}", code=error.code) from None
        except KeyboardInterrupt as stop:
            interrupted = Interrupted.of(stop)
            raise Exit(_interrupted_message(interrupted), code=interrupted.exit_status) from None

    return wrapper  # type: ignore[return-value]


def _interrupted_message(stop: Interrupted) -> str:
    if not stop.replaced:
        return "gosmall: interrupted; earlier outputs were left as they were."
    done = ", ".join(map(str, stop.replaced))
    return f"gosmall: interrupted; the new build is already in place in {done}; any other output was left as it was."


@task(iterable=["package", "platform", "insecure_registry"],
      help={"image": IMAGE_HELP, "load": "Then load image.tar into the Docker engine and check its image ID.",
            "smoke": "Then load it and run it hardened until it answers (implies --load).",
            "package": PACKAGE_HELP, "platform": PLATFORM_HELP,
            "push": "Then push each image to its repository (as `gosmall push` does) and print repository@sha256:...; "
                    "with --platform, by digest and untagged, for `gosmall index` to join.",
            "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def build_small(
    c: Any,
    image: str | None = None,
    load: bool = False,
    smoke: bool = False,
    package: list[str] | None = None,
    platform: list[str] | None = None,
    push: bool = False,
    insecure_registry: list[str] | None = None,
) -> None:
    """Build each image into <output>/<image>/: an OCI layout, a docker-loadable image.tar and report.json.

    With PACKAGE (`./cmd/app`, `.`) it builds those main packages, in any Go module: with no [tool.gosmall] each gets
    the defaults (image = its directory's name, dist/<name>/ at the module root, repository $GOSMALL_REPO/<name> or a
    local-only gosmall.local/<name>, this machine's platform, user nonroot, tzdata and CA bundle only if the binary
    links them). Exit status: 0 built; 1 over max_size; 2 it could not run.
    """
    from .pipeline import build_small as run_build_small
    from .trust.lock import warn_if_unlike_lock

    reporter = make_reporter()
    project = _selected_project(image, package, platform)
    if load or smoke:
        from .build import speculate

        speculate.import_while_go_runs("gosmall.publish.engine", "docker")
    _check_pins(project, reporter)
    # The publisher knows the configured platforms: a build of fewer is pushed untagged, for `gosmall index`.
    pusher = _registry_publisher(_selected_project(image, package, None) if platform else project, insecure_registry) if push else None
    builds = run_build_small(project, reporter, names=(image,) if image else (), publishers=(pusher,) if pusher else ())
    warn_if_unlike_lock(project, builds, reporter)
    if pusher:
        _print_pushed(pusher, "text")
    if load or smoke:
        try:
            # The in-memory builds go to the engine: nothing is read back from disk.
            _load_and_smoke(builds, reporter, smoke=smoke)
        except KeyboardInterrupt as stop:
            raise Interrupted.of(stop, tuple(b.output_dir for b in builds)) from None


@task(help={"image": IMAGE_HELP})
@speaks_to_user
def load(c: Any, image: str | None = None) -> None:
    """Load the built image.tar into the Docker engine, tag it, and check its ID is the built config digest."""
    project = load_project()
    _load_and_smoke(_read_builds(project, image), make_reporter(), smoke=False, load=True)


@task(help={"image": IMAGE_HELP})
@speaks_to_user
def smoke(c: Any, image: str | None = None) -> None:
    """Run the loaded image hardened (user, read-only, no capabilities) until it is healthy, then remove it.

    Exit status 1 when the image fails its checks (exits early, unhealthy, not ready in time), 2 when it could not be
    run (not built or loaded, no engine, port taken). Smoke containers left running by a killed gosmall are removed first.
    """
    project = load_project()
    _load_and_smoke(_read_builds(project, image), make_reporter(), smoke=True, load=False)


@task(iterable=["insecure_registry"], help={"image": IMAGE_HELP, "format": PUSHED_FORMAT_HELP, "insecure_registry": INSECURE_HELP,
                                            "sign": "Then sign each pushed digest with this cosign private key, as `gosmall sign` does."})  # fmt: skip
@speaks_to_user
def push(c: Any, image: str | None = None, format: str = "text", insecure_registry: list[str] | None = None, sign: str = "") -> None:  # noqa: A002 - the flag is --format
    """Push what build-small wrote to each image's repository: blobs, manifests, the index, then every tag, last.

    No tag ever names a partial image, blobs the registry has are not sent again, and each tag is checked to serve
    report.json's digest; report.json records the push. Prints repository@sha256:... per image. A build of only some
    platforms (build-small --platform) is pushed by digest, untagged, for `gosmall index`. Credentials come from the
    Docker config: credHelpers, credsStore, auths. Exit status: 0 pushed and checked; 2 it could not run (not built,
    credentials refused, the registry failed or served another digest).
    """
    _check_pushed_format(format)
    project = load_project()
    builds = _read_builds(project, image)
    key = _signing_key(sign) if sign else None  # a wrong password stops the run before any upload
    publisher = _registry_publisher(project, insecure_registry)
    reporter = make_reporter()
    for build in builds:
        publisher.publish(build, reporter)
    if key is not None:
        from .reference import parse_normalized_named
        from .trust.sign import sign_image

        for pushed in publisher.pushed:
            sign_image(publisher.client, parse_normalized_named(pushed.repository), pushed.digest, key, reporter)
    _print_pushed(publisher, format)


@task
@speaks_to_user
def keygen(c: Any) -> None:
    """Write a signing key pair in the current directory: cosign.key (encrypted) and cosign.pub, in cosign's format.

    cosign and skopeo (--sign-by-sigstore-private-key, a sigstoreSigned policy) use the same files. The password comes
    from GOSMALL_SIGNING_PASSWORD, else a prompt. An existing key is never overwritten. Exit status: 0 written; 2 it
    could not (a key already there, no password).
    """
    from .trust.sign import check_no_key_pair, generate_key_pair, signing_password, write_key_pair

    check_no_key_pair(Path.cwd())
    private, public = write_key_pair(Path.cwd(), generate_key_pair(signing_password(confirm=True)))
    make_reporter().step(f"Wrote {private.name} (keep it secret) and {public.name} (give it to whoever verifies)")


@task(iterable=["insecure_registry"], help={"key": "The cosign private key (cosign.key from `gosmall keygen`); its password from GOSMALL_SIGNING_PASSWORD, else a prompt.",
                                            "image": IMAGE_HELP, "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def sign(c: Any, key: str = "", image: str | None = None, insecure_registry: list[str] | None = None) -> None:
    """Sign each image's pushed digest (report.json's) and store the signature beside it, the way cosign does.

    The signature is a simple-signing payload signed with ECDSA P-256, under the tag sha256-<hex>.sig of the image's
    repository; cosign and skopeo (use-sigstore-attachments) read it there. Prints that reference per image. Exit
    status: 0 signed; 2 it could not (no key or wrong password, not built, not pushed, the registry refused).
    """
    from .publish.push import repository_reference
    from .trust.sign import sign_image

    if not key:
        raise GosmallError("sign needs --key: the cosign private key to sign with (`gosmall keygen` writes cosign.key).")
    project = load_project()
    builds = _read_builds(project, image)
    private = _signing_key(key)
    client = _registry_client(insecure_registry)
    reporter = make_reporter()
    for build in builds:
        print(sign_image(client, repository_reference(build.config), build.digest, private, reporter))


@task(iterable=["insecure_registry"], help={"image": "The image: repo@sha256:... or repo:tag.", "key": "The cosign public key (cosign.pub).",
                                            "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def verify_signature(c: Any, image: str, key: str = "", insecure_registry: list[str] | None = None) -> None:
    """Check that IMAGE carries a signature by KEY, stored the way cosign and skopeo store it, for its own repository.

    Exit status: 0 a signature checks out; 1 there is none, or none by this key for this image and repository; 2 it
    could not run (no key, bad reference, the registry failed).
    """
    from .trust.sign import read_public_key, verify_image_signature

    if not key:
        raise GosmallError("verify-signature needs --key: the cosign public key to check with (cosign.pub).")
    verified = verify_image_signature(_registry_client(insecure_registry), image, read_public_key(Path(key)))
    print(f"{verified.repository}@{verified.digest}: signed by {key} as {verified.docker_reference}")


@task(iterable=["from_", "insecure_registry"],
      help={"image": "The image to index (a key of [tool.gosmall.images]); may be left out when there is one.",
            "from": "A report.json that `build-small --image NAME --platform P --push` wrote in a platform job (repeatable).",
            "push": "Push the index by digest, then under the image's tags; without it, only check and show its digest.",
            "format": PUSHED_FORMAT_HELP, "insecure_registry": INSECURE_HELP})  # fmt: skip
@speaks_to_user
def index(
    c: Any,
    image: str | None = None,
    from_: list[str] | None = None,
    push: bool = False,
    format: str = "text",  # noqa: A002 - the flag is --format
    insecure_registry: list[str] | None = None,
) -> None:
    """Fan-in: join the platform jobs' pushed manifests into the image's multi-platform index, under its tags.

    The reports must cover the image's platforms and come from this checkout's commit; each manifest is read back from
    the registry by digest. The index is byte for byte the one one machine building every platform makes, so its
    digest is too. Exit status: 0 done; 2 it could not run (a platform missing, another commit, the registry failed).
    """
    from .publish.push import index_from_reports, push_index

    _check_pushed_format(format)
    project = load_project()
    if image is None and len(project.images) > 1:
        raise GosmallError(f"index: name the image with --image; {project.pyproject} has {', '.join(i.name for i in project.images)}.")
    [config] = project.image(image) if image else project.images[:1]
    client = _registry_client(insecure_registry)
    top = index_from_reports(project, config, tuple(Path(p) for p in from_ or ()), client)
    if not push:
        tags = ", ".join(config.tags)
        make_reporter().step(f"{config.name}: the index is {config.repository}@{top.digest}; add --push to push it as {tags}")
        return
    pushed = push_index(client, config, top, make_reporter())
    print(json.dumps([pushed.to_json()], indent=2) if format == "json" else pushed.reference)


@task(iterable=["path"], help={"path": PATH_HELP, "format": "text (path:line:col: message), json (a list of {path, line, column, reference, problem, message}) or sarif (SARIF 2.1.0, for code scanning)."})  # fmt: skip
@speaks_to_user
def verify_pins(c: Any, path: list[str] | None = None, format: str = "text") -> None:  # noqa: A002 - the flag is --format
    """List every image reference that is not pinned by sha256 digest.

    Runs anywhere: in a gosmall project it skips the project's output; elsewhere it scans the git work tree (or the
    current directory) as it is, Dockerfiles, Compose files, Kubernetes manifests and GitHub workflows alike.
    Exit status: 0 every reference is pinned; 1 unpinned or invalid references (or unreadable files) were found;
    2 it could not run (bad flag, bad config, missing path), and then nothing is printed on stdout.
    """
    from .trust.pinning import format_findings, scan_project

    if format not in ("text", "json", "sarif"):
        raise GosmallError(f"--format {format!r} is not known; use text, json or sarif.")
    root, output = _pin_scope()
    result = scan_project(root, _paths(path), output_dir=output)
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
    from .trust.pinning import format_pin_result, pin_references

    if timeout <= 0:
        raise GosmallError(f"--timeout {timeout}: must be a positive number of seconds.")
    root, output = _pin_scope()
    result = pin_references(root, _paths(path), check=check, output_dir=output, timeout=timeout)
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
    from .trust.resolve import resolve_references

    if not filename:
        raise GosmallError("Name the files to resolve: gosmall resolve -f k8s/ (a file or directory, repeatable).")
    reporter = make_reporter(out=sys.stderr)  # stdout is the documents
    result = resolve_references(Path.cwd(), _paths(filename), client=_registry_client(insecure_registry), reporter=reporter, write=write)
    if not write:
        sys.stdout.write(result.documents)


@task
@speaks_to_user
def lock(c: Any) -> None:
    """Build every image from a clean clone of HEAD and write gosmall.lock: digests, Go, compressor, revision.

    Uncommitted changes are left out (a warning names them). On the same commit, or on the commit that only adds
    gosmall.lock, it rewrites the file byte for byte. Exit status: 0 written; 2 it could not run (not a git
    repository, a failed build).
    """
    from .trust.lock import lock_project

    reporter = make_reporter()
    path, written = lock_project(load_project(), reporter)
    reporter.step(f"{path}: {len(written.images)} image(s) of {written.revision[:12]}")


@task(help={"image": IMAGE_HELP})
@speaks_to_user
def verify_lock(c: Any, image: str | None = None) -> None:
    """Rebuild every image (or one) from a clean clone of HEAD and compare its digests with gosmall.lock.

    Exit status: 0 the digests are the lock's; 1 they differ (each difference is named with its likely cause: Go
    version, compressor version, source changed since the lock's revision, config changed); 2 it could not run (no
    lock, not a git repository, a failed build).
    """
    from .trust.lock import verify_project_lock

    reporter = make_reporter()
    built = verify_project_lock(load_project(), reporter, names=(image,) if image else ())
    reporter.step(f"gosmall.lock matches a clean rebuild of {built.revision[:12]}: {', '.join(n for n, _ in built.images)}")


@task(help={"image": IMAGE_HELP})
@speaks_to_user
def sbom(c: Any, image: str | None = None) -> None:
    """Write <output>/<image>/sbom.spdx.json (SPDX 2.3) and its referrer in the OCI layout again, from the built output.

    build-small writes both; this reads the build back (report.json and the layout, checked) and makes the same bytes,
    e.g. for an output an older gosmall wrote without them. Exit status: 0 written; 2 it could not run (not built, a
    damaged output).
    """
    from .trust.sbom import write_sbom

    reporter = make_reporter()
    for build in _read_builds(load_project(), image):
        reporter.step(f"{build.config.name}: {write_sbom(build)}")


@task(iterable=["allow"], help={"target": "An OCI layout directory (or a gosmall output directory), a docker-archive image.tar, an image in the Docker engine by name, or docker://host/repo@sha256:... in a registry.",
                                "format": "text (platform: path-or-key: rule: finding), json (a list of {platform, rule, level, path or key, message}) or sarif (SARIF 2.1.0, for code scanning).",
                                "allow": "A rule id whose findings do not fail the audit and are not shown (repeatable); a gosmall output's audit_allow applies too."})  # fmt: skip
@speaks_to_user
def audit(c: Any, target: str, format: str = "text", allow: list[str] | None = None) -> None:  # noqa: A002 - the flag is --format
    """Audit an image, gosmall's or anyone's: root user, shells, setuid, writable or foreign-owned files, entrypoint, secrets, accounts, leftovers.

    Each platform's config and flattened file system is checked; a gosmall output directory is also held to its
    max_size and its audit_allow. Info findings (labels, healthcheck) are shown and never fail. Exit status: 0 no
    finding above info; 1 a finding not allowed; 2 it could not run (unreadable or missing image, no engine, registry
    refused), and then nothing is printed on stdout.
    """
    from .trust.audit import audit_target, check_allowed, failing, format_findings

    if format not in ("text", "json", "sarif"):
        raise GosmallError(f"--format {format!r} is not known; use text, json or sarif.")
    allowed = check_allowed(allow or ())
    done = audit_target(target)
    findings = tuple(f for f in done.findings if f.rule not in allowed | done.allowed)
    shown = format_findings(findings, format, target=target, anchor=done.anchor(Path.cwd()))  # type: ignore[arg-type]
    if shown or format != "text":
        print(shown)
    if failing(findings):
        raise Exit(code=FOUND)
    print(f"{target}: no finding fails the audit", file=sys.stderr)


@task(iterable=["package"], help={"package": "A main package to write an image for (repeatable; `gosmall init ./cmd/app` also works); default: every main package of the module."})  # fmt: skip
@speaks_to_user
def init(c: Any, package: list[str] | None = None) -> None:
    """Write [tool.gosmall] into pyproject.toml: one image per main package, with the runtime files its binary needs.

    Each package is built once, in memory, to read what its binary links. A missing pyproject.toml is created; an
    existing one keeps every byte and gets the table appended. Repositories come from GOSMALL_REPO, else a local-only
    name that push refuses. Exit status: 0 written; 2 it could not run (the file already has [tool.gosmall], no main
    package, a failed build), and then the file is as it was.
    """
    from .init import init_project

    reporter = make_reporter()
    path, images = init_project(tuple(package or ()), reporter)
    reporter.step(f"{path}: [tool.gosmall] with {', '.join(i.name for i in images)}; next: gosmall build-small")


@task(iterable=["package", "arg"],
      help={"package": "The Go main package to run, as `go run` takes it (`gosmall run ./cmd/app` also works).",
            "image": "Run this configured image instead (a key of [tool.gosmall.images]).",
            "network": "host (default) or none.",
            "arg": "An argument after the image's entrypoint, in place of its args (repeatable); `gosmall run ./cmd/app -- -v x` also works."})  # fmt: skip
@speaks_to_user
def run(c: Any, package: list[str] | None = None, image: str | None = None, network: str = "host", arg: list[str] | None = None) -> None:
    """Build one image, load it, and run it in the foreground, hardened like smoke; exit with its exit status.

    The container's stdout is gosmall's stdout; its stderr and gosmall's own messages go to stderr; stdin is not
    connected. The container is removed when it exits, on Ctrl-C and on SIGTERM. Exit status: the container's;
    2 gosmall could not build, load or start it; 130 or 143 when Ctrl-C or SIGTERM stopped it.
    """
    if network not in ("host", "none"):
        raise GosmallError(f"--network {network!r} is not known; use host or none.")
    if len(package or ()) > 1:
        raise GosmallError(f"run takes one package, not {len(package or ())} ({', '.join(package or ())}).")
    reporter = make_reporter(out=sys.stderr)  # stdout is the container's
    project = _selected_project(image, package, None)
    if not image and not package and len(project.images) != 1:
        raise GosmallError(
            f"{project.pyproject} has {len(project.images)} images ({', '.join(i.name for i in project.images)}); "
            "name one with --image NAME, or a package: gosmall run ./cmd/app."
        )
    _check_pins(project, reporter)
    from .pipeline import build_small as run_build_small

    (build,) = run_build_small(project, reporter, names=(image,) if image else ())
    from .publish.engine import connect, load_image, run_container

    client = connect(reporter)
    load_image(client, build.config, build, reporter)
    try:
        status = run_container(
            client, build.config, build, reporter,
            args=tuple(arg or ()), network_mode=network,  # type: ignore[arg-type]
            stdout=sys.stdout.buffer, stderr=sys.stderr.buffer,
        )  # fmt: skip
    except KeyboardInterrupt as stop:
        raise Exit("gosmall: stopped; the container was removed.", code=Interrupted.of(stop).exit_status) from None
    if status:
        raise Exit(code=status)


def _selected_project(image: str | None, packages: list[str] | None, platforms: list[str] | None) -> ProjectConfig:
    """The configured project, or the one for PACKAGE arguments (no config needed); --platform applied to each image."""
    if image and packages:
        raise GosmallError(f"--image {image} and the package {packages[0]} both say what to build; give one of them.")
    if packages:
        from .build.packages import project_for_packages

        project = project_for_packages(packages)
    else:
        project = load_project()
    if platforms:
        project = with_platforms(project, parse_platform_flags(tuple(platforms)))
    return project


def _pin_scope() -> tuple[Path, Path | None]:
    """Where verify-pins and pin look, and what they skip: a gosmall project minus its output, else the git work tree or the current directory."""
    from .config import NoProjectError
    from .trust.pinning import scan_root

    try:
        project = load_project(images_required=False)
    except NoProjectError:
        return scan_root(Path.cwd()), None
    return project.root, project.output


def _paths(paths: list[str] | None) -> tuple[Path, ...]:
    # Absolute, but links kept: pin edits a link's target and names the link as the user did.
    return tuple(Path(os.path.abspath(p)) for p in paths or ())


def _check_pins(project: ProjectConfig, reporter: Reporter) -> None:
    if project.pinning == "off":
        return
    from .trust.pinning import enforce_pinning, scan_project

    reporter.step("Checking that every image reference is pinned by digest")
    for line in enforce_pinning(scan_project(project.root, output_dir=project.output), project.pinning):
        reporter.warn(line)


def _registry_client(insecure: list[str] | None) -> RegistryClient:
    from .registry.client import RegistryClient

    return RegistryClient.from_environment(insecure=tuple(insecure or ()))


def _registry_publisher(project: ProjectConfig, insecure: list[str] | None) -> RegistryPublisher:
    from .publish.push import RegistryPublisher

    return RegistryPublisher(project, _registry_client(insecure))


def _check_pushed_format(format: str) -> None:  # noqa: A002 - the flag is --format
    if format not in ("text", "json"):
        raise GosmallError(f"--format {format!r} is not known; use text or json.")


def _print_pushed(publisher: RegistryPublisher, format: str) -> None:  # noqa: A002 - the flag is --format
    """repository@sha256:... per image, ready to paste into a manifest; or those as JSON."""
    if format == "json":
        print(json.dumps([pushed.to_json() for pushed in publisher.pushed], indent=2))
    for pushed in publisher.pushed if format == "text" else ():
        print(pushed.reference)


def _signing_key(path: str) -> Any:
    from .trust.sign import read_private_key, signing_password

    return read_private_key(Path(path), signing_password(confirm=False))


def _read_builds(project: ProjectConfig, image: str | None) -> tuple[Build, ...]:
    """What build-small wrote, read back once per image ("not built yet" comes before "no engine")."""
    from .build.built import read_build

    return tuple(read_build(config, project.output_dir(config)) for config in project.image(image))


def _load_and_smoke(builds: tuple[Build, ...], reporter: Reporter, *, smoke: bool, load: bool = True) -> None:
    if load and not smoke:
        builds = tuple(b for b in builds if not _already_loaded(b, reporter))
        if not builds:
            return
    # Imported here: building never needs the docker SDK or an engine.
    from .publish.engine import connect, load_image, smoke_test

    client = connect(reporter)
    for build in builds:
        if load:
            load_image(client, build.config, build, reporter)
        if smoke:
            smoke_test(client, build.config, build, reporter)


def _already_loaded(build: Build, reporter: Reporter) -> bool:
    """Every tag already names this build's image in the engine (asked without the docker SDK: engine_socket.py)."""
    from .docker_host import tags_name

    entry = build.report["platforms"][str(build.report["docker_platform"])]
    digests = (str(entry["config_digest"]), str(entry["manifest_digest"]))
    if not tags_name(build.tags, digests):
        return False
    reporter.step(f"{build.config.name}: the engine already holds {digests[0]} as {', '.join(build.tags)}: nothing to load")
    return True


namespace = Collection.from_module(sys.modules[__name__])
