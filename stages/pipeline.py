"""The build-small pipeline: build every image, hand each `Build` to each publisher.

Building is toolchain -> compile -> prove -> runtime files -> assemble ->
audit, in memory, and returns an immutable `Build`. Publishing takes that value: the
output directory (written to a temporary directory beside the target and
renamed into place only when all of it succeeded), then, when asked, the
Docker engine or a registry. A new destination is a new publisher.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .build import fresh, speculate
from .build.built import Build, PlatformFacts, Publisher
from .build.compile import compile_all, host_platform, plan_compile
from .build.fresh import Compiled
from .build.gocache import RemoteCache, remote_cache_setting, report_entry, tell, total
from .build.needs import ship_what_is_needed
from .build.progress import PackageProgress
from .build.runtime_files import collect_runtime_files
from .build.source import SourceInfo, SourceQuestions, ask_about_source
from .build.toolchain import find_module, find_toolchain, verify_module
from .config import ImageConfig, ProjectConfig
from .images.model import Platform
from .interrupts import Interrupted
from .leftovers import owned_temporary_directory
from .publish.outputs import check_replaceable, make_staging_dir, prepare_output_dir, remove_leftovers, swap_into_place
from .reporter import Reporter

# What only a build that is not up to date needs is imported when it runs (_build_from, write_outputs):
# a no-op build is meant to cost little more than Go's own check, and these imports alone cost more.
if TYPE_CHECKING:
    from .build.libraries import CollectedFile
    from .images.model import Blob


class LoadsAhead(Protocol):
    """The engine, given each image as soon as its config and uncompressed layer exist (publish/load_ahead.py):
    --load, --smoke and `run` do not wait for compression, the SBOM and the output directory."""

    def start(self, image: ImageConfig, config: Blob, layer_tars: tuple[bytes, ...], epoch: int) -> None: ...

    def wait(self) -> None: ...

    def abandon(self, *, wait: bool = True) -> None: ...


class OutputDirectory:
    """<output>/<image>/: the OCI layout, image.tar and report.json, swapped in whole."""

    def publish(self, build: Build, reporter: Reporter) -> None:
        if build.up_to_date:
            remove_leftovers(build.output_dir.parent, reporter)  # what killed builds left goes all the same
            reporter.step(f"{build.config.name}: {build.report['digest']} -> {build.output_dir} (up to date)")
            return
        with reporter.status(f"{build.config.name}: writing {build.output_dir}"):
            write_outputs(build, reporter)
        reporter.step(f"{build.config.name}: {build.digest} -> {build.output_dir}")


def build_small(
    project: ProjectConfig,
    reporter: Reporter,
    *,
    names: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
    publishers: Sequence[Publisher] = (),
    ahead: LoadsAhead | None = None,
    insecure: Sequence[str] = (),
    asked: SourceQuestions | None = None,
) -> tuple[Build, ...]:
    """Build each image, write its output directory, then hand it to each further publisher.

    With `ahead`, each image is loaded into the engine while the rest of its build runs; every load has ended before
    this returns, and when the build fails what was loaded ahead is removed (no tag ever named it). `asked`: git's
    answers about the project root, asked by the caller beforehand (source.ask_about_source)."""
    images = project.images if not names else tuple(i for n in names for i in project.image(n))
    for image in images:
        check_replaceable(project.output_dir(image))  # before any work, not after minutes of it
    source = (asked or ask_about_source(project.root)).answer(environ)
    shared = SharedGoCache.of(project, environ, insecure)  # --insecure-registry reaches the cache program too
    written: list[Path] = []
    builds: list[Build] = []
    try:
        for image in images:
            build = build_image(project, image, source, reporter, shared=shared, ahead=ahead)
            OutputDirectory().publish(build, reporter)
            written.append(build.output_dir)
            builds.append(build)
        if ahead is not None:
            ahead.wait()
        for build in builds:
            for publisher in publishers:
                publisher.publish(build, reporter)
    except KeyboardInterrupt as stop:
        if ahead is not None:
            ahead.abandon(wait=False)  # stop now; what a load still running leaves is untagged
        # Say what is true: outputs already replaced stay replaced.
        raise Interrupted.of(stop, tuple(written)) from None
    except BaseException:
        if ahead is not None:
            ahead.abandon()
        raise
    return tuple(builds)


class SharedGoCache:
    """The run's shared Go cache (gocache.py), or None; once it failed, the run's later images keep to local disk (one warning)."""

    def __init__(self, remote: RemoteCache | None) -> None:
        self.remote = remote

    @classmethod
    def of(cls, project: ProjectConfig, environ: Mapping[str, str] | None = None, insecure: Sequence[str] = ()) -> SharedGoCache:
        """`insecure`: the task's --insecure-registry hosts, spoken to in plain HTTP as push does (loopback always is)."""
        environ = os.environ if environ is None else environ
        return cls(remote_cache_setting(project.remote_cache, project.remote_cache_write, environ, insecure))


