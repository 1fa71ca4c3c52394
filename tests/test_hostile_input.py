"""Issue 9, as it was found: each hostile or careless use, through the console script, the way a user hits it.

gosmall removes or replaces only what it created, never ships a host file nobody asked for, and
answers bad input with one paragraph and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.conftest import git_commit, gosmall, make_project

pytestmark = pytest.mark.slow

TABLE = """[tool.gosmall]
{top}
[tool.gosmall.images.{name}]
package = "./go_app"
platforms = ["linux/amd64"]
{image}
"""


def project(tmp_path: Path, *, top: str = "", image: str = "", name: str = "hello", git: bool = True) -> Path:
    return make_project(tmp_path / "project", TABLE.format(top=top, image=image, name=name), git=git)


def refused(root: Path, *fragments: str) -> str:
    """build-small exits 2 with one message, no traceback, and leaves the project's files as they were."""
    before = snapshot(root)
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "\ngosmall: error: " in "\n" + done.stderr and "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr
    assert snapshot(root) == before
    return done.stderr


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def layer_members(root: Path, image: str = "hello") -> dict[str, tarfile.TarInfo]:
    output = root / "dist" / image
    index = json.loads((output / "oci" / "index.json").read_text())
    blobs = output / "oci" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layer) as tar:
        return {m.name: m for m in tar.getmembers()}


# -- output: never the project, its parents, .git or a source ---------------------------------------


def test_output_dot_with_an_image_named_like_the_package_keeps_the_sources(tmp_path: Path) -> None:
    # Found: deleted go_app/main.go and go.mod.
    root = project(tmp_path, top='output = "."', name="go_app")
    refused(root, "[tool.gosmall] output: '.' is the project root")
    assert (root / "go_app" / "main.go").is_file()


def test_output_dot_dot_with_an_image_named_after_the_project_keeps_the_project(tmp_path: Path) -> None:
    # Found: replaced the whole project, .git included.
    root = project(tmp_path, top='output = ".."', name="project")
    refused(root, "output: '..' leads out of the project")
    assert (root / ".git").is_dir() and (root / "go_app" / "main.go").is_file()


def test_output_inside_git_keeps_the_repository(tmp_path: Path) -> None:
    # Found: output = ".git" with image "objects" broke the repository.
    root = project(tmp_path, top='output = ".git"', name="objects")
    refused(root, "inside a git repository's metadata")
    assert (root / ".git" / "objects").is_dir()


@pytest.mark.parametrize("output", ["/", "{parent}"])
def test_output_at_the_root_or_above_the_project_is_refused(tmp_path: Path, output: str) -> None:
    root = project(tmp_path, top=f'output = "{output.format(parent=tmp_path)}"')
    refused(root, "[tool.gosmall] output:", "a parent of the project")


def test_output_holding_a_files_source_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, top='output = "assets"', image='files = [{ src = "assets/static", dst = "/static" }]', git=False)
    (root / "assets" / "static").mkdir(parents=True)
    (root / "assets" / "static" / "index.html").write_text("hi")
    refused(root, "holds [tool.gosmall.images.hello] files[0].src")


def test_a_relative_output_that_is_a_link_out_of_the_project_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "hello").mkdir(parents=True)
    (elsewhere / "hello" / "keep.txt").write_text("not gosmall's")
    root = project(tmp_path, git=False)
    (root / "dist").symlink_to(elsewhere)
    refused(root, "a symbolic link takes it to")
    assert (elsewhere / "hello" / "keep.txt").read_text() == "not gosmall's"


def test_an_absolute_output_outside_the_project_is_allowed(tmp_path: Path) -> None:
    out = tmp_path / "ci-artifacts"
    root = project(tmp_path, top=f'output = "{out}"')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "hello" / "report.json").read_text())["image"] == "hello"


# -- files: no host file by accident -------------------------------------------------------------


def test_a_link_to_a_host_file_in_a_mapped_directory_is_refused(tmp_path: Path) -> None:
    # Found: static/shadow -> /etc/shadow shipped the host's shadow file, 0444.
    root = project(tmp_path, image='files = [{ src = "static", dst = "/static" }]', git=False)
    (root / "static").mkdir()
    (root / "static" / "index.html").write_text("hi")
    (root / "static" / "shadow").symlink_to("/etc/shadow")
    refused(root, f"{root / 'static' / 'shadow'} is a link to '/etc/shadow'", "outside the project")
    assert not (root / "dist").exists()


def test_links_inside_the_project_ship_as_links_or_copies(tmp_path: Path) -> None:
    root = project(tmp_path, image='files = [{ src = "static", dst = "/static" }]', git=False)
    (root / "static" / "css").mkdir(parents=True)
    (root / "static" / "css" / "site.css").write_text("body{}")
    (root / "static" / "style.css").symlink_to("css/site.css")  # inside the mapped tree: a link
    (root / "LICENSE").write_text("MIT")
    (root / "static" / "LICENSE").symlink_to("../LICENSE")  # elsewhere in the project: a copy
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    members = layer_members(root)
    assert members["static/style.css"].issym() and members["static/style.css"].linkname == "css/site.css"
    assert members["static/LICENSE"].isreg() and members["static/LICENSE"].size == 3


