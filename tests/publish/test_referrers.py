"""The proof travels with the image: SBOM and provenance pushed as OCI referrers, signed as cosign attests.

Two registries: Debian's docker-registry 2.8, which has no referrers API (the `sha256-<hex>` tag schema is
used), and `ReferrersProxy`, a test server of our own in front of it that implements
`GET /v2/<name>/referrers/<digest>` (no registry with the referrers API is installable here: Debian ships only
docker-registry 2.8). Every check reads what landed with plain HTTP, not through gosmall.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.conftest import gosmall, gosmall_command, make_project
from tests.registry_fixture import StandIn, http_server

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

PASSWORD = "referrers test password"
ENV = {"GOSMALL_SIGNING_PASSWORD": PASSWORD, "SOURCE_DATE_EPOCH": ""}
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SPDX = "application/spdx+json"
IN_TOTO = "application/vnd.in-toto+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
ACCEPT = ", ".join((MEDIA_INDEX, MEDIA_MANIFEST))


def table(host: str, path: str, names: tuple[str, ...] = ("a", "b")) -> str:
    """Images of go_app in one repository, each its own digest (its own env), each under its own tag."""
    lines = ['[tool.gosmall]\noutput = "dist"\npinning = "off"\n']
    for name in names:
        lines.append(
            f'[tool.gosmall.images.{name}]\npackage = "./go_app"\nrepository = "{host}/{path}"\ntags = ["{name}"]\n'
            f'platforms = ["linux/amd64"]\nenv = {{ IMAGE = "{name}" }}\n'
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Project:
    root: Path
    host: str
    path: str
    keys: Path  # cosign.key, cosign.pub
    other: Path  # another pair

    def digest(self, name: str) -> str:
        return str(json.loads((self.root / "dist" / name / "report.json").read_text())["digest"])

    def url(self, suffix: str) -> str:
        return f"http://{self.host}/v2/{self.path}/{suffix}"

    def reference(self, name: str) -> str:
        return f"{self.host}/{self.path}@{self.digest(name)}"

    def manifest(self, where: str) -> requests.Response:
        return requests.get(self.url(f"manifests/{where}"), headers={"Accept": ACCEPT}, timeout=30)

    def blob(self, digest: str) -> bytes:
        answer = requests.get(self.url(f"blobs/{digest}"), timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.content

    def tag_index(self, name: str) -> list[dict[str, Any]]:
        answer = self.manifest(self.digest(name).replace(":", "-"))
        assert answer.status_code == 200, answer.text
        document = answer.json()
        assert document["mediaType"] == MEDIA_INDEX
        return list(document["manifests"])


def keygen(directory: Path) -> Path:
    directory.mkdir(parents=True)
    done = gosmall("keygen", cwd=directory, env=ENV)
    assert done.returncode == 0, done.stderr
    return directory


def plant_foreign_referrer(project: Project, name: str) -> dict[str, Any]:
    """What another tool does on a registry without the referrers API: push an artifact whose subject is the image,
    and list it under the image's `sha256-<hex>` tag. Its descriptor, as the tag lists it."""
    subject = project.manifest(project.digest(name))
    assert subject.status_code == 200
    empty, layer = b"{}", b'{"signed-by": "another tool"}'
    for data in (empty, layer):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(project.url("blobs/uploads/"), timeout=30)
        location = start.headers["Location"]
        url = location if location.startswith("http") else f"http://{project.host}{location}"
        done = requests.put(url, params={"digest": digest}, data=data, headers={"Content-Type": "application/octet-stream"}, timeout=30)
        assert done.status_code == 201, done.text
    sha = hashlib.sha256
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "artifactType": "application/vnd.example.other-tool",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + sha(empty).hexdigest(), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.example.other-tool", "digest": "sha256:" + sha(layer).hexdigest(), "size": len(layer)}
            ],
            "subject": {"mediaType": subject.headers["Content-Type"], "digest": project.digest(name), "size": len(subject.content)},
            "annotations": {"com.example.tool": "other"},
        }
    ).encode()
    digest = "sha256:" + sha(manifest).hexdigest()
    put = requests.put(project.url(f"manifests/{digest}"), data=manifest, headers={"Content-Type": MEDIA_MANIFEST}, timeout=30)
    assert put.status_code == 201, put.text
    descriptor = {
        "mediaType": MEDIA_MANIFEST,
        "digest": digest,
        "size": len(manifest),
        "artifactType": "application/vnd.example.other-tool",
        "annotations": {"com.example.tool": "other"},
    }
    index = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [descriptor]}).encode()
    tag = project.digest(name).replace(":", "-")
    put = requests.put(project.url(f"manifests/{tag}"), data=index, headers={"Content-Type": MEDIA_INDEX}, timeout=30)
    assert put.status_code == 201, put.text
    return descriptor