def build_image(
    project: ProjectConfig,
    config: ImageConfig,
    source: SourceInfo,
    reporter: Reporter,
    *,
    shared: SharedGoCache | None = None,
    ahead: LoadsAhead | None = None,
) -> Build:
    """One image, in memory: nothing is written. When the output directory already holds what this build would
    write (fresh.py), that is the Build, and nothing after `go build` runs."""
    shared = shared if shared is not None else SharedGoCache.of(project)
    reporter.step(f"{config.name}: building {config.package.relative_to(project.root) or '.'} for {', '.join(map(str, config.platforms))}")
    source = source.declared(config.labels)
    module = find_module(config.package)
    toolchain = find_toolchain(module, go_version=project.go_version)
    reporter.detail(f"toolchain {toolchain.version_text} ({toolchain.source}: {toolchain.go})")
    verify_module(toolchain, module, config.package, reporter)
    if shared.remote is not None and toolchain.version < (1, 24):
        reporter.warn(
            f"The shared Go cache {shared.remote.repository} needs Go 1.24 or later (GOCACHEPROG); {toolchain.version_text} builds without it."
        )
        shared.remote = None

    with owned_temporary_directory(WORKDIR_PREFIX, reporter) as workdir:
        # Every platform planned, and the runtime files read, before anything is compiled:
        # a refused combination or a bad `files` entry costs no build.
        plans = [plan_compile(config, module, platform, source) for platform in config.platforms]
        common = collect_runtime_files(config, toolchain, never_ship=(project.output,))
        for skipped in common.skipped:  # said each time, not replayed: what is there to skip changes (dist/ appears)
            reporter.detail(f"not shipped: {skipped}")
        speculate.import_while_go_runs(*AFTER_GO, first=True)  # before the engine's: needed the moment Go is done
        said = f"{config.name}: go build for {', '.join(map(str, config.platforms))}"
        with reporter.status(said) as line:
            # Packages done out of the total, only where someone watches (progress.py): a log gets nothing more.
            progress = PackageProgress(line, said, shared_cache=shared.remote is not None) if line.watched else None
            binaries = compile_all(plans, toolchain, Path(workdir), remote=shared.remote, progress=progress)
        if shared.remote is not None:
            done = total([b.go_cache for b in binaries if b.go_cache is not None])
            tell(reporter, config.name, shared.remote, done)
            if done.trouble:
                shared.remote = None
        compiled = Compiled(project, config, source, toolchain, plans, binaries, common)
        return fresh.build_unless_current(compiled, reporter, lambda c, r: _build_from(c, r, ahead))


def _build_from(compiled: Compiled, reporter: Reporter, ahead: LoadsAhead | None = None) -> Build:
    with reporter.status(f"{compiled.config.name}: proving, collecting and assembling"):
        return _assembled(compiled, reporter, ahead)


