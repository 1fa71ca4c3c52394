"""gosmall resolve against a real registry: references become the digests it serves, every other byte stays."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from ruamel.yaml import YAML

from gosmall.build.compile import host_platform
from tests.conftest import gosmall, make_project
from tests.registry_fixture import pushed_table, served_digest

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

# Two documents, comments everywhere, a quoted ko:// reference: all of it but the references must come back as it was.
MANIFEST = """# The app, resolved by gosmall.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello  # the gosmall image key
spec:
  template:
    spec:
      containers:
        - name: hello
          image: gosmall://hello   # replaced
          args: ["-addr", ":8080"]
---
# Written for ko: resolves unchanged.
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      initContainers:
        - image: "ko://example.com/go_app"
          name: migrate
      containers:
        - image: busybox:1.36
          name: done
"""


# Every other place a reference sits in the wild, none of them a container list pin's scanner knows, but for the
# Deployment's flow-style one: whatever the YAML around it, a scalar that is wholly a reference is replaced.
EVERYWHERE = """# Read by the app at run time.
apiVersion: v1
kind: ConfigMap
metadata:
  name: images
data:
  worker: gosmall://hello          # a plain value
  'migrate': 'ko://example.com/go_app'
  script: |
    echo gosmall://hello           # a block scalar is text, not a reference
---
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: build}
spec:
  steps:
    - name: run
      image: gosmall://hello
      command: ["/hello"]
---
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: hello-
spec:
  entrypoint: main
  templates:
    - name: main
      container:
        image: "ko://example.com/go_app"
