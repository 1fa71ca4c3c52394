"""What build-small may replace, and what it leaves when stopped, tried as a user would.

Every test runs the console script for real, with its own TMPDIR, so that
"nothing left behind" can be checked exactly. Where a signal must land at one
moment (while `go build` links, while outputs are written, between the two
renames of a swap), the build pauses there and the test sends a real signal to
the real process; the pause only fixes when the signal lands:

- in `go build`: a `go` first on PATH runs the real one with `-toolexec`, whose
  link step waits (a process of go's own, so killing go's group kills it);
- in gosmall's own code: the console script runs through a few lines that wrap
  one function of the real module to wait for a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gosmall.build.compile import host_platform
from gosmall.build.toolchain import find_module, find_toolchain
from gosmall.errors import GosmallError
from gosmall.images.model import Platform
from gosmall.leftovers import Owner
from gosmall.publish.outputs import MARKER, MARKER_TEXT, prepare_output_dir
from tests.conftest import REPO, git_commit, gosmall, gosmall_command, gosmall_env, make_project

pytestmark = pytest.mark.slow

TABLE = f"""[tool.gosmall]
platforms = ["{host_platform()}"]

[tool.gosmall.images.hello]
package = "./go_app"
"""
# Generous: proves "did not hang", never how fast.
DEADLINE = 300

# The console script, with one function of gosmall wrapped to wait at a named point.
PAUSING_GOSMALL = textwrap.dedent(
    """
    import os, sys, time, types
    from pathlib import Path
    import gosmall.images.oci_layout, gosmall.publish.outputs

    def pause():
        Path(os.environ["PAUSED"]).write_text(str(os.getpid()))
        while not Path(os.environ["GO_ON"]).exists():
            time.sleep(0.02)

    point = os.environ["PAUSE_AT"]
    if point == "writing":  # the OCI layout is in the staging directory, the rest is not yet
        write = gosmall.images.oci_layout.write_oci_layout
        def write_then_pause(*args, **kwargs):
            write(*args, **kwargs)
            pause()
        gosmall.images.oci_layout.write_oci_layout = write_then_pause
    elif point == "swapping":  # the old output renamed away, the new one not yet in its place
        rename = os.rename
        def rename_then_pause(src, dst, *args, **kwargs):
            rename(src, dst, *args, **kwargs)
            if ".old-" in os.fspath(dst):
                pause()
        os.rename = rename_then_pause
    elif point == "removing-old":  # the new output in place, the old one about to be removed
        rmtree = gosmall.publish.outputs.shutil.rmtree
        def pause_then_rmtree(*args, **kwargs):
            pause()
            rmtree(*args, **kwargs)
        gosmall.publish.outputs.shutil = types.SimpleNamespace(rmtree=pause_then_rmtree)
    from gosmall.cli import main
    main()
    """
)

PAUSING_GO = """#!/bin/sh
if [ "$1" = build ]; then shift; exec {go} build -toolexec {pause} "$@"; fi
exec {go} "$@"
"""
# -V=full is go asking the tool for its version (part of the cache key); the link itself waits.
PAUSING_TOOL = """#!/bin/sh
case "$1" in
  */link) if [ "$2" != "-V=full" ]; then echo $$ > "$PAUSED"; exec sleep 600; fi ;;
