"""Tasks that build: `build-small` and `init`. Wiring only: flags, config, stages, exit statuses (wiring.py)."""

from __future__ import annotations

from typing import Any

from invoke import task

from ..errors import GosmallError
from ..interrupts import Interrupted
from ..reporter import make_reporter
from .wiring import (
    IMAGE_HELP,
    INSECURE_CACHE_HELP,
    INSECURE_HELP,
    PACKAGE_HELP,
    PLATFORM_HELP,
    check_pins,
    insecure_hosts,
    load_and_smoke,
    print_pushed,
    registry_publisher,
    selected_project,
    sign_and_attest,
    signing_key,
    speaks_to_user,
)


@task(iterable=["package", "platform", "insecure_registry"],
      help={"image": IMAGE_HELP, "load": "Then load image.tar into the Docker engine and check its image ID.",
            "smoke": "Then load it and run it hardened until it answers (implies --load).",
            "package": PACKAGE_HELP, "platform": PLATFORM_HELP,
            "push": "Then push each image to its repository (as `gosmall push` does) and print repository@sha256:...; "
                    "with --platform, by digest and untagged, for `gosmall index` to join.",
            "insecure_registry": INSECURE_HELP,
            "sign": "With --push: then sign each pushed digest and attest its provenance and SBOM with this cosign private key, as `gosmall sign` does."})  # fmt: skip
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
    sign: str = "",
) -> None:
    """Build each image into <output>/<image>/: an OCI layout, a docker-loadable image.tar and report.json.

    With PACKAGE (`./cmd/app`, `.`) it builds those main packages, in any Go module: with no [tool.gosmall] each gets
    the defaults (image = its directory's name, dist/<name>/ at the module root, repository $GOSMALL_REPO/<name> or a
    local-only gosmall.local/<name>, this machine's platform, user nonroot, tzdata and CA bundle only if the binary
    links them). Exit status: 0 built; 1 over max_size; 2 it could not run.
    """
    if sign and not push:
        raise GosmallError("--sign signs what --push pushes: add --push, or run `gosmall sign --key KEY` after a push.")
    key = signing_key(sign) if sign else None  # a wrong password stops the run before any build or upload
    reporter = make_reporter()
    project = selected_project(image, package, platform)
    from ..build.source import ask_about_source

    asked = ask_about_source(project.root)  # git answers while the pipeline is imported
    from ..pipeline import build_small as run_build_small
    from ..trust.lock import warn_if_unlike_lock

    check_pins(project, reporter)
    # The publisher knows the configured platforms: a build of fewer is pushed untagged, for `gosmall index`.
    pusher = registry_publisher(selected_project(image, package, None) if platform else project, insecure_registry) if push else None
    ahead = None
    if load or smoke:  # the engine gets each image while its build finishes (pipeline.py, publish/load_ahead.py)
        from ..build import speculate
        from ..docker_host import connect
        from ..publish.load_ahead import LoadAhead

        ahead = LoadAhead(reporter, lambda: connect(reporter))
        speculate.import_while_go_runs("gosmall.publish.engine", "docker")
        speculate.while_go_runs(ahead.connect_ahead)
    builds = run_build_small(
        project,
        reporter,
        names=(image,) if image else (),
        publishers=(pusher,) if pusher else (),
        ahead=ahead,
        insecure=insecure_hosts(insecure_registry),  # the registry pushed to, and the shared Go cache's host
        asked=asked,
    )
    warn_if_unlike_lock(project, builds, reporter)
    if pusher and key is not None:
        sign_and_attest(pusher.client, builds, pusher.pushed, key, reporter)
    if pusher:
        print_pushed(pusher, "text")
    if ahead is not None:  # --load or --smoke
        try:
            # The in-memory builds go to the engine, over the loads' connection: nothing is read back from disk.
            load_and_smoke(builds, reporter, smoke=smoke, connected=lambda: ahead.client)
        except KeyboardInterrupt as stop:
            raise Interrupted.of(stop, tuple(b.output_dir for b in builds)) from None


@task(iterable=["package", "insecure_registry"],
      help={"package": "A main package to write an image for (repeatable; `gosmall init ./cmd/app` also works); default: every main package of the module.",
            "insecure_registry": INSECURE_CACHE_HELP})  # fmt: skip
@speaks_to_user
def init(c: Any, package: list[str] | None = None, insecure_registry: list[str] | None = None) -> None:
    """Write [tool.gosmall] into pyproject.toml: one image per main package, with the runtime files its binary needs.

    Each package is built once, in memory, to read what its binary links. A missing pyproject.toml is created; an
    existing one keeps every byte and gets the table appended. Repositories come from GOSMALL_REPO, else a local-only
    name that push refuses. Exit status: 0 written; 2 it could not run (the file already has [tool.gosmall], no main
    package, a failed build), and then the file is as it was.
    """
    from ..init import init_project

    reporter = make_reporter()
    path, images = init_project(tuple(package or ()), reporter, insecure=insecure_hosts(insecure_registry))
    reporter.step(f"{path}: [tool.gosmall] with {', '.join(i.name for i in images)}; next: gosmall build-small")
