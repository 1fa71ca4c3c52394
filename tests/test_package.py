"""The distribution as a user installs it: a wheel whose one top-level package is gosmall's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, BuiltProject, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the tracked files, so a developer's dist/ or build/ cannot end up in the wheel.
    source = out / "source"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("gosmall-*.whl")
    return built


def test_the_wheel_claims_only_the_gosmall_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"gosmall"}
    assert "gosmall/cli.py" in names and "gosmall/tasks/__init__.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "gosmall = gosmall.console:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_an_installed_wheel_builds_go_app(wheel: Path, built_hello: BuiltProject, tmp_path: Path) -> None:
    """A fresh venv (no editable install, no checkout on sys.path) builds the same image as the checkout."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # The installed package, not the checkout's stages/, and no `stages` module at all.
    probe = subprocess.run(
        [str(python), "-c", "import gosmall, importlib.util; print(gosmall.__file__); print(importlib.util.find_spec('stages'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    where, stages_spec = probe.stdout.split()
    assert Path(where).is_relative_to(env_dir) and stages_spec == "None", probe.stdout + probe.stderr

    project = make_project(tmp_path / "project")
    go = shutil.which("go") or str(Path(sys.executable).with_name("go"))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), str(Path(go).parent), env.get("PATH", "")])
    env["SOURCE_DATE_EPOCH"] = ""
    done = subprocess.run(
        [str(env_dir / "bin" / "gosmall"), "build-small"], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((project / "dist" / "hello" / "report.json").read_text())
    assert report["digest"] == built_hello.report["digest"]
