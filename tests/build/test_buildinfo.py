"""Go's embedded build info, read from the bytes: the same modules and settings `go version -m -json` prints."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from gosmall.build.buildinfo import MAGIC, BuildInfoError, Module, parse_build_info, read_build_info
from gosmall.build.buildinfo import _decode_section as decode_section
from gosmall.build.toolchain import find_module, find_toolchain
from gosmall.images.source import read_oci_layout
from tests.conftest import BuiltProject

MODINFO = (
    "path\texample.com/app\n"
    "mod\texample.com/app\t(devel)\t\n"
    "dep\texample.com/greet\tv1.0.0\th1:HbEm9kgBUY/TEMSVPahL7k/+XoimwvXzMrLNWr+IxHg=\n"
    "dep\texample.com/dep\tv1.2.3\n"
    "=>\t../dep\t(devel)\t\n"
    "dep\texample.com/old\tv0.1.0\th1:aaaa\n"
    "=>\texample.com/fork\tv0.2.0\th1:bbbb\n"
    "build\t-buildmode=exe\n"
    'build\t-ldflags="-X main.v=a b \\"q\\" \\x41\\u00e9"\n'
    'build\t"odd=key"=v\n'
    "build\tCGO_ENABLED=0\n"
)


def test_module_lines_replacements_and_quoted_settings_parse_as_go_does() -> None:
    info = parse_build_info("go1.27.3", MODINFO)
    assert info.path == "example.com/app"
    assert info.main == Module("example.com/app", "(devel)")
    assert info.deps == (
        Module("example.com/greet", "v1.0.0", "h1:HbEm9kgBUY/TEMSVPahL7k/+XoimwvXzMrLNWr+IxHg="),
        Module("example.com/dep", "v1.2.3", "", Module("../dep", "(devel)", "")),
        Module("example.com/old", "v0.1.0", "h1:aaaa", Module("example.com/fork", "v0.2.0", "h1:bbbb")),
    )
    assert info.setting("-ldflags") == '-X main.v=a b "q" Aé'
    assert info.setting("odd=key") == "v"
    assert info.setting("CGO_ENABLED") == "0"
    assert info.setting("GOOS") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("=>\t../dep\t(devel)\t\n", "line 2: a replacement with no module on the line before"),
        ("dep\texample.com/x\n", "line 2: expected 2 or 3 columns"),
        ("mod\ta\tb\n=>\tc\td\n", "line 3: expected 3 columns for a replacement"),
        ("build\tnoequals\n", "line 2: a build setting with no '='"),
        ('build\tk="unterminated\n', "line 2: a badly quoted"),
        ('build\tk="\\q"\n', "line 2: an unknown escape"),
        ('build\tk="\\xZZ"\n', "line 2: a bad escape"),
    ],
)
def test_malformed_module_info_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(BuildInfoError, match=message):
        parse_build_info("go1.27.3", "path\tx\n" + text)


def header(flags: int = 2) -> bytes:
    return MAGIC + bytes([8, flags]) + b"\0" * 16


def test_section_decoding_finds_the_aligned_header_and_unwraps_the_sentinels() -> None:
    modinfo = b"S" * 16 + b"path\tx\nmod\tx\t(devel)\t\n" + b"E" * 16
    section = b"\0" * 16 + header() + bytes([8]) + b"go1.27.3" + bytes([len(modinfo)]) + modinfo
    info = decode_section(section)
    assert (info.go_version, info.path, info.main) == ("go1.27.3", "x", Module("x", "(devel)"))


@pytest.mark.parametrize(
    "section, message",
    [
        (b"\0" * 64, "no build info header"),
        (b"\0" * 3 + header(), "no build info header"),  # not 16-byte aligned, as Go requires
        (header(flags=0) + b"\0" * 16, "before 1.18"),
        (header() + bytes([0x80] * 11), "truncated length"),
        (header() + bytes([200]) + b"go1", "runs past its end"),
        (header() + bytes([0, 0]), "names no Go version"),
    ],
)
def test_damaged_sections_are_refused_not_misread(section: bytes, message: str) -> None:
    with pytest.raises(BuildInfoError, match=message):
        decode_section(section)


def test_files_that_are_not_go_binaries_have_no_build_info() -> None:
    assert read_build_info(b"#!/bin/sh\n") is None
    assert read_build_info(Path("/bin/true").read_bytes()) is None  # ELF, from C: no .go.buildinfo


def test_a_truncated_elf_file_is_a_build_info_error_or_nothing() -> None:
    data = Path("/bin/true").read_bytes()
    for cut in (20, 64, len(data) // 2):
        try:
            assert read_build_info(data[:cut]) is None
        except BuildInfoError:
            pass
    # A 64-bit ELF header whose section table lies past the end of the file.
    bogus = bytearray(data[:64])
    struct.pack_into("<Q", bogus, 0x28, 10**9)
    with pytest.raises(BuildInfoError, match="unreadable ELF file"):
        read_build_info(bytes(bogus))


def go_version_m(binary: Path, go: Path) -> dict:
    done = subprocess.run([str(go), "version", "-m", "-json", str(binary)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def as_go_json(info_module: Module) -> dict:
    """A Module the way `go version -m -json` prints it (empty fields left out)."""
    out: dict = {"Path": info_module.path, "Version": info_module.version}
    if info_module.sum:
        out["Sum"] = info_module.sum
    if info_module.replace is not None:
        out["Replace"] = as_go_json(info_module.replace)
    return out


def layer_binary(layout: Path, platform: str, path: str) -> bytes:
    for platform_image in read_oci_layout(layout).manifests:
        if str(platform_image.platform) == platform:
            with tarfile.open(fileobj=io.BytesIO(platform_image.layers[0].tar)) as tar:
                member = tar.extractfile(path)
                assert member is not None
                return member.read()
    raise AssertionError(f"no {platform} in {layout}")


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_read_from_a_stripped_gosmall_binary_it_is_what_go_version_m_says(built_hello: BuiltProject, platform: str, tmp_path: Path) -> None:
    binary = tmp_path / "go_app"
    binary.write_bytes(layer_binary(built_hello.output / "oci", platform, "go_app"))
    info = read_build_info(binary.read_bytes())
    assert info is not None
    go = find_toolchain(find_module(built_hello.root / "go_app")).go
    expected = go_version_m(binary, go)
    assert info.go_version == expected["GoVersion"] and info.path == expected["Path"]
    assert as_go_json(info.main) == expected["Main"]
    assert [as_go_json(d) for d in info.deps] == expected.get("Deps", [])
    assert [{"Key": k, "Value": v} for k, v in info.settings] == expected["Settings"]
    assert info.setting("GOARCH") == platform.split("/")[1] and info.setting("-trimpath") == "true"