@pytest.fixture(scope="module")
def project(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """go_app as images a and b of one repository of the Debian registry. b is built and pushed first, unsigned;
    a is built, gets another tool's referrer planted in its tag, then goes by `build-small --push --sign`."""
    base = tmp_path_factory.mktemp("referrers")
    root = make_project(base / "project", table(registry.host, "proofs/app"))
    found = Project(root, registry.host, "proofs/app", keygen(base / "keys"), keygen(base / "other"))
    done = gosmall("build-small", "--image", "b", "--push", cwd=root, env=ENV)
    assert done.returncode == 0, done.stderr
    done = gosmall("build-small", "--image", "a", cwd=root, env=ENV)
    assert done.returncode == 0, done.stderr
    # Another tool that does not merge replaces the tag with its own list: gosmall's next push must add back its
    # referrers after that tool's, and drop none of them.
    done = gosmall("push", "--image", "a", cwd=root, env=ENV)
    assert done.returncode == 0, done.stderr
    foreign = plant_foreign_referrer(found, "a")
    done = gosmall("build-small", "--image", "a", "--push", "--sign", str(found.keys / "cosign.key"), cwd=root, env=ENV)
    assert done.returncode == 0, done.stderr
    assert found.tag_index("a")[0] == foreign
    return found


# -- the tag schema, on Debian's docker-registry ------------------------------------------


def test_the_tag_lists_sbom_provenance_and_attestations_and_keeps_the_other_tools_referrer(project: Project) -> None:
    listed = project.tag_index("a")
    kinds = [entry.get("artifactType") for entry in listed]
    assert kinds[0] == "application/vnd.example.other-tool"  # planted before gosmall's push, and kept first
    assert kinds.count(SPDX) == 1 and kinds.count(IN_TOTO) == 1 and kinds.count(DSSE) == 2
    for entry in listed[1:]:
        manifest = project.manifest(entry["digest"])
        assert manifest.status_code == 200
        document = manifest.json()
        assert document["subject"]["digest"] == project.digest("a")  # the image's top digest
        assert document["artifactType"] == entry["artifactType"]
        assert entry["annotations"] == document["annotations"]
        created = json.loads((project.root / "dist" / "a" / "report.json").read_text())["source"]["source_date_epoch"]
        assert document["annotations"]["org.opencontainers.image.created"] == datetime.fromtimestamp(created, tz=timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )


def test_the_image_digest_is_the_one_built(project: Project) -> None:
    """An attestation never changes the image: the tag still serves report.json's digest."""
    answer = project.manifest("a")
    assert answer.status_code == 200
    assert "sha256:" + hashlib.sha256(answer.content).hexdigest() == project.digest("a")


def test_the_sbom_referrer_is_the_dist_sbom_and_valid_spdx(project: Project, tmp_path: Path) -> None:
    [entry] = [e for e in project.tag_index("a") if e.get("artifactType") == SPDX]
    [layer] = project.manifest(entry["digest"]).json()["layers"]
    data = project.blob(layer["digest"])
    assert data == (project.root / "dist" / "a" / "sbom.spdx.json").read_bytes()
    pyspdxtools = shutil.which("pyspdxtools") or str(Path(sys.executable).with_name("pyspdxtools"))
    if not Path(pyspdxtools).exists():
        pytest.fail("pyspdxtools (spdx-tools, in the test extra) is not installed")
    (tmp_path / "sbom.spdx.json").write_bytes(data)
    done = subprocess.run([pyspdxtools, "-i", str(tmp_path / "sbom.spdx.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_provenance_says_what_a_verifier_needs(project: Project) -> None:
    [entry] = [e for e in project.tag_index("a") if e.get("artifactType") == IN_TOTO]
    [layer] = project.manifest(entry["digest"]).json()["layers"]
    statement = json.loads(project.blob(layer["digest"]))
    report = json.loads((project.root / "dist" / "a" / "report.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": f"{project.host}/{project.path}", "digest": {"sha256": project.digest("a").split(":")[1]}}]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == "urn:gosmall:buildtype:go-scratch-image:v1"
    assert definition["externalParameters"]["platforms"] == ["linux/amd64"]
    assert definition["externalParameters"]["config"]["env"] == [["IMAGE", "a"]]
    dependencies = definition["resolvedDependencies"]
    [source] = [d for d in dependencies if d.get("name") == "source"]
    assert source["digest"] == {"gitCommit": report["source"]["revision"]}
    [go] = [d for d in dependencies if d.get("name") == "go"]
    assert go["uri"] == f"pkg:golang/stdlib@{report['builder']['go'].removeprefix('go')}"
    assert len(go["digest"]["sha256"]) == 64  # the go binary that built it is on this machine
    assert {"name": "example.com/go_app", "uri": "pkg:golang/example.com/go_app"} in dependencies  # the main module
    assert statement["predicate"]["runDetails"]["builder"]["id"] == f"pkg:pypi/gosmall@{report['builder']['gosmall']}"
    assert "startedOn" not in json.dumps(statement)  # no clock: one build, one statement


def test_pushing_the_same_build_again_adds_no_duplicate(project: Project) -> None:
    before = project.tag_index("a")
    done = gosmall("push", "--image", "a", "--sign", str(project.keys / "cosign.key"), cwd=project.root, env=ENV)
    assert done.returncode == 0, done.stderr
    assert project.tag_index("a") == before
    att = project.manifest(project.digest("a").replace(":", "-") + ".att").json()
    assert len(att["layers"]) == 2


def test_the_att_tag_is_in_cosigns_layer_format(project: Project) -> None:
    att = project.manifest(project.digest("a").replace(":", "-") + ".att")
    assert att.status_code == 200
    layers = att.json()["layers"]
    assert [layer["mediaType"] for layer in layers] == [DSSE, DSSE]
    assert sorted(layer["annotations"]["predicateType"] for layer in layers) == [
        "https://slsa.dev/provenance/v1",
        "https://spdx.dev/Document",
    ]
    assert all(layer["annotations"]["dev.cosignproject.cosign/signature"] == "" for layer in layers)
    envelope = json.loads(project.blob(layers[0]["digest"]))
    assert list(envelope) == ["payloadType", "payload", "signatures"]
    assert envelope["payloadType"] == IN_TOTO


# -- gosmall sbom REF ----------------------------------------------------------------------


def test_sbom_of_a_reference_gives_the_dist_bytes(project: Project, tmp_path: Path) -> None:
    expected = (project.root / "dist" / "a" / "sbom.spdx.json").read_bytes()
    done = subprocess.run(
        [*gosmall_command(), "sbom", f"{project.host}/{project.path}:a"],
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    out = tmp_path / "out.spdx.json"
    done2 = gosmall("sbom", project.reference("a"), "-o", str(out), cwd=tmp_path)
    assert done2.returncode == 0, done2.stderr
    assert out.read_bytes() == expected


def test_sbom_still_writes_dist_by_image(project: Project) -> None:
    done = gosmall("sbom", "--image", "a", cwd=project.root, env=ENV)
    assert done.returncode == 0, done.stderr


def test_sbom_of_an_image_without_one_exits_2(project: Project, tmp_path: Path) -> None:
    # The `.sig` manifest of a is in the registry, and carries no referrers of its own.
    sig = project.manifest(project.digest("a").replace(":", "-") + ".sig")
    digest = "sha256:" + hashlib.sha256(sig.content).hexdigest()
    done = gosmall("sbom", f"{project.host}/{project.path}@{digest}", cwd=tmp_path)
    assert done.returncode == 2
    assert "carries no SBOM referrer" in done.stderr
    assert done.stdout == ""


# -- verify-attestation --------------------------------------------------------------------


def verify(project: Project, image: str, keys: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return gosmall("verify-attestation", "--key", str(keys / "cosign.pub"), *args, image, cwd=project.root, env=ENV)


def test_verify_attestation_accepts_the_signed_provenance(project: Project) -> None:
    done = verify(project, f"{project.host}/{project.path}:a", project.keys)
    assert done.returncode == 0, done.stderr
    report = json.loads((project.root / "dist" / "a" / "report.json").read_text())
    assert project.digest("a") in done.stdout
    assert report["source"]["revision"] in done.stdout
    assert "pkg:pypi/gosmall@" in done.stdout
    done = verify(project, project.reference("a"), project.keys, "--type", "spdx", "--format", "json")
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said["verified"] is True and said["digest"] == project.digest("a")
    assert said["predicate_type"] == "https://spdx.dev/Document"


def test_verify_attestation_with_another_key_exits_1(project: Project) -> None:
    done = verify(project, project.reference("a"), project.other)
    assert done.returncode == 1, done.stderr
    assert "bad signature" in done.stderr


def test_verify_attestation_of_an_unattested_image_exits_1(project: Project) -> None:
    done = verify(project, project.reference("b"), project.keys, "--format", "json")
    assert done.returncode == 1, done.stderr
    assert "has no https://slsa.dev/provenance/v1 attestation" in done.stderr
    assert json.loads(done.stdout)["verified"] is False


def test_verify_attestation_of_another_images_attestation_exits_1(project: Project, tmp_path: Path) -> None:
    """a's `.att` planted as b's: signed by the right key, but its subject is a, not b."""
    att = project.manifest(project.digest("a").replace(":", "-") + ".att")
    tag = project.digest("b").replace(":", "-") + ".att"
    put = requests.put(project.url(f"manifests/{tag}"), data=att.content, headers={"Content-Type": MEDIA_MANIFEST}, timeout=30)
    assert put.status_code == 201, put.text
    done = verify(project, project.reference("b"), project.keys)
    assert done.returncode == 1, done.stderr
    assert f"its subject is {project.digest('a')}, not this image" in done.stderr


def test_verify_attestation_that_cannot_run_exits_2(project: Project, tmp_path: Path) -> None:
    assert verify(project, "not a reference!", project.keys).returncode == 2
    done = gosmall("verify-attestation", "--key", str(tmp_path / "missing.pub"), project.reference("a"), cwd=project.root, env=ENV)
    assert done.returncode == 2
    done = verify(project, project.reference("a"), project.keys, "--type", "cyclonedx")
    assert done.returncode == 2 and "--type 'cyclonedx' is not known" in done.stderr
    done = verify(project, "127.0.0.1:9/nothing/here:v1", project.keys)
    assert done.returncode == 2


# -- audit ----------------------------------------------------------------------------------


def test_audit_of_a_registry_reference_lists_its_proofs(project: Project) -> None:
    done = gosmall("audit", f"docker://{project.reference('a')}", "--format", "json", cwd=project.root, env=ENV)
    assert done.returncode in (0, 1), done.stderr
    proofs = [f for f in json.loads(done.stdout) if f["rule"] == "proofs"]
    messages = sorted(f["message"] for f in proofs)
    assert all(f["level"] == "info" for f in proofs)
    assert "carries an SBOM" in messages and "carries a provenance" in messages and "carries a signature" in messages
    done = gosmall("audit", f"docker://{project.reference('b')}", "--format", "json", cwd=project.root, env=ENV)
    messages = sorted(f["message"] for f in json.loads(done.stdout) if f["rule"] == "proofs")
    assert "carries a signature" not in messages and "carries an SBOM" in messages


# -- the referrers API, on a server that has it ----------------------------------------------


@dataclass
class ReferrersProxy:
    """What a registry with the referrers API does, in front of the Debian one: every request is passed on, except
    GET /v2/<name>/referrers/<digest>, answered from the manifests with a `subject` that went through it."""

    upstream: str
    subject_header: bool
    referrers: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def proxy_handler(state: ReferrersProxy) -> type[StandIn]:
    class Handler(StandIn):
        def _forward(self) -> None:
            with state.lock:
                state.requests.append(f"{self.command} {self.path}")
            name, _, rest = self.path.removeprefix("/v2/").partition("/referrers/")
            if self.command == "GET" and rest:
                digest = rest.split("?", 1)[0]
                index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": state.referrers.get((name, digest), [])}
                self._answer(200, json.dumps(index).encode(), {"Content-Type": MEDIA_INDEX})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            answer = requests.request(
                self.command, f"http://{state.upstream}{self.path}", data=body, headers=headers, timeout=60, allow_redirects=False
            )
            extra: dict[str, str] = {}
            if self.command == "PUT" and "/manifests/" in self.path and answer.status_code == 201:
                document = json.loads(body)
                subject = (document.get("subject") or {}).get("digest")
                if subject:
                    repository = self.path.removeprefix("/v2/").split("/manifests/")[0]
                    descriptor = {
                        "mediaType": document.get("mediaType", MEDIA_MANIFEST),
                        "digest": answer.headers["Docker-Content-Digest"],
                        "size": len(body),
                        "artifactType": document.get("artifactType") or document["config"]["mediaType"],
                    }
                    if document.get("annotations"):
                        descriptor["annotations"] = document["annotations"]
                    with state.lock:
                        listed = state.referrers.setdefault((repository, subject), [])
                        if descriptor["digest"] not in [d["digest"] for d in listed]:
                            listed.append(descriptor)
                    if state.subject_header:
                        extra["OCI-Subject"] = subject
            passed = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "docker-content-digest", "location", "range", "docker-upload-uuid")
            }
            self._answer(answer.status_code, answer.content, {**passed, **extra})

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    return Handler


@pytest.fixture(params=[True, False], ids=["oci-subject-header", "referrers-get"])
def api_proxy(request: pytest.FixtureRequest, registry: LocalRegistry) -> Iterator[tuple[ReferrersProxy, str]]:
    state = ReferrersProxy(registry.host, request.param)
    with http_server(proxy_handler(state)) as host:
        yield state, host


def test_a_registry_with_the_referrers_api_gets_them_through_the_api(api_proxy: tuple[ReferrersProxy, str], tmp_path: Path) -> None:
    state, host = api_proxy
    root = make_project(tmp_path / "project", table(host, "api/app", ("a",)))
    done = gosmall("build-small", "--push", cwd=root, env=ENV)
    assert done.returncode == 0, done.stderr
    digest = json.loads((root / "dist" / "a" / "report.json").read_text())["digest"]
    listed = state.referrers[("api/app", digest)]
    assert sorted(d["artifactType"] for d in listed) == [SPDX, IN_TOTO]
    tag = digest.replace(":", "-")
    assert not any(line.startswith("PUT ") and line.endswith(f"/manifests/{tag}") for line in state.requests)  # no tag schema
    if not state.subject_header:
        assert f"GET /v2/api/app/referrers/{digest}" in state.requests
    # Reading goes through the API too: `gosmall sbom` finds the SBOM with no referrers tag in the registry.
    done = gosmall("sbom", f"{host}/api/app@{digest}", "-o", str(tmp_path / "sbom.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sbom.json").read_bytes() == (root / "dist" / "a" / "sbom.spdx.json").read_bytes()


# -- the referrers list itself ---------------------------------------------------------------


def test_a_referrers_tag_holding_something_else_is_not_overwritten(project: Project) -> None:
    """A tag `sha256-<hex>` that is not an index of referrers stops the push of the referrers (exit 2), untouched."""
    tag = project.digest("b").replace(":", "-")
    before = project.manifest(tag)
    image = project.manifest("b")
    put = requests.put(project.url(f"manifests/{tag}"), data=image.content, headers={"Content-Type": MEDIA_MANIFEST}, timeout=30)
    assert put.status_code == 201, put.text
    try:
        done = gosmall("push", "--image", "b", cwd=project.root, env=ENV)
        assert done.returncode == 2
        assert "is pushed and tagged, but its SBOM and provenance referrers were not" in done.stderr
        assert "is not an OCI image index of referrers" in done.stderr
        assert project.manifest(tag).content == image.content
    finally:
        restored = requests.put(project.url(f"manifests/{tag}"), data=before.content, headers={"Content-Type": MEDIA_INDEX}, timeout=30)
        assert restored.status_code == 201, restored.text


def test_merge_keeps_every_entry_in_order_and_adds_none_twice() -> None:
    from gosmall.digest import Digest
    from gosmall.registry.client import merge_referrers, referrers_tag

    theirs = {"mediaType": MEDIA_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1, "artifactType": "x/other"}
    ours = {"mediaType": MEDIA_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 2, "artifactType": SPDX}
    existing = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [theirs], "annotations": {"kept": "yes"}}
    merged = merge_referrers(existing, [ours])
    assert merged is not None
    assert json.loads(merged) == {**existing, "manifests": [theirs, ours]}
    assert merge_referrers(json.loads(merged), [ours]) is None  # already listed: nothing to push
    assert json.loads(merge_referrers(None, [ours]) or b"") == {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [ours]}
    # distribution-spec's referrers tag schema: <alg>-<hex>
    assert referrers_tag(Digest.parse("sha256:" + "c" * 64)) == "sha256-" + "c" * 64
