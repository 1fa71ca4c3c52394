"""What every task shares: the one place errors become exit statuses, the help texts, and the helpers
more than one area's tasks call. gosmall's tasks: wiring only. Each reads its flags, loads the config, calls stages.

The same collection backs `invoke <task>` in this repository (tasks.py imports
it) and the `gosmall` console script (stages.cli), so both run the same code.
Config layers, later wins: built-in defaults, [tool.gosmall] in the nearest
pyproject.toml, environment (SOURCE_DATE_EPOCH, DOCKER_HOST), task flags.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from invoke import Exit

from ..config import ProjectConfig, load_project, parse_platform_flags, with_platforms
from ..errors import GosmallError
from ..interrupts import Interrupted, sigterm_as_ctrl_c
from ..reporter import Reporter

# Each task imports the stages it runs when it runs: a no-op build must cost little more than Go's own
# up-to-date check, and `gosmall --help` nothing but invoke.
if TYPE_CHECKING:
    from docker import DockerClient

    from ..build.built import Build
    from ..publish.push import Pushed, RegistryPublisher
    from ..registry.client import RegistryClient
    from ..trust.provenance import MachineFacts


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
    "verify-attestation": (
        "gosmall verify-attestation --key cosign.pub registry.lan:5000/hello:v1",
        "gosmall verify-attestation --key cosign.pub --type spdx --format json registry.lan:5000/hello@sha256:...",
    ),
    "verify-pins": ("gosmall verify-pins", "gosmall verify-pins k8s/ Dockerfile --format json"),
    "pin": ("gosmall pin --check", "gosmall pin Dockerfile"),
    "resolve": ("GOSMALL_REPO=ghcr.io/you gosmall resolve -f k8s/ | kubectl apply -f -", "gosmall resolve -f compose.yaml --write"),
    "lock": ("gosmall lock && git add gosmall.lock",),
    "verify-lock": ("gosmall verify-lock",),
    "sbom": ("gosmall sbom --image hello", "gosmall sbom registry.lan:5000/hello:v1 -o hello.spdx.json"),
    "audit": (
        "gosmall audit dist/hello",
        "gosmall audit docker://127.0.0.1:5000/app@sha256:... --format json",
        "gosmall audit dist/hello --format sarif > audit.sarif",
    ),
    "vulns": (
        "GOVULNDB=~/vulndb gosmall vulns",
        "gosmall vulns docker://127.0.0.1:5000/app@sha256:... --db https://vuln.go.dev --format json",
        "gosmall vulns dist/hello --format sarif > vulns.sarif",
    ),
}


INSECURE_HELP = "A registry host (or host:port) to speak plain HTTP to (repeatable); loopback registries always are."
# For the tasks whose only registry is the shared Go cache's (remote_cache, GOSMALL_REMOTE_CACHE).
INSECURE_CACHE_HELP = "The shared Go cache's registry host (or host:port) speaks plain HTTP (repeatable); loopback registries always do."


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


def selected_project(image: str | None, packages: list[str] | None, platforms: list[str] | None) -> ProjectConfig:
    """The configured project, or the one for PACKAGE arguments (no config needed); --platform applied to each image."""
    if image and packages:
        raise GosmallError(f"--image {image} and the package {packages[0]} both say what to build; give one of them.")
    if packages:
        from ..build.packages import project_for_packages

        project = project_for_packages(packages)
    else:
        project = load_project()
    if platforms:
        project = with_platforms(project, parse_platform_flags(tuple(platforms)))
    return project


def pin_scope() -> tuple[Path, Path | None]:
    """Where verify-pins and pin look, and what they skip: a gosmall project minus its output, else the git work tree or the current directory."""
    from ..config import NoProjectError
    from ..trust.pinning import scan_root

    try:
        project = load_project(images_required=False)
    except NoProjectError:
        return scan_root(Path.cwd()), None
    return project.root, project.output


def paths(paths: list[str] | None) -> tuple[Path, ...]:
    # Absolute, but links kept: pin edits a link's target and names the link as the user did.
    return tuple(Path(os.path.abspath(p)) for p in paths or ())


def check_pins(project: ProjectConfig, reporter: Reporter) -> None:
    if project.pinning == "off":
        return
    from ..trust.pinning import enforce_pinning, scan_project

    reporter.step("Checking that every image reference is pinned by digest")
    for line in enforce_pinning(scan_project(project.root, output_dir=project.output), project.pinning):
        reporter.warn(line)


def insecure_hosts(flag: list[str] | None) -> tuple[str, ...]:
    """--insecure-registry's hosts, each a HOST or HOST:PORT as image references write a registry; anything else
    (empty, a URL, a path) is an error here, not a host quietly never matched."""
    from ..redact import printable
    from ..reference import DOMAIN_AND_PORT_RE

    for host in flag or ():
        if DOMAIN_AND_PORT_RE.fullmatch(host) is None:
            shown = printable(host if len(host) <= 80 else host[:77] + "...")
            raise GosmallError(
                f"--insecure-registry {shown!r} is not a registry host. Give HOST or HOST:PORT as an image reference "
                "writes it (--insecure-registry registry.lan:5000), without a scheme or a path."
            )
    return tuple(flag or ())


def registry_client(insecure: list[str] | None) -> RegistryClient:
    from ..registry.client import RegistryClient

    return RegistryClient.from_environment(insecure=insecure_hosts(insecure))


def registry_publisher(project: ProjectConfig, insecure: list[str] | None) -> RegistryPublisher:
    """A publisher that pushes each image with its referrers: the SBOM and the provenance, made here on the trust floor."""
    from ..publish.push import RegistryPublisher
    from ..trust.provenance import proof_artifacts

    return RegistryPublisher(project, registry_client(insecure), proofs=lambda build: proof_artifacts(build, machine_facts(build)))


def machine_facts(build: Build) -> MachineFacts:
    """What this machine adds to a build's provenance: the git remote, CI's variables, and the digest of the `go`
    binary, only when this machine's Go is the very release report.json says built it."""
    from ..build.toolchain import find_module, find_toolchain
    from ..trust.provenance import gather_facts

    go: Path | None = None
    built_by = str(build.report.get("builder", {}).get("go", ""))
    try:
        wanted = tuple(int(part) for part in built_by.removeprefix("go").split("."))
        toolchain = find_toolchain(find_module(build.config.package), go_version=wanted)
        go = toolchain.executable if "go" + ".".join(map(str, toolchain.version)) == built_by else None
    except (GosmallError, ValueError, OSError):
        go = None  # another Go here, or none: the provenance names the version without a digest
    return gather_facts(build, os.environ, go_binary=go)


