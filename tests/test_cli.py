"""The console script as a developer meets it: `gosmall`, `--help`, `--version`, a task's help, bare words."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gosmall import __version__
from gosmall.build.toolchain import find_module, find_toolchain
from gosmall.cli import expand_paths, program
from gosmall.publish.report import builder
from gosmall.tasks import namespace
from tests.conftest import REPO, gosmall

# invoke's core flags for running shell commands, which gosmall has none of.
NOT_OFFERED = ("--prompt-for-sudo-password", "--pty", "--dry", "--echo", "--hide", "--write-pyc", "--command-timeout", "--warn-only")


def test_help_lists_every_task_on_one_line_with_three_examples_and_no_shell_flags(tmp_path: Path) -> None:
    done = gosmall("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    tasks = lines[lines.index("Tasks:") + 1 : lines.index("Examples:") - 1]
    assert [line.split()[0] for line in tasks] == sorted(namespace.task_names)
    examples = lines[lines.index("Examples:") + 1 : lines.index("Options:") - 1]
    assert len(examples) == 3 and all(line.strip().startswith("gosmall ") for line in examples)
    for flag in NOT_OFFERED:
        assert flag not in done.stdout
    assert "sudo" not in done.stdout and "pty" not in done.stdout
    for flag in ("--debug", "--version", "--complete", "--print-completion-script"):
        assert flag in done.stdout


def test_gosmall_alone_is_its_help(tmp_path: Path) -> None:
    alone = gosmall(cwd=tmp_path)
    assert alone.returncode == 0
    assert alone.stdout == gosmall("--help", cwd=tmp_path).stdout


@pytest.mark.parametrize("flag", ["--pty", "--echo", "--dry", "--prompt-for-sudo-password"])
def test_a_shell_flag_is_refused_as_a_bad_command_line(tmp_path: Path, flag: str) -> None:
    done = gosmall(flag, "verify-pins", cwd=tmp_path)
    assert done.returncode == 2
    assert f"No idea what '{flag}' is!" in done.stderr


def test_version_names_gosmall_the_compressor_and_the_go_it_would_use(tmp_path: Path) -> None:
    done = gosmall("--version", cwd=REPO)
    assert done.returncode == 0, done.stderr
    compressor = builder("")["compressor"]
    go = find_toolchain(find_module(REPO / "go_app"))
    assert done.stdout.splitlines() == [
        f"gosmall {__version__}",
        f"compressor: {compressor['name']} {compressor['version']} (libdeflate), gzip level {compressor['level']}",
        f"go: {go.version_text} ({go.source}: {go.go})",
    ]


def test_version_says_why_no_go_is_usable(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module example.com/future\n\ngo 1.999\n")
    done = gosmall("-V", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].startswith(
        f"go: none usable: No Go toolchain can build {tmp_path.resolve() / 'go.mod'}, which needs go1.999"
    )


@pytest.mark.parametrize("task", sorted(namespace.task_names))
def test_every_tasks_help_ends_with_an_example(task: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        program.run(["gosmall", *expand_paths([task, "--help"])])
    assert stop.value.code in (0, None)
    lines = capsys.readouterr().out.rstrip().splitlines()
    header = max(i for i, line in enumerate(lines) if line in ("Example:", "Examples:"))
    assert header > lines.index("Options:")
    assert lines[header + 1 :] and all(f"gosmall {task}" in line for line in lines[header + 1 :])


def test_bare_words_are_packages_and_words_after_dashes_are_the_containers_arguments() -> None:
    assert expand_paths(["build-small", "./cmd/a", "-i", "x", "."]) == ["build-small", "--package=./cmd/a", "-i", "x", "--package=."]
    assert expand_paths(["init", "./cmd/a"]) == ["init", "--package=./cmd/a"]
    assert expand_paths(["run", "./cmd/a", "--network", "none", "--", "-v", "a=b", "two words"]) == [
        "run", "--package=./cmd/a", "--network", "none", "--arg=-v", "--arg=a=b", "--arg=two words",
    ]  # fmt: skip
    assert expand_paths(["verify-pins", "--", "-odd-name"]) == ["verify-pins", "--path=-odd-name"]
    # A task's --help is help, not a value for its positional parameter; after `--` it is the container's.
    assert expand_paths(["-d", "audit", "--help"]) == ["-d", "--help", "audit"]
    assert expand_paths(["run", "./cmd/a", "--", "--help"]) == ["run", "--package=./cmd/a", "--arg=--help"]


def test_image_and_package_together_is_one_error(tmp_path: Path) -> None:
    done = gosmall("build-small", "--image", "hello", "./go_app", cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip() == "gosmall: error: --image hello and the package ./go_app both say what to build; give one of them."


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """`gosmall --help | head -1`: the pipe's reader may be gone before gosmall writes."""
    import os

    from tests.conftest import gosmall_command

    read, write = os.pipe()
    os.close(read)  # the reader has already stopped
    try:
        done = subprocess.run([*gosmall_command(), "--help"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141


@pytest.mark.parametrize("task", ["build-small", "init", "verify-lock", "resolve"])
@pytest.mark.parametrize("host", ["", "http://registry.lan:5000/", "../../etc", "a b"])
def test_an_insecure_registry_that_is_no_host_is_one_error_before_any_work(tmp_path: Path, task: str, host: str) -> None:
    from tests.conftest import make_project

    project = make_project(tmp_path / "p")
    files = ["-f", "pyproject.toml"] if task == "resolve" else []  # resolve asks for its files first
    done = gosmall(task, *files, "--insecure-registry", host, cwd=project, env={"GOSMALL_REMOTE_CACHE": "off"})
    assert done.returncode == 2, done.stderr
    assert f"--insecure-registry {host!r} is not a registry host" in done.stderr and "HOST:PORT" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (project / "dist").exists()
