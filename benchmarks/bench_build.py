"""End to end, side by side: gosmall's daemonless build against `docker build`.

Both paths start from go_app's source and end with an image in the local
Docker engine, for linux/amd64:

- gosmall: `gosmall.pipeline.build_small` (go build, prove, runtime files,
  assemble, OCI layout + image.tar + report.json) on a throwaway copy of the
  sample project, then `gosmall.publish.engine.load_image` (docker load through the
  SDK, with its check that the engine's ID is the built config digest).
  That is what `gosmall build-small --load` does.
- docker: `go build` with the flags the usual scratch recipe uses
  (CGO_ENABLED=0 -trimpath -ldflags "-s -w"), then `docker build` through the
  SDK of a hand-written Dockerfile: FROM scratch, COPY the binary and Go's
  zoneinfo.zip, the same ENV, USER, EXPOSE, HEALTHCHECK and ENTRYPOINT.

Runs are interleaved (gosmall, docker, gosmall, ...) after one untimed warm-up
of each, so both see a warm Go build cache and the same machine noise; each
run removes the image the previous one made, so neither is a no-op in the
engine. Results are medians, reported as ratios gosmall / docker.

    python benchmarks/bench_build.py [--runs 5]

Without an engine it says so and times only the builds (no load, no docker build).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gosmall.config import ImageConfig, ProjectConfig, load_project
from gosmall.errors import GosmallError
from gosmall.images.model import Platform
from gosmall.reporter import RecordingReporter

REPO = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:  # pragma: no cover
    import docker

PLATFORM = Platform.parse("linux/amd64")
# Not the tests' commit date, so our image never shares an ID (and so a
# removal) with an image a concurrent test run loaded.
COMMIT_DATE = "2026-02-03T04:05:06+00:00"
BENCH_REPOSITORY = "localhost/gosmall-bench"

DOCKERFILE = """\
FROM scratch
COPY go_app /go_app
COPY zoneinfo.zip /usr/share/zoneinfo.zip
ENV TZ_NAME=Europe/Berlin ZONEINFO=/usr/share/zoneinfo.zip
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD ["/go_app", "healthcheck"]
ENTRYPOINT ["/go_app"]
"""
GO_BUILD_FLAGS = ["-trimpath", "-ldflags", "-s -w"]


@dataclass(frozen=True)
class Run:
    """One timed build; phases in seconds, in order."""

    phases: tuple[tuple[str, float], ...]
    image_id: str  # "" when no engine took the image
    size: int  # engine's size, else the bytes we know of
    diff_ids: tuple[str, ...] = ()  # the engine's RootFS layers
    created: str = ""  # the config's "created"

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.phases)


# -- the two paths --------------------------------------------------------------


class Gosmall:
    name = "gosmall"

    def __init__(self, project: ProjectConfig, client: docker.DockerClient | None, tag: str) -> None:
        from gosmall.pipeline import build_small

        self._build_small = build_small
        (image,) = project.image("hello")
        # One platform, and our own name so nothing we remove is someone else's tag.
        self.image: ImageConfig = replace(image, platforms=(PLATFORM,), repository=f"{BENCH_REPOSITORY}-gosmall", tags=(tag,))
        self.project = replace(project, images=(self.image,))
        self.client = client

    def run(self) -> Run:
        from gosmall.publish.engine import load_image

        reporter = RecordingReporter()
        start = time.perf_counter()
        (result,) = self._build_small(self.project, reporter, environ={})
        built = time.perf_counter()
        if self.client is None:
            size = result.report["platforms"][str(PLATFORM)]["image_size"]
            return Run((("build-small", built - start),), "", size)
        loaded = load_image(self.client, self.image, result.output_dir, reporter)
        done = time.perf_counter()
        return _engine_run((("build-small", built - start), ("docker load", done - built)), self.client.images.get(loaded.image_id))

    def remove(self) -> None:
        _untag(self.client, f"{self.image.repository}:{self.image.tags[0]}")


class DockerBuild:
    name = "docker build"

    def __init__(
        self, project: ProjectConfig, client: docker.DockerClient | None, tag: str, context: Path, *, nocache: bool = True
    ) -> None:
        from gosmall.build.toolchain import find_module, find_toolchain

        (image,) = project.image("hello")
        self.package = image.package
        self.module = find_module(image.package)
        self.toolchain = find_toolchain(self.module)
        self.context = context
        self.client = client
        self.reference = f"{BENCH_REPOSITORY}-docker:{tag}"
        self.nocache = nocache

    def run(self) -> Run:
        from gosmall.build.toolchain import run_go

        start = time.perf_counter()
        binary = self.context / "go_app"
        # go build skips the link when the output file is already up to date;
        # gosmall links into a fresh directory every time, and so does a
        # builder stage or a fresh CI checkout, so this path must link too.
        binary.unlink(missing_ok=True)
        done = run_go(
            self.toolchain, self.module, ["build", *GO_BUILD_FLAGS, "-o", str(binary), "."],
            cwd=self.package, env={"CGO_ENABLED": "0", "GOOS": PLATFORM.os, "GOARCH": PLATFORM.architecture},
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"go build failed:\n{done.stderr}")
        shutil.copyfile(self.toolchain.goroot / "lib" / "time" / "zoneinfo.zip", self.context / "zoneinfo.zip")
        (self.context / "Dockerfile").write_text(DOCKERFILE)
        compiled = time.perf_counter()
        if self.client is None:
            size = binary.stat().st_size + (self.context / "zoneinfo.zip").stat().st_size
            return Run((("go build", compiled - start),), "", size)
        # rm/forcerm: the classic builder's intermediate containers go too.
        image, _ = self.client.images.build(path=str(self.context), tag=self.reference, nocache=self.nocache, rm=True, forcerm=True)
        built = time.perf_counter()
        return _engine_run((("go build", compiled - start), ("docker build", built - compiled)), image)

    def remove(self) -> None:
        _untag(self.client, self.reference)


def _engine_run(phases: tuple[tuple[str, float], ...], image: docker.models.images.Image) -> Run:
    attrs = image.attrs
    return Run(phases, image.id, attrs["Size"], tuple(attrs["RootFS"].get("Layers", ())), attrs.get("Created", ""))


def _untag(client: docker.DockerClient | None, reference: str) -> None:
    """Drop our tag; the engine deletes the image only if nothing else names or uses it."""
    if client is None:
        return
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.remove(reference, noprune=False)
    except ImageNotFound:
        pass
    except APIError as exc:  # in use by someone else's container: leave it
        print(f"note: could not remove {reference}: {exc.explanation or exc}", file=sys.stderr)


# -- the sample project ---------------------------------------------------------


def make_project(directory: Path) -> ProjectConfig:
    """go_app and the repository's [tool.gosmall], as its own git repository with a fixed commit date."""
    directory.mkdir(parents=True)
    shutil.copytree(REPO / "go_app", directory / "go_app")
    text = (REPO / "pyproject.toml").read_text()
    (directory / "pyproject.toml").write_text('[project]\nname = "sample"\nversion = "0"\n\n' + text[text.index("[tool.gosmall]") :])
    (directory / ".gitignore").write_text("dist/\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": COMMIT_DATE, "GIT_COMMITTER_DATE": COMMIT_DATE,
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
    }  # fmt: skip
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "sample"]):
        subprocess.run(command, cwd=directory, check=True, env=env)
    return load_project(directory)


