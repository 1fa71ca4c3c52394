"""The go build's count of packages (progress.py): real `go build`s of a module of several packages, with a status
line that is watched (a terminal) and one that is not (a log), and the console script on a pseudo-terminal.

The standard library comes from Go's cache (warm after any earlier build); each module here has a fresh word in
its source, so its own packages are compiled, which is what starts the count.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import gosmall.build.progress as progress_module
from gosmall.build.compile import compile_all, host_platform, plan_compile
from gosmall.build.progress import PackageProgress
from gosmall.build.toolchain import Toolchain, find_module, find_toolchain
from gosmall.config import parse_project
from gosmall.errors import GosmallError
from gosmall.reporter import RecordingReporter
from tests.conftest import gosmall, gosmall_command
from tests.terminal import run_on_terminal

COUNT = re.compile(r"(\d+)/(\d+) packages")
PACKAGES = 6


def many_packages(root: Path, *, broken: bool = False) -> Path:
    """A main package importing PACKAGES packages of its module, each with a word no other build has."""
    word = uuid.uuid4().hex
    (root / "go.mod").parent.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text("module example.com/many\n\ngo 1.22\n")
    for i in range(PACKAGES):
        (root / f"p{i}").mkdir(parents=True, exist_ok=True)
        body = f'package p{i}\n\nimport "strings"\n\nfunc Word() string {{ return strings.ToUpper("{word}{i}") }}\n'
        if broken and i == PACKAGES - 1:
            body += 'func Broken() int { return "not an int" }\n'
        (root / f"p{i}" / "p.go").write_text(body)
    imports = "".join(f'\t"example.com/many/p{i}"\n' for i in range(PACKAGES))
    calls = "".join(f"\tfmt.Println(p{i}.Word())\n" for i in range(PACKAGES))
    (root / "main.go").write_text(f'package main\n\nimport (\n\t"fmt"\n{imports})\n\nfunc main() {{\n{calls}}}\n')
    return root


def deps(toolchain: Toolchain, root: Path) -> int:
    """What `go list -deps` says, as a person would count: every package but unsafe, which is never compiled."""
    env = toolchain.env(find_module(root), {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": host_platform().architecture})
    listed = subprocess.run(
        [str(toolchain.executable), "list", "-deps", "-tags", "netgo,osusergo", "."],
        cwd=root, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return len([p for p in listed.stdout.split() if p != "unsafe"])


def counts(reporter: RecordingReporter) -> list[tuple[int, int]]:
    return [(int(m[1]), int(m[2])) for m in (COUNT.search(u) for u in reporter.messages("update")) if m]


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every `go list` the count runs."""
    calls: list[list[str]] = []
    real = progress_module.run_go

    def spy(toolchain: Toolchain, module: Any, args: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        calls.append(list(args))
        return real(toolchain, module, args, **options)

    monkeypatch.setattr(progress_module, "run_go", spy)
    return calls


def build(root: Path, work: Path, reporter: RecordingReporter) -> None:
    image = parse_project({"images": {"app": {"package": "."}}}, root / "pyproject.toml").images[0]
    module = find_module(root)
    plans = [plan_compile(image, module, host_platform(), "dev")]
    with reporter.status("app: go build") as line:
        watched = PackageProgress(line, "app: go build", shared_cache=False) if line.watched else None
        compile_all(plans, find_toolchain(module), work, progress=watched)


def test_a_watched_build_counts_up_to_go_lists_total_and_a_no_op_lists_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: list[list[str]]
) -> None:
    monkeypatch.setenv("GOSMALL_CACHE", str(tmp_path / "cache"))
    root = many_packages(tmp_path / "many")
    total = deps(find_toolchain(find_module(root)), root)
    assert total > PACKAGES + 1  # the module's packages, and the standard library's they import

    reporter = RecordingReporter(watching=True)
    build(root, tmp_path / "w1", reporter)
    deadline = time.monotonic() + 30  # a `go list` slower than the build answers after it; its total still comes
    while (not counts(reporter) or counts(reporter)[-1] != (total, total)) and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = counts(reporter)
    assert seen and seen[-1] == (total, total), reporter.messages("update")
    assert all(t == total and 0 < d <= total for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # it only counts up
    assert len(listed) == 1 and listed[0][:2] == ["list", "-deps"]
    assert reporter.messages("update")[-1] == f"app: go build: {total}/{total} packages"

    # Nothing changed: Go's up-to-date check compiles nothing, so nothing is counted and no `go list` runs.
    again = RecordingReporter(watching=True)
    build(root, tmp_path / "w2", again)
    time.sleep(0.3)
    assert again.messages("update") == [] and len(listed) == 1


def test_a_log_gets_no_count_and_a_failure_reads_as_go_wrote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: list[list[str]]
) -> None:
    monkeypatch.setenv("GOSMALL_CACHE", str(tmp_path / "cache"))
    root = many_packages(tmp_path / "many")
    reporter = RecordingReporter()  # as in CI: statuses nobody watches
    build(root, tmp_path / "w", reporter)
    assert reporter.messages("update") == [] and listed == []

    broken = many_packages(tmp_path / "broken", broken=True)
    with pytest.raises(GosmallError) as failed:
        build(broken, tmp_path / "wb", RecordingReporter(watching=True))
    said = str(failed.value)
    assert f"# example.com/many/p{PACKAGES - 1}" in said and "cannot use" in said
    # `go build -v` named the packages it compiled before the error; the message shows Go's error alone.
    assert not any(line.strip() in ("example.com/many/p0", "strings", "example.com/many") for line in said.splitlines())


def test_the_console_on_a_terminal_counts_and_in_a_pipe_says_what_it_always_said(tmp_path: Path) -> None:
    root = many_packages(tmp_path / "project" / "app")
    (tmp_path / "project" / "pyproject.toml").write_text(
        '[project]\nname = "many"\nversion = "0"\n\n[tool.gosmall]\npinning = "off"\n[tool.gosmall.images.many]\npackage = "./app"\n'
        'platforms = ["linux/amd64", "linux/arm64"]\n'
    )
    env = {"GOSMALL_CACHE": str(tmp_path / "cache"), "SOURCE_DATE_EPOCH": "0", "GOSMALL_REMOTE_CACHE": "off"}
    on_terminal = run_on_terminal(gosmall_command() + ["build-small"], cwd=tmp_path / "project", env={**_environ(), **env})
    assert on_terminal.returncode == 0, on_terminal.text
    seen = [(int(m[1]), int(m[2])) for m in COUNT.finditer(on_terminal.text)]
    toolchain = find_toolchain(find_module(root))
    # Both platforms' packages added up (arm64's closure may differ from amd64's by a package).
    assert seen and seen[-1][0] == seen[-1][1] >= 2 * deps(toolchain, root) - 2, on_terminal.text
    assert f"many: go build for linux/amd64, linux/arm64: {seen[-1][0]}/{seen[-1][1]} packages" in on_terminal.text

    # The same change built in a pipe: the lines it printed before counting existed, and not one more.
    (root / "p0" / "p.go").write_text((root / "p0" / "p.go").read_text() + "\n// changed\n")
    piped = gosmall("build-small", cwd=tmp_path / "project", env=env)
    assert piped.returncode == 0, piped.stderr
    status = [line for line in piped.stderr.splitlines() if "go build" in line]
    assert status == ["    many: go build for linux/amd64, linux/arm64 ..."]
    assert not COUNT.search(piped.stderr) and "example.com/many/p0" not in piped.stderr + piped.stdout


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
