"""What the build is of: the version, revision, origin and the one clock it may use."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gosmall.build.source import describe_source
from gosmall.config import LDFLAGS_NAMES
from gosmall.errors import GosmallError
from tests.conftest import git_commit

COMMIT_EPOCH = 1767323045  # conftest.COMMIT_DATE, 2026-01-02T03:04:05Z


@pytest.fixture(autouse=True)
def no_git_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tmp_path must not be taken for part of whatever repository holds the temp dir."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


def repo(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.go").write_text("package main\n\nfunc main() {}\n")
    git_commit(directory)
    return directory


def git(directory: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=directory, check=True, capture_output=True, text=True).stdout.strip()


def test_source_date_epoch_wins_over_the_commit_time(tmp_path: Path) -> None:
    root = repo(tmp_path)
    assert describe_source(root, {"SOURCE_DATE_EPOCH": "86400"}).epoch == 86400


def test_the_last_commit_time_is_the_clock_in_git(tmp_path: Path) -> None:
    root = repo(tmp_path)
    source = describe_source(root, {})
    assert source.epoch == COMMIT_EPOCH
    assert source.revision == git(root, "rev-parse", "HEAD") and len(source.revision) == 40


def test_an_empty_source_date_epoch_is_unset(tmp_path: Path) -> None:
    assert describe_source(repo(tmp_path), {"SOURCE_DATE_EPOCH": " "}).epoch == COMMIT_EPOCH


@pytest.mark.parametrize("value", ["yesterday", "-5", "1.5", "0x10"])
def test_an_invalid_source_date_epoch_is_a_clear_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(GosmallError) as caught:
        describe_source(tmp_path, {"SOURCE_DATE_EPOCH": value})
    message = caught.value.message
    assert f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds since 1970" in message
    assert "git log -1 --format=%ct" in message


def test_outside_git_the_clock_is_zero_and_the_version_dev(tmp_path: Path) -> None:
    source = describe_source(tmp_path, {})
    assert (source.epoch, source.version, source.revision, source.url) == (0, "dev", "", "")


def test_the_version_is_git_describe(tmp_path: Path) -> None:
    root = repo(tmp_path)
    untagged = describe_source(root, {}).version
    assert untagged == git(root, "rev-parse", "--short", "HEAD")  # --always: the short id without a tag

    git(root, "tag", "v1.2.3")
    assert describe_source(root, {}).version == "v1.2.3"

    (root / "main.go").write_text("package main\n\nfunc main() { println() }\n")
    assert describe_source(root, {}).version == "v1.2.3-dirty"


@pytest.mark.parametrize(
    ("origin", "recorded"),
    [
        ("https://github.com/example/app.git", "https://github.com/example/app.git"),
        ("git@github.com:example/app.git", "git@github.com:example/app.git"),
        ("/srv/git/app.git", ""),
        ("../app.git", ""),
    ],
)
def test_the_origin_is_recorded_unless_it_is_a_local_path(tmp_path: Path, origin: str, recorded: str) -> None:
    root = repo(tmp_path)
    git(root, "remote", "add", "origin", origin)
    assert describe_source(root, {}).url == recorded


def test_a_clone_from_a_local_path_records_no_origin(tmp_path: Path) -> None:
    upstream = repo(tmp_path / "upstream")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(upstream), str(clone)], check=True)
    source = describe_source(clone, {})
    assert source.url == ""
    assert source.revision == describe_source(upstream, {}).revision


def test_a_file_url_origin_is_not_recorded(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "remote", "add", "origin", f"file://{tmp_path}/upstream.git")
    assert describe_source(root, {}).url == ""


def test_credentials_in_the_origin_are_not_recorded(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "remote", "add", "origin", "https://gitlab-ci-token:glcbt-s3cr3t@gitlab.example.com/group/app.git")
    url = describe_source(root, {}).url
    assert "s3cr3t" not in url and "gitlab-ci-token" not in url
    assert url == "https://gitlab.example.com/group/app.git"


# -- what ldflags templates are filled in with ------------------------------------------


def test_ldflags_values_are_the_commit_its_short_form_the_exact_tag_and_the_commit_time(tmp_path: Path) -> None:
    root = repo(tmp_path)
    full, short = git(root, "rev-parse", "HEAD"), git(root, "rev-parse", "--short", "HEAD")
    assert describe_source(root, {}).ldflags_values() == {
        "version": short,
        "commit": full,
        "short_commit": short,
        "tag": "",  # no tag at HEAD
        "date": "2026-01-02T03:04:05Z",
    }
    git(root, "tag", "v1.2.3")
    assert describe_source(root, {}).ldflags_values()["tag"] == "v1.2.3"
    assert describe_source(root, {"SOURCE_DATE_EPOCH": "86400"}).ldflags_values()["date"] == "1970-01-02T00:00:00Z"


def test_a_tag_below_head_is_no_tag(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "tag", "v1.0.0")
    (root / "more.go").write_text("package main\n")
    git_commit(root, "more")
    source = describe_source(root, {})
    assert source.tag == "" and source.version.startswith("v1.0.0-1-g")


def test_a_dirty_tree_marks_commit_short_commit_and_tag_as_git_describe_marks_the_version(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "tag", "v2.0.0")
    (root / "untracked.txt").write_text("not part of any commit\n")  # untracked: not dirty, as for git describe
    assert describe_source(root, {}).dirty is False
    (root / "main.go").write_text("package main\n\nfunc main() { println() }\n")
    source = describe_source(root, {})
    values = source.ldflags_values()
    assert source.dirty and source.version == "v2.0.0-dirty"
    assert values["commit"] == git(root, "rev-parse", "HEAD") + "-dirty"
    assert values["short_commit"] == git(root, "rev-parse", "--short", "HEAD") + "-dirty"
    assert values["tag"] == "v2.0.0-dirty"
    assert source.revision == git(root, "rev-parse", "HEAD")  # the annotations keep the clean revision


def test_outside_git_the_templates_are_empty_but_the_date(tmp_path: Path) -> None:
    values = describe_source(tmp_path, {}).ldflags_values()
    assert values == {"version": "dev", "commit": "", "short_commit": "", "tag": "", "date": "1970-01-01T00:00:00Z"}


def test_the_config_accepts_exactly_the_names_the_source_fills_in(tmp_path: Path) -> None:
    assert tuple(describe_source(tmp_path, {}).ldflags_values()) == LDFLAGS_NAMES


def test_a_declared_source_label_wins_over_the_origin_remote(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "remote", "add", "origin", "git@github.com:someone/fork.git")
    source = describe_source(root, {})
    declared = source.declared((("org.opencontainers.image.source", "https://example.com/app"), ("team", "x")))
    assert declared.url == "https://example.com/app" and declared.revision == source.revision
    assert source.declared((("team", "x"),)) == source  # no label: the origin stays
