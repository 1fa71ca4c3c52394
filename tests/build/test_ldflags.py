"""ldflags templates end to end: {commit}, {short_commit}, {tag} and {date} reach the binary inside the image.

Real `go build`s through the console script; the binary is taken out of the image's layer and run.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from gosmall.build.compile import host_platform, plan_compile
from gosmall.build.source import SourceInfo
from gosmall.build.toolchain import find_module
from gosmall.config import parse_project
from gosmall.errors import GosmallError
from gosmall.images.model import Platform
from tests.conftest import git_commit, gosmall

pytestmark = pytest.mark.slow

STAMP = """package main

import "fmt"

var commit, shortCommit, tag, date, version = "unset", "unset", "unset", "unset", "unset"

func main() {
	fmt.Printf("commit=%s\\nshort=%s\\ntag=%s\\ndate=%s\\nversion=%s\\n", commit, shortCommit, tag, date, version)
}
"""
LDFLAGS = '["-X main.commit={commit}", "-X main.shortCommit={short_commit}", "-X main.tag={tag}", "-X main.date={date}", "-X main.version={version}"]'


def stamp_project(root: Path, ldflags: str = LDFLAGS) -> Path:
    (root / "stamp").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/stamp\n\ngo 1.22\n")
    (root / "stamp" / "main.go").write_text(STAMP)
    (root / ".gitignore").write_text("dist/\n")
    (root / "pyproject.toml").write_text(
        "[tool.gosmall.images.stamp]\n"
        'package = "./stamp"\n'
        'repository = "example.com/stamp"\n'
        f'platforms = ["{host_platform()}"]\n'
        'tzdata = "none"\n'
        f"ldflags = {ldflags}\n"
    )
    git_commit(root)
    return root


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def build(root: Path, **env: str) -> tuple[str, dict[str, str]]:
    """`gosmall build-small`, then the binary out of the image's one layer, run: (digest, what it printed)."""
    done = gosmall("build-small", cwd=root, env={"SOURCE_DATE_EPOCH": "", **env})
    assert done.returncode == 0, done.stderr
    output = root / "dist" / "stamp"
    layout = output / "oci"
    blob = lambda digest: (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()  # noqa: E731
    (top,) = json.loads((layout / "index.json").read_text())["manifests"][:1]
    (layer,) = json.loads(blob(top["digest"]))["layers"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"])))) as tar:
        member = tar.extractfile("stamp")
        assert member is not None
        binary = root.parent / f"{root.name}-stamp"
        binary.write_bytes(member.read())
    binary.chmod(0o755)
    printed = subprocess.run([str(binary)], capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads((output / "report.json").read_text())["digest"], dict(line.split("=", 1) for line in printed.splitlines())


def test_the_templates_reach_the_binary_in_the_image_and_two_builds_give_one_digest(tmp_path: Path) -> None:
    root = stamp_project(tmp_path / "project")
    git(root, "tag", "v1.2.3")
    full, short = git(root, "rev-parse", "HEAD"), git(root, "rev-parse", "--short", "HEAD")

    digest, printed = build(root)
    assert printed == {"commit": full, "short": short, "tag": "v1.2.3", "date": "2026-01-02T03:04:05Z", "version": "v1.2.3"}

    # Another clone of the same commit, elsewhere: the same bytes.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    again, printed_again = build(clone)
    assert (again, printed_again) == (digest, printed)

    # SOURCE_DATE_EPOCH is the date when set, as it is every other timestamp's.
    assert build(clone, SOURCE_DATE_EPOCH="86400")[1]["date"] == "1970-01-02T00:00:00Z"


def test_a_dirty_tree_is_marked_and_a_new_commit_rebuilds(tmp_path: Path) -> None:
    root = stamp_project(tmp_path / "project")
    git(root, "tag", "v1.2.3")
    first, _ = build(root)

    main = root / "stamp" / "main.go"
    main.write_text(main.read_text() + "\n// changed\n")  # a comment: Go's output is the same, the stamp is not
    _, dirty = build(root)
    assert dirty["commit"] == git(root, "rev-parse", "HEAD") + "-dirty"
    assert dirty["short"] == git(root, "rev-parse", "--short", "HEAD") + "-dirty"
    assert (dirty["tag"], dirty["version"]) == ("v1.2.3-dirty", "v1.2.3-dirty")

    git_commit(root, "a comment")
    digest, committed = build(root)
    assert committed["commit"] == git(root, "rev-parse", "HEAD") != git(root, "rev-parse", "v1.2.3")
    assert committed["tag"] == ""  # the tag is one commit below HEAD now
    assert committed["version"].startswith("v1.2.3-1-g")
    assert digest != first


def test_an_unknown_name_is_refused_before_anything_compiles(tmp_path: Path) -> None:
    root = stamp_project(tmp_path / "project", '["-X main.commit={commit}", "-X main.x={nope}"]')
    cache = tmp_path / "cache"
    done = gosmall("build-small", cwd=root, env={"GOSMALL_CACHE": str(cache)})
    assert done.returncode == 2, done.stderr
    assert "ldflags[1]: '-X main.x={nope}' names {nope}, which gosmall does not fill in" in done.stderr
    assert "the names are {version}, {commit}, {short_commit}, {tag}, {date}." in done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / "dist").exists()
    assert not (cache / "go").exists()  # no go build ran: its kept outputs live there


def test_ko_template_names_are_pointed_at_gosmalls(tmp_path: Path) -> None:
    root = stamp_project(tmp_path / "project", '["-X main.commit={{.Git.FullCommit}}"]')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2
    assert "ko's {{.Git.FullCommit}} is {commit} here." in done.stderr


# -- the plan: what the config lets through, filled in once ------------------------------


def plan_for(tmp_path: Path, ldflags: list[str], source: SourceInfo) -> str:
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "go.mod").write_text("module example.com/app\n\ngo 1.22\n")
    (tmp_path / "app" / "main.go").write_text("package main\n\nfunc main() {}\n")
    image = parse_project({"images": {"app": {"package": "app", "ldflags": ldflags}}}, tmp_path / "pyproject.toml").images[0]
    return plan_compile(image, find_module(image.package), Platform.parse("linux/amd64"), source).ldflags


def test_braces_around_anything_but_a_name_are_left_as_written(tmp_path: Path) -> None:
    flags = ["-X main.empty={}", '-X main.json={"a":1}', "-X main.v={version}"]
    assert plan_for(tmp_path, flags, SourceInfo("v1", "", "", 0)) == '-s -w -X main.empty={} -X main.json={"a":1} -X main.v=v1'


def test_values_are_filled_in_once_so_a_value_holding_a_template_stays_as_it_is(tmp_path: Path) -> None:
    source = SourceInfo("{commit}", "c" * 40, "", 86400, short_revision="ccccccc", tag="{date}")
    flags = ["-X main.v={version}", "-X main.t={tag}", "-X main.c={short_commit}", "-X main.d={date}"]
    assert plan_for(tmp_path, flags, source) == "-s -w -X main.v={commit} -X main.t={date} -X main.c=ccccccc -X main.d=1970-01-02T00:00:00Z"


@pytest.mark.parametrize("name", ["nope", "Commit", "git.commit", ".Version"])
def test_every_unknown_name_is_a_config_error_naming_the_key(tmp_path: Path, name: str) -> None:
    with pytest.raises(GosmallError) as caught:
        parse_project({"images": {"app": {"package": ".", "ldflags": ["-s", f"-X main.x={{{name}}}"]}}}, tmp_path / "pyproject.toml")
    assert f"[tool.gosmall.images.app] ldflags[1]: '-X main.x={{{name}}}' names {{{name}}}" in caught.value.message