---
# No kind at all, as a Helm values file: a quoted flow-style list, and a reference as a key.
images: ["gosmall://hello", 'ko://example.com/go_app', gosmall://hello]
by-image: {gosmall://hello: primary}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  template:
    spec:
      containers: [{name: hello, image: "gosmall://hello"}]
"""
EVERYWHERE_REFERENCES = 9  # the block scalar's is not one

# A reference to no image, deep in a custom resource, and by import path and by package path in a values file with no kind.
UNKNOWN = {
    "widget.yaml": "apiVersion: example.com/v1\nkind: Widget\nspec:\n  parts:\n    - name: a\n      runtime: {image: gosmall://nope}\n",
    "values.yaml": "app:\n  sidecars:\n    - 'ko://example.com/nope'\n    - gosmall://./go_app/nope\n",
}


def _project(root: Path, registry: LocalRegistry, repository: str, files: dict[str, str] | None = None) -> Path:
    make_project(root, pushed_table(f"{registry.host}/{repository}", platforms=(str(host_platform()),)))
    (root / "k8s").mkdir()
    for name, text in (files or {"app.yaml": MANIFEST}).items():
        (root / "k8s" / name).write_text(text)
    return root


def _resolved(text: str, pinned: str) -> str:
    """`text` with each reference to the project's one image replaced by `pinned`, and nothing else changed."""
    # Block scalars are text: their line is put back as it was.
    kept = "    echo gosmall://hello           # a block scalar is text, not a reference"
    replaced = text.replace("gosmall://hello", pinned).replace("ko://example.com/go_app", pinned)
    return replaced.replace(kept.replace("gosmall://hello", pinned), kept)


def _only_references_changed(before: str, after: str, pinned: str) -> None:
    old, new = before.split("\n"), after.split("\n")
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert changed == [
        ("          image: gosmall://hello   # replaced", f"          image: {pinned}   # replaced"),
        ('        - image: "ko://example.com/go_app"', f'        - image: "{pinned}"'),
    ]


@pytest.fixture(scope="module")
def resolved(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One build for every test here that resolves: k8s/app.yaml, then k8s/everywhere.yaml."""
    root = _project(
        tmp_path_factory.mktemp("resolve") / "project", registry, "resolve/hello", {"app.yaml": MANIFEST, "everywhere.yaml": EVERYWHERE}
    )
    return root, gosmall("resolve", "-f", "k8s/", cwd=root, env={"SOURCE_DATE_EPOCH": ""})


def _pinned(done: subprocess.CompletedProcess[str]) -> str:
    return next(word for word in done.stdout.split() if "@sha256:" in word).strip('"')


def _printed_app(done: subprocess.CompletedProcess[str]) -> str:
    """The first file of the printed stream: k8s/app.yaml (the stream joins the YAML files with `---`)."""
    return done.stdout[: len(_resolved(MANIFEST, _pinned(done)))]


def test_resolve_prints_the_documents_with_the_digest_the_registry_serves(resolved: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, done = resolved
    assert done.returncode == 0, done.stderr
    pinned = _pinned(done)
    repository, _, digest = pinned.partition("@")
    assert repository.endswith("/resolve/hello")
    assert served_digest(pinned) == digest
    _only_references_changed(MANIFEST, _printed_app(done), pinned)
    assert (root / "k8s" / "app.yaml").read_text() == MANIFEST  # printed, not written


def test_resolve_replaces_a_reference_wherever_it_sits_and_keeps_every_other_byte(
    resolved: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, done = resolved
    assert done.returncode == 0, done.stderr
    pinned = _pinned(done)
    # ConfigMap value, Tekton step, Argo template, flow-style list and key, Deployment: all one digest, all else as it was.
    assert done.stdout == _resolved(MANIFEST, pinned) + "---\n" + _resolved(EVERYWHERE, pinned)
    assert done.stdout.count(pinned) == 2 + EVERYWHERE_REFERENCES
    assert "ko://" not in done.stdout
    # What a cluster would read: each place holds the digest, the block scalar its text.
    configmap, task, workflow, values, deployment = YAML(typ="safe").load_all(_resolved(EVERYWHERE, pinned))
    assert (configmap["data"]["worker"], configmap["data"]["migrate"]) == (pinned, pinned)
    assert configmap["data"]["script"] == "echo gosmall://hello           # a block scalar is text, not a reference\n"
    assert task["spec"]["steps"][0]["image"] == pinned
    assert workflow["spec"]["templates"][0]["container"]["image"] == pinned
    assert values == {"images": [pinned] * 3, "by-image": {pinned: "primary"}}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    assert (root / "k8s" / "everywhere.yaml").read_text() == EVERYWHERE  # printed, not written


def test_resolve_write_edits_a_linked_file_at_its_target_and_keeps_the_link(
    resolved: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, printed = resolved
    (root / "deploy").mkdir()
    (root / "deploy" / "app.yaml").write_text(MANIFEST)
    link = root / "linked" / "app.yaml"
    link.parent.mkdir()
    link.symlink_to("../deploy/app.yaml")
    done = gosmall("resolve", "linked", "--write", cwd=root, env={"SOURCE_DATE_EPOCH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert link.is_symlink() and link.readlink() == Path("../deploy/app.yaml")
    # Reproducible: the same digest as the printed run.
    assert (root / "deploy" / "app.yaml").read_text() == _printed_app(printed)


def test_resolve_refuses_a_link_out_of_the_project(resolved: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    root, _ = resolved
    outside = tmp_path / "app.yaml"
    outside.write_text(MANIFEST)
    (root / "escape").mkdir()
    (root / "escape" / "app.yaml").symlink_to(outside)
    done = gosmall("resolve", "-f", "escape/app.yaml", "--write", cwd=root)
    assert done.returncode == 2
    assert "outside the project" in done.stderr
    assert outside.read_text() == MANIFEST


def test_an_unknown_image_exits_2_and_builds_and_pushes_nothing(registry: LocalRegistry, tmp_path: Path) -> None:
    manifest = MANIFEST.replace("gosmall://hello", "gosmall://nope")
    root = _project(tmp_path / "project", registry, "resolve/unknown", {"app.yaml": manifest})
    done = gosmall("resolve", "-f", "k8s/", cwd=root)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "k8s/app.yaml:11:18: gosmall://nope: no such image; images: hello" in done.stderr
    assert not (root / "dist").exists()
    catalog = requests.get(f"{registry.url}/v2/_catalog", timeout=10).json()
    assert "resolve/unknown" not in catalog["repositories"]


def test_a_reference_to_no_image_anywhere_exits_2_naming_its_place_and_pushes_nothing(registry: LocalRegistry, tmp_path: Path) -> None:
    root = _project(tmp_path / "project", registry, "resolve/nowhere", UNKNOWN)
    catalog = requests.get(f"{registry.url}/v2/_catalog", timeout=10).json()
    done = gosmall("resolve", "-f", "k8s/", cwd=root)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "k8s/widget.yaml:6:24: gosmall://nope: no such image; images: hello" in done.stderr
    assert "k8s/values.yaml:3:8: ko://example.com/nope: no such image; images: example.com/go_app" in done.stderr
    assert (
        "k8s/values.yaml:4:7: gosmall://./go_app/nope: no such image; images: hello, and ./go_app/nope holds no Go package" in done.stderr
    )
    assert not (root / "dist").exists()
    assert requests.get(f"{registry.url}/v2/_catalog", timeout=10).json() == catalog


def test_with_no_config_a_package_path_and_a_ko_import_path_in_a_dockerfile_resolve(registry: LocalRegistry, tmp_path: Path) -> None:
    root = tmp_path / "module"
    (root / "cmd" / "app").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/first\n\ngo 1.22\n")
    (root / "cmd" / "app" / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("resolve") }\n')
    (root / "k8s").mkdir()
    pod = "kind: Pod\nspec:\n  containers:\n    - image: gosmall://./cmd/app # no config\n"
    dockerfile = "# syntax=docker/dockerfile:1\nFROM ko://example.com/first/cmd/app AS app\nCOPY --from=app /app /app\n"
    (root / "k8s" / "pod.yaml").write_text(pod)
    (root / "Dockerfile").write_text(dockerfile)
    done = gosmall("resolve", "k8s", "-f", "Dockerfile", cwd=root, env={"GOSMALL_REPO": f"{registry.host}/nocfg"})
    assert done.returncode == 0, done.stderr
    pinned = next(word for word in done.stdout.split() if "@sha256:" in word)
    assert pinned.startswith(f"{registry.host}/nocfg/app@sha256:")
    assert served_digest(pinned) == pinned.partition("@")[2]
    # Files in name order: the Dockerfile, then the manifest.
    assert done.stdout == dockerfile.replace("ko://example.com/first/cmd/app", pinned) + pod.replace("gosmall://./cmd/app", pinned)
