"""The one ELF reader and the one machine table: what every stage reads from an ELF file, checked against real files."""

from __future__ import annotations

import io
import os
import platform as host
import shutil
import subprocess
from pathlib import Path

import pytest

from gosmall.build.compile import compile_binary, host_platform, plan_compile
from gosmall.build.toolchain import find_module, find_toolchain
from gosmall.config import SUPPORTED_PLATFORMS, parse_project
from gosmall.elf import (
    MACHINES,
    ElfError,
    NotElfError,
    machine_for_platform,
    machine_for_uname,
    multiarch_triplet,
    read_elf_bytes,
    read_elf_file,
    read_elf_ident,
    read_go_function_table,
    read_go_functions,
    read_section,
)
from gosmall.images.model import Platform

ELF_SOURCES = Path(__file__).resolve().parent / "fixtures" / "elf"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
on_amd64 = pytest.mark.skipif(host_platform() != Platform.parse("linux/amd64"), reason="gcc here must build linux/amd64")


def gcc(out: Path, source: str, *flags: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-o", str(out), str(ELF_SOURCES / source), *flags], check=True, capture_output=True, text=True)
    return out


def test_config_accepts_exactly_the_platforms_of_the_machine_table() -> None:
    assert SUPPORTED_PLATFORMS == tuple(str(m.platform) for m in MACHINES)
    assert len(set(SUPPORTED_PLATFORMS)) == len(MACHINES)
    for machine in MACHINES:
        assert machine_for_platform(machine.platform) == machine
        for name in machine.uname:
            assert machine_for_uname(name) == machine


def test_arm_without_a_variant_is_v7_and_unknown_platforms_have_no_row() -> None:
    assert machine_for_platform(Platform.parse("linux/arm")) == machine_for_platform(Platform.parse("linux/arm/v7"))
    assert machine_for_platform(Platform.parse("linux/mips64le")) is None
    assert machine_for_uname("sparc64") is None


def test_this_machine_is_in_the_table() -> None:
    machine = machine_for_uname(host.machine())
    assert machine is not None and host_platform() == machine.platform


@pytest.mark.slow
@pytest.mark.parametrize("platform", SUPPORTED_PLATFORMS)
def test_go_builds_each_platform_for_the_machine_its_row_names(platform: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    source = tmp_path_factory.mktemp("elf-src")
    (source / "go.mod").write_text("module example.com/m\n\ngo 1.22\n")
    (source / "main.go").write_text("package main\n\nfunc main() {}\n")
    config = parse_project({"images": {"m": {"package": ".", "platforms": [platform]}}}, source / "pyproject.toml").images[0]
    module = find_module(source)
    binary = compile_binary(plan_compile(config, module, Platform.parse(platform), "dev"), find_toolchain(module), source)

    facts = read_elf_file(binary.path)
    machine = machine_for_platform(Platform.parse(platform))
    assert machine is not None and facts.ident.fits(machine)
    assert facts.static and facts.debug_sections == ()
    # Go's linker names no float ABI for arm, so both arm rows read as the armhf directory, as ld.so would search.
    assert multiarch_triplet(facts.ident) == (machine.triplet if platform != "linux/arm/v6" else "arm-linux-gnueabihf")


@needs_gcc
@on_amd64
def test_a_dynamic_binary_and_a_library_give_every_fact_the_resolver_needs(tmp_path: Path) -> None:
    library = gcc(
        tmp_path / "libgreet.so.1", "greet.c", "-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libgreet.so.1", "-Wl,-z,nodefaultlib"
    )
    binary = gcc(
        tmp_path / "app",
        "greet_main.c",
        f"-L{tmp_path}",
        "-l:libgreet.so.1",
        "-Wl,--no-as-needed",
        "-Wl,--enable-new-dtags",
        "-Wl,-rpath,$ORIGIN/../lib",
    )

    app = read_elf_file(binary)
    assert app.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert app.needed[0] == "libgreet.so.1" and "libc.so.6" in app.needed
    assert (app.runpath, app.rpath, app.soname) == ("$ORIGIN/../lib", None, None)
    assert (app.machine, app.elf_class) == ("EM_X86_64", 64) and not app.static
    assert ".symtab" in app.debug_sections  # gcc without -s keeps it

    greet = read_elf_file(library)
    assert (greet.soname, greet.interpreter, greet.needed) == ("libgreet.so.1", None, ())
    assert greet.nodeflib and not app.nodeflib

    # One reader, whether the bytes are a file on disk or a file inside an image.
    assert read_elf_bytes(binary.read_bytes()) == app


@needs_gcc
def test_rpath_without_runpath_is_read_as_rpath(tmp_path: Path) -> None:
    binary = gcc(tmp_path / "app", "static_main.c", "-Wl,--disable-new-dtags", "-Wl,-rpath,/opt/lib")
    facts = read_elf_file(binary)
    assert (facts.rpath, facts.runpath) == ("/opt/lib", None)


def test_not_elf_and_missing_files_are_told_apart(tmp_path: Path) -> None:
    script = tmp_path / "run"
    script.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(NotElfError):
        read_elf_file(script)
    with pytest.raises(ElfError) as missing:
        read_elf_file(tmp_path / "gone")
    assert not isinstance(missing.value, NotElfError)
    assert read_elf_ident(script) is None and read_elf_ident(tmp_path / "gone") is None


@needs_gcc
def test_every_truncation_of_a_real_binary_is_an_elf_error_or_facts(tmp_path: Path) -> None:
    data = gcc(tmp_path / "app", "static_main.c").read_bytes()
    for length in (*range(0, 128, 4), *range(128, len(data), max(1, len(data) // 97))):
        try:
            read_elf_bytes(data[:length])
        except ElfError:
            pass


# --- Go's function table: linked and inlined functions of a stripped binary -----------------------------------


def _go_program(tmp_path: Path) -> tuple[Path, Path, str]:
    """The vulns tests' vendored program, linked stripped (-s -w, as gosmall builds) and unstripped; and `go`."""
    from tests.trust.test_vulns import write_program

    write_program(tmp_path / "src")
    go = str(find_toolchain(find_module(Path(__file__).resolve().parents[1] / "go_app")).go)
    env = {**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "GOFLAGS": ""}
    for name, flags in (("stripped", ["-ldflags=-s -w"]), ("full", [])):
        subprocess.run([go, "build", "-trimpath", *flags, "-o", str(tmp_path / name), "."], cwd=tmp_path / "src", env=env, check=True)
    return tmp_path / "stripped", tmp_path / "full", go


def test_a_function_inlined_at_its_only_call_site_is_read_from_the_inline_trees_of_a_stripped_binary(tmp_path: Path) -> None:
    stripped, full, go = _go_program(tmp_path)
    nm = subprocess.run([go, "tool", "nm", str(full)], capture_output=True, text=True, check=True).stdout
    symbols = {line.split(None, 2)[2] for line in nm.splitlines() if len(line.split(None, 2)) == 3}
    # The compiler inlined lib.Tiny: it has no symbol of its own, and the linker dropped lib.Dropped.
    assert "example.com/lib.Called" in symbols and "example.com/lib.Tiny" not in symbols and "example.com/lib.Dropped" not in symbols
    with stripped.open("rb") as stream:
        functions = read_go_functions(stream)
    assert functions.inline_trees  # runtime.firstmoduledata was found without a symbol table
    assert "example.com/lib.Tiny" in functions.inlined and "example.com/lib.Tiny" not in functions.linked
    assert "example.com/lib.Dropped" not in functions.all
    # The linked functions are the ones the symbol table names (Go's code, not assembly's ABI wrappers).
    text = {line.split(None, 2)[2] for line in nm.splitlines() if line.split()[1:2] == ["T"]}
    ours = ("example.com/", "main.")
    assert {n for n in functions.linked if n.startswith(ours)} == {n for n in text if n.startswith(ours)}
    # -s -w drop the symbol table, not the pclntab: the unstripped binary has the same functions and inline trees.
    with full.open("rb") as stream:
        assert read_go_functions(stream) == functions
    # Asked one name at a time (reading only the trees a name can be in), the same answers as walking them all.
    with stripped.open("rb") as stream:
        table = read_go_function_table(stream)
        assert table.linked == functions.linked and table.names == functions.all
        assert {name for name in table.names if table.is_inlined(name)} == functions.inlined


def test_a_damaged_or_missing_pclntab_is_an_elf_error(tmp_path: Path) -> None:
    stripped, _, _ = _go_program(tmp_path)
    data = bytearray(stripped.read_bytes())
    at = data.find(b"\xf1\xff\xff\xff\x00\x00")  # the pclntab header's magic, then its two zero pads
    data[at : at + 4] = b"\0\0\0\0"
    with pytest.raises(ElfError, match="not one of Go 1.18 or later"):
        read_go_functions(io.BytesIO(bytes(data)))
    with pytest.raises(NotElfError):
        read_go_functions(io.BytesIO(b"#!/bin/sh\n" + bytes(64)))
    if shutil.which("gcc"):
        with pytest.raises(ElfError, match="no .gopclntab"), gcc(tmp_path / "c", "static_main.c").open("rb") as stream:
            read_go_functions(stream)


def test_sections_are_read_as_pyelftools_reads_them_and_a_damaged_table_is_an_elf_error(tmp_path: Path) -> None:
    # gosmall reads the section table itself (pyelftools' import alone costs `vulns` more than a binary's functions):
    # every section of 64- and 32-bit, little- and big-endian Go binaries reads as pyelftools reads it.
    from elftools.elf.elffile import ELFFile

    stripped, _, go = _go_program(tmp_path)
    binaries = [stripped]
    for goarch in ("arm", "mips"):
        out = tmp_path / goarch
        env = {**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": goarch, "GOFLAGS": ""}
        subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."], cwd=tmp_path / "src", env=env, check=True)
        binaries.append(out)
    for binary in binaries:
        data = binary.read_bytes()
        sections = list(ELFFile(io.BytesIO(data)).iter_sections())
        assert len(sections) > 10
        for section in sections:
            expected = None if section["sh_type"] == "SHT_NOBITS" else section.data()
            assert read_section(data, section.name) == expected, (binary.name, section.name)
        assert read_go_function_table(io.BytesIO(data)).linked
    # A section count past the file, a name table index past the sections, a table past the end: each an ElfError.
    data = bytearray(stripped.read_bytes())
    for at, value in ((0x3C, 0xFF00), (0x3E, 0xFEFF)):
        damaged = bytearray(data)
        damaged[at : at + 2] = value.to_bytes(2, "little")
        with pytest.raises(ElfError):
            read_section(bytes(damaged), ".go.buildinfo")
    damaged = bytearray(data)
    damaged[0x28:0x30] = (len(data) - 10).to_bytes(8, "little")
    with pytest.raises(ElfError):
        read_go_function_table(io.BytesIO(bytes(damaged)))
    for length in range(0, 4096, 61):  # the headers cut short anywhere
        with pytest.raises(ElfError):
            read_section(bytes(data[:length]), ".go.buildinfo")
