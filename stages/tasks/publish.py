"""Tasks that take a Build somewhere: `load`, `smoke`, `run`, `push` and `index`. Wiring only."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from invoke import Exit, task

from ..config import load_project
from ..errors import GosmallError
from ..interrupts import Interrupted
from ..reporter import make_reporter
from .wiring import (
    IMAGE_HELP,
    INSECURE_CACHE_HELP,
    INSECURE_HELP,
    PUSHED_FORMAT_HELP,
    check_pins,
    check_pushed_format,
    insecure_hosts,
    load_and_smoke,
    print_pushed,
    read_builds,
    registry_client,
    registry_publisher,
    selected_project,
    sign_and_attest,
    signing_key,
    speaks_to_user,
)


@task(help={"image": IMAGE_HELP})
@speaks_to_user
def load(c: Any, image: str | None = None) -> None:
    """Load the built image.tar into the Docker engine, tag it, and check its ID is the built config digest."""
    project = load_project()
    load_and_smoke(read_builds(project, image), make_reporter(), smoke=False, load=True)


@task(help={"image": IMAGE_HELP})
@speaks_to_user
def smoke(c: Any, image: str | None = None) -> None:
    """Run the loaded image hardened (user, read-only, no capabilities) until it is healthy, then remove it.

    Exit status 1 when the image fails its checks (exits early, unhealthy, not ready in time), 2 when it could not be
    run (not built or loaded, no engine, port taken). Smoke containers left running by a killed gosmall are removed first.
    """
    project = load_project()
    load_and_smoke(read_builds(project, image), make_reporter(), smoke=True, load=False)


@task(iterable=["insecure_registry"], help={"image": IMAGE_HELP, "format": PUSHED_FORMAT_HELP, "insecure_registry": INSECURE_HELP,
                                            "sign": "Then sign each pushed digest with this cosign private key, as `gosmall sign` does."})  # fmt: skip
@speaks_to_user
def push(c: Any, image: str | None = None, format: str = "text", insecure_registry: list[str] | None = None, sign: str = "") -> None:  # noqa: A002 - the flag is --format
    """Push what build-small wrote to each image's repository: blobs, manifests, the index, then every tag, last.

    No tag ever names a partial image, blobs the registry has are not sent again, and each tag is checked to serve
    report.json's digest; report.json records the push. Prints repository@sha256:... per image. A build of only some
    platforms (build-small --platform) is pushed by digest, untagged, for `gosmall index`. Credentials come from the
    Docker config: credHelpers, credsStore, auths. Each image goes
    with its referrers, the SPDX SBOM and a SLSA provenance statement (the referrers API where the registry has it,
    else the sha256-<hex> tag); --sign also attests both as cosign does (sha256-<hex>.att, and as DSSE referrers). Exit status: 0 pushed and checked; 2 it could not run (not built,
    credentials refused, the registry failed or served another digest).
    """
    check_pushed_format(format)
    project = load_project()
    builds = read_builds(project, image)
    key = signing_key(sign) if sign else None  # a wrong password stops the run before any upload
    publisher = registry_publisher(project, insecure_registry)
    reporter = make_reporter()
    for build in builds:
        publisher.publish(build, reporter)
    if key is not None:
        sign_and_attest(publisher.client, builds, publisher.pushed, key, reporter)
    print_pushed(publisher, format)


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
    from ..publish.push import carry_referrers, index_from_reports, push_index

    check_pushed_format(format)
    project = load_project()
    if image is None and len(project.images) > 1:
        raise GosmallError(f"index: name the image with --image; {project.pyproject} has {', '.join(i.name for i in project.images)}.")
    [config] = project.image(image) if image else project.images[:1]
    client = registry_client(insecure_registry)
    top = index_from_reports(project, config, tuple(Path(p) for p in from_ or ()), client)
    if not push:
        tags = ", ".join(config.tags)
        make_reporter().step(f"{config.name}: the index is {config.repository}@{top.digest}; add --push to push it as {tags}")
        return
    reporter = make_reporter()
    pushed = push_index(client, config, top, reporter)
    carry_referrers(client, config, top, reporter)
    print(json.dumps([pushed.to_json()], indent=2) if format == "json" else pushed.reference)


@task(iterable=["package", "arg", "insecure_registry"],
      help={"package": "The Go main package to run, as `go run` takes it (`gosmall run ./cmd/app` also works).",
            "insecure_registry": INSECURE_CACHE_HELP,
            "image": "Run this configured image instead (a key of [tool.gosmall.images]).",
            "network": "host (default) or none.",
            "arg": "An argument after the image's entrypoint, in place of its args (repeatable); `gosmall run ./cmd/app -- -v x` also works."})  # fmt: skip
@speaks_to_user
def run(
    c: Any,
    package: list[str] | None = None,
    image: str | None = None,
    network: str = "host",
    arg: list[str] | None = None,
    insecure_registry: list[str] | None = None,
) -> None:
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
    project = selected_project(image, package, None)
    if not image and not package and len(project.images) != 1:
        raise GosmallError(
            f"{project.pyproject} has {len(project.images)} images ({', '.join(i.name for i in project.images)}); "
            "name one with --image NAME, or a package: gosmall run ./cmd/app."
        )
    from ..build.source import ask_about_source

    asked = ask_about_source(project.root)  # git answers while the pipeline is imported
    check_pins(project, reporter)
    from ..build import speculate
    from ..docker_host import connect
    from ..pipeline import build_small as run_build_small
    from ..publish.load_ahead import LoadAhead

    # The engine gets the image while its build finishes; the container starts once the output is written.
    ahead = LoadAhead(reporter, lambda: connect(reporter))
    speculate.import_while_go_runs("gosmall.publish.engine", "docker")
    speculate.while_go_runs(ahead.connect_ahead)
    (build,) = run_build_small(
        project, reporter, names=(image,) if image else (), ahead=ahead, insecure=insecure_hosts(insecure_registry), asked=asked
    )
    # Remembered now, not when the command ends: a container that exits non-zero or is stopped still had this build.
    speculate.remember_run(sys.argv[1:])
    from ..publish.engine import load_image, run_container

    client = ahead.client
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