def sign_and_attest(client: RegistryClient, builds: tuple[Build, ...], pushed: list[Pushed], key: Any, reporter: Reporter) -> None:
    """Sign each pushed digest (`.sig`), and attest its provenance and SBOM (`.att` and referrers), as cosign does."""
    from ..reference import parse_normalized_named
    from ..trust.sign import attest_image, sign_image

    by_name = {build.config.name: build for build in builds}
    for done in pushed:
        repository = parse_normalized_named(done.repository)
        sign_image(client, repository, done.digest, key, reporter)
        build = by_name.get(done.image)
        if build is not None and build.digest == done.digest:
            attest_image(client, repository, build, key, machine_facts(build), reporter)


def check_pushed_format(format: str) -> None:  # noqa: A002 - the flag is --format
    if format not in ("text", "json"):
        raise GosmallError(f"--format {format!r} is not known; use text or json.")


def print_pushed(publisher: RegistryPublisher, format: str) -> None:  # noqa: A002 - the flag is --format
    """repository@sha256:... per image, ready to paste into a manifest; or those as JSON."""
    if format == "json":
        print(json.dumps([pushed.to_json() for pushed in publisher.pushed], indent=2))
    for pushed in publisher.pushed if format == "text" else ():
        print(pushed.reference)


def signing_key(path: str) -> Any:
    from ..trust.sign import read_private_key, signing_password

    return read_private_key(Path(path), signing_password(confirm=False))


def read_builds(project: ProjectConfig, image: str | None) -> tuple[Build, ...]:
    """What build-small wrote, read back once per image ("not built yet" comes before "no engine")."""
    from ..build.built import read_build

    return tuple(read_build(config, project.output_dir(config)) for config in project.image(image))


def load_and_smoke(
    builds: tuple[Build, ...], reporter: Reporter, *, smoke: bool, load: bool = True, connected: Callable[[], DockerClient] | None = None
) -> None:
    """`connected`: the connection to use (build-small's loads ahead made it), else a new one."""
    if load and not smoke:
        builds = tuple(b for b in builds if not already_loaded(b, reporter))
        if not builds:
            return
    # Imported here: building never needs the docker SDK or an engine.
    from ..docker_host import connect
    from ..publish.engine import load_image, smoke_test

    client = connected() if connected is not None else connect(reporter)
    for build in builds:
        if load:
            load_image(client, build.config, build, reporter)
        if smoke:
            smoke_test(client, build.config, build, reporter)


def already_loaded(build: Build, reporter: Reporter) -> bool:
    """Every tag already names this build's image in the engine (asked without the docker SDK: docker_host.py)."""
    from ..docker_host import tags_name

    entry = build.report["platforms"][str(build.report["docker_platform"])]
    digests = (str(entry["config_digest"]), str(entry["manifest_digest"]))
    if not tags_name(build.tags, digests):
        return False
    reporter.step(f"{build.config.name}: the engine already holds {digests[0]} as {', '.join(build.tags)}: nothing to load")
    return True
