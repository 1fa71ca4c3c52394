"""Runtime needs read from the function names a stripped Go binary links (its pclntab)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gosmall.build.compile import compile_binary, plan_compile
from gosmall.build.needs import go_function_names, read_needs
from gosmall.build.toolchain import find_module, find_toolchain
from gosmall.config import parse_project
from gosmall.errors import GosmallError
from gosmall.images.model import Platform
from tests.conftest import gosmall

pytestmark = pytest.mark.slow

PROGRAMS = {
    "zone": 'package main\n\nimport (\n\t"fmt"\n\t"os"\n\t"time"\n)\n\nfunc main() {\n\tl, err := time.LoadLocation(os.Args[1])\n\tfmt.Println(l, err)\n}\n',
    "server": 'package main\n\nimport "net/http"\n\nfunc main() { _ = http.ListenAndServe(":8080", nil) }\n',
    "plain": 'package main\n\nimport "os"\n\nfunc main() { os.Stdout.WriteString("hi\\n") }\n',
}


def build(tmp_path: Path, name: str, platform: str = "linux/amd64") -> Path:
    """The program built the way build-small builds it: static, -trimpath, -s -w."""
    root = tmp_path / name
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text("module example.com/needs\n\ngo 1.22\n")
    (root / "app" / "main.go").write_text(PROGRAMS[name])
    image = parse_project({"images": {"app": {"package": "app", "platforms": [platform]}}}, root / "pyproject.toml").images[0]
    module = find_module(image.package)
    plan = plan_compile(image, module, Platform.parse(platform), "dev")
    return compile_binary(plan, find_toolchain(module), tmp_path / f"work-{name}-{platform.replace('/', '_')}").path


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_a_program_that_loads_a_zone_needs_tzdata(tmp_path: Path, platform: str) -> None:
    needs = read_needs(build(tmp_path, "zone", platform))
    assert "tzdata" in needs and dict(needs.evidence)["tzdata"] == ("time.LoadLocation",)


def test_a_server_that_loads_no_zone_needs_only_ca_certs(tmp_path: Path) -> None:
    # Every net/http program links crypto/x509's system-root loader; none of them LoadLocation unasked.
    needs = read_needs(build(tmp_path, "server"))
    assert needs.names == ("ca_certs",)
    assert needs.to_json() == [{"need": "ca_certs", "because": ["crypto/x509.loadSystemRoots", "crypto/x509.initSystemRoots"]}]


def test_a_plain_program_needs_nothing(tmp_path: Path) -> None:
    binary = build(tmp_path, "plain")
    assert read_needs(binary).names == ()
    assert "main.main" in go_function_names(binary)  # the names are there; just none of the needs


def test_a_file_that_is_not_go_is_one_message(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"#!/bin/sh\n")
    with pytest.raises(GosmallError, match="cannot be read as an ELF file"):
        read_needs(tmp_path / "x")


def needs_project(tmp_path: Path, program: str, image: str) -> Path:
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/needs\n\ngo 1.22\n")
    (root / "app" / "main.go").write_text(PROGRAMS[program])
    (root / "pyproject.toml").write_text(f'[tool.gosmall.images.app]\npackage = "./app"\nplatforms = ["linux/amd64"]\n{image}\n')
    return root


def test_a_program_that_loads_zones_with_no_zone_database_is_warned(tmp_path: Path) -> None:
    # The seed story's step 2: the image had no tz database and the program "was not running as expected".
    root = needs_project(tmp_path, "zone", 'tzdata = "none"')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    assert (
        'WARNING: linux/amd64: [tool.gosmall.images.app]: the binary links time.LoadLocation, but the image has no time zone database (tzdata = "none")'
        in done.stderr
    )
    report = json.loads((root / "dist" / "app" / "report.json").read_text())
    assert report["platforms"]["linux/amd64"]["needs"] == [{"need": "tzdata", "because": ["time.LoadLocation"]}]


def test_a_server_that_never_loads_a_zone_is_told_the_database_is_dead_weight(tmp_path: Path) -> None:
    root = needs_project(tmp_path, "server", 'tzdata = "zip"')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "but the binary never links time.LoadLocation, so it can never read it" in done.stderr
    assert "the binary can load system CA roots (crypto/x509)" in done.stderr
    report = json.loads((root / "dist" / "app" / "report.json").read_text())
    assert [n["need"] for n in report["platforms"]["linux/amd64"]["needs"]] == ["ca_certs"]


def test_what_matches_its_needs_builds_quietly(tmp_path: Path) -> None:
    root = needs_project(tmp_path, "zone", 'tzdata = "zip"')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr
