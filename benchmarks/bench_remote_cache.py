"""Fresh CI runners sharing Go's build cache through a registry (issue 25), side by side with no shared cache.

A runner is a clone of the project with its own empty HOME, GOCACHE and GOSMALL_CACHE, as a fresh CI
machine has; all of them share one loopback Debian `docker-registry`. Each round, interleaved:

- cold:    `gosmall build-small` with GOSMALL_REMOTE_CACHE=off (what every fresh runner pays today);
- writer:  the first runner with the cache on, into a repository nobody wrote yet: all misses, writing;
- reader:  runner B at the writer's commit, empty caches, the shared cache warm;
- changed: runner B with one line of `main` changed, empty caches, the shared cache warm.

Results are medians of the rounds, and ratios to `cold`. The issue's targets: reader <= 0.15x,
changed <= 0.2x, writer <= 1.15x.

    python benchmarks/bench_remote_cache.py [--runs 3] [--packages 300] [--program DIR:PACKAGE] [--no-go-app] [--separate-paths]

`--packages N` benchmarks a generated program of N small packages besides go_app (each imports a
few earlier ones and a standard package), for a closure the size of a real service. `--program
DIR:PACKAGE` benchmarks a real module, built from its own `vendor/` (the distribution registry:
a checkout of github.com/distribution/distribution and `./cmd/registry`; not part of this repository).

Every runner checks the project out at one path (a CI fleet's runners do: the same workspace
directory on every machine), and only its caches and HOME are its own. `--separate-paths` puts each
runner in a directory of its own instead, which misses the small cache entries Go keys by directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMIT_DATE = "2026-02-03T04:05:06+00:00"
KINDS = ("cold", "writer", "reader", "changed")
TARGETS = {"writer": 1.15, "reader": 0.15, "changed": 0.2}


def gosmall_command() -> list[str]:
    script = Path(sys.executable).with_name("gosmall")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from gosmall.cli import main; main()"]


def git_commit(root: Path, message: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_DATE": COMMIT_DATE, "GIT_COMMITTER_DATE": COMMIT_DATE, "GIT_AUTHOR_NAME": "b",
           "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}  # fmt: skip
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=root, check=True, env=env)


def go_app_project(root: Path) -> str:
    shutil.copytree(REPO / "go_app", root / "go_app")
    table = (REPO / "pyproject.toml").read_text()
    table = table[table.index("[tool.gosmall]") :].replace('platforms = ["linux/amd64", "linux/arm64"]', 'platforms = ["linux/amd64"]')
    (root / "pyproject.toml").write_text('[project]\nname = "bench"\nversion = "0"\n\n' + table)
    return "go_app/main.go"


def generated_project(root: Path, packages: int) -> str:
    """example.com/big: N packages, each importing up to three earlier ones and one standard package."""
    std = ["strings", "strconv", "sort", "bytes", "encoding/json", "net/url", "crypto/sha256", "text/template", "regexp", "math/big"]
    (root / "big").mkdir(parents=True)
    (root / "big" / "go.mod").write_text("module example.com/big\n\ngo 1.22\n")
    for i in range(packages):
        deps = [f"p{j:04d}" for j in (i - 1, i - 7, i - 31) if j >= 0]
        imports = "".join(f'\t"example.com/big/pkg/{d}"\n' for d in deps) + f'\tstd "{std[i % len(std)]}"\n'
        uses = " + ".join([f"{d}.Value(n)" for d in deps] or ["n"])
        body = (
            f"package p{i:04d}\n\nimport (\n{imports})\n\nvar _ = std.{_std_symbol(std[i % len(std)])}\n\n"
            f"// Value is a little arithmetic, so the compiler has something to do.\n"
            f"func Value(n int) int {{\n\tif n <= 0 {{\n\t\treturn {i}\n\t}}\n\treturn ({uses}) % 1000003\n}}\n"
        )
        (root / "big" / "pkg" / f"p{i:04d}").mkdir(parents=True)
        (root / "big" / "pkg" / f"p{i:04d}" / "p.go").write_text(body)
    last = [f"p{i:04d}" for i in range(max(0, packages - 32), packages)]
    main = (
        'package main\n\nimport (\n\t"fmt"\n'
        + "".join(f'\t"example.com/big/pkg/{p}"\n' for p in last)
        + ")\n\nfunc main() {\n\tfmt.Println("
        + " + ".join(f"{p}.Value(3)" for p in last)
        + ")\n}\n"
    )
    (root / "big" / "main.go").write_text(main)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "bench"\nversion = "0"\n\n[tool.gosmall]\nplatforms = ["linux/amd64"]\n\n'
        '[tool.gosmall.images.big]\npackage = "./big"\nrepository = "example.com/big"\ntags = ["latest"]\n'
    )
    return "big/main.go"


def _std_symbol(package: str) -> str:
    return {"strings": "ToUpper", "strconv": "Itoa", "sort": "Ints", "bytes": "Equal", "encoding/json": "Marshal",
            "net/url": "Parse", "crypto/sha256": "Sum256", "text/template": "New", "regexp": "MustCompile",
            "math/big": "NewInt"}[package]  # fmt: skip


def program_project(root: Path, module: Path, package: str) -> str:
    """A project around a copy of a real module (its vendor/ included, .git left out): the file of `package`'s main."""
    shutil.copytree(module, root / "module", ignore=shutil.ignore_patterns(".git"))
    name = Path(package).name
    (root / "pyproject.toml").write_text(
        '[project]\nname = "bench"\nversion = "0"\n\n[tool.gosmall]\nplatforms = ["linux/amd64"]\npinning = "off"  # its Dockerfiles are not ours to pin\n\n'
        f'[tool.gosmall.images.{name}]\npackage = "./module/{package.removeprefix("./")}"\nrepository = "example.com/{name}"\ntags = ["latest"]\n'
    )
    main = next(p for p in sorted((root / "module" / package).glob("*.go")) if "package main" in p.read_text())
    return main.relative_to(root).as_posix()


