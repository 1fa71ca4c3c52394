"""A rebuild where nothing changed stops after Go's own up-to-date check (issue 12); anything that changed is rebuilt.

Each test builds a copy of go_app twice with its own cache, the way a user runs `gosmall build-small`, and looks
at what the user cares about: whether the output was rewritten (inodes), what it holds, and what was said.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import gosmall, make_project

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

pytestmark = pytest.mark.slow

TABLE = (
    "[tool.gosmall]\n"
    'pinning = "off"\n'
    "[tool.gosmall.images.hello]\n"
    'package = "./go_app"\n'
    'platforms = ["linux/amd64"]\n'
    'files = [{ src = "config", dst = "/etc/hello" }]\n'
)


def build(root: Path, cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = gosmall("build-small", *args, cwd=root, env={"GOSMALL_CACHE": str(cache), "SOURCE_DATE_EPOCH": "", "CI": "1", **env})
    assert done.returncode == 0, done.stderr
    return done


def identities(root: Path) -> dict[str, tuple[int, int]]:
    out = root / "dist" / "hello"
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}


def contents(root: Path) -> dict[str, bytes]:
    out = root / "dist" / "hello"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def up_to_date(done: subprocess.CompletedProcess[str]) -> bool:
    return "(up to date)" in done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "p", TABLE, git=False)
    (root / "config").mkdir()
    (root / "config" / "hello.conf").write_text("greeting = hi\n")
    from tests.conftest import git_commit

    git_commit(root)
    return root


def test_nothing_changed_leaves_the_output_alone_and_says_what_the_build_said(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = build(project, cache)
    assert not up_to_date(first)
    # In CI each long stage is one plain line (a spinner on a terminal).
    assert "    hello: go build for linux/amd64 ...\n" in first.stderr and "    hello: writing " in first.stderr
    before, written = identities(project), contents(project)
    second = build(project, cache)
    assert up_to_date(second)
    assert identities(project) == before  # not one file rewritten
    assert contents(project) == written
    # What the build found (the binary, the audit, advice) and the size table come again, so a no-op run
    # tells the user what a full one did.
    found = [line for line in first.stderr.splitlines() if line.startswith(("    linux/amd64:", "    audit:", "WARNING"))]
    assert len(found) >= 2 and found == [
        line for line in second.stderr.splitlines() if line.startswith(("    linux/amd64:", "    audit:", "WARNING"))
    ]
    assert first.stdout == second.stdout and "layer (gzip)" in second.stdout


def test_a_source_change_is_rebuilt(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(project, cache)
    digest = json.loads((project / "dist" / "hello" / "report.json").read_text())["digest"]
    main = project / "go_app" / "main.go"
    main.write_text(main.read_text() + '\nvar _ = "changed"\n')
    done = build(project, cache)
    assert not up_to_date(done)
    assert json.loads((project / "dist" / "hello" / "report.json").read_text())["digest"] != digest


@pytest.mark.parametrize(
    "change",
    ["config", "files", "epoch", "output"],
)
def test_every_other_input_is_an_input(project: Path, tmp_path: Path, change: str) -> None:
    cache = tmp_path / "cache"
    build(project, cache)
    env: dict[str, str] = {}
    if change == "config":  # a setting that changes the image but not the binary
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + 'labels = { "org.example.team" = "tools" }\n')
    elif change == "files":  # a runtime file's bytes: Go's build ID knows nothing of it
        (project / "config" / "hello.conf").write_text("greeting = hello\n")
    elif change == "epoch":
        env["SOURCE_DATE_EPOCH"] = "1700000000"
    reference = contents(project)
    if change == "output":  # someone edited an output file
        (project / "dist" / "hello" / "image.tar").write_bytes(b"not an image")
    done = build(project, cache, **env)
    assert not up_to_date(done)
    if change == "output":
        assert contents(project) == reference  # rebuilt as it was
    else:
        assert contents(project) != reference


@pytest.mark.parametrize("damage", ["removed blob", "replaced report", "added file"])
def test_an_output_that_is_not_what_the_build_wrote_is_rebuilt(project: Path, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    build(project, cache)
    reference = contents(project)
    out = project / "dist" / "hello"
    if damage == "removed blob":
        next((out / "oci" / "blobs" / "sha256").iterdir()).unlink()
    elif damage == "replaced report":
        report = (out / "report.json").read_bytes()
        (out / "report.json").unlink()
        (out / "report.json").write_bytes(report)  # same bytes, another file
    else:
        (out / "oci" / "blobs" / "sha256" / ("0" * 64)).write_bytes(b"")
    assert not up_to_date(build(project, cache))
    assert contents(project) == reference


def test_published_from_an_up_to_date_output_is_the_image_that_is_there(project: Path, tmp_path: Path) -> None:
    """The Build an up-to-date run returns reads the layout when a publisher needs it: the same value a full build gives."""
    from gosmall.build.built import read_build
    from gosmall.build.fresh import up_to_date_build
    from gosmall.config import load_project

    cache = tmp_path / "cache"
    build(project, cache)
    config = load_project(project).images[0]
    out = project / "dist" / "hello"
    stored = up_to_date_build(config, out, ())
    assert stored is not None and stored.up_to_date
    read = read_build(config, out)
    assert stored.image == read.image and stored.docker_archive() == (out / "image.tar").read_bytes()
    assert stored.digest == read.digest and stored.facts == read.facts


def test_without_a_cache_every_build_is_a_build(project: Path, tmp_path: Path) -> None:
    build(project, tmp_path / "unused", GOSMALL_CACHE="off")
    assert not up_to_date(build(project, tmp_path / "unused", GOSMALL_CACHE="off"))


def test_another_gosmall_is_another_builder(project: Path, tmp_path: Path) -> None:
    """An edited gosmall module (an editable install, a patched wheel) may write other bytes: it rebuilds."""
    cache = tmp_path / "cache"
    build(project, cache)
    import gosmall.build.fresh

    module = Path(gosmall.build.fresh.__file__)
    stat = module.stat()
    try:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert not up_to_date(build(project, cache))
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_an_image_with_no_config_is_up_to_date_too(tmp_path: Path) -> None:
    """follow_needs: what ships depends on what the binary links, recorded with its build ID."""
    root = make_project(tmp_path / "p", "", git=True)
    (root / "pyproject.toml").unlink()
    cache = tmp_path / "cache"
    first = gosmall("build-small", ".", cwd=root / "go_app", env={"GOSMALL_CACHE": str(cache), "CI": "1"})
    assert first.returncode == 0, first.stderr
    second = gosmall("build-small", ".", cwd=root / "go_app", env={"GOSMALL_CACHE": str(cache), "CI": "1"})
    assert second.returncode == 0, second.stderr
    assert "(up to date)" in second.stderr and "(up to date)" not in first.stderr
    assert "no config: ships" in second.stderr  # what shipped, and why, is said again


@pytest.mark.parametrize("damage", ["a kind that is no message", "a table that is not one", "not JSON"])
def test_a_damaged_record_is_a_build_not_a_traceback(project: Path, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    build(project, cache)
    (entry,) = (cache / "facts" / "outputs").glob("*.json")
    document = json.loads(entry.read_text())
    if damage == "a kind that is no message":
        document["value"]["said"].append(["__init__", "x"])
    elif damage == "a table that is not one":
        document["value"]["said"].append(["table", json.dumps(["t", ["a"], [[1]]])])
    entry.write_text("{" if damage == "not JSON" else json.dumps(document))
    done = build(project, cache)
    assert not up_to_date(done) and "Traceback" not in done.stderr
    assert up_to_date(build(project, cache))  # and the record it wrote is sound again


# -- gosmall's own rewrites of a built output do not undo the no-op (issue 28) ------------------------------


@pytest.mark.registry
def test_a_push_recorded_in_report_json_leaves_the_next_build_a_no_op(tmp_path: Path, registry: LocalRegistry) -> None:
    root = make_project(
        tmp_path / "p", TABLE.replace('package = "./go_app"\n', f'package = "./go_app"\nrepository = "{registry.host}/fresh/hello"\n')
    )
    (root / "config").mkdir()
    (root / "config" / "hello.conf").write_text("greeting = hi\n")
    cache = tmp_path / "cache"
    pushed = build(root, cache, "--push")
    assert not up_to_date(pushed) and "pushing" in pushed.stderr
    report = json.loads((root / "dist" / "hello" / "report.json").read_text())
    assert report["pushed"]["reference"].startswith(f"{registry.host}/fresh/hello@sha256:")  # still recorded for its readers
    before, written = identities(root), contents(root)
    again = build(root, cache)
    assert up_to_date(again), again.stderr
    assert identities(root) == before and contents(root) == written
    # Pushed again, with nothing changed: still a no-op, and still recorded.
    assert up_to_date(build(root, cache, "--push"))
    assert up_to_date(build(root, cache))
    assert json.loads((root / "dist" / "hello" / "report.json").read_text())["pushed"] == report["pushed"]


def test_gosmall_sbom_leaves_the_next_build_a_no_op(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(project, cache)
    written = contents(project)
    done = gosmall("sbom", "--image", "hello", cwd=project, env={"GOSMALL_CACHE": str(cache), "SOURCE_DATE_EPOCH": "", "CI": "1"})
    assert done.returncode == 0, done.stderr
    after_sbom = identities(project)
    assert contents(project) == written  # the same bytes, under new inodes
    again = build(project, cache)
    assert up_to_date(again), again.stderr
    assert identities(project) == after_sbom


def test_a_file_edited_beside_a_rewrite_still_means_a_rebuild(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(project, cache)
    (project / "dist" / "hello" / "image.tar").write_bytes(b"edited")
    done = gosmall("sbom", "--image", "hello", cwd=project, env={"GOSMALL_CACHE": str(cache), "SOURCE_DATE_EPOCH": "", "CI": "1"})
    assert done.returncode == 0, done.stderr
    again = build(project, cache)
    assert not up_to_date(again)
    assert (project / "dist" / "hello" / "image.tar").read_bytes() != b"edited"