def _assembled(compiled: Compiled, reporter: Reporter, ahead: LoadsAhead | None = None) -> Build:
    from .build.assemble import PlatformParts, assemble
    from .build.libraries import collect_libraries
    from .build.needs import advise, read_needs
    from .build.prove import prove_binary
    from .build.runtime_files import with_libraries
    from .publish.report import build_report, enforce_max_size, platform_sizes, show_libraries, show_size_table
    from .trust.audit import audit_image, enforce_audit
    from .trust.sbom import file_sources

    project, config, source, toolchain, plans, binaries, common = (
        compiled.project, compiled.config, compiled.source, compiled.toolchain, compiled.plans, compiled.binaries, compiled.common,
    )  # fmt: skip
    parts: list[PlatformParts] = []
    platform_facts: dict[Platform, dict[str, Any]] = {}  # report.json's per-platform extras
    known: list[tuple[Platform, PlatformFacts]] = []  # what the SBOM needs that the image cannot say
    advice: dict[tuple[str, str], list[Platform]] = {}  # said once, naming every platform it is true of
    for plan, binary in zip(plans, binaries):
        platform = plan.platform
        facts = prove_binary(binary)
        reporter.detail(
            f"{platform}: {binary.name} {binary.size:,} bytes, {facts.machine}, {'static' if facts.static else 'dynamic'}, stripped"
        )
        needs = read_needs(binary.path)
        platform_facts.setdefault(platform, {})["needs"] = needs.to_json()
        shipped, runtime = config, common
        if config.follow_needs:
            shipped, said = ship_what_is_needed(config, needs)
            runtime = collect_runtime_files(shipped, toolchain, never_ship=(project.output,))
            reporter.detail(f"{platform}: {said}")
        for kind_and_message in advise(shipped, needs, runtime.size("tzdata")):
            advice.setdefault(kind_and_message, []).append(platform)
        closure = None
        if not facts.static:
            closure = collect_libraries(
                binary.path,
                binary_image_path=f"/{binary.name}",
                root=config.sysroot_for(platform) or Path("/"),
                extra_libs=config.libs,
                search_paths=config.lib_search_paths,
                strip=config.strip_libs,
            )
            runtime = with_libraries(runtime, closure, config.lib_search_paths)
            platform_facts.setdefault(platform, {})["libraries"] = [_library_json(f) for f in closure.files]
            show_libraries(reporter, platform, closure)
        parts.append(PlatformParts(binary, runtime))
        sources = file_sources(shipped, runtime.entries, closure, toolchain.version_text)
        known.append((platform, PlatformFacts(f"/{binary.name}", plan.ldflags, sources)))
        platform_facts.setdefault(platform, {}).update(known[-1][1].to_json())
    for (kind, message), where in advice.items():
        (reporter.warn if kind == "warn" else reporter.detail)(f"{', '.join(map(str, where))}: {message}")
    docker_platform = host_platform() if host_platform() in config.platforms else config.platforms[0]

    def ready(platform: Platform, config_blob: Blob, tar: bytes) -> None:
        if ahead is not None and platform == docker_platform:  # the platform image.tar holds, and the engine gets
            ahead.start(config, config_blob, (tar,), source.epoch)

    image = assemble(config, tuple(parts), source, ready=ready)

    sizes = platform_sizes(
        image,
        {p.binary.platform: p.binary.size for p in parts},
        {p.binary.platform: p.runtime for p in parts},
    )
    enforce_max_size(config, sizes)
    # Held to the rules `gosmall audit` holds any image to, before anything is written.
    enforce_audit(config, audit_image(image, config=config), reporter)
    # Known vulnerabilities, only when a database is configured: otherwise nothing is said and no network used.
    vulns = _check_vulns(project, config, parts, platform_facts, reporter)
    if config.healthcheck and config.format == "oci" and "format" not in config.written:
        # Not repeated once format is written down: then it is a decision, and nothing here would change it.
        reporter.warn(
            f"[tool.gosmall.images.{config.name}]: the image has a healthcheck, but podman and buildah read Healthcheck only "
            'from Docker-format images and drop it from OCI ones; set format = "docker" if it will run under podman, '
            'or format = "oci" to say it will not.'
        )
    report = build_report(config, image, sizes, source, docker_platform, platform_facts, go=toolchain.version_text)
    go_cache = [b.go_cache for b in binaries if b.go_cache is not None]
    if go_cache:  # only when a shared cache was set: a build without one writes the report it always did
        report["go_cache"] = report_entry(total(go_cache))
    show_size_table(reporter, config, sizes, str(image.digest), vulns)
    return Build(config, image, report, project.output_dir(config), tuple(known))


