"""Stage 3: a binary is held to the image's promises by its ELF headers: machine, stripped, static."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gosmall.build.compile import Binary, compile_binary, host_platform, plan_compile
from gosmall.build.prove import prove_binary, read_elf
from gosmall.build.toolchain import Toolchain, find_module, find_toolchain
from gosmall.config import parse_project
from gosmall.errors import GosmallError
from gosmall.images.model import Platform

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
C_HELLO = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


@pytest.fixture(scope="module")
def go_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prove-src")
    (root / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (root / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n')
    return root


@pytest.fixture(scope="module")
def toolchain(go_src: Path) -> Toolchain:
    return find_toolchain(find_module(go_src))


def gosmall_binary(go_src: Path, toolchain: Toolchain, platform: Platform, work: Path) -> Binary:
    image = parse_project({"images": {"app": {"package": "."}}}, go_src / "pyproject.toml").images[0]
    return compile_binary(plan_compile(image, find_module(go_src), platform, "dev"), toolchain, work)


def gcc(source: str, output: Path, *flags: str) -> Path:
    c_file = output.with_suffix(".c")
    c_file.write_text(source)
    subprocess.run(["gcc", *flags, "-o", str(output), str(c_file)], check=True, capture_output=True)
    return output


def as_binary(path: Path, platform: Platform, *, cgo: bool = False) -> Binary:
    return Binary(path, path.name, platform, path.stat().st_size, cgo)


def test_a_gosmall_compiled_binary_passes(go_src: Path, toolchain: Toolchain, tmp_path: Path) -> None:
    binary = gosmall_binary(go_src, toolchain, AMD64, tmp_path)
    facts = prove_binary(binary)
    assert (facts.machine, facts.elf_class) == ("EM_X86_64", 64)
    assert facts.static and facts.interpreter is None and facts.needed == ()
    assert ".symtab" not in facts.section_names and facts.debug_sections == ()


def test_an_unstripped_go_binary_is_rejected_naming_symtab(go_src: Path, toolchain: Toolchain, tmp_path: Path) -> None:
    module = find_module(go_src)
    output = tmp_path / "hello"
    env = toolchain.env(module, {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64"})
    done = subprocess.run([str(toolchain.go), "build", "-o", str(output), "."], cwd=go_src, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(GosmallError) as caught:
        prove_binary(as_binary(output, AMD64))
    message = caught.value.message
    assert f"{output} (linux/amd64) still has" in message
    assert ".symtab" in message and ".debug_" in message
    assert "it is not stripped" in message and "-s -w" in message


@needs_gcc
@pytest.mark.skipif(host_platform() != AMD64, reason="the gcc binary must be linux/amd64")
def test_a_dynamic_c_binary_without_cgo_is_rejected_naming_the_interpreter(tmp_path: Path) -> None:
    binary = gcc(C_HELLO, tmp_path / "hello", "-s")  # stripped, so only linking is wrong
    facts = read_elf(binary)
    assert facts.interpreter
    with pytest.raises(GosmallError) as caught:
        prove_binary(as_binary(binary, AMD64, cgo=False))
    message = caught.value.message
    assert f"is dynamically linked (interpreter {facts.interpreter}) although cgo = false" in message
    assert "cannot run on scratch" in message and "set cgo = true" in message


@needs_gcc
@pytest.mark.skipif(host_platform() != AMD64, reason="the gcc binary must be linux/amd64")
def test_a_dynamic_c_binary_with_cgo_passes_and_lists_its_needs(tmp_path: Path) -> None:
    binary = gcc(C_HELLO, tmp_path / "hello", "-s")
    facts = prove_binary(as_binary(binary, AMD64, cgo=True))
    assert not facts.static
    assert "libc.so.6" in facts.needed


@needs_gcc
@pytest.mark.skipif(host_platform() != AMD64, reason="the gcc binary must be linux/amd64")
def test_an_unstripped_c_binary_is_rejected_even_with_cgo(tmp_path: Path) -> None:
    binary = gcc(C_HELLO, tmp_path / "hello", "-g")
    with pytest.raises(GosmallError, match=r"still has .*\.symtab.*it is not stripped"):
        prove_binary(as_binary(binary, AMD64, cgo=True))


def test_a_binary_for_the_wrong_machine_is_rejected(go_src: Path, toolchain: Toolchain, tmp_path: Path) -> None:
    arm64 = gosmall_binary(go_src, toolchain, ARM64, tmp_path)
    with pytest.raises(GosmallError) as caught:
        prove_binary(as_binary(arm64.path, AMD64))
    assert caught.value.message == (f"{arm64.path} is a 64-bit EM_AARCH64 binary, but platform linux/amd64 needs 64-bit EM_X86_64.")


def test_a_file_that_is_not_elf_gives_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "hello"
    script.write_text("#!/bin/sh\necho hello\n")
    with pytest.raises(GosmallError) as caught:
        prove_binary(as_binary(script, AMD64))
    message = caught.value.message
    assert message.startswith(f"{script} is not a readable ELF binary")
    assert "the Go build did not produce a Linux executable" in message


def test_a_missing_file_gives_the_same_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GosmallError, match="is not a readable ELF binary"):
        read_elf(tmp_path / "gone")