def connect_engine() -> tuple[docker.DockerClient | None, str]:
    from gosmall.publish.engine import connect

    try:
        client = connect()
    except GosmallError as exc:
        return None, exc.message
    version = client.version()
    return client, f"Docker engine {version.get('Version', '?')}, API {version.get('ApiVersion', '?')}, classic builder (the SDK's /build)"


# -- measuring ------------------------------------------------------------------


def interleave(paths: list[Gosmall | DockerBuild], runs: int) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {p.name: [] for p in paths}
    for path in paths:  # warm-up: Go build cache, engine, page cache; not counted
        path.run()
        path.remove()
    for _ in range(runs):
        for path in paths:
            results[path.name].append(path.run())
            path.remove()
    return results


def rebuild(make: Callable[[], Gosmall | DockerBuild]) -> tuple[Run, Run]:
    """Build twice from scratch, the second time in a fresh project copy."""
    first = make()
    a = first.run()
    first.remove()
    second = make()
    b = second.run()
    second.remove()
    return a, b


def cached_rebuild_ids(path: DockerBuild) -> tuple[str, str, float]:
    """docker build twice without removing the first image: the layer cache's answer, and the second build's time."""
    a = path.run().image_id
    again = path.run()
    path.remove()
    return a, again.image_id, again.seconds


# -- showing --------------------------------------------------------------------


def median_phases(runs: list[Run]) -> list[tuple[str, float]]:
    names = [name for name, _ in runs[0].phases]
    return [(name, statistics.median(dict(r.phases)[name] for r in runs)) for name in names]