esac
exec "$@"
"""


@dataclass(frozen=True)
class Project:
    root: Path
    tmp: Path  # the builds' TMPDIR

    @property
    def output(self) -> Path:
        return self.root / "dist" / "hello"

    def env(self, **extra: str) -> dict[str, str]:
        return {"TMPDIR": str(self.tmp), **extra}

    def build(self, **env: str) -> subprocess.CompletedProcess[str]:
        return gosmall("build-small", cwd=self.root, env=self.env(**env), timeout=DEADLINE)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return Project(make_project(tmp_path / "p", TABLE), tmp)


@dataclass
class Paused:
    """A build started with Popen, stopped at a known point until `go_on()`."""

    process: subprocess.Popen[str]
    paused: Path
    go_on_file: Path

    def wait_until_paused(self) -> int:
        """The PID the pause wrote (gosmall's, or that of the waiting link step)."""
        deadline = time.monotonic() + DEADLINE
        while not (self.paused.exists() and self.paused.read_text().strip()):
            assert self.process.poll() is None, f"the build ended before its pause: {self.process.communicate()}"
            assert time.monotonic() < deadline, "the build never reached its pause"
            time.sleep(0.05)
        return int(self.paused.read_text())

    def go_on(self) -> None:
        self.go_on_file.touch()

    def finish(self) -> tuple[int, str]:
        _, stderr = self.process.communicate(timeout=DEADLINE)
        return self.process.returncode, stderr


@pytest.fixture
def start_paused(project: Project, tmp_path: Path) -> Iterator[object]:
    started: list[Paused] = []

    def start(point: str) -> Paused:
        n = len(started)
        paused, go_on = tmp_path / f"paused-{n}", tmp_path / f"go-on-{n}"
        # No cache: a build that is only found up to date (fresh.py) never reaches the point to pause at.
        env = gosmall_env(project.env(PAUSED=str(paused), GO_ON=str(go_on), GOSMALL_CACHE="off"))
        if point == "go build":
            env["PATH"] = f"{pausing_go(tmp_path)}{os.pathsep}{env['PATH']}"
            command = [*gosmall_command(), "build-small"]
        else:
            env["PAUSE_AT"] = point
            command = [sys.executable, "-c", PAUSING_GOSMALL, "build-small"]
        process = subprocess.Popen(command, cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(Paused(process, paused, go_on))
        return started[-1]

    yield start
    for build in started:
        build.go_on()
        if build.process.poll() is None:
            build.process.kill()
        build.process.communicate()


def pausing_go(tmp_path: Path) -> Path:
    """A directory whose `go` is the real toolchain, pausing in the link step."""
    real = find_toolchain(find_module(REPO / "go_app")).go
    directory = tmp_path / "pausing-go"
    directory.mkdir(exist_ok=True)
    (directory / "pause").write_text(PAUSING_TOOL)
    (directory / "go").write_text(PAUSING_GO.format(go=real, pause=directory / "pause"))
    for tool in ("go", "pause"):
        (directory / tool).chmod(0o755)
    return directory


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while not process_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def check_output(output: Path) -> dict[str, object]:
    """One complete build: marker, report.json, and an OCI layout whose blobs match it."""
    assert (output / MARKER).read_bytes() == MARKER_TEXT
    report = json.loads((output / "report.json").read_text())
    index = json.loads((output / "oci" / "index.json").read_text())
    assert {m["digest"] for m in index["manifests"] if "artifactType" not in m} == {report["digest"]}  # then the SBOM's referrer
    assert (output / "sbom.spdx.json").is_file()
    blobs = output / "oci" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for entry in report["platforms"].values():
        for key in ("manifest_digest", "config_digest", "layer_digest"):
            assert (blobs / entry[key].removeprefix("sha256:")).is_file()
    assert (output / "image.tar").stat().st_size > 0
    return report


def dead_owner() -> str:
    """The owner token of a process that really ran and was killed, as a killed gosmall leaves."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from gosmall.leftovers import Owner; print(Owner.current().token, flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    token = child.stdout.readline().strip()
    child.kill()
    child.communicate()
    return token


# -- gosmall replaces only what it wrote ---------------------------------------------------


def test_output_is_marked_and_a_rebuild_replaces_it(project: Project) -> None:
    first = project.build()
    assert first.returncode == 0, first.stderr
    digest = check_output(project.output)["digest"]
    (project.root / "go_app" / "extra.go").write_text("package main\n\nvar extra = 1\n")
    git_commit(project.root, "change")
    second = project.build()
    assert second.returncode == 0, second.stderr
    assert check_output(project.output)["digest"] != digest
    assert listing(project.root / "dist") == ["hello"]
    assert listing(project.tmp) == []


def test_an_output_of_gosmall_before_the_marker_is_replaced(project: Project) -> None:
    # What earlier versions wrote: no marker, a report.json whose builder is gosmall.
    assert project.build().returncode == 0
    (project.output / MARKER).unlink()
    done = project.build()
    assert done.returncode == 0, done.stderr
    check_output(project.output)


@pytest.mark.parametrize("report", [None, {"builder": {"ko": "0.15"}}, ["builder", "gosmall"]], ids=["no-report", "ko", "list"])
def test_a_directory_gosmall_did_not_write_is_refused_and_kept(project: Project, report: object) -> None:
    keep = project.output / "keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine\n")
    if report is not None:
        (project.output / "report.json").write_text(json.dumps(report))
    done = project.build()
    assert done.returncode == 2, done.stderr
    assert f"Refusing to replace {project.output}: it is a directory gosmall did not write" in done.stderr
    assert "Move it out of the way, or choose another `output` in [tool.gosmall] or another name for image 'hello'" in done.stderr
    assert "Traceback" not in done.stderr
    assert "building" not in done.stderr  # refused before any work
    assert keep.read_text() == "mine\n"
    assert listing(project.root / "dist") == ["hello"]
    assert listing(project.tmp) == []


@pytest.mark.parametrize("kind", ["file", "symlink", "dangling-symlink", "fifo"])
def test_a_non_directory_at_the_output_is_refused_and_not_followed(project: Project, kind: str) -> None:
    target = project.output
    target.parent.mkdir()
    if kind == "file":
        target.write_text("mine\n")
    elif kind == "symlink":
        target.symlink_to(project.root / "go_app")  # a directory of the project: its sources must survive
    elif kind == "dangling-symlink":
        target.symlink_to(project.root / "nowhere")
    else:
        os.mkfifo(target)
    before = os.lstat(target)
    done = project.build()  # a FIFO opened for reading would hang here, past the timeout
    assert done.returncode == 2, done.stderr
    what = {"file": "a file", "fifo": "neither a file nor a directory"}.get(kind, "a symbolic link")
    assert f"Refusing to replace {target}: it is {what}" in done.stderr
    after = os.lstat(target)
    assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (before.st_ino, stat.S_IFMT(before.st_mode))
    assert (project.root / "go_app" / "main.go").is_file() and (project.root / "go_app" / "go.mod").is_file()
    assert not (project.root / "nowhere").exists()
    assert listing(project.root / "dist") == ["hello"]


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-directory", "dangling"])
def test_a_link_at_output_is_not_followed_when_writing(tmp_path: Path, dangling: bool) -> None:
    # config.py resolves `output` before a build; this is the write-time rule for any other caller.
    if not dangling:
        (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dist").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(GosmallError, match=r"dist is a symbolic link, which gosmall does not follow"):
        prepare_output_dir(tmp_path / "dist")
    assert listing(tmp_path) == (["dist"] if dangling else ["dist", "elsewhere"])
    assert listing(tmp_path / "elsewhere") == []


# -- SIGTERM is Ctrl-C; SIGKILL's leftovers go with the next build ---------------------------


def test_sigterm_during_go_build_cleans_up_like_ctrl_c(project: Project, start_paused: object) -> None:
    assert project.build().returncode == 0
    before = (project.output / "report.json").read_bytes()
    build = start_paused("go build")  # type: ignore[operator]
    link = build.wait_until_paused()
    (workdir,) = listing(project.tmp)
    assert workdir.startswith(f"gosmall-build-{build.process.pid}-")
    assert [p.name[:8] for p in (project.tmp / workdir / "go-tmp").iterdir()] == ["go-build"]  # Go's own, inside ours
    build.process.send_signal(signal.SIGTERM)
    code, stderr = build.finish()
    assert code == 128 + signal.SIGTERM, stderr
    assert "gosmall: interrupted; earlier outputs were left as they were." in stderr
    assert "Traceback" not in stderr
    wait_until_gone(link)  # go and the tools it started were stopped with gosmall
    assert listing(project.tmp) == []
    assert listing(project.root / "dist") == ["hello"]
    assert (project.output / "report.json").read_bytes() == before


def test_sigterm_while_writing_outputs_removes_the_new_one(project: Project, start_paused: object) -> None:
    assert project.build().returncode == 0
    before = (project.output / "report.json").read_bytes()
    build = start_paused("writing")  # type: ignore[operator]
    build.wait_until_paused()
    assert [n for n in listing(project.root / "dist") if n.startswith(f".hello.tmp-{build.process.pid}-")]
    build.process.send_signal(signal.SIGTERM)
    code, stderr = build.finish()
    assert code == 143, stderr
    assert "earlier outputs were left as they were" in stderr
    assert listing(project.root / "dist") == ["hello"]
    assert (project.output / "report.json").read_bytes() == before
    assert listing(project.tmp) == []


def test_sigkill_in_go_build_leaves_what_the_next_build_removes(project: Project, start_paused: object) -> None:
    build = start_paused("go build")  # type: ignore[operator]
    link = build.wait_until_paused()
    # As a CI runner or the OOM killer would: gosmall, then go and its tools.
    build.process.kill()
    os.killpg(os.getpgid(link), signal.SIGKILL)
    build.finish()
    wait_until_gone(link)
    (workdir,) = listing(project.tmp)
    assert workdir.startswith(f"gosmall-build-{build.process.pid}-")
    assert [p.name[:8] for p in (project.tmp / workdir / "go-tmp").iterdir()] == ["go-build"]

    done = project.build()
    assert done.returncode == 0, done.stderr
    assert f"removed {project.tmp / workdir}, left by gosmall process {build.process.pid}, which no longer runs" in done.stderr
    assert listing(project.tmp) == []
    check_output(project.output)


@pytest.mark.parametrize("point", ["writing", "swapping"])
def test_sigkill_while_writing_leaves_what_the_next_build_removes(project: Project, start_paused: object, point: str) -> None:
    assert project.build().returncode == 0
    build = start_paused(point)  # type: ignore[operator]
    build.wait_until_paused()
    build.process.kill()
    build.finish()
    left = [n for n in listing(project.root / "dist") if n != "hello"]
    expected = [".hello.tmp-"] if point == "writing" else [".hello.old-", ".hello.tmp-"]
    assert [n[:11] for n in left] == expected
    assert all(f"-{build.process.pid}-" in n for n in left)

    done = project.build()
    assert done.returncode == 0, done.stderr
    for name in left:
        assert f"removed {project.root / 'dist' / name}, left by gosmall process {build.process.pid}" in done.stderr
    assert listing(project.root / "dist") == ["hello"]
    check_output(project.output)
    assert listing(project.tmp) == []


def test_the_next_build_removes_only_its_own_kind_of_leftover(project: Project) -> None:
    dead, alive = dead_owner(), Owner.current().token
    dist = project.root / "dist"
    dist.mkdir()
    others = {
        project.tmp: [
            f"gosmall-build-{alive}-live",  # a build running now (this test's process stands in for it)
            "gosmall-build-mine",  # a user's, with no owner token
            "go-build123456",  # some other program's go build
            f"gosmall-build-{dead.rsplit('-', 1)[0]}-00000000-abc",  # another machine's (or container's)
        ],
        dist: [f".hello.tmp-{alive}-live", ".hello.tmp-mine", f".hello.tmp-{dead}", "notes"],
    }
    for directory, names in others.items():
        for name in names:
            (directory / name).mkdir()
            (directory / name / "keep").write_text("x")
    # Named as gosmall's, owner dead, but a link: never followed, never removed.
    (project.tmp / f"gosmall-build-{dead}-link").symlink_to(project.root / "go_app")
    others[project.tmp].append(f"gosmall-build-{dead}-link")
    stale = [
        project.tmp / f"gosmall-build-{dead}-abc",
        dist / f".hello.tmp-{dead}-abc",
        dist / f".hello.old-{dead}-abc",
        dist / f".other.tmp-{dead}-abc",  # an image no longer configured
    ]
    for path in stale:
        (path / "sub").mkdir(parents=True)

    done = project.build()
    assert done.returncode == 0, done.stderr
    for path in stale:
        assert f"removed {path}, left by gosmall process" in done.stderr
        assert not path.exists()
    assert listing(project.tmp) == sorted(others[project.tmp])
    assert listing(dist) == sorted([*others[dist], "hello"])
    assert (project.root / "go_app" / "main.go").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_while_removing_the_old_output_says_the_new_one_is_in_place(project: Project, start_paused: object, signum: int) -> None:
    assert project.build().returncode == 0
    old = json.loads((project.output / "report.json").read_text())["digest"]
    (project.root / "go_app" / "extra.go").write_text("package main\n\nvar extra = 1\n")
    git_commit(project.root, "change")
    build = start_paused("removing-old")  # type: ignore[operator]
    build.wait_until_paused()
    build.process.send_signal(signum)  # held until the swap is done: it lands now, takes effect after
    build.go_on()
    code, stderr = build.finish()
    assert code == 128 + signum, stderr
    assert f"gosmall: interrupted; the new build is already in place in {project.output}" in stderr
    assert "earlier outputs were left as they were" not in stderr
    assert check_output(project.output)["digest"] != old
    assert listing(project.root / "dist") == ["hello"]
    assert listing(project.tmp) == []


# -- two builds at once ----------------------------------------------------------------------


def test_two_builds_at_once_stay_consistent(project: Project) -> None:
    assert project.build().returncode == 0
    for turn in range(4):
        # A change each round, so the builds really build (and start Go early: speculate.py) rather than both
        # finding the last round's output up to date; the later one may find the earlier one's current.
        (project.root / "go_app" / "extra.go").write_text(f"package main\n\nvar extra = {turn}\n")
        git_commit(project.root, f"round {turn}")
        pair = [
            subprocess.Popen(
                [*gosmall_command(), "build-small"],
                cwd=project.root,
                env=gosmall_env(project.env()),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(2)
        ]
        for process in pair:
            _, stderr = process.communicate(timeout=DEADLINE)
            assert process.returncode == 0, stderr
        check_output(project.output)
        assert listing(project.root / "dist") == ["hello"]
        assert listing(project.tmp) == []


def blocked_on_flock(pid: int) -> bool:
    """/proc/locks lists a process waiting for a lock with '->'."""
    return any(line.split()[1] == "->" and str(pid) in line.split() for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks to see a build waiting")
def test_a_build_that_swaps_while_another_is_mid_swap_waits_its_turn(project: Project, start_paused: object) -> None:
    assert project.build().returncode == 0
    first = start_paused("swapping")  # type: ignore[operator]
    first.wait_until_paused()  # the old output renamed away, its own not yet in: dist/hello is missing
    assert not project.output.exists()
    second = subprocess.Popen(
        [*gosmall_command(), "build-small"], cwd=project.root, env=gosmall_env(project.env()),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE
        while not blocked_on_flock(second.pid):
            assert second.poll() is None, f"the second build swapped while the first was mid-swap: {second.communicate()}"
            assert time.monotonic() < deadline, "the second build never reached the swap"
            time.sleep(0.05)
        first.go_on()
        code, stderr = first.finish()
        assert code == 0, stderr
        _, stderr = second.communicate(timeout=DEADLINE)
        assert second.returncode == 0, stderr
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate()
    check_output(project.output)
    assert listing(project.root / "dist") == ["hello"]
    assert listing(project.tmp) == []


def test_a_build_under_qemu_user_is_seen_alive_by_another_gosmall(tmp_path: Path) -> None:
    """Found: qemu-user answers a process's own /proc/self/stat with an emulated start time, so another
    gosmall took a live emulated build's work directory for a killed one's and removed it."""
    import shutil as _shutil

    if _shutil.which("qemu-x86_64") is None or host_platform() != Platform.parse("linux/amd64"):
        if os.environ.get("CI") and host_platform() == Platform.parse("linux/amd64"):
            pytest.fail("CI installs qemu-user")
        pytest.skip("needs qemu-x86_64 on an amd64 machine")
    python = os.path.realpath(sys.executable)
    ready = tmp_path / "token"
    code = f"import pathlib, time; from gosmall.leftovers import Owner; pathlib.Path({str(ready)!r}).write_text(Owner.current().token); time.sleep(60)"
    child = subprocess.Popen(["qemu-x86_64", "-cpu", "Nehalem", "-0", sys.executable, python, "-c", code])
    try:
        for _ in range(600):
            if ready.exists() and ready.read_text():
                break
            time.sleep(0.1)
        owner = Owner.parse(ready.read_text())
        assert owner is not None and owner.pid == child.pid
        assert not owner.is_gone()  # the host sees the emulated build alive, as it is
    finally:
        child.kill()
        child.wait()
    assert owner.is_gone()


@pytest.mark.parametrize("prefix", ["gosmall-build-", "gosmall-strip-", "gosmall-audit-", "gosmall-lock-"])
def test_every_temporary_directory_is_owned_and_a_killed_ones_goes_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """A build's work directory, strip's and the audit's scratch, the lock's clone: each is named with its owner."""
    import tempfile

    from gosmall.leftovers import owned_temporary_directory

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches TMPDIR
    dead, alive = dead_owner(), Owner.current().token
    kept = [f"{prefix}{alive}-live", f"{prefix}mine", "gosmall-other-x"]
    for name in [*kept, f"{prefix}{dead}-abc"]:
        (tmp_path / name).mkdir()
    with owned_temporary_directory(prefix) as directory:
        assert directory.parent == tmp_path and directory.name.startswith(f"{prefix}{alive}-")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, directory.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
