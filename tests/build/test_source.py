"""What the build is of: the version, revision, origin and the one clock it may use."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gosmall.build.source import describe_source
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
