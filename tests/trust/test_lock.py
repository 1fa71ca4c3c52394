"""gosmall.lock: lock, verify-lock and build-small's warning, through the console script on real builds."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from gosmall.errors import GosmallError
from gosmall.trust.lock import Difference, ImageLock, Lock, compare, likely_causes, read_lock
from tests.conftest import git_commit, gosmall, make_project

NO_EPOCH = {"SOURCE_DATE_EPOCH": ""}


def clone(source: Path, target: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(source), str(target)], check=True)
    return target


def locked_project(directory: Path) -> Path:
    """The sample project with gosmall.lock made and committed, as a user would."""
    root = make_project(directory)
    done = gosmall("lock", cwd=root, env=NO_EPOCH)
    assert done.returncode == 0, done.stderr
    git_commit(root, "lock")
    return root


def test_lock_then_verify_lock_exits_0_on_a_clean_clone(tmp_path: Path) -> None:
    root = clone(locked_project(tmp_path / "origin"), tmp_path / "clone")
    done = gosmall("verify-lock", cwd=root, env=NO_EPOCH)
    assert done.returncode == 0, done.stderr
    lock = read_lock(root / "gosmall.lock")
    assert lock is not None
    assert f"gosmall.lock matches a clean rebuild of {lock.revision[:12]}: hello" in done.stderr
    # The lock's commit is the one before it: HEAD only adds gosmall.lock.
    assert lock.revision == subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=root, capture_output=True, text=True).stdout.strip()
    assert "differs from the lock's revision" in done.stderr and "only in gosmall.lock" in done.stderr


def test_the_lock_records_what_build_small_builds_in_a_commit_friendly_form(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert gosmall("lock", cwd=root, env=NO_EPOCH).returncode == 0
    text = (root / "gosmall.lock").read_text()
    document = json.loads(text)
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert gosmall("build-small", cwd=root, env=NO_EPOCH).returncode == 0
    report = json.loads((root / "dist" / "hello" / "report.json").read_text())
    assert document["revision"] == report["source"]["revision"]
    assert document["source_date_epoch"] == report["source"]["source_date_epoch"] == 1767323045  # the commit's time
    assert document["go"] == report["builder"]["go"] and document["go"].startswith("go1.")
    assert document["compressor"] == report["builder"]["compressor"] == {"name": "deflate", "version": "0.8.1", "level": 6}
    image = document["images"]["hello"]
    assert image["digest"] == report["digest"]
    assert image["media_type"] == report["media_type"] == "application/vnd.oci.image.index.v1+json"  # issue 18: which format
    assert sorted(image["platforms"]) == ["linux/amd64", "linux/arm64"]
    for platform, entry in image["platforms"].items():
        assert entry == {f: report["platforms"][platform][f] for f in ("manifest_digest", "config_digest", "layer_digest", "diff_id")}


def test_the_lock_is_byte_identical_across_two_clones_and_on_its_own_commit(tmp_path: Path) -> None:
    origin = make_project(tmp_path / "origin")
    locks = []
    for name in ("a", "b"):
        root = clone(origin, tmp_path / name)
        done = gosmall("lock", cwd=root, env=NO_EPOCH)
        assert done.returncode == 0, done.stderr
        locks.append((root / "gosmall.lock").read_bytes())
    assert locks[0] == locks[1]
    # Committing it and locking again describes the same commit, so the file does not change.
    root = tmp_path / "a"
    git_commit(root, "lock")
    assert gosmall("lock", cwd=root, env=NO_EPOCH).returncode == 0
    assert (root / "gosmall.lock").read_bytes() == locks[0]


def test_a_committed_one_line_source_change_makes_verify_lock_exit_1_naming_image_and_cause(tmp_path: Path) -> None:
    root = locked_project(tmp_path / "p")
    main = root / "go_app" / "main.go"
    main.write_text(main.read_text() + "// one more line\n")
    git_commit(root, "change")
    done = gosmall("verify-lock", cwd=root, env=NO_EPOCH)
    assert done.returncode == 1, done.stderr
    assert "gosmall.lock does not match a clean rebuild of" in done.stderr
    assert "- image 'hello', linux/amd64: manifest_digest, config_digest, layer_digest, diff_id differ" in done.stderr
    assert "- image 'hello', linux/arm64:" in done.stderr
    assert "likely cause: source changed since the lock's revision" in done.stderr
    assert ": go_app/main.go" in done.stderr
    assert "config changed" not in done.stderr and "Go version" not in done.stderr


def test_a_committed_config_change_is_named_as_one(tmp_path: Path) -> None:
    root = locked_project(tmp_path / "p")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('TZ_NAME = "Europe/Berlin"', 'TZ_NAME = "Europe/Paris"'))
    git_commit(root, "config")
    done = gosmall("verify-lock", "--image", "hello", cwd=root, env=NO_EPOCH)
    assert done.returncode == 1, done.stderr
    assert "config changed: the settings of image 'hello' in [tool.gosmall]" in done.stderr
    assert "source changed since the lock's revision" in done.stderr and "(now " in done.stderr and "): pyproject.toml\n" in done.stderr


def test_uncommitted_changes_never_leak_into_lock_or_verify_lock(tmp_path: Path) -> None:
    root = locked_project(tmp_path / "p")
    before = (root / "gosmall.lock").read_bytes()
    (root / "go_app" / "main.go").write_text("package main\n\nfunc main() { this does not compile }\n")
    done = gosmall("verify-lock", cwd=root, env=NO_EPOCH)
    assert done.returncode == 0, done.stderr
    done = gosmall("lock", cwd=root, env=NO_EPOCH)
    assert done.returncode == 0, done.stderr
    assert "uncommitted changes are not in the lock" in done.stderr and "go_app/main.go" in done.stderr
    assert (root / "gosmall.lock").read_bytes() == before


def test_build_small_warns_when_it_differs_from_the_lock_of_the_same_revision(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert gosmall("lock", cwd=root, env=NO_EPOCH).returncode == 0
    same = gosmall("build-small", cwd=root, env=NO_EPOCH)
    assert same.returncode == 0, same.stderr
    assert "differs from" not in same.stderr
    other = gosmall("build-small", cwd=root, env={"SOURCE_DATE_EPOCH": "86400"})
    assert other.returncode == 0, other.stderr  # a warning, not a failure
    assert "differs from" in other.stderr and "gosmall.lock" in other.stderr
    assert "- image 'hello', linux/amd64:" in other.stderr
    assert "likely cause: SOURCE_DATE_EPOCH: the lock has 1767323045, this build 86400" in other.stderr


def test_verify_lock_without_a_lock_or_outside_git_could_not_run(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    done = gosmall("verify-lock", cwd=root)
    assert done.returncode == 2
    assert f"There is no {root / 'gosmall.lock'}; write one with `gosmall lock`" in done.stderr
    loose = make_project(tmp_path / "loose", git=False)
    done = gosmall("lock", cwd=loose)
    assert done.returncode == 2
    assert "git could not find the git repository" in done.stderr and "must be in a git repository" in done.stderr
    assert not (loose / "gosmall.lock").exists()


def test_verify_lock_of_an_unknown_image_could_not_run(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert gosmall("lock", cwd=root, env=NO_EPOCH).returncode == 0
    done = gosmall("verify-lock", "--image", "helo", cwd=root)
    assert done.returncode == 2
    assert "there is no image 'helo'" in done.stderr and "Did you mean 'hello'?" in done.stderr


def test_a_damaged_lock_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "gosmall.lock").write_text('{"format": 1, "images": {}}\n')
    with pytest.raises(GosmallError, match=r"is not a gosmall.lock this gosmall can read \(KeyError: 'revision'\); write a new one"):
        read_lock(tmp_path / "gosmall.lock")


# -- the likely cause, from the recorded inputs ------------------------------------------------

DIGESTS = tuple((f, f"sha256:{c * 64}") for f, c in zip(("manifest_digest", "config_digest", "layer_digest", "diff_id"), "abcd"))
LOCK = Lock(
    revision="1" * 40,
    source_date_epoch=1767323045,
    go="go1.27.3",
    compressor=(("level", 6), ("name", "deflate"), ("version", "0.8.1")),
    gosmall="0.1.0",
    images=(("hello", ImageLock("sha256:" + "e" * 64, "sha256:" + "f" * 64, (("linux/amd64", DIGESTS),))),),
)


def rebuilt(layer: str = "c", diff_id: str = "d", **changes: object) -> Lock:
    digests = (DIGESTS[0], DIGESTS[1], ("layer_digest", f"sha256:{layer * 64}"), ("diff_id", f"sha256:{diff_id * 64}"))
    return replace(LOCK, images=(("hello", replace(LOCK.images[0][1], platforms=(("linux/amd64", digests),))),), **changes)  # type: ignore[arg-type]


def test_equal_inputs_and_digests_are_no_difference() -> None:
    assert compare(LOCK, rebuilt()) == ()


def test_another_go_or_compressor_is_named_as_the_cause() -> None:
    built = rebuilt(layer="9", diff_id="8", go="go1.27.2", compressor=(("level", 6), ("name", "deflate"), ("version", "0.9.0")))
    differences = compare(LOCK, built)
    assert [d.what for d in differences] == ["layer_digest, diff_id differ"]
    causes = likely_causes(LOCK, built, [], ["hello"], differences)
    assert causes == (
        "Go version: the lock was made with go1.27.3, this build used go1.27.2 (go_version in [tool.gosmall] holds it)",
        "compressor version: the lock has deflate 0.8.1 level 6, this build used deflate 0.9.0 level 6 (install gosmall's pin)",
    )


def test_the_same_layer_contents_compressed_otherwise_points_at_the_machine() -> None:
    built = rebuilt(layer="9")
    differences = compare(LOCK, built)
    assert differences == (
        Difference("hello", "linux/amd64", "layer_digest differ", (("layer_digest", f"sha256:{'c' * 64}", f"sha256:{'9' * 64}"),)),
    )
    (cause,) = likely_causes(LOCK, built, [], ["hello"], differences)
    assert cause.startswith("the same layer contents (diff_id) compressed to other bytes (linux/amd64) with the same compressor")


def test_nothing_recorded_changed_says_so() -> None:
    built = rebuilt(diff_id="7")
    (cause,) = likely_causes(LOCK, built, [], ["hello"], compare(LOCK, built))
    assert cause.startswith("none of the recorded inputs changed")


def test_images_added_or_removed_since_the_lock_are_differences() -> None:
    built = replace(LOCK, images=(("web", LOCK.images[0][1]),))
    assert compare(LOCK, built) == (
        Difference("hello", "", "is in gosmall.lock but is no longer configured"),
        Difference("web", "", "is not in gosmall.lock"),
    )