def show(results: dict[str, list[Run]], engine: str, runs: int, *, with_engine: bool) -> None:
    ours, theirs = results["gosmall"], results["docker build"]
    # Without an engine there is no image on the docker side: compare the builds and the bytes each would ship.
    size_column = "image size (engine)" if with_engine else "bytes (gosmall: layer tar; docker: binary + zoneinfo.zip)"
    theirs_name = "docker build" if with_engine else "go build alone"
    print(f"# End to end: gosmall vs docker build, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print()
    print(f"- machine: {machine()}")
    print(f"- {engine}")
    print(f"- go_app for {PLATFORM}, {runs} timed runs each after one warm-up, interleaved; medians; Go build cache warm")
    print()
    print(f"| path | median s | min–max s | phases (median s) | {size_column} | distinct image IDs over the runs |")
    print("|---|---:|---:|---|---:|---:|")
    for name, rows in results.items():
        phases = ", ".join(f"{p} {s:.2f}" for p, s in median_phases(rows))
        ids = {r.image_id for r in rows if r.image_id}
        spread = f"{min(r.seconds for r in rows):.2f}–{max(r.seconds for r in rows):.2f}"
        print(
            f"| {name if name == 'gosmall' else theirs_name} | {statistics.median(r.seconds for r in rows):.2f} | {spread} | {phases} | {rows[0].size:,} | {len(ids) if ids else '-'} |"
        )
    print()
    t_ours = statistics.median(r.seconds for r in ours)
    t_theirs = statistics.median(r.seconds for r in theirs)
    print(f"- time gosmall / {theirs_name}: **{t_ours / t_theirs:.2f}**")
    print(
        f"- {'image size' if with_engine else 'bytes'} gosmall / {theirs_name}: **{ours[0].size / theirs[0].size:.3f}** ({ours[0].size:,} vs {theirs[0].size:,} bytes)"
    )


def show_reproducibility(gosmall_runs: tuple[Run, Run], docker_runs: tuple[Run, Run], cached: tuple[str, str, float] | None) -> None:
    print()
    print("Reproducibility: build, remove, build again in a fresh project copy (docker: no layer cache):")
    print()
    for name, (a, b) in (("gosmall", gosmall_runs), ("docker build", docker_runs)):
        verdict = "same image ID" if a.image_id == b.image_id else "DIFFERENT image IDs"
        layers = (
            "same layers"
            if a.diff_ids == b.diff_ids
            else f"{sum(x != y for x, y in zip(a.diff_ids, b.diff_ids))} of {len(a.diff_ids)} layers differ"
        )
        created = f"created {a.created} both times" if a.created == b.created else f"created {a.created} then {b.created}"
        print(f"- {name}: {a.image_id[:19]} then {b.image_id[:19]}: {verdict} ({layers}; {created})")
    if cached:
        a, b, seconds = cached
        print(
            f"- docker build with its layer cache, image kept: {a[:19]} then {b[:19]} "
            f"({'same' if a == b else 'different'}; second build {seconds:.2f} s). "
            "A cache hit reuses the first build's layers and config; it says nothing about rebuilding the bytes."
        )


def machine() -> str:
    model = ""
    try:
        model = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), ""
        )
    except OSError:
        pass
    load = ", load average {:.1f} {:.1f} {:.1f} at the end".format(*os.getloadavg())
    return f"{platform.machine()} {model or '?'}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}{load}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per path (median is reported)")
    args = parser.parse_args(argv)

    client, engine = connect_engine()
    if client is None:
        print(f"No Docker engine: {engine}\nMeasuring the builds only: gosmall's build-small against go build; no load, no docker build.\n")
        engine = "no Docker engine: builds only"
    tag = f"b{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="gosmall-bench-") as tmp:
        root = Path(tmp)
        project = make_project(root / "project")
        context = root / "context"
        context.mkdir()
        paths: list[Gosmall | DockerBuild] = [Gosmall(project, client, tag), DockerBuild(project, client, tag, context)]
        try:
            results = interleave(paths, args.runs)
            show(results, engine, args.runs, with_engine=client is not None)
            if client is None:
                return
            copies = iter(range(1, 100))
            gosmall_runs = rebuild(lambda: Gosmall(make_project(root / f"copy{next(copies)}"), client, tag))
            docker_runs = rebuild(lambda: DockerBuild(make_project(root / f"copy{next(copies)}"), client, tag, context))
            cached = cached_rebuild_ids(DockerBuild(project, client, tag, context, nocache=False))
            show_reproducibility(gosmall_runs, docker_runs, cached)
        finally:
            for path in paths:
                path.remove()
            if client is not None:
                client.close()


if __name__ == "__main__":
    main()