def start_registry(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base.mkdir(parents=True, exist_ok=True)
    config = base / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
    )
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return process, f"127.0.0.1:{port}"


def run_one(base: Path, checkout: Path, make: str, cache: str, *, change: bool = False) -> tuple[float, dict[str, object]]:
    """One fresh runner: the project checked out at `checkout`, empty HOME, GOCACHE and GOSMALL_CACHE in `base`; the
    seconds `build-small` took."""
    shutil.rmtree(checkout, ignore_errors=True)  # the last runner's workspace: a fresh runner starts without it
    root = checkout
    root.mkdir(parents=True)
    kind, _, detail = make.partition(":")
    if kind == "go_app":
        main = go_app_project(root)
    elif kind == "big":
        main = generated_project(root, int(detail))
    else:
        module, _, package = detail.rpartition(":")
        main = program_project(root, Path(module), package)
    git_commit(root, "bench")
    if change:
        path = root / main
        path.write_text(path.read_text().replace("package main", "package main\n\n// one line changed", 1))
        git_commit(root, "one line")
    base.mkdir(parents=True)
    env = {**os.environ, "HOME": str(base / "home"), "GOCACHE": str(base / "gocache"), "GOSMALL_CACHE": str(base / "gosmall"),
           "XDG_CACHE_HOME": str(base / "xdg"), "SOURCE_DATE_EPOCH": "", "GOSMALL_REMOTE_CACHE": cache}  # fmt: skip
    (base / "home").mkdir()
    started = time.monotonic()
    done = subprocess.run([*gosmall_command(), "build-small"], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"build-small failed in {root}:\n{done.stderr}")
    report = json.loads(next((root / "dist").glob("*/report.json")).read_text())
    return seconds, {"digest": report["digest"], **report.get("go_cache", {})}


def bench(name: str, make: str, runs: int, host: str, work: Path, *, separate_paths: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for round_ in range(runs):
        repository = f"{host}/cache-{name}-{round_}-{os.getpid()}"  # nobody wrote it yet: the writer is cold
        plan = [("cold", "off", False), ("writer", repository, False), ("reader", repository, False), ("changed", repository, True)]
        digests = {}
        for kind, cache, change in plan:
            runner = work / f"{name}-{round_}-{kind}"
            checkout = runner / "project" if separate_paths else work / "workspace" / "project"
            seconds, facts = run_one(runner, checkout, make, cache, change=change)
            times[kind].append(seconds)
            digests[kind] = facts["digest"]
            shown = {k: facts[k] for k in ("actions_from_remote", "actions_missed", "outputs_put", "bytes_down", "bytes_up") if k in facts}
            print(f"  {name} round {round_ + 1} {kind:8s} {seconds:7.2f} s  {shown}", flush=True)
        assert digests["cold"] == digests["writer"] == digests["reader"], digests
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--packages", type=int, default=0, help="also benchmark a generated program of this many packages")
    parser.add_argument(
        "--program", action="append", default=[], metavar="DIR:PACKAGE", help="also benchmark a real module from its vendor/"
    )
    parser.add_argument("--no-go-app", action="store_true", help="only the generated program and the --program ones")
    parser.add_argument("--separate-paths", action="store_true", help="each runner in a directory of its own, not one workspace path")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gosmall-bench-remote-"))
    registry, host = start_registry(work / "registry")
    results: dict[str, dict[str, list[float]]] = {}
    try:
        print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
        paths = {"separate_paths": args.separate_paths}
        print(
            "every runner in a directory of its own"
            if args.separate_paths
            else f"every runner checked out at {work / 'workspace' / 'project'}"
        )
        if not args.no_go_app:
            results["go_app"] = bench("go_app", "go_app", args.runs, host, work, **paths)
        if args.packages:
            results[f"generated ({args.packages} packages)"] = bench("big", f"big:{args.packages}", args.runs, host, work, **paths)
        for program in args.program:
            module, _, package = program.rpartition(":")
            name = Path(package).name
            results[f"{name} ({Path(module).resolve()}, vendored)"] = bench(
                name, f"program:{Path(module).resolve()}:{package}", args.runs, host, work, **paths
            )
    finally:
        registry.terminate()
        registry.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {args.runs} interleaved rounds; load after: {os.getloadavg()}")
    print("| program | cold, no shared cache | writer (all misses) | reader, same commit | reader, one line changed |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for program, times in results.items():
        cold = statistics.median(times["cold"])
        cells = [f"{cold:.1f} s"]
        for kind in ("writer", "reader", "changed"):
            median = statistics.median(times[kind])
            verdict = "meets" if median / cold <= TARGETS[kind] else "misses"
            cells.append(f"{median:.1f} s = {median / cold:.2f}× ({verdict} ≤ {TARGETS[kind]}×)")
        print(f"| {program} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
