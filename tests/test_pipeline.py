"""End to end: `gosmall build-small` on go_app, checked the way a registry, skopeo and a user would."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gosmall.build.prove import read_elf
from tests.conftest import VECTORS, BuiltProject, gosmall, make_project
from tests.oci_schema import errors

pytestmark = pytest.mark.slow

EXPECTED_LAYER = {
    # path: (type, mode, uid, gid)
    "etc": (tarfile.DIRTYPE, 0o755, 0, 0),
    "etc/group": (tarfile.REGTYPE, 0o444, 0, 0),
    "etc/passwd": (tarfile.REGTYPE, 0o444, 0, 0),
    "go_app": (tarfile.REGTYPE, 0o555, 0, 0),
    "home": (tarfile.DIRTYPE, 0o755, 0, 0),
    "home/nonroot": (tarfile.DIRTYPE, 0o700, 65532, 65532),
    "tmp": (tarfile.DIRTYPE, 0o1777, 0, 0),
    "usr": (tarfile.DIRTYPE, 0o755, 0, 0),
    "usr/share": (tarfile.DIRTYPE, 0o755, 0, 0),
    "usr/share/zoneinfo.zip": (tarfile.REGTYPE, 0o444, 0, 0),
}


def blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_ = digest.split(":")
    return (layout / "blobs" / algorithm / hex_).read_bytes()


def test_the_vectors_are_where_the_tests_expect_them() -> None:
    assert (VECTORS / "oci-schema" / "image-manifest-schema.json").is_file()


def test_layout_documents_validate_against_the_oci_schemas(built_hello: BuiltProject) -> None:
    layout = built_hello.output / "oci"
    assert errors("image-layout-schema.json", json.loads((layout / "oci-layout").read_text())) == []
    index = json.loads((layout / "index.json").read_text())
    assert errors("image-index-schema.json", index) == []
    images = [m for m in index["manifests"] if "artifactType" not in m]  # the SBOM referrer follows them (test_sbom.py)
    (top,) = {m["digest"] for m in images}
    assert top == built_hello.report["digest"]
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in images] == ["latest"]

    platform_index = json.loads(blob(layout, top))
    assert errors("image-index-schema.json", platform_index) == []
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m for m in platform_index["manifests"]}
    assert sorted(platforms) == ["linux/amd64", "linux/arm64"]
    for name, descriptor in platforms.items():
        manifest = json.loads(blob(layout, descriptor["digest"]))
        assert errors("image-manifest-schema.json", manifest) == []
        config = json.loads(blob(layout, manifest["config"]["digest"]))
        assert errors("config-schema.json", config) == []
        assert f"{config['os']}/{config['architecture']}" == name
        entry = built_hello.report["platforms"][name]
        assert entry["manifest_digest"] == descriptor["digest"]
        assert entry["config_digest"] == manifest["config"]["digest"]
        assert entry["layer_size"] == manifest["layers"][0]["size"]
        assert manifest["annotations"]["org.opencontainers.image.revision"]
        assert manifest["annotations"]["org.opencontainers.image.created"] == "2026-01-02T03:04:05Z"


def test_every_blob_matches_its_descriptor(built_hello: BuiltProject) -> None:
    layout = built_hello.output / "oci"
    seen = 0
    pending = json.loads((layout / "index.json").read_text())["manifests"]
    while pending:
        descriptor = pending.pop()
        data = blob(layout, descriptor["digest"])
        assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"]
        assert len(data) == descriptor["size"]
        seen += 1
        if descriptor["mediaType"].endswith("index.v1+json"):
            pending.extend(json.loads(data)["manifests"])
        elif descriptor["mediaType"].endswith("manifest.v1+json"):
            document = json.loads(data)
            pending.extend([document["config"], *document["layers"]])
    assert seen == 1 + 2 * 3 + 3  # the index, two platforms' manifest, config and layer; the SBOM's manifest, config, layer
    on_disk = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert len(on_disk) == 10  # nothing stored that nothing references


def test_config_carries_what_the_user_configured(built_hello: BuiltProject) -> None:
    layout = built_hello.output / "oci"
    digest = built_hello.report["platforms"]["linux/amd64"]["config_digest"]
    config = json.loads(blob(layout, digest))
    runtime = config["config"]
    assert runtime["User"] == "65532:65532"
    assert runtime["Entrypoint"] == ["/go_app"]
    assert runtime["Env"] == ["TZ_NAME=Europe/Berlin", "ZONEINFO=/usr/share/zoneinfo.zip"]
    assert runtime["ExposedPorts"] == {"8080/tcp": {}}
    assert runtime["Healthcheck"]["Test"] == ["CMD", "/go_app", "healthcheck"]
    assert config["created"] == "2026-01-02T03:04:05Z"
    diff_id = config["rootfs"]["diff_ids"][0]
    assert diff_id == built_hello.report["platforms"]["linux/amd64"]["diff_id"]


def layer_members(built: BuiltProject, platform: str) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    layout = built.output / "oci"
    manifest = json.loads(blob(layout, built.report["platforms"][platform]["manifest_digest"]))
    data = gzip.decompress(blob(layout, manifest["layers"][0]["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    assert "sha256:" + hashlib.sha256(data).hexdigest() == config["rootfs"]["diff_ids"][0]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}  # type: ignore[union-attr]


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_layer_holds_exactly_the_expected_paths(built_hello: BuiltProject, platform: str, tmp_path: Path) -> None:
    members = layer_members(built_hello, platform)
    assert list(members) == sorted(EXPECTED_LAYER)  # sorted, parents before children
    for name, (member, _) in members.items():
        assert (member.type, member.mode, member.uid, member.gid) == EXPECTED_LAYER[name], name
        assert member.mtime == 1767323045  # the commit time, not the build time
        assert member.uname == member.gname == ""
        assert not {"atime", "ctime"} & set(member.pax_headers)
    assert b"nonroot:x:65532:65532" in members["etc/passwd"][1]
    assert members["etc/passwd"][1].count(b"\n") == 2  # root and nonroot, nobody else

    binary = tmp_path / "go_app"
    binary.write_bytes(members["go_app"][1])
    facts = read_elf(binary)
    assert facts.static and facts.interpreter is None and facts.needed == ()
    assert facts.debug_sections == ()
    assert facts.machine == {"linux/amd64": "EM_X86_64", "linux/arm64": "EM_AARCH64"}[platform]
    assert len(members["go_app"][1]) == built_hello.report["platforms"][platform]["binary_size"]


def test_docker_archive_is_loadable_shape(built_hello: BuiltProject) -> None:
    with tarfile.open(built_hello.output / "image.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        assert entry["RepoTags"] == ["example.com/hello:latest"]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layer = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    platform = built_hello.report["docker_platform"]
    assert "sha256:" + hashlib.sha256(config).hexdigest() == built_hello.report["platforms"][platform]["config_digest"]
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == built_hello.report["platforms"][platform]["diff_id"]


def test_report_has_the_contract_fields(built_hello: BuiltProject) -> None:
    report = built_hello.report
    assert report["image"] == "hello" and report["repository"] == "example.com/hello" and report["tags"] == ["latest"]
    for entry in report["platforms"].values():
        assert {"manifest_digest", "config_digest", "binary_size", "layer_size", "image_size"} <= set(entry)
        assert entry["layer_size"] < entry["image_size"] < 12 * 1024 * 1024


def test_version_ldflag_is_git_describe(built_hello: BuiltProject, tmp_path: Path) -> None:
    members = layer_members(built_hello, "linux/amd64")
    described = subprocess.run(
        ["git", "describe", "--tags", "--always", "--dirty"], cwd=built_hello.root, capture_output=True, text=True
    ).stdout.strip()
    assert described.encode() in members["go_app"][1]
    binary = tmp_path / "go_app"
    binary.write_bytes(members["go_app"][1])
    binary.chmod(0o755)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (CI installs it)")
def test_skopeo_accepts_the_layout(built_hello: BuiltProject) -> None:
    layout = built_hello.output / "oci"
    done = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:latest"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "sha256:" + hashlib.sha256(done.stdout.encode()).hexdigest() == built_hello.report["digest"]
    for platform in ("amd64", "arm64"):
        done = subprocess.run(
            ["skopeo", "--override-arch", platform, "inspect", "--config", f"oci:{layout}:latest"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["architecture"] == platform
    copy = subprocess.run(
        ["skopeo", "copy", "--all", f"oci:{layout}:latest", f"dir:{built_hello.root / 'copied'}"], capture_output=True, text=True
    )
    assert copy.returncode == 0, copy.stderr


def test_two_clones_of_one_commit_build_the_same_digest(built_hello: BuiltProject, tmp_path: Path) -> None:
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(built_hello.root), str(clone)], check=True)
    done = gosmall("build-small", cwd=clone, env={"SOURCE_DATE_EPOCH": ""})
    assert done.returncode == 0, done.stderr
    report = json.loads((clone / "dist" / "hello" / "report.json").read_text())
    assert report["digest"] == built_hello.report["digest"]
    assert (clone / "dist" / "hello" / "image.tar").read_bytes() == (built_hello.output / "image.tar").read_bytes()


def test_source_date_epoch_sets_every_timestamp(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[tool.gosmall.images.one]\npackage = "./go_app"\n')
    done = gosmall("build-small", cwd=root, env={"SOURCE_DATE_EPOCH": "86400"})
    assert done.returncode == 0, done.stderr
    report = json.loads((root / "dist" / "one" / "report.json").read_text())
    assert report["source"]["source_date_epoch"] == 86400
    index = json.loads((root / "dist" / "one" / "oci" / "index.json").read_text())
    manifest = json.loads(blob(root / "dist" / "one" / "oci", index["manifests"][0]["digest"]))
    assert manifest["annotations"]["org.opencontainers.image.created"] == "1970-01-02T00:00:00Z"
    assert index["manifests"][0]["mediaType"].endswith("manifest.v1+json")  # one platform: no index
    assert "size" in done.stdout  # the size table


def test_a_failed_build_leaves_the_previous_output_intact(built_hello: BuiltProject, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(built_hello.root, root)
    before = (root / "dist" / "hello" / "report.json").read_bytes()
    (root / "go_app" / "main.go").write_text((root / "go_app" / "main.go").read_text() + "\nfunc broken( {\n")
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2
    assert "go build of" in done.stderr and "syntax error" in done.stderr  # the compiler's own words
    assert "Traceback" not in done.stderr
    assert (root / "dist" / "hello" / "report.json").read_bytes() == before
    assert sorted(p.name for p in (root / "dist").iterdir()) == ["hello"]  # no temp dirs left behind


def test_max_size_fails_the_build_and_writes_nothing(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[tool.gosmall.images.tiny]\npackage = "./go_app"\nmax_size = "1MiB"\n')
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 1
    assert "Image 'tiny' for linux/amd64 is" in done.stderr and "over its max_size of 1.0 MiB" in done.stderr
    assert not (root / "dist" / "tiny").exists()


def test_a_two_line_tasks_py_gives_invoke_the_same_tasks(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[tool.gosmall.images.one]\npackage = "./go_app"\n')
    (root / "tasks.py").write_text("from gosmall.tasks import namespace  # noqa: F401\n")
    invoke = Path(sys.executable).with_name("invoke")
    done = subprocess.run([str(invoke), "build-small"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((root / "dist" / "one" / "report.json").read_text())["image"] == "one"