def test_a_fifo_in_a_mapped_directory_is_an_error_not_a_hang(tmp_path: Path) -> None:
    # Found: the build hung forever and left a temp dir.
    root = project(tmp_path, image='files = [{ src = "static", dst = "/static" }]', git=False)
    (root / "static").mkdir()
    os.mkfifo(root / "static" / "events")
    done = gosmall("build-small", cwd=root, timeout=300)
    assert done.returncode == 2 and "is a FIFO (named pipe); only regular files" in done.stderr, done.stderr
    assert not (root / "dist").exists() or not any((root / "dist").iterdir())


def test_a_link_to_dev_zero_is_an_error_not_a_memory_error(tmp_path: Path) -> None:
    root = project(tmp_path, image='files = [{ src = "static", dst = "/static" }]', git=False)
    (root / "static").mkdir()
    (root / "static" / "zero").symlink_to("/dev/zero")
    refused(root, "is a link to '/dev/zero'")


def test_mapping_the_project_root_ships_neither_git_nor_earlier_outputs(tmp_path: Path) -> None:
    # Found: .git (with the origin URL) and every earlier output were shipped; the image grew 8 -> 20 -> 39 MiB.
    root = project(tmp_path, image='files = [{ src = ".", dst = "/app" }]')
    first = gosmall("build-small", cwd=root)
    assert first.returncode == 0, first.stderr
    assert "not shipped: " in first.stderr and ".git (a git repository's metadata)" in first.stderr
    digest = json.loads((root / "dist" / "hello" / "report.json").read_text())["digest"]
    second = gosmall("build-small", cwd=root)
    assert second.returncode == 0, second.stderr
    assert "(gosmall's output directory)" in second.stderr
    assert json.loads((root / "dist" / "hello" / "report.json").read_text())["digest"] == digest
    names = set(layer_members(root))
    assert "app/go_app/main.go" in names
    assert "app/.gitignore" in names
    assert not any(n in ("app/.git", "app/dist") or n.startswith(("app/.git/", "app/dist/")) for n in names)


@pytest.mark.parametrize(
    ("dst", "generated"),
    [
        ("/etc/passwd", "gosmall's users"),
        ("/go_app", "binary (go build)"),
        ("/tmp", "gosmall's dirs"),
        ("/usr/share/zoneinfo.zip", "tzdata"),
    ],
)
def test_a_files_dst_that_collides_with_a_generated_path_names_both(tmp_path: Path, dst: str, generated: str) -> None:
    root = project(tmp_path, image=f'files = [{{ src = "mine", dst = "{dst}" }}]', git=False)
    (root / "mine").write_text("mine")
    stderr = refused(root, f"{dst} would be written twice in the image", generated, f"files (files[0] {root / 'mine'})")
    assert "Traceback" not in stderr


# -- tracebacks that were, and values accepted that should not be ------------------------------------


@pytest.mark.parametrize(
    ("top", "image", "fragment"),
    [
        ("", 'max_size = "' + "9" * 400 + '"', "max_size: '99999"),
        ("", 'max_size = "0"', "max_size: '0' must be more than 0 bytes"),
        ("", 'entrypoint = ["go_app"]', "entrypoint: 'go_app' must be an absolute path"),
        ("", "entrypoint = []", "entrypoint: is empty"),
        ("", 'user = "4294967295:0"', "a UID or GID is at most 4294967294"),
    ],
)
def test_bad_values_are_one_message_before_compiling(tmp_path: Path, top: str, image: str, fragment: str) -> None:
    root = project(tmp_path, top=top, image=image, git=False)
    refused(root, fragment)
    assert not (root / "dist").exists()


def test_tool_that_is_not_a_table_is_a_message(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text("tool = 5\n")
    refused(root, "`tool` must be a table", "not an integer")


def test_an_entrypoint_that_names_no_file_in_the_image_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, image='entrypoint = ["/bin/sh", "-c", "go_app"]', git=False)
    refused(root, "entrypoint: '/bin/sh' is not an executable file in the image", "/go_app")
    assert not (root / "dist").exists()


def test_numeric_nonroot_gets_the_same_home_as_nonroot(tmp_path: Path) -> None:
    root = project(tmp_path, image='user = "65532:65532"')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    home = layer_members(root)["home/nonroot"]
    assert (home.isdir(), home.uid, home.gid, home.mode) == (True, 65532, 65532, 0o700)


def test_a_changed_project_after_a_refusal_builds(tmp_path: Path) -> None:
    """A refusal leaves nothing behind that stops the next, corrected build."""
    root = project(tmp_path, top='output = "."', name="go_app")
    refused(root, "is the project root")
    (root / "pyproject.toml").write_text(TABLE.format(top="", image="", name="go_app"))
    git_commit(root, "fix")
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    shutil.rmtree(root / "dist")