def _check_vulns(
    project: ProjectConfig, config: ImageConfig, parts: Sequence[Any], platform_facts: dict[Platform, dict[str, Any]], reporter: Reporter
) -> dict[Platform, str] | None:
    """Each platform's binary against the Go vulnerability database (GOVULNDB, else [tool.gosmall] vulndb), when
    one is configured and vulns is not "off": report.json's "vulns", the size table's line, and vulns = "error"."""
    from .trust.vulns import check_built_binary, database_location, enforce_vulns, open_database

    where = database_location("", os.environ, project.vulndb, root=project.root, cwd=Path.cwd())
    if where is None or project.vulns == "off":
        return None
    db = open_database(*where)
    found = {part.binary.platform: check_built_binary(part.binary.path, db, platform=str(part.binary.platform)) for part in parts}
    enforce_vulns(config.name, project.vulns, {str(p): v for p, v in found.items()})  # type: ignore[arg-type]
    for platform, vulns in found.items():
        platform_facts.setdefault(platform, {})["vulns"] = vulns.to_json()
        if vulns.called:
            reporter.warn(
                f"{platform}: the binary calls known vulnerabilities: {', '.join(vulns.called)}; `gosmall vulns` says which "
                "functions, and the versions that fix them."
            )
    return {platform: vulns.line() for platform, vulns in found.items()}


WORKDIR_PREFIX = "gosmall-build-"
# What a build that is not up to date imports after `go build` (_build_from, write_outputs).
AFTER_GO = (
    "gosmall.build.assemble", "gosmall.build.libraries", "gosmall.build.prove", "gosmall.publish.report", "gosmall.images.oci_layout",
    "gosmall.trust.audit", "gosmall.trust.sbom", "elftools.elf.elffile", "elftools.elf.dynamic",
)  # fmt: skip


def write_outputs(build: Build, reporter: Reporter) -> None:
    """All outputs into a temp dir beside `target`, then swapped in: a failure leaves the old output intact.

    Only a directory gosmall wrote is replaced (outputs.py); anything else at `target` is refused.
    """
    from .images.oci_layout import write_oci_layout
    from .publish.report import report_json
    from .trust.sbom import SBOM_FILE, sbom_artifact, sbom_document

    target = build.output_dir
    prepare_output_dir(target.parent)
    check_replaceable(target)
    remove_leftovers(target.parent, reporter)
    staging = make_staging_dir(target)
    try:
        sbom = sbom_document(build)
        write_oci_layout(build.image, staging / "oci", build.config.repository, build.config.tags, referrers=(sbom_artifact(build, sbom),))
        (staging / SBOM_FILE).write_bytes(sbom)
        (staging / "image.tar").write_bytes(build.docker_archive())
        (staging / "report.json").write_bytes(report_json(dict(build.report)))
        os.chmod(staging, 0o755)
        written = fresh.output_files(staging)  # a rename keeps every identity
        swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if build.made_from is not None:
        fresh.write_record(target, build.made_from, build.said, written)


def _library_json(library: CollectedFile) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": library.path,
        "kind": library.kind,
        "size": library.size,
        "needed_by": list(library.needed_by),
        "reason": library.reason,
    }
    if library.kind == "symlink":
        entry["link_target"] = library.link_target
    return entry
