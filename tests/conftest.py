"""Shared fixtures: throwaway copies of the sample project, built for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Engine, registry and buildah fixtures live in their own plugin modules.
pytest_plugins = ["tests.docker_fixture", "tests.registry_fixture", "tests.buildah_fixture"]

REPO = Path(__file__).resolve().parents[1]
# Test data copied into the repository (tests/vectors/README.md names the sources).
VECTORS = REPO / "tests" / "vectors"
COMMIT_DATE = "2026-01-02T03:04:05+00:00"


def gosmall_command() -> list[str]:
    """The console script, or the same entry point through this Python when it is not installed."""
    script = Path(sys.executable).with_name("gosmall")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from gosmall.cli import main; main()"]


def gosmall_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **(env or {})}


def gosmall(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the console script the way a user does."""
    return subprocess.run([*gosmall_command(), *args], cwd=cwd, env=gosmall_env(env), capture_output=True, text=True, timeout=timeout)


def make_project(directory: Path, gosmall_table: str | None = None, *, git: bool = True) -> Path:
    """A copy of the sample project (go_app and its [tool.gosmall]) as its own git repository."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "go_app", directory / "go_app")
    if gosmall_table is None:
        text = (REPO / "pyproject.toml").read_text()
        gosmall_table = text[text.index("[tool.gosmall]") :]
    (directory / "pyproject.toml").write_text('[project]\nname = "sample"\nversion = "0"\n\n' + gosmall_table)
    (directory / ".gitignore").write_text("dist/\n")
    if git:
        git_commit(directory)
    return directory


def git_commit(directory: Path, message: str = "sample") -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": COMMIT_DATE,
        "GIT_COMMITTER_DATE": COMMIT_DATE,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    if not (directory / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=directory, check=True)
    subprocess.run(["git", "add", "-A"], cwd=directory, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=directory, check=True, env=env)


@dataclass(frozen=True)
class BuiltProject:
    root: Path
    output: Path  # <output>/<image>
    report: dict[str, Any]


@pytest.fixture(scope="session")
def built_hello(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    """go_app built once per session by `gosmall build-small`, for linux/amd64 and linux/arm64."""
    root = make_project(tmp_path_factory.mktemp("hello") / "project")
    done = gosmall("build-small", cwd=root, env={"SOURCE_DATE_EPOCH": ""})
    assert done.returncode == 0, done.stderr
    output = root / "dist" / "hello"
    return BuiltProject(root, output, json.loads((output / "report.json").read_text()))


def one_image(repository: str, *lines: str) -> str:
    """[tool.gosmall] for go_app as one linux/amd64 image in `repository`, pins not checked; `lines` add keys to it."""
    return (
        "[tool.gosmall]\n"
        'pinning = "off"\n'
        "[tool.gosmall.images.hello]\n"
        'package = "./go_app"\n'
        'platforms = ["linux/amd64"]\n'
        f'repository = "{repository}"\n' + "".join(line + "\n" for line in lines)
    )
