"""Unchanged inputs reuse earlier work (issue 12), and no cache state can change a byte of the output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import gosmall, make_project

pytestmark = pytest.mark.slow

TABLE = '[tool.gosmall.images.hello]\npackage = "./go_app"\nplatforms = ["linux/amd64", "linux/arm64"]\n'


def outputs(root: Path) -> dict[str, bytes]:
    out = root / "dist" / "hello"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def build(root: Path, cache: Path, **env: str) -> dict[str, bytes]:
    """A whole build: the output is removed first, so the run is not merely found up to date (test_fresh.py)."""
    shutil.rmtree(root / "dist", ignore_errors=True)
    done = gosmall("build-small", cwd=root, env={"GOSMALL_CACHE": str(cache), "SOURCE_DATE_EPOCH": "", **env})
    assert done.returncode == 0, done.stderr
    return outputs(root)


def test_a_cold_and_a_warm_cache_give_every_byte_the_same(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TABLE)
    cache = tmp_path / "cache"
    # TMPDIR on the cache's filesystem: a re-link there ends in a rename, a new inode, while Go
    # only touches an output it finds up to date.
    (tmp_path / "tmp").mkdir()
    env = {"TMPDIR": str(tmp_path / "tmp")}
    cold = build(root, cache, **env)
    kept = sorted((cache / "go").rglob("go_app"))
    layers = sorted((cache / "layers").iterdir())
    assert len(kept) == 2 and len(layers) == 2  # one binary and one layer per platform
    before = {p: p.stat().st_ino for p in kept}
    warm = build(root, cache, **env)
    assert warm == cold
    # Go saw its kept output was up to date and did not link again.
    assert {p: p.stat().st_ino for p in kept} == before
    assert build(root, tmp_path / "none", GOSMALL_CACHE="off") == cold


def test_a_damaged_layer_entry_is_recompressed_not_used(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TABLE)
    cache = tmp_path / "cache"
    first = build(root, cache)
    for entry in (cache / "layers").iterdir():
        entry.write_bytes(entry.read_bytes()[:1000])
    assert build(root, cache) == first
    assert all(entry.stat().st_size > 1000 for entry in (cache / "layers").iterdir())


def test_binaries_with_gos_build_id_are_the_same_from_any_directory_and_cold_caches(tmp_path: Path) -> None:
    """-buildid= is not what makes the binary reproducible; -trimpath is (measured for issue 10, kept here)."""
    reports = []
    for name in ("one", "two"):
        root = make_project(tmp_path / name / "deep" / "project", TABLE)
        env = {"GOCACHE": str(tmp_path / name / "gocache")}
        build(root, tmp_path / name / "cache", **env)
        reports.append(json.loads((root / "dist" / "hello" / "report.json").read_text()))
    assert reports[0]["digest"] == reports[1]["digest"]
    assert [p["binary_size"] for p in reports[0]["platforms"].values()] == [p["binary_size"] for p in reports[1]["platforms"].values()]


def test_the_cache_is_only_gosmalls_directory(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TABLE)
    home = tmp_path / "home"
    home.mkdir()
    done = gosmall(
        "build-small",
        cwd=root,
        env={
            "GOSMALL_CACHE": "",
            "XDG_CACHE_HOME": str(home),
            "GOCACHE": str(tmp_path / "gocache"),
            "HOME": os.environ.get("HOME", "/root"),
        },
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in home.iterdir()] == ["gosmall"]


@pytest.mark.parametrize("scratch_elsewhere", [False, True])
def test_the_kept_binary_a_build_holds_keeps_its_bytes_when_go_relinks_it(tmp_path: Path, scratch_elsewhere: bool) -> None:
    """copy_out takes a hard link: sound only because Go replaces (never rewrites in place) an output it relinks,
    whether its work directory is on the output's file system (a rename) or not (remove, then a new file)."""
    from gosmall.build.cache import copy_out
    from gosmall.build.toolchain import find_module, find_toolchain

    elsewhere = Path("/dev/shm")
    if scratch_elsewhere and (not elsewhere.is_dir() or elsewhere.stat().st_dev == tmp_path.stat().st_dev):
        pytest.skip("needs a work directory on another file system (/dev/shm)")
    root = make_project(tmp_path / "p", TABLE, git=False)
    package = root / "go_app"
    toolchain = find_toolchain(find_module(package))
    kept = tmp_path / "kept" / "go_app"
    kept.parent.mkdir()
    scratch = Path(tempfile.mkdtemp(dir=elsewhere if scratch_elsewhere else tmp_path))
    env = {**os.environ, "CGO_ENABLED": "0", "GOTMPDIR": str(scratch), "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
    try:
        build = [str(toolchain.executable), "build", "-trimpath", "-o", str(kept), "."]
        subprocess.run(build, cwd=package, env=env, check=True, capture_output=True)
        held = tmp_path / "work" / "go_app"
        copy_out(kept, held)
        assert held.stat().st_ino == kept.stat().st_ino  # a link, not a copy
        before = held.read_bytes()
        (package / "extra.go").write_text('package main\n\nvar extra = "relink"\n')
        subprocess.run(build, cwd=package, env=env, check=True, capture_output=True)
        assert kept.read_bytes() != before
        assert held.read_bytes() == before
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
