"""Stage 2: compile the Go main package, once per platform.

Static by default (CGO_ENABLED=0, netgo, osusergo); trimmed (-trimpath,
-s -w, empty build id) so the binary depends on the source, not the machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ..config import LDFLAGS_TEMPLATE, ImageConfig
from ..elf import machine_for_uname, read_go_build_id
from ..errors import GosmallError
from ..images.model import Platform
from ..interrupts import kill_running_groups, run_as_group
from . import speculate
from .cache import cache_root, copy_out, go_output, go_scratch, key_of
from .gocache import GoCacheStats, RemoteCache, index_tag, program_env, read_stats
from .progress import Listing, PackageProgress, with_package_names, without_package_names
from .source import SourceInfo
from .toolchain import GoModule, Runner, Toolchain, run_go

_GOARM = {"v6": "6", "v7": "7"}


@dataclass(frozen=True)
class CompilePlan:
    package: Path
    module: GoModule
    platform: Platform
    cgo: bool
    tags: tuple[str, ...]
    ldflags: str
    binary_name: str
    cc: str | None = None

    def env(self) -> dict[str, str]:
        env = {
            "CGO_ENABLED": "1" if self.cgo else "0",
            "GOOS": self.platform.os,
            "GOARCH": self.platform.architecture,
        }
        if self.platform.architecture == "arm":
            env["GOARM"] = _GOARM.get(self.platform.variant, "7")
        if self.cc:
            env["CC"] = self.cc
        return env

    def args(self, output: Path) -> list[str]:
        # -buildvcs=false: vcs stamps change with untracked files (even the
        # output dir), which would change the digest; the revision goes into
        # the manifest's annotations instead.
        return [
            "build", "-trimpath", "-buildvcs=false",
            "-tags", ",".join(self.tags),
            "-ldflags", self.ldflags,
            "-o", str(output), ".",
        ]  # fmt: skip


@dataclass(frozen=True)
class Binary:
    path: Path
    name: str  # file name in the image, at /<name>
    platform: Platform
    size: int
    cgo: bool
    build_id: str = ""  # Go's (`go tool buildid`); it changes whenever Go links
    go_cache: GoCacheStats | None = None  # what the shared Go cache did for this build (gocache.py), when one is set


def imports_c(package: Path) -> bool:
    """Whether the main package itself uses cgo (`import "C"`), which CGO_ENABLED=0 would refuse to build."""
    # The import block is taken whole, then searched: one pattern for both nested its repetitions and took
    # minutes (exponential backtracking) on a main package importing a few dozen packages.
    single = re.compile(r'^\s*import\s+"C"', re.M)
    block = re.compile(r"^import\s*\(([^)]*)\)", re.M)
    quoted_c = re.compile(r'^\s*"C"\s*$', re.M)

    def uses_c(text: str) -> bool:
        return bool(single.search(text)) or any(quoted_c.search(imports) for imports in block.findall(text))

    return any(uses_c(f.read_text(errors="replace")) for f in sorted(package.glob("*.go")) if not f.name.endswith("_test.go"))


def plan_compile(image: ImageConfig, module: GoModule, platform: Platform, source: SourceInfo | str) -> CompilePlan:
    """`source` fills in the ldflags templates; a bare version string is a source known by its version alone."""
    if not image.cgo and imports_c(image.package):
        image = replace(image, cgo=True)
    tags: list[str] = [] if image.cgo else ["netgo", "osusergo"]
    if image.tzdata == "embed":
        tags.append("timetzdata")
    tags.extend(t for t in image.build_tags if t not in tags)
    user_flags = fill_ldflags(image.ldflags, source if isinstance(source, SourceInfo) else SourceInfo(source, "", "", 0))
    cc = image.cc_for(platform)
    if image.cgo and platform != host_platform() and not cc:
        raise GosmallError(
            f"Image '{image.name}' has cgo = true and platform {platform}, but this machine is {host_platform()}: "
            f"cross-compiling cgo needs a C cross compiler for {platform}, e.g. "
            f'{_cross_cc_hint(platform)}. Install one and set cc = {{ "{platform}" = "<compiler>" }} '
            f"in [tool.gosmall.images.{image.name}], or drop {platform} from its platforms."
        )
    if image.cgo and platform != host_platform() and image.sysroot_for(platform) is None:
        # Checked before any compiling: the binary would build, then its libraries could not be found.
        raise GosmallError(
            f"Image '{image.name}' has cgo = true and platform {platform}, but this machine is {host_platform()}: "
            f"the image needs {platform}'s C library and the shared libraries the binary names, which are not this "
            f'machine\'s. Set sysroot = {{ "{platform}" = "<dir>" }} in [tool.gosmall.images.{image.name}] to a root '
            f"holding them ({_cross_sysroot_hint(platform)}), or drop {platform} from its platforms."
        )
    return CompilePlan(
        package=image.package,
        module=module,
        platform=platform,
        cgo=image.cgo,
        tags=tuple(tags),
        # Go's build ID stays: with -trimpath it is the same in any directory and cache, and it is
        # what lets `go build` see a kept output is up to date and skip the link.
        ldflags=" ".join(["-s", "-w", *user_flags]),
        binary_name=binary_name(image.package, module),
        cc=cc,
    )


def fill_ldflags(ldflags: Sequence[str], source: SourceInfo) -> list[str]:
    """Each `{name}` the config let through (config.py refused any other) replaced by its value, in one pass:
    a value that itself holds `{tag}` (a branch name, a tag) stays as it is."""
    values = source.ldflags_values()
    return [LDFLAGS_TEMPLATE.sub(lambda m: values.get(m.group(1), m.group(0)), flag) for flag in ldflags]


def binary_name(package: Path, module: GoModule) -> str:
    """What `go build` would name it: the last element of the import path."""
    relative = package.relative_to(module.root).as_posix()
    import_path = module.path if relative == "." else f"{module.path}/{relative}"
    parts = PurePosixPath(import_path).parts
    # example.com/cmd/app/v2 is named app, as go build does for major versions.
    if len(parts) > 1 and parts[-1].startswith("v") and parts[-1][1:].isdigit():
        return parts[-2]
    return parts[-1]


def compile_binary(
    plan: CompilePlan,
    toolchain: Toolchain,
    workdir: Path,
    *,
    runner: Runner = run_as_group,
    remote: RemoteCache | None = None,
    progress: PackageProgress | None = None,
) -> Binary:
    output = workdir / plan.platform.__str__().replace("/", "_") / plan.binary_name
    output.parent.mkdir(parents=True, exist_ok=True)
    # go build's own work directory, and the C compiler's temporary files, inside gosmall's work
    # directory: a killed build leaves nothing in TMPDIR that the next one cannot tell is its own.
    scratch = workdir / "go-tmp"
    scratch.mkdir(exist_ok=True)
    env = {**plan.env(), "GOTMPDIR": str(scratch), "TMPDIR": str(scratch)}
    # Everything that decides the binary but the source, which Go's own up-to-date check reads.
    key = key_of([str(plan.package), str(plan.module.root), plan.args(Path("-")), plan.env(), str(toolchain.go), toolchain.version_text])
    shared = _go_cache_env(plan, toolchain, workdir, remote) if remote is not None else {}
    stats: GoCacheStats | None = None
    env = {**env, **shared}
    early = speculate.claim(key) if runner is run_as_group else None
    # Counted only on a terminal (progress.py); a build Go finds up to date prints nothing to count.
    listing = Listing(toolchain, plan.module, plan.package, plan.env(), plan.tags)
    watch = progress.platform(str(plan.platform), listing) if progress is not None and runner is run_as_group else None
    try:
        with go_output(key, held=early.lock if early else None) as kept, contextlib.ExitStack() as stack:
            target = kept / plan.binary_name if kept is not None else output
            if kept is not None:
                go_tmp = stack.enter_context(go_scratch(kept))
                env = {**env, "GOTMPDIR": str(go_tmp), "TMPDIR": str(go_tmp)}
            # -v, terminal or not, so an early build is the same command: Go names each package it compiles, for the
            # count; its stderr never shows them. With the shared cache its program counts instead (gocache.py).
            args = plan.args(target) if shared else with_package_names(plan.args(target))
            argv = [str(toolchain.executable), *args]
            full_env = toolchain.env(plan.module, env)
            if early is not None and early.matches(argv, plan.package, full_env):
                done = early.result(on_stderr=watch.saw if watch else None)  # the same command, started before Python was ready
            else:
                if early is not None:
                    early.kill()  # another command now: it may not go on writing the kept output
                counted = functools.partial(run_as_group, on_stderr=watch.saw) if watch is not None else runner
                done = run_go(toolchain, plan.module, args, cwd=plan.package, env={**env, **(watch.env() if watch else {})}, runner=counted)
            if watch is not None:
                watch.finished(done.returncode == 0)
            if not shared:
                done = without_package_names(done)
            if shared and done.returncode != 0 and "GOCACHEPROG" in done.stderr:
                # The cache program itself failed Go (a bug of ours): never worse than no cache, so once more without it.
                why = f"Go stopped with its cache program: {done.stderr.strip()[-300:]}"
                stats = GoCacheStats(repository=remote.repository if remote else "", write=bool(remote and remote.write), trouble=why)
                env = {k: v for k, v in env.items() if k not in shared}
                shared = {}
                done = run_go(toolchain, plan.module, plan.args(target), cwd=plan.package, env=env, runner=runner)
            if kept is not None and done.returncode == 0 and target.is_file():
                copy_out(target, output)  # under the lock: another build may re-link the kept file next
                if not shared:  # a shared-cache build is never started early: its program reports to this run (speculate.py)
                    speculate.ran(key, argv, plan.package, full_env)
    finally:
        if early is not None:
            early.close()
    if done.returncode != 0:
        # The compiler's own words, as it printed them.
        raise GosmallError(
            f"go build of {plan.package} for {plan.platform} failed ({toolchain.version_text}, exit {done.returncode}):\n"
            f"{(done.stderr or done.stdout).rstrip()}"
        )
    # For a non-main package `go build -o` writes an ar archive, not an executable.
    if not output.is_file() or _head(output) != b"\x7fELF":
        raise GosmallError(
            f"go build of {plan.package} for {plan.platform} wrote no executable; is it a `package main`? "
            "Point `package` at the directory of your main package."
        )
    if shared and remote is not None:
        stats = read_stats(Path(shared["GOSMALL_GOCACHE_STATS"]), remote)
    build_id = read_go_build_id(output) or ""
    return Binary(output, plan.binary_name, plan.platform, output.stat().st_size, plan.cgo, build_id, stats if remote else None)


def _go_cache_env(plan: CompilePlan, toolchain: Toolchain, workdir: Path, remote: RemoteCache) -> dict[str, str]:
    """GOCACHEPROG and what it needs: gosmall's Go cache program, its local disk, its index tag, and a file to report to."""
    root = cache_root()
    # With GOSMALL_CACHE=off the local half lives for this run only, in the work directory.
    directory = (root / "gocache") if root is not None else (workdir / "gocache")
    name = str(plan.platform).replace("/", "_")
    package = plan.package.relative_to(plan.module.root).as_posix() if plan.package.is_relative_to(plan.module.root) else str(plan.package)
    facts = [toolchain.version_text, plan.module.path, package, plan.cgo, plan.tags, plan.cc or ""]
    tag = index_tag(plan.platform.os, plan.platform.architecture, plan.platform.variant, facts)
    stats = workdir / f"gocache-{name}.json"
    stats.unlink(missing_ok=True)
    return program_env(remote, directory, tag, stats)


