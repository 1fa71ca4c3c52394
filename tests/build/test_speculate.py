"""The console script starts the last run's `go build`s before Python is ready (speculate.py), and nothing it
starts early can change what is built, outlive the run, or leave a file behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import gosmall, make_project

pytestmark = pytest.mark.slow

TABLE = '[tool.gosmall]\npinning = "off"\n[tool.gosmall.images.hello]\npackage = "./go_app"\nplatforms = ["linux/amd64", "linux/arm64"]\n'


def run(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"GOSMALL_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp"), "CI": "1"}
    return gosmall(*args, cwd=root, env=env)


def remembered(tmp_path: Path) -> list[dict[str, object]]:
    entries = list((tmp_path / "cache" / "facts" / "speculation").glob("*.json"))
    assert len(entries) == 1
    return json.loads(entries[0].read_text())["value"]["commands"]


def digest(root: Path) -> str:
    return json.loads((root / "dist" / "hello" / "report.json").read_text())["digest"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tmp").mkdir()
    return make_project(tmp_path / "p", TABLE)


def test_what_is_remembered_is_the_command_not_the_environment(root: Path, tmp_path: Path) -> None:
    done = gosmall(
        "build-small", cwd=root,
        env={"GOSMALL_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp"), "CI": "1", "GOSMALL_TEST_SECRET": "hunter2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    commands = remembered(tmp_path)
    assert len(commands) == 2  # one go build per platform
    assert {c["set"]["GOARCH"] for c in commands} == {"amd64", "arm64"}  # type: ignore[index]
    text = json.dumps(commands)
    assert "hunter2" not in text and "GOSMALL_TEST_SECRET" not in text and "PATH" not in json.dumps([c["set"] for c in commands])


def test_a_changed_command_is_run_as_it_is_now(root: Path, tmp_path: Path) -> None:
    """The remembered command no longer matches (new ldflags): the early one is killed, the real one runs."""
    assert run(root, tmp_path, "build-small").returncode == 0
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'ldflags = ["-X main.version=speculated"]\n')
    done = run(root, tmp_path, "build-small")
    assert done.returncode == 0, done.stderr
    changed = digest(root)
    # The same config built with nothing started early (another cache) gives the same image.
    other = gosmall("build-small", cwd=root, env={"GOSMALL_CACHE": str(tmp_path / "other"), "TMPDIR": str(tmp_path / "tmp"), "CI": "1"})
    assert other.returncode == 0, other.stderr
    assert digest(root) == changed
    assert any("-X main.version=speculated" in " ".join(c["argv"]) for c in remembered(tmp_path))  # type: ignore[arg-type]


def test_a_run_that_fails_before_compiling_leaves_no_go_running_and_nothing_behind(root: Path, tmp_path: Path) -> None:
    assert run(root, tmp_path, "build-small").returncode == 0
    # Something Go must work on for a while, so the early build is still running when the run fails.
    (root / "go_app" / "big.go").write_text("package main\n\nvar big = [...]int{" + ",".join(map(str, range(200_000))) + "}\n")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "not_a_key = 1\n")
    done = run(root, tmp_path, "build-small")
    assert done.returncode == 2 and "not_a_key" in done.stderr
    time.sleep(0.5)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "cache" / "go").glob(".scratch-*")) == []  # the early build's scratch directory is gone
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "cache") not in ps  # no go build of ours left running
    # Its lock was released: the next build does not wait for it.
    pyproject.write_text(pyproject.read_text().replace("not_a_key = 1\n", ""))
    assert run(root, tmp_path, "build-small").returncode == 0


def test_only_the_console_script_starts_go_early_and_only_for_build_small(root: Path, tmp_path: Path) -> None:
    assert run(root, tmp_path, "build-small").returncode == 0
    assert run(root, tmp_path, "verify-pins").returncode == 0
    assert len(list((tmp_path / "cache" / "facts" / "speculation").glob("*.json"))) == 1


def test_without_a_cache_nothing_is_started_or_remembered(root: Path, tmp_path: Path) -> None:
    env = {"GOSMALL_CACHE": "off", "TMPDIR": str(tmp_path / "tmp"), "CI": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for _ in range(2):
        done = gosmall("build-small", cwd=root, env=env)
        assert done.returncode == 0, done.stderr
    assert not (tmp_path / "xdg" / "gosmall").exists()  # Go keeps its own cache there; gosmall keeps none
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    "hostile",
    ["another program", "an output outside the kept one", "a variable gosmall never sets", "a key that is not one"],
)
def test_a_remembered_command_of_another_shape_is_never_started(root: Path, tmp_path: Path, hostile: str) -> None:
    """A damaged or planted record (a cache restored from elsewhere) starts nothing and writes nothing outside the cache."""
    assert run(root, tmp_path, "build-small").returncode == 0
    entry = next((tmp_path / "cache" / "facts" / "speculation").glob("*.json"))
    document = json.loads(entry.read_text())
    planted = tmp_path / "planted"
    for command in document["value"]["commands"]:
        if hostile == "another program":
            command["argv"] = ["/bin/sh", "-c", f"touch {planted}", "-o", str(planted), "."]
        elif hostile == "an output outside the kept one":
            command["argv"][-2] = str(planted)
        elif hostile == "a variable gosmall never sets":
            command["set"]["LD_PRELOAD"] = str(planted)
        else:
            command["key"] = "../../elsewhere"
    entry.write_text(json.dumps(document))
    done = run(root, tmp_path, "build-small")
    assert done.returncode == 0, done.stderr
    assert not planted.exists() and not (tmp_path / "elsewhere.lock").exists()
    assert "Traceback" not in done.stderr


def test_sigterm_while_python_starts_stops_the_early_builds_too(root: Path, tmp_path: Path) -> None:
    assert run(root, tmp_path, "build-small").returncode == 0
    # A change, so the early builds are still linking when the signal comes.
    (root / "go_app" / "big.go").write_text("package main\n\nvar big = [...]int{" + ",".join(map(str, range(200_000))) + "}\n")
    env = {"GOSMALL_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp"), "CI": "1"}
    from tests.conftest import gosmall_command, gosmall_env

    process = subprocess.Popen([*gosmall_command(), "build-small"], cwd=root, env=gosmall_env(env), stderr=subprocess.PIPE, text=True)
    time.sleep(0.15)  # inside Python's start, with Go already running (or, on a slow machine, earlier or later)
    process.terminate()
    _, stderr = process.communicate(timeout=120)
    # Before Python has a handler, the default action ends it (-15); after, gosmall's own exit (143). Either way
    # no early `go build` is left running and nothing is left behind.
    assert process.returncode in (143, -15), stderr
    assert "Traceback" not in stderr
    time.sleep(0.5)
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "cache") not in ps
    assert list((tmp_path / "cache" / "go").glob(".scratch-*")) == [] and list((tmp_path / "tmp").iterdir()) == []


def _processes() -> list[str]:
    return subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()


# Linked, so the binary changes: an unused array is dropped and Go would leave the kept binary as it was.
USED_BIG = (
    'package main\n\nimport "os"\n\nvar big = [...]int{' + ",".join(map(str, range(200_000))) + "}\n\n"
    "func init() {\n\tif len(os.Args) > 99 {\n\t\tprintln(big[len(os.Args)])\n\t}\n}\n"
)


def test_sigkill_while_go_runs_early_leaves_no_go_build_running(root: Path, tmp_path: Path) -> None:
    """No handler sees SIGKILL: the kernel ends the early `go build` (PR_SET_PDEATHSIG) when gosmall dies."""
    assert run(root, tmp_path, "build-small").returncode == 0
    (root / "go_app" / "big.go").write_text(USED_BIG)
    env = {"GOSMALL_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp"), "CI": "1"}
    from tests.conftest import gosmall_command, gosmall_env

    kept = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache" / "go").glob("*/go_app")}
    assert kept
    process = subprocess.Popen([*gosmall_command(), "build-small"], cwd=root, env=gosmall_env(env), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(" build " in line and str(tmp_path / "cache") in line for line in _processes()):
        assert time.monotonic() < deadline and process.poll() is None, "the early go build never started"
        time.sleep(0.02)
    process.kill()  # while Go compiles big.go, which takes seconds
    process.communicate(timeout=120)
    # `go` dies with gosmall; a compile it had started may finish, but nothing links: the kept binaries stay as they were.
    deadline = time.monotonic() + 120
    while any(str(tmp_path / "cache") in line for line in _processes()):
        assert time.monotonic() < deadline, "an early go build outlived gosmall"
        time.sleep(0.2)
    assert {path: path.stat().st_mtime_ns for path in kept} == kept, "an orphaned go build linked after gosmall died"
    # The next build cleans what the killed one left, and builds.
    assert run(root, tmp_path, "build-small").returncode == 0


@pytest.mark.parametrize("cache", ["/dev/null", "relative-cache"])
def test_an_unusable_or_relative_cache_still_builds(root: Path, tmp_path: Path, cache: str) -> None:
    env = {"GOSMALL_CACHE": cache, "TMPDIR": str(tmp_path / "tmp"), "CI": "1"}
    for _ in range(2):
        done = gosmall("build-small", cwd=root, env=env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
