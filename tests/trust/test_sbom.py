"""The SBOM: SPDX 2.3 that the SPDX project's validator accepts, true to the layer and to `go version -m`, and byte
for byte the same on every build; and its OCI 1.1 referrer in the layout."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from gosmall.build.built import Build, FileSource, PlatformFacts, read_build
from gosmall.build.toolchain import find_module, find_toolchain
from gosmall.config import load_project, parse_project
from gosmall.images.model import Platform
from gosmall.images.source import read_oci_layout
from gosmall.trust.sbom import file_sources, purl, sbom_artifact, sbom_document
from tests.conftest import REPO, BuiltProject, git_commit, gosmall
from tests.oci_schema import errors

REPLACE_APP = REPO / "tests" / "fixtures" / "replace_app"
GREET_SUM = "h1:HbEm9kgBUY/TEMSVPahL7k/+XoimwvXzMrLNWr+IxHg="  # app/go.sum's line for example.com/greet v1.0.0
REPLACE_TABLE = """[tool.gosmall.images.app]
package = "./app"
repository = "gosmall.test/replace-app"
tzdata = "zip"
zones = ["Europe/Berlin"]
ca_certs = true
"""


def pyspdxtools(path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("pyspdxtools")
    return subprocess.run([str(tool), "-i", str(path)], capture_output=True, text=True, timeout=300)


def sbom(output: Path) -> dict[str, Any]:
    return json.loads((output / "sbom.spdx.json").read_bytes())


def by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["SPDXID"]: e for e in (*document["packages"], *document["files"])}


def related(document: dict[str, Any], source: str, kind: str) -> list[dict[str, Any]]:
    elements = by_id(document)
    return [
        elements[r["relatedSpdxElement"]]
        for r in document["relationships"]
        if r["spdxElementId"] == source and r["relationshipType"] == kind
    ]


def purls(element: dict[str, Any]) -> list[str]:
    return [r["referenceLocator"] for r in element.get("externalRefs", []) if r["referenceType"] == "purl"]


def platform_package(document: dict[str, Any], platform: str) -> dict[str, Any]:
    (image,) = related(document, "SPDXRef-DOCUMENT", "DESCRIBES")
    inner = [p for p in related(document, image["SPDXID"], "CONTAINS") if p.get("name", "").endswith(f" {platform}")]
    return inner[0] if inner else image


def layer_files(output: Path, platform: str) -> dict[str, bytes]:
    for platform_image in read_oci_layout(output / "oci").manifests:
        if str(platform_image.platform) == platform:
            with tarfile.open(fileobj=io.BytesIO(platform_image.layers[0].tar)) as tar:
                return {"/" + m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    raise AssertionError(platform)


def binary_file(document: dict[str, Any], platform: str, path: str) -> dict[str, Any]:
    (found,) = [f for f in related(document, platform_package(document, platform)["SPDXID"], "CONTAINS") if f["fileName"] == "." + path]
    return found


def go_version_m(binary_bytes: bytes, root: Path, tmp_path: Path) -> dict[str, Any]:
    binary = tmp_path / "binary"
    binary.write_bytes(binary_bytes)
    go = find_toolchain(find_module(root)).go
    done = subprocess.run([str(go), "version", "-m", "-json", str(binary)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def sbom_modules(document: dict[str, Any], file_id: str) -> set[tuple[str, str]]:
    """(module path, version) of every Go module the SBOM links to a binary."""
    linked = related(document, file_id, "GENERATED_FROM") + related(document, file_id, "STATIC_LINK")
    return {(p["name"], p["versionInfo"]) for p in linked if p["SPDXID"].startswith("SPDXRef-GoModule-")}


# -- go_app, the sample project ---------------------------------------------------------


pytestmark = pytest.mark.slow


def test_the_go_app_sbom_is_valid_spdx(built_hello: BuiltProject) -> None:
    done = pyspdxtools(built_hello.output / "sbom.spdx.json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = sbom(built_hello.output)
    assert document["spdxVersion"] == "SPDX-2.3"
    assert document["creationInfo"]["created"] == "2026-01-02T03:04:05Z"  # the commit's time (SOURCE_DATE_EPOCH unset)
    assert document["documentNamespace"].endswith("/sha256-" + built_hello.report["digest"].split(":")[1])


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_the_go_app_sbom_lists_exactly_the_modules_go_version_m_lists(built_hello: BuiltProject, platform: str, tmp_path: Path) -> None:
    document = sbom(built_hello.output)
    binary = binary_file(document, platform, "/go_app")
    expected = go_version_m(layer_files(built_hello.output, platform)["/go_app"], built_hello.root / "go_app", tmp_path)
    modules = {(expected["Main"]["Path"], expected["Main"]["Version"])} | {(d["Path"], d["Version"]) for d in expected.get("Deps", [])}
    assert sbom_modules(document, binary["SPDXID"]) == modules
    (go,) = related(document, binary["SPDXID"], "STATIC_LINK")
    assert go["versionInfo"] == expected["GoVersion"] == built_hello.report["builder"]["go"]
    assert purls(go) == [f"pkg:golang/stdlib@{expected['GoVersion'].removeprefix('go')}"]
    comment = binary["comment"].splitlines()
    for setting in expected["Settings"]:
        assert f"build {setting['Key']}={setting['Value']}" in comment
    assert f"build GOARCH={platform.split('/')[1]}" in comment and "build CGO_ENABLED=0" in comment
    assert "build -tags=netgo,osusergo" in comment and "build -trimpath=true" in comment
    # Go leaves -ldflags out under -trimpath; gosmall says what it passed.
    (ldflags,) = [line for line in comment if line.startswith("build -ldflags=")]
    passed = built_hello.report["platforms"][platform]["go_build"]["ldflags"]
    assert ldflags.startswith(f"build -ldflags={passed} (as gosmall passed them")
    assert passed.startswith("-s -w ") and f"-X main.version={built_hello.report['source']['version']}" in passed


def test_the_image_and_each_platform_manifest_have_an_oci_purl(built_hello: BuiltProject) -> None:
    document = sbom(built_hello.output)
    (image,) = related(document, "SPDXRef-DOCUMENT", "DESCRIBES")
    digest = built_hello.report["digest"]
    assert image["versionInfo"] == digest
    assert purls(image) == [f"pkg:oci/hello@{digest}?repository_url=example.com%2Fhello"]
    for platform, entry in built_hello.report["platforms"].items():
        package = platform_package(document, platform)
        arch = platform.split("/")[1]
        assert purls(package) == [f"pkg:oci/hello@{entry['manifest_digest']}?arch={arch}&repository_url=example.com%2Fhello"]
        assert package["checksums"] == [{"algorithm": "SHA256", "checksumValue": entry["manifest_digest"].split(":")[1]}]


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_every_file_in_the_layer_is_listed_with_its_sha256(built_hello: BuiltProject, platform: str) -> None:
    document = sbom(built_hello.output)
    listed = {
        f["fileName"][1:]: {c["algorithm"]: c["checksumValue"] for c in f["checksums"]}
        for f in related(document, platform_package(document, platform)["SPDXID"], "CONTAINS")
    }
    files = layer_files(built_hello.output, platform)
    assert sorted(listed) == sorted(files) == ["/etc/group", "/etc/passwd", "/go_app", "/usr/share/zoneinfo.zip"]
    for path, data in files.items():
        assert listed[path] == {"SHA1": hashlib.sha1(data).hexdigest(), "SHA256": hashlib.sha256(data).hexdigest()}
    zoneinfo = binary_file(document, platform, "/usr/share/zoneinfo.zip")
    (go,) = related(document, zoneinfo["SPDXID"], "GENERATED_FROM")
    assert go["name"] == "go" and go["versionInfo"] == built_hello.report["builder"]["go"]
    assert "zoneinfo.zip" in zoneinfo["comment"] and "no version of its own" in zoneinfo["comment"]


def test_the_layout_holds_the_sbom_as_a_referrer_of_the_image(built_hello: BuiltProject) -> None:
    layout = built_hello.output / "oci"
    index = json.loads((layout / "index.json").read_text())
    assert errors("image-index-schema.json", index) == []
    image_entries = [m for m in index["manifests"] if "artifactType" not in m]
    (entry,) = [m for m in index["manifests"] if m.get("artifactType") == "application/spdx+json"]
    assert index["manifests"][: len(image_entries)] == image_entries  # the image entries first, as before
    assert "annotations" not in entry  # no ref.name: skopeo, containerd and tests look the image up by tag
    data = (layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == entry["digest"] and len(data) == entry["size"]
    manifest = json.loads(data)
    assert errors("image-manifest-schema.json", manifest) == []
    assert manifest["artifactType"] == "application/spdx+json"
    assert manifest["subject"] == {
        "mediaType": image_entries[0]["mediaType"],
        "digest": built_hello.report["digest"],
        "size": image_entries[0]["size"],
    }
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
        "size": 2,
    }
    assert (layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes() == b"{}"
    (layer,) = manifest["layers"]
    sbom_bytes = (built_hello.output / "sbom.spdx.json").read_bytes()
    assert layer["mediaType"] == "application/spdx+json" and layer["digest"] == "sha256:" + hashlib.sha256(sbom_bytes).hexdigest()
    assert (layout / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes() == sbom_bytes


def read_back(built: BuiltProject) -> Build:
    return read_build(load_project(built.root).images[0], built.output)


def test_read_back_the_build_gives_the_same_sbom_and_artifact(built_hello: BuiltProject) -> None:
    build = read_back(built_hello)
    assert sbom_document(build) == (built_hello.output / "sbom.spdx.json").read_bytes()
    artifact = sbom_artifact(build)
    assert artifact.descriptor() in json.loads((built_hello.output / "oci" / "index.json").read_text())["manifests"]


# -- a module with dependencies: one replaced by a directory, one from a (file) module proxy ------


def module_proxy(directory: Path) -> Path:
    """A file:// GOPROXY serving example.com/greet v1.0.0, zipped from the fixture's greet/ the way the proxy protocol lays it out."""
    versions = directory / "example.com" / "greet" / "@v"
    versions.mkdir(parents=True)
    source = REPLACE_APP / "greet"
    with zipfile.ZipFile(versions / "v1.0.0.zip", "w") as archive:
        for path in sorted(source.iterdir()):
            archive.writestr(zipfile.ZipInfo(f"example.com/greet@v1.0.0/{path.name}", date_time=(1980, 1, 1, 0, 0, 0)), path.read_bytes())
    (versions / "v1.0.0.mod").write_bytes((source / "go.mod").read_bytes())
    (versions / "v1.0.0.info").write_text('{"Version":"v1.0.0","Time":"2026-01-01T00:00:00Z"}')
    (versions / "list").write_text("v1.0.0\n")
    return directory


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """GOMODCACHE holding example.com/greet, downloaded offline from the file proxy and checked against app/go.sum."""
    base = tmp_path_factory.mktemp("gomod")
    proxy = module_proxy(base / "proxy")
    env = {"GOMODCACHE": str(base / "cache")}
    go = find_toolchain(find_module(REPLACE_APP / "app")).go
    download = {**os.environ, **env, "GOPROXY": proxy.as_uri(), "GOSUMDB": "off", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    done = subprocess.run(
        [str(go), "mod", "download", "example.com/greet"], cwd=REPLACE_APP / "app", env=download, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    yield env
    subprocess.run([str(go), "clean", "-modcache"], env={**os.environ, **env}, capture_output=True)


def replace_project(directory: Path) -> Path:
    shutil.copytree(REPLACE_APP, directory, ignore=shutil.ignore_patterns("greet"))
    (directory / "pyproject.toml").write_text('[project]\nname = "replace"\nversion = "0"\n\n' + REPLACE_TABLE)
    (directory / ".gitignore").write_text("dist/\n")
    git_commit(directory)
    return directory


@pytest.fixture(scope="module")
def built_replace(tmp_path_factory: pytest.TempPathFactory, module_cache: dict[str, str]) -> BuiltProject:
    root = replace_project(tmp_path_factory.mktemp("replace") / "project")
    done = gosmall("build-small", cwd=root, env={**module_cache, "SOURCE_DATE_EPOCH": ""})
    assert done.returncode == 0, done.stderr
    output = root / "dist" / "app"
    return BuiltProject(root, output, json.loads((output / "report.json").read_text()))


def test_a_replaced_and_a_published_dependency_are_in_the_sbom_as_go_version_m_lists_them(
    built_replace: BuiltProject, tmp_path: Path
) -> None:
    done = pyspdxtools(built_replace.output / "sbom.spdx.json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = sbom(built_replace.output)
    binary = binary_file(document, "linux/amd64", "/app")
    expected = go_version_m(layer_files(built_replace.output, "linux/amd64")["/app"], built_replace.root / "app", tmp_path)
    assert {(d["Path"], d["Version"]) for d in expected["Deps"]} == {("example.com/dep", "v1.2.3"), ("example.com/greet", "v1.0.0")}
    assert sbom_modules(document, binary["SPDXID"]) == {("example.com/app", "(devel)")} | {
        (d["Path"], d["Version"]) for d in expected["Deps"]
    }
    deps = {p["name"]: p for p in related(document, binary["SPDXID"], "STATIC_LINK") if p["SPDXID"].startswith("SPDXRef-GoModule-")}

    dep = deps["example.com/dep"]
    assert dep["versionInfo"] == "v1.2.3"
    assert "replaced by the directory ../dep (go.mod replace)" in dep["sourceInfo"]
    assert "externalRefs" not in dep and "checksums" not in dep  # local code: no purl or hash that would claim v1.2.3

    greet = deps["example.com/greet"]
    (listed,) = [d for d in expected["Deps"] if d["Path"] == "example.com/greet"]
    assert listed["Sum"] == GREET_SUM  # what go.sum says, as Go embedded it
    assert f"go.sum {GREET_SUM}" in greet["sourceInfo"]
    assert greet["checksums"] == [{"algorithm": "SHA256", "checksumValue": base64.b64decode(GREET_SUM[3:]).hex()}]
    assert purls(greet) == ["pkg:golang/example.com/greet@v1.0.0"]
    (main,) = related(document, binary["SPDXID"], "GENERATED_FROM")
    assert (main["name"], main["primaryPackagePurpose"], purls(main)) == ("example.com/app", "APPLICATION", ["pkg:golang/example.com/app"])


def test_the_runtime_files_name_their_sources(built_replace: BuiltProject) -> None:
    document = sbom(built_replace.output)
    bundle = binary_file(document, "linux/amd64", "/etc/ssl/certs/ca-certificates.crt")
    (certifi,) = related(document, bundle["SPDXID"], "GENERATED_FROM")
    assert (certifi["name"], certifi["versionInfo"]) == ("certifi", version("certifi"))
    assert purls(certifi) == [f"pkg:pypi/certifi@{version('certifi')}"]
    zoneinfo = binary_file(document, "linux/amd64", "/usr/share/zoneinfo.zip")
    assert "reduced to the 1 zone(s) in `zones`" in zoneinfo["comment"]
    for generated in ("/etc/passwd", "/etc/group"):
        assert related(document, binary_file(document, "linux/amd64", generated)["SPDXID"], "GENERATED_FROM") == []


def test_two_builds_give_byte_identical_sboms(built_replace: BuiltProject, module_cache: dict[str, str], tmp_path: Path) -> None:
    clone = tmp_path / "somewhere" / "else"
    subprocess.run(["git", "clone", "-q", str(built_replace.root), str(clone)], check=True)
    done = gosmall("build-small", cwd=clone, env={**module_cache, "SOURCE_DATE_EPOCH": ""})
    assert done.returncode == 0, done.stderr
    again = clone / "dist" / "app"
    assert (again / "sbom.spdx.json").read_bytes() == (built_replace.output / "sbom.spdx.json").read_bytes()
    assert (again / "oci" / "index.json").read_bytes() == (built_replace.output / "oci" / "index.json").read_bytes()
    assert str(clone) not in (again / "sbom.spdx.json").read_text()  # no build path leaks in


def test_source_date_epoch_is_the_sbom_created_time(built_replace: BuiltProject, module_cache: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(built_replace.root, root)
    done = gosmall("build-small", cwd=root, env={**module_cache, "SOURCE_DATE_EPOCH": "86400"})
    assert done.returncode == 0, done.stderr
    document = sbom(root / "dist" / "app")
    assert document["creationInfo"]["created"] == "1970-01-02T00:00:00Z"
    digest = json.loads((root / "dist" / "app" / "report.json").read_text())["digest"]
    assert document["documentNamespace"] == f"https://spdx.org/spdxdocs/gosmall/gosmall.test/replace-app/sha256-{digest.split(':')[1]}"


# -- gosmall sbom ---------------------------------------------------------------------


def test_gosmall_sbom_writes_the_same_bytes_build_small_wrote(built_replace: BuiltProject, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(built_replace.root, root)
    output = root / "dist" / "app"
    before = {name: (output / name).read_bytes() for name in ("sbom.spdx.json", "oci/index.json")}
    (output / "sbom.spdx.json").unlink()
    done = gosmall("sbom", cwd=root)
    assert done.returncode == 0, done.stderr
    assert {name: (output / name).read_bytes() for name in before} == before


def test_gosmall_sbom_gives_an_older_output_its_sbom_and_referrer(built_replace: BuiltProject, tmp_path: Path) -> None:
    """What an older gosmall wrote: no sbom.spdx.json, no referrer in index.json, no SBOM facts in report.json."""
    root = tmp_path / "p"
    shutil.copytree(built_replace.root, root)
    output = root / "dist" / "app"
    (output / "sbom.spdx.json").unlink()
    index = json.loads((output / "oci" / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"] if "artifactType" not in m]
    (output / "oci" / "index.json").write_text(json.dumps(index))
    report = json.loads((output / "report.json").read_text())
    for entry in report["platforms"].values():
        del entry["go_build"], entry["sources"]
    (output / "report.json").write_text(json.dumps(report))

    done = gosmall("sbom", "--image", "app", cwd=root)
    assert done.returncode == 0, done.stderr
    assert str(output / "sbom.spdx.json") in done.stdout + done.stderr
    assert pyspdxtools(output / "sbom.spdx.json").returncode == 0
    document = sbom(output)
    bundle = binary_file(document, "linux/amd64", "/etc/ssl/certs/ca-certificates.crt")
    assert related(document, bundle["SPDXID"], "GENERATED_FROM") == []  # the report did not say; the SBOM does not guess
    assert sbom_modules(document, binary_file(document, "linux/amd64", "/app")["SPDXID"])  # modules come from the binary itself
    index = json.loads((output / "oci" / "index.json").read_text())
    assert [m.get("artifactType") for m in index["manifests"]] == [None, "application/spdx+json"]


def test_gosmall_sbom_needs_a_build_and_never_writes_through_a_link(built_replace: BuiltProject, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(built_replace.root, root, ignore=shutil.ignore_patterns("dist"))
    done = gosmall("sbom", cwd=root)
    assert done.returncode == 2
    assert "Image 'app' has not been built" in done.stderr and "Traceback" not in done.stderr

    shutil.copytree(built_replace.root / "dist", root / "dist")
    elsewhere = tmp_path / "precious.json"
    elsewhere.write_text("mine\n")
    (root / "dist" / "app" / "sbom.spdx.json").unlink()
    (root / "dist" / "app" / "sbom.spdx.json").symlink_to(elsewhere)
    done = gosmall("sbom", cwd=root)
    assert done.returncode == 2
    assert "is not a regular file" in done.stderr and "Traceback" not in done.stderr
    assert elsewhere.read_text() == "mine\n"


# -- the facts, without building --------------------------------------------------------


def test_file_sources_ask_dpkg_about_merged_usr_twins_and_skip_what_no_package_owns(tmp_path: Path) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("no dpkg-query on this machine")
    (tmp_path / "app").mkdir()
    config = parse_project({"images": {"app": {"package": "app", "tzdata": "system"}}}, tmp_path / "pyproject.toml").images[0]
    calls: list[list[str]] = []

    def dpkg(args: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        if "--search" in args:
            out = "tzdata: /usr/share/zoneinfo/Europe/Berlin\nlibc6:amd64: /lib/x86_64-linux-gnu/libc.so.6\ndiversion by x from: /usr/share/zoneinfo/UTC\n"
            return subprocess.CompletedProcess(args, 1, out, "dpkg-query: no path found matching pattern /nowhere\n")
        out = "libc6:amd64\tlibc6\tamd64\t2.36-9+deb12u14\ntzdata\ttzdata\tall\t2025b-0+deb12u2\n"
        return subprocess.CompletedProcess(args, 0, out, "")

    from gosmall.build.libraries import CollectedFile, LibraryClosure
    from gosmall.layer_files import FileEntry

    entries = [
        FileEntry("/usr/share/zoneinfo/Europe/Berlin", "file", 0o444, "tzdata", data=b"TZif", origin="/usr/share/zoneinfo/Europe/Berlin"),
        FileEntry("/usr/share/zoneinfo/UTC", "file", 0o444, "tzdata", data=b"TZif", origin="/usr/share/zoneinfo/UTC"),
    ]
    libc = CollectedFile(
        "/usr/lib/x86_64-linux-gnu/libc.so.6", "file", "", Path("/usr/lib/x86_64-linux-gnu/libc.so.6"), 1, ("/app",), "needed", b"x"
    )
    nss = CollectedFile("/etc/nsswitch.conf", "file", "", Path("/etc/nsswitch.conf"), 1, ("/lib/libc.so.6",), "nss", b"passwd: files\n")
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Ubuntu"\nID=ubuntu\n')
    sources = file_sources(config, entries, LibraryClosure((libc, nss), None, True), "go1.27.3", runner=dpkg, os_release=(os_release,))
    assert sources == (
        FileSource(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "deb",
            "libc6",
            "2.36-9+deb12u14",
            "ubuntu",
            "amd64",
            "debug sections stripped (strip_libs)",
        ),
        FileSource("/usr/share/zoneinfo/Europe/Berlin", "deb", "tzdata", "2025b-0+deb12u2", "ubuntu", "all"),
    )
    (search,) = [c for c in calls if "--search" in c]
    assert "/lib/x86_64-linux-gnu/libc.so.6" in search and "/etc/nsswitch.conf" not in search  # gosmall wrote that one


def test_purls_are_encoded_as_the_purl_spec_says() -> None:
    assert purl("deb", ["debian", "libc6"], "2.36-9+deb12u14", {"arch": "amd64"}) == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64"
    assert purl("oci", ["app"], "sha256:ab", {"repository_url": "127.0.0.1:5000/a/app", "arch": "arm64"}) == (
        "pkg:oci/app@sha256:ab?arch=arm64&repository_url=127.0.0.1:5000%2Fa%2Fapp"
    )
    assert purl("golang", ["github.com", "x", "y"], "v2.0.0+incompatible") == "pkg:golang/github.com/x/y@v2.0.0%2Bincompatible"


def test_an_sbom_of_a_build_with_facts_names_the_ldflags_only_for_gosmalls_binary(built_hello: BuiltProject) -> None:
    build = read_back(built_hello)
    amd64 = Platform("linux", "amd64")
    elsewhere = Build(
        build.config, build.image, build.report, build.output_dir, ((amd64, replace(build.facts_for(amd64), binary="/other")),)
    )
    document = json.loads(sbom_document(elsewhere))
    assert not [line for line in binary_file(document, "linux/amd64", "/go_app")["comment"].splitlines() if "-ldflags" in line]
    assert PlatformFacts.from_json({}) == PlatformFacts()