def _head(path: Path) -> bytes:
    with path.open("rb") as stream:
        return stream.read(4)


def compile_all(
    plans: Sequence[CompilePlan],
    toolchain: Toolchain,
    workdir: Path,
    *,
    runner: Runner = run_as_group,
    jobs: int | None = None,
    remote: RemoteCache | None = None,
    progress: PackageProgress | None = None,
) -> tuple[Binary, ...]:
    """Every platform's binary, in plan order; as many `go build`s at once as there are CPUs.

    The first failure (in plan order) is the one raised, after the other builds were stopped; Ctrl-C
    and SIGTERM, which only the main thread sees, stop every build the same way.
    """
    workers = min(len(plans), jobs or os.cpu_count() or 1)
    if workers <= 1:
        return tuple(compile_binary(plan, toolchain, workdir, runner=runner, remote=remote, progress=progress) for plan in plans)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gosmall-compile") as pool:
        futures = [pool.submit(compile_binary, plan, toolchain, workdir, runner=runner, remote=remote, progress=progress) for plan in plans]
        try:
            return tuple(future.result() for future in futures)
        except BaseException:
            for future in futures:
                future.cancel()
            kill_running_groups()
            raise


_CROSS_CC = {
    "linux/amd64": "x86_64-linux-gnu-gcc", "linux/arm64": "aarch64-linux-gnu-gcc",
    "linux/arm/v7": "arm-linux-gnueabihf-gcc", "linux/arm/v6": "arm-linux-gnueabi-gcc",
    "linux/386": "i686-linux-gnu-gcc", "linux/ppc64le": "powerpc64le-linux-gnu-gcc",
    "linux/s390x": "s390x-linux-gnu-gcc", "linux/riscv64": "riscv64-linux-gnu-gcc",
}  # fmt: skip


def host_platform() -> Platform:
    machine = machine_for_uname(os.uname().machine)  # what platform.machine() says, without importing it
    return machine.platform if machine is not None else Platform("linux", "amd64")


_DEBIAN_ARCH = {
    "linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armhf", "linux/arm/v6": "armel",
    "linux/386": "i386", "linux/ppc64le": "ppc64el", "linux/s390x": "s390x", "linux/riscv64": "riscv64",
}  # fmt: skip


def _cross_sysroot_hint(platform: Platform) -> str:
    triplet = _CROSS_CC.get(str(platform), "a cross gcc").removesuffix("-gcc")
    return f"Debian: apt-get install libc6-dev-{_DEBIAN_ARCH.get(str(platform), '<arch>')}-cross, then sysroot /usr/{triplet}"


def _cross_cc_hint(platform: Platform) -> str:
    cc = _CROSS_CC.get(str(platform), "a cross gcc")
    return f"{cc} (Debian: apt-get install gcc-{cc.removesuffix('-gcc')})"
