"""Whole commands, side by side: a rebuild where nothing changed, and one after a one-line change.

Interleaved runs of each command on a throwaway copy of go_app (linux/amd64), medians, as ratios:

- `go build -o out` with `out` up to date: Go's own floor for "nothing changed";
- `gosmall build-small`, nothing changed;
- `gosmall build-small --load`, nothing changed (the engine already holds the image);
- `gosmall build-small --load` after a one-line source change;
- go build + legacy `docker build` (DOCKER_BUILDKIT=0) of the usual FROM scratch Dockerfile;
- go build + `buildah` from scratch into an OCI directory (vfs storage), when buildah is installed;
- two platforms (amd64 + arm64), nothing changed, against one.

BuildKit needs the buildx plugin, which Debian 12 does not package; where `docker buildx` works it is
measured too. Nothing here is a test: the numbers depend on the machine, the ratios much less.

    python benchmarks/bench_noop.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOSMALL = [str(Path(sys.executable).with_name("gosmall"))]
TABLE = '[tool.gosmall]\npinning = "off"\n[tool.gosmall.images.hello]\npackage = "./go_app"\nrepository = "bench.gosmall.local/hello"\nplatforms = {platforms}\ntzdata = "zip"\nuser = "nonroot"\n'
DOCKERFILE = """FROM scratch
COPY go_app /go_app
COPY zoneinfo.zip /usr/share/zoneinfo.zip
ENV ZONEINFO=/usr/share/zoneinfo.zip
USER 65532:65532
ENTRYPOINT ["/go_app"]
"""


def project(root: Path, platforms: str) -> Path:
    shutil.copytree(REPO / "go_app", root / "go_app")
    (root / "pyproject.toml").write_text(TABLE.format(platforms=platforms))
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(command, cwd=root, check=True, env=env)
    return root


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def go() -> str:
    found = shutil.which("go")
    if found:
        return found
    import importlib.util

    spec = importlib.util.find_spec("go")
    assert spec and spec.origin
    return str(Path(spec.origin).parent / "bin" / "go")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    work = Path(tempfile.mkdtemp(prefix="gosmall-bench-"))
    one = project(work / "one", '["linux/amd64"]')
    two = project(work / "two", '["linux/amd64", "linux/arm64"]')
    change = project(work / "change", '["linux/amd64"]')
    goroot = subprocess.run([go(), "env", "GOROOT"], capture_output=True, text=True, check=True).stdout.strip()
    docker_dir = work / "docker"
    docker_dir.mkdir()
    (docker_dir / "Dockerfile").write_text(DOCKERFILE)
    shutil.copy(Path(goroot) / "lib" / "time" / "zoneinfo.zip", docker_dir / "zoneinfo.zip")
    go_build = [go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(docker_dir / "go_app"), "."]
    static = {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64"}

    def edit_and_load() -> float:
        main_go = change / "go_app" / "main.go"
        main_go.write_text(main_go.read_text() + f"\n// bench {time.time_ns()}\n")
        return timed([*GOSMALL, "build-small", "--load"], change)

    def docker_legacy() -> float:
        return timed(go_build, one / "go_app", static) + timed(
            ["docker", "build", "-q", "--no-cache", "-t", "bench.gosmall.local/docker:latest", "."], docker_dir, {"DOCKER_BUILDKIT": "0"}
        )

    commands = {
        "go build, up to date": lambda: timed(go_build, one / "go_app", static),
        "gosmall build-small, nothing changed": lambda: timed([*GOSMALL, "build-small"], one),
        "gosmall build-small --load, nothing changed": lambda: timed([*GOSMALL, "build-small", "--load"], one),
        "gosmall build-small --load, one line changed": edit_and_load,
        "go build + docker build (legacy)": docker_legacy,
        "gosmall build-small, two platforms, nothing changed": lambda: timed([*GOSMALL, "build-small"], two),
    }
    if shutil.which("buildah"):
        storage = ["--storage-driver", "vfs", "--root", str(work / "buildah"), "--runroot", str(work / "buildah-run")]

        def buildah() -> float:
            return timed(go_build, one / "go_app", static) + timed(
                ["buildah", *storage, "bud", "--isolation", "chroot", "-q", "-t", "oci-archive:" + str(work / "b.tar"), "."], docker_dir
            )

        commands["go build + buildah bud"] = buildah
    for measure in commands.values():  # warm-up: caches, engine, kept outputs
        measure()
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, measure in commands.items():
            samples[name].append(measure())
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor, legacy = medians["go build, up to date"], medians["go build + docker build (legacy)"]
    one_platform = medians["gosmall build-small, nothing changed"]
    print(f"{runs} interleaved runs, medians\n")
    print(f"{'path':55} {'s':>7} {'/ go up to date':>16} {'/ legacy docker':>16}")
    for name, seconds in medians.items():
        print(f"{name:55} {seconds:7.3f} {seconds / floor:16.2f} {seconds / legacy:16.2f}")
    print(f"\ntwo platforms / one: {medians['gosmall build-small, two platforms, nothing changed'] / one_platform:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
