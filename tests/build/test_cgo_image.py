"""End to end, the dynamic path: a cgo program on scratch with exactly the libraries it needs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, git_commit, gosmall

pytestmark = pytest.mark.slow

FIXTURE = REPO / "tests" / "fixtures" / "cgo_app"


@pytest.fixture(scope="module")
def cgo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cgo") / "project"
    shutil.copytree(FIXTURE, root / "cgo_app")
    (root / "pyproject.toml").write_text('[tool.gosmall.images.cgo]\npackage = "./cgo_app"\nrepository = "gosmall.test/cgo"\ncgo = true\n')
    git_commit(root)
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "shared libraries" in done.stdout and "links glibc" in done.stderr
    return root


def report(root: Path) -> dict:
    return json.loads((root / "dist" / "cgo" / "report.json").read_text())


def test_collected_libraries_are_what_ldd_sees(cgo_project: Path, tmp_path: Path) -> None:
    libraries = report(cgo_project)["platforms"]["linux/amd64"]["libraries"]
    files = {e["path"] for e in libraries if e["kind"] == "file"}
    # ldd only as a cross-check, on a binary built the same way on this host.
    binary = tmp_path / "cgo_app"
    build = subprocess.run(
        [shutil.which("go") or str(Path(__import__("go").__file__).parent / "bin" / "go"), "build", "-o", str(binary), "."],
        cwd=cgo_project / "cgo_app",
        env={**os.environ, "CGO_ENABLED": "1", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly",
             "GOROOT": str(Path(__import__("go").__file__).parent)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    seen_by_ldd = {os.path.realpath(p) for p in re.findall(r"(/\S+) \(0x", ldd)}
    real_files = {os.path.realpath(p) for p in files if p != "/etc/nsswitch.conf"}
    nss = {os.path.realpath(e["path"]) for e in libraries if e["reason"] == "nss" and e["kind"] == "file" and e["path"].endswith(".so.2")}
    assert seen_by_ldd and real_files == seen_by_ldd | nss
    assert {"/etc/nsswitch.conf"} <= files
    for entry in libraries:
        assert entry["needed_by"], entry


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs the dpkg database of a Debian machine")
def test_the_sbom_names_each_library_by_the_debian_package_that_installed_it(cgo_project: Path) -> None:
    document = json.loads((cgo_project / "dist" / "cgo" / "sbom.spdx.json").read_text())
    elements = {e["SPDXID"]: e for e in (*document["packages"], *document["files"])}
    origin = {
        elements[r["spdxElementId"]]["fileName"][1:]: elements[r["relatedSpdxElement"]]
        for r in document["relationships"]
        if r["relationshipType"] == "GENERATED_FROM" and r["spdxElementId"].startswith("SPDXRef-File-")
    }
    files = [e["path"] for e in report(cgo_project)["platforms"]["linux/amd64"]["libraries"] if e["kind"] == "file"]
    for path in files:
        if path == "/etc/nsswitch.conf":
            assert path not in origin  # gosmall wrote it; no package did
            continue
        package = origin[path]
        # Debian 12 lists libc under /lib, later releases under /usr/lib: ask for both, as the SBOM does.
        asked = subprocess.run(["dpkg-query", "-S", path, path.removeprefix("/usr")], capture_output=True, text=True)
        owner = asked.stdout.split(":")[0]
        shown = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Architecture} ${Version}", owner], capture_output=True, text=True)
        name, arch, version = shown.stdout.split(" ")
        assert (package["name"], package["versionInfo"]) == (name, version), path
        locator = package["externalRefs"][0]["referenceLocator"]
        assert locator == f"pkg:deb/debian/{name}@{version.replace('+', '%2B')}?arch={arch}"
    assert origin[next(p for p in files if p.endswith("/libc.so.6"))]["name"] == "libc6"


@pytest.mark.docker
def test_cgo_image_runs_on_scratch_as_nonroot(cgo_project: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    with (cgo_project / "dist" / "cgo" / "image.tar").open("rb") as archive:
        (image,) = docker_client.images.load(archive.read())
    try:
        assert image.id == report(cgo_project)["platforms"]["linux/amd64"]["config_digest"]
        output = docker_client.containers.run(
            image.id, network_mode="none", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], remove=True
        ).decode()
        assert "cos(0) = 1.0" in output
        assert "strlen(gosmall) = 7" in output
        assert "uid 65532 = nonroot" in output  # glibc's NSS read the image's /etc/passwd
        assert "current uid = 65532" in output
    finally:
        docker_client.images.remove(image.id, force=True)


def cgo_project_with(tmp_path: Path, table: str) -> Path:
    root = tmp_path / "p"
    shutil.copytree(FIXTURE, root / "cgo_app")
    (root / "pyproject.toml").write_text('[tool.gosmall.images.cgo]\npackage = "./cgo_app"\n' + table)
    return root


def test_a_missing_library_names_it_and_the_binary(tmp_path: Path) -> None:
    root = cgo_project_with(tmp_path, 'cgo = true\nlibs = ["libdoesnotexist.so.9"]\n')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2
    assert "libdoesnotexist.so.9" in done.stderr and "Traceback" not in done.stderr
    assert not (root / "dist" / "cgo").exists()


def test_cross_cgo_without_a_cross_compiler_says_what_it_needs(tmp_path: Path) -> None:
    root = cgo_project_with(tmp_path, 'cgo = true\nplatforms = ["linux/amd64", "linux/arm64"]\n')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2
    assert "platform linux/arm64" in done.stderr and "aarch64-linux-gnu-gcc" in done.stderr
    assert 'cc = { "linux/arm64" = "<compiler>" }' in done.stderr


def test_a_package_that_imports_c_is_built_with_cgo_even_unasked(tmp_path: Path) -> None:
    root = cgo_project_with(tmp_path, "")
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    libraries = report(root)["platforms"]["linux/amd64"]["libraries"]
    assert any(e["path"].endswith("libm.so.6") for e in libraries)


CROSS_CC = "aarch64-linux-gnu-gcc"
ARM64_SYSROOT = Path("/usr/aarch64-linux-gnu")


def _cross_tools_missing() -> str:
    missing = [t for t in (CROSS_CC, "qemu-aarch64") if shutil.which(t) is None]
    if not (ARM64_SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        missing.append(f"{ARM64_SYSROOT} (libc6-dev-arm64-cross)")
    return ", ".join(missing)


def test_cross_cgo_with_a_sysroot_ships_that_platforms_libraries_and_runs_from_them(tmp_path: Path) -> None:
    """Found: cross cgo with cc compiled, then failed asking for a `root` key that did not exist."""
    missing = _cross_tools_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user; missing: {missing}")
        pytest.skip(f"needs {missing}")
    root = cgo_project_with(
        tmp_path,
        f'cgo = true\nplatforms = ["linux/arm64"]\ncc = {{ "linux/arm64" = "{CROSS_CC}" }}\n'
        f'sysroot = {{ "linux/arm64" = "{ARM64_SYSROOT}" }}\n',
    )
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    libraries = {entry["path"] for entry in report(root)["platforms"]["linux/arm64"]["libraries"]}
    assert {"/lib/ld-linux-aarch64.so.1", "/lib/libc.so.6", "/lib/libm.so.6", "/lib/libnss_files.so.2"} <= libraries
    # The image's own files are the only root the program gets: the loader, libc and NSS come from the layer.
    layout = root / "dist" / "cgo" / "oci"
    blobs = layout / "blobs" / "sha256"
    top = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((blobs / top).read_text())
    unpacked = tmp_path / "rootfs"
    with tarfile.open(blobs / manifest["layers"][0]["digest"].split(":")[1]) as layer:
        layer.extractall(unpacked, filter="tar")
    ran = subprocess.run(["qemu-aarch64", "-L", str(unpacked), str(unpacked / "cgo_app")], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "cos(0) = 1.0" in ran.stdout and "uid 65532 = nonroot" in ran.stdout


def test_the_cgo_images_history_says_dynamic_and_counts_its_libraries(cgo_project: Path) -> None:
    # Found: `docker history` said "static cgomath" for a dynamic binary shipped with glibc.
    layout = cgo_project / "dist" / "cgo" / "oci"
    blobs = layout / "blobs" / "sha256"
    top = json.loads((blobs / json.loads((layout / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / top["config"]["digest"].split(":")[1]).read_text())
    shipped = [
        e
        for e in report(cgo_project)["platforms"][report(cgo_project)["docker_platform"]]["libraries"]
        if e["kind"] == "file" and ".so" in e["path"]
    ]
    (entry,) = config["history"]
    assert (
        entry["created_by"]
        == f"gosmall: dynamic (cgo) cgo_app, the {len(shipped)} shared libraries it links, and its runtime files on scratch"
    )
